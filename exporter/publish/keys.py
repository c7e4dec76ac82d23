"""The signing keys: ed25519 private keys as PEM files in a keys folder, never served.

One file per key, ``ROLE-KEYID.pem`` (PKCS#8, mode 0600, folder 0700). The offline roles' keys
(root, targets) are encrypted with the passphrase in ``EDGE_EXPORT_KEY_PASSPHRASE`` when that
variable is set as they are made; the online roles' keys (snapshot, timestamp) never are,
because ``repo refresh`` signs with them from cron with nobody to type a passphrase. Keys
replaced by ``repo rotate-key`` move to ``retired/`` (kept, never used again).

This is the only module of the project that imports securesystemslib or cryptography (an
import-linter contract): signers are made and loaded here and handed to the code that signs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Root

from edge_runtime.fsutil import atomic_write, fsync_tree
from edge_runtime.ota.policy import METADATA_DIR, TARGETS_DIR
from exporter.errors import PublishError

log = logging.getLogger(__name__)

#: roles whose keys stay offline (encrypted when a passphrase is given)
OFFLINE_ROLES = ("root", "targets")
#: environment variable holding the passphrase of encrypted keys
PASSPHRASE_ENV = "EDGE_EXPORT_KEY_PASSPHRASE"
#: the keys folder inside a repository, unless --keys put it elsewhere
KEYS_DIR = "keys"
#: where replaced keys go, inside the keys folder
RETIRED_DIR = "retired"


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


def key_file(keys: Path, role: str, keyid: str) -> Path:
    """Where the private key ``keyid`` of ``role`` lives in the keys folder ``keys``."""
    return keys / f"{role}-{keyid}.pem"


def _make_keys_dir(keys: Path) -> None:
    if not keys.exists():
        keys.mkdir(parents=True, mode=0o700)
        os.chmod(keys, 0o700)


def new_key(keys: Path, role: str) -> CryptoSigner:
    """Make an ed25519 key for ``role`` and store its private half in ``keys`` (0600)."""
    private = Ed25519PrivateKey.generate()
    public = SSlibKey.from_crypto(private.public_key())
    passphrase = _passphrase() if role in OFFLINE_ROLES else None
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _make_keys_dir(keys)
    target = key_file(keys, role, public.keyid)
    atomic_write(target, pem)  # a temporary made by mkstemp: 0600 from its first byte
    os.chmod(target, 0o600)
    return CryptoSigner(private, public)


def load_signer(keys: Path, role: str, key: SSlibKey) -> CryptoSigner:
    """The signer for ``key`` of ``role`` from ``keys``.

    Raises:
        PublishError: the file is missing, unreadable, encrypted without a passphrase, or holds
            another key.
    """
    path = key_file(keys, role, key.keyid)
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise PublishError(
            f"the {role} key {key.keyid[:12]} is not in {keys} ({path.name}); "
            "pass --keys DIR where it is"
        ) from None
    except OSError as exc:
        raise PublishError(f"cannot read {path}: {exc.strerror or exc}") from exc
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o): chmod 600 it", path, mode)
    encrypted = b"ENCRYPTED" in pem.split(b"\n", 1)[0]
    passphrase = _passphrase() if encrypted else None
    if encrypted and passphrase is None:
        raise PublishError(
            f"the {role} key {path.name} is encrypted: set {PASSPHRASE_ENV} to its passphrase"
        )
    try:
        private = serialization.load_pem_private_key(pem, passphrase)
    except ValueError as exc:
        hint = "wrong passphrase in " + PASSPHRASE_ENV if encrypted else "not a PEM private key"
        raise PublishError(f"cannot load the {role} key {path}: {hint}") from exc
    except TypeError as exc:  # pragma: no cover - encrypted-ness was checked above
        raise PublishError(f"cannot load the {role} key {path}: {exc}") from exc
    try:
        return CryptoSigner(private, key)
    except ValueError as exc:  # KeyMismatchError, or a key of another type
        raise PublishError(f"{path} does not hold the {role} key {key.keyid[:12]}: {exc}") from exc


def load_signers(
    keys: Path, root: Root, role: str, *, required: bool = True
) -> list[CryptoSigner]:
    """Signers for every key that ``root`` lists for ``role`` and that is in ``keys``.

    Raises:
        PublishError: ``required`` and fewer keys than the role's threshold are here.
    """
    spec = root.roles[role]
    found: list[CryptoSigner] = []
    problems: list[str] = []
    for keyid in spec.keyids:
        key = root.keys[keyid]
        if not isinstance(key, SSlibKey):  # pragma: no cover - we only make SSlibKeys
            continue
        try:
            found.append(load_signer(keys, role, key))
        except PublishError as exc:
            problems.append(str(exc))
    if required and len(found) < spec.threshold:
        detail = problems[0] if problems else f"{len(found)} of {spec.threshold} keys"
        raise PublishError(f"cannot sign {role}: {detail}")
    return found


def check_keys_location(repo: Path, keys: Path) -> None:
    """Refuse a keys folder that a server of the repository could expose.

    Raises:
        PublishError: ``keys`` is inside ``REPO/metadata`` or ``REPO/targets``, or contains one.
    """
    keys_real = keys.resolve()
    for served in (repo / METADATA_DIR, repo / TARGETS_DIR):
        served_real = served.resolve()
        if keys_real == served_real or served_real in keys_real.parents:
            raise PublishError(
                f"the keys folder {keys} is inside the served folder {served}: private keys "
                "must never be published; choose a folder outside metadata/ and targets/"
            )
        if keys_real in served_real.parents:
            raise PublishError(
                f"the keys folder {keys} contains the served folder {served}: a server of it "
                "would publish the private keys; choose REPO/keys or a folder outside REPO"
            )


def retire_keys(keys: Path, role: str, keyids: Sequence[str], moment: datetime) -> list[Path]:
    """Move replaced private keys to ``keys/retired/`` (kept, never used again)."""
    moved = []
    retired_dir = keys / RETIRED_DIR
    for keyid in keyids:
        source = key_file(keys, role, keyid)
        if not source.is_file():
            continue
        _make_keys_dir(retired_dir)
        destination = retired_dir / f"{moment:%Y%m%dT%H%M%SZ}-{source.name}"
        os.rename(source, destination)
        moved.append(destination)
    if moved:
        fsync_tree(keys)
    return moved


__all__ = [
    "KEYS_DIR",
    "OFFLINE_ROLES",
    "PASSPHRASE_ENV",
    "RETIRED_DIR",
    "CryptoSigner",
    "check_keys_location",
    "key_file",
    "load_signer",
    "load_signers",
    "new_key",
    "retire_keys",
]
