"""Publishing model bundles to devices through a TUF repository (python-tuf's Metadata API).

A repository is a folder::

    REPO/
      metadata/          served: N.root.json, root.json, N.targets.json, N.snapshot.json,
                         timestamp.json
      targets/           served: NAME/SHA256.NAME-VERSION.tar (hash-prefixed: consistent snapshots)
      keys/              NEVER served: ROLE-KEYID.pem private keys (mode 0600, folder 0700), or
                         wherever --keys put them; retired/ holds keys replaced by rotate-key
      repository.json    not served: expiry periods and where the keys are
      .lock              not served: one writer at a time

Only ``metadata/`` and ``targets/`` are meant for devices: any static HTTP server, CDN, object
store or USB stick serves them. Consistent snapshots are on, so every file but
``timestamp.json`` (and the ``root.json`` copy for provisioning) is written once under a name
that changes with its content: caches never serve a mix of old and new, and a device in the
middle of an update never sees a file change under it.

Every change writes its new files first and ``timestamp.json`` last, each atomically
(:mod:`edge_runtime.fsutil`): a crash leaves the previous published state intact (plus unused new
files), and a device only sees a new state once ``timestamp.json`` names it.

Keys are ed25519 (securesystemslib's ``CryptoSigner``), stored as PKCS#8 PEM. The offline roles'
keys (root, targets) are encrypted with the passphrase in ``EDGE_EXPORT_KEY_PASSPHRASE`` when that
variable is set as they are made; the online roles' keys (snapshot, timestamp) are never
encrypted, because ``repo refresh`` must sign with them from cron with nobody to type a passphrase.
See docs/updates.md for where each key should live.

Every function takes ``now`` (default: the current UTC time) so tests can sign metadata that is
already expired, and raises :class:`exporter.errors.PublishError` (one line) for bad input.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import http.server
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from devices import list_profiles
from edge_runtime.bundle import MANIFEST_NAME, load_bundle, pack_bundle, sha256_file
from edge_runtime.fsutil import (
    atomic_replace,
    atomic_write,
    fsync_directory,
    fsync_tree,
    write_file,
)
from edge_runtime.ota.policy import (
    CUSTOM_KEY,
    METADATA_DIR,
    TARGETS_DIR,
    Release,
    TargetFields,
    TargetFieldsError,
    read_target_fields,
)
from exporter.errors import PublishError

log = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("root", "targets", "snapshot", "timestamp")
#: default expiry per role, in days. Root is signed rarely with an offline key: a year. Targets
#: change at every publish; 90 days bounds how long a stolen targets key's old signature helps.
#: Snapshot and timestamp are signed by cron with online keys: their short life bounds a freeze
#: attack (an attacker replaying old metadata to keep devices on an old model) to one day.
DEFAULT_EXPIRES_DAYS: dict[str, float] = {
    "root": 365,
    "targets": 90,
    "snapshot": 30,
    "timestamp": 1,
}
#: roles whose keys stay offline (encrypted when a passphrase is given) and the online ones
OFFLINE_ROLES = ("root", "targets")
#: environment variable holding the passphrase of encrypted keys
PASSPHRASE_ENV = "EDGE_EXPORT_KEY_PASSPHRASE"
#: refresh re-signs snapshot and targets when less than this share of their period is left
RESIGN_SHARE_LEFT = 1 / 3
#: refresh warns about root this many days before it expires (or a third of its period)
ROOT_WARNING_DAYS = 30
CONFIG_NAME = "repository.json"
KEYS_DIR = "keys"
RETIRED_DIR = "retired"
LOCK_NAME = ".lock"
LOCK_TIMEOUT_S = 30.0
_CHANNEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
_PROFILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SERIALIZER = JSONSerializer(compact=False)


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class InitResult:
    """A new repository."""

    repo: Path
    keys: Path
    #: the file to provision devices with (pinned as their trust root)
    root_json: Path
    keyids: dict[str, list[str]]
    expires_days: dict[str, float]


@dataclass(frozen=True)
class PublishedTarget:
    """A bundle target as published."""

    path: str
    length: int
    sha256: str
    fields: TargetFields
    #: the metadata versions written
    versions: dict[str, int]

    def describe(self, channel: str) -> str:
        release = self.fields.channels[channel]
        profiles = ", ".join(self.fields.profiles) or "any"
        return (
            f"{self.fields.name} v{self.fields.version} on {channel} to {release.rollout}% of "
            f"devices (profiles: {profiles}); target {self.path}, {self.length} bytes"
        )


@dataclass(frozen=True)
class RoleStatus:
    """One role's metadata as published."""

    role: str
    version: int
    expires: str
    expires_in_days: float
    threshold: int
    keyids: list[str]
    #: how many of its private keys are in the keys folder
    keys_here: int
    signed: bool


@dataclass(frozen=True)
class TargetStatus:
    """One published bundle target."""

    path: str
    name: str
    version: int
    length: int
    sha256: str
    profiles: list[str]
    runtime: str
    channels: dict[str, dict[str, Any]]
    file_present: bool


@dataclass(frozen=True)
class RepositoryStatus:
    """What ``repo status`` shows."""

    repo: str
    consistent_snapshot: bool
    roles: list[RoleStatus]
    targets: list[TargetStatus]
    problems: list[str]

    def channels(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """channel -> model name -> its versions on that channel (newest first)."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for target in sorted(self.targets, key=lambda t: (t.name, -t.version)):
            for channel, release in target.channels.items():
                entry = {"version": target.version, **release}
                out.setdefault(channel, {}).setdefault(target.name, []).append(entry)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "consistent_snapshot": self.consistent_snapshot,
            "roles": {r.role: {k: v for k, v in asdict(r).items() if k != "role"} for r in
                      self.roles},
            "targets": [asdict(t) for t in self.targets],
            "channels": self.channels(),
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class RotationResult:
    """A role's keys replaced."""

    role: str
    old_keyids: list[str]
    new_keyids: list[str]
    root_version: int
    retired: list[Path]


@dataclass(frozen=True)
class RefreshResult:
    """What ``repo refresh`` re-signed."""

    resigned: dict[str, int]
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Keys


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


def _key_file(keys: Path, role: str, keyid: str) -> Path:
    return keys / f"{role}-{keyid}.pem"


def _new_key(keys: Path, role: str) -> CryptoSigner:
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
    target = _key_file(keys, role, public.keyid)
    atomic_write(target, pem)  # a temporary made by mkstemp: 0600 from its first byte
    os.chmod(target, 0o600)
    return CryptoSigner(private, public)


def _make_keys_dir(keys: Path) -> None:
    if not keys.exists():
        keys.mkdir(parents=True, mode=0o700)
        os.chmod(keys, 0o700)


def _load_signer(keys: Path, role: str, key: SSlibKey) -> CryptoSigner:
    """The signer for ``key`` of ``role`` from ``keys``.

    Raises:
        PublishError: the file is missing, unreadable, encrypted without a passphrase, or holds
            another key.
    """
    path = _key_file(keys, role, key.keyid)
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


def _check_keys_location(repo: Path, keys: Path) -> None:
    """Refuse a keys folder that a server of the repository could expose."""
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


# --------------------------------------------------------------------------------------------
# The repository on disk


def _utcnow(now: datetime | None) -> datetime:
    moment = now or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def _parse_days(raw: Mapping[str, float] | None) -> dict[str, float]:
    days = dict(DEFAULT_EXPIRES_DAYS)
    for role, value in (raw or {}).items():
        if role not in DEFAULT_EXPIRES_DAYS:
            raise PublishError(f"unknown role '{role}' (roles: {', '.join(ROLES)})")
        if not value > 0:
            raise PublishError(f"expiry of {role} must be a positive number of days, got {value}")
        days[role] = float(value)
    return days


class _Repository:
    """A repository folder: paths, settings, the published metadata, keys and signing."""

    def __init__(self, root: Path, keys: Path | None = None) -> None:
        self.root = root
        self.metadata = root / METADATA_DIR
        self.targets_dir = root / TARGETS_DIR
        config_path = root / CONFIG_NAME
        if not (self.metadata / "1.root.json").is_file() or not config_path.is_file():
            raise PublishError(
                f"no repository at {root}: run `edge-export repo init {root}` first"
            )
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            if config.get("format") != 1:
                raise ValueError(f"unknown format {config.get('format')!r}")
            self.expires_days = _parse_days(config.get("expires_days"))
            stored_keys = config.get("keys")
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise PublishError(f"{config_path} is damaged: {exc}") from exc
        if keys is not None:
            self.keys = keys
        elif stored_keys:
            self.keys = (root / stored_keys) if not Path(stored_keys).is_absolute() else Path(
                stored_keys
            )
        else:
            self.keys = root / KEYS_DIR
        _check_keys_location(root, self.keys)

    # -- reading --------------------------------------------------------------------------

    def _read(self, name: str) -> Metadata[Any]:
        path = self.metadata / name
        try:
            return Metadata.from_bytes(path.read_bytes())
        except FileNotFoundError:
            raise PublishError(
                f"the repository {self.root} is damaged: {METADATA_DIR}/{name} is missing"
            ) from None
        except (OSError, DeserializationError) as exc:
            raise PublishError(f"{path} is not valid TUF metadata: {exc}") from exc

    def root_md(self) -> Metadata[Root]:
        """The newest root (the highest N.root.json of an unbroken chain from 1)."""
        version = 1
        while (self.metadata / f"{version + 1}.root.json").is_file():
            version += 1
        return cast("Metadata[Root]", self._read(f"{version}.root.json"))

    def timestamp_md(self) -> Metadata[Timestamp]:
        return cast("Metadata[Timestamp]", self._read("timestamp.json"))

    def snapshot_md(self, timestamp: Metadata[Timestamp]) -> Metadata[Snapshot]:
        version = timestamp.signed.snapshot_meta.version
        return cast("Metadata[Snapshot]", self._read(f"{version}.snapshot.json"))

    def targets_md(self, snapshot: Metadata[Snapshot]) -> Metadata[Targets]:
        meta = snapshot.signed.meta.get("targets.json")
        if meta is None:
            raise PublishError(f"the repository {self.root} is damaged: snapshot lists no targets")
        return cast("Metadata[Targets]", self._read(f"{meta.version}.targets.json"))

    # -- signing --------------------------------------------------------------------------

    def signers(self, root: Root, role: str, *, required: bool = True) -> list[CryptoSigner]:
        """Signers for every key of ``role`` found in the keys folder.

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
                found.append(_load_signer(self.keys, role, key))
            except PublishError as exc:
                problems.append(str(exc))
        if required and len(found) < spec.threshold:
            detail = problems[0] if problems else f"{len(found)} of {spec.threshold} keys"
            raise PublishError(f"cannot sign {role}: {detail}")
        return found

    def sign(self, md: Metadata[Any], signers: Sequence[CryptoSigner]) -> None:
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)

    def bump(self, signed: Root | Targets | Snapshot | Timestamp, role: str, now: datetime) -> None:
        signed.version += 1
        signed.expires = now + timedelta(days=self.expires_days[role])

    def write(self, md: Metadata[Any], name: str) -> Path:
        path = self.metadata / name
        _write_public(path, md.to_bytes(_SERIALIZER))
        return path

    def write_root(self, md: Metadata[Root]) -> Path:
        """Write a root version and the ``root.json`` copy devices are provisioned with."""
        path = self.write(md, f"{md.signed.version}.root.json")
        self.write(md, "root.json")
        return path

    def commit(
        self,
        root: Root,
        timestamp: Metadata[Timestamp],
        snapshot: Metadata[Snapshot],
        targets: Metadata[Targets] | None,
        *,
        now: datetime,
        resign_snapshot: bool = False,
        signers_for: Mapping[str, Sequence[CryptoSigner]] | None = None,
    ) -> dict[str, int]:
        """Sign and write new versions: targets (when given), snapshot (when targets changed or
        asked) and always timestamp, in that order, timestamp last.

        ``signers_for``: the signers of a role instead of its keys in ``root`` (key rotation).
        Every key needed is loaded before anything is written.
        """
        chosen = signers_for or {}
        roles = (["targets"] if targets is not None else []) + (
            ["snapshot"] if targets is not None or resign_snapshot else []
        )
        signers = {
            role: list(chosen[role]) if role in chosen else self.signers(root, role)
            for role in [*roles, "timestamp"]
        }
        versions: dict[str, int] = {}
        if targets is not None:
            self.bump(targets.signed, "targets", now)
            self.sign(targets, signers["targets"])
            self.write(targets, f"{targets.signed.version}.targets.json")
            versions["targets"] = targets.signed.version
            snapshot.signed.meta["targets.json"] = MetaFile(version=targets.signed.version)
        if targets is not None or resign_snapshot:
            self.bump(snapshot.signed, "snapshot", now)
            self.sign(snapshot, signers["snapshot"])
            self.write(snapshot, f"{snapshot.signed.version}.snapshot.json")
            versions["snapshot"] = snapshot.signed.version
        self.bump(timestamp.signed, "timestamp", now)
        timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
        self.sign(timestamp, signers["timestamp"])
        self.write(timestamp, "timestamp.json")
        versions["timestamp"] = timestamp.signed.version
        return versions

    def add_target_file(self, target_path: str, tar: Path, sha256: str) -> Path:
        """Copy a bundle ``.tar`` to its hash-prefixed name under ``targets/`` (once)."""
        parent, _, base = target_path.rpartition("/")
        stored = self.targets_dir / parent / f"{sha256}.{base}"
        if not (stored.is_file() and sha256_file(stored) == sha256):
            _write_public(stored, tar)
        return stored


def _write_public(path: Path, source: bytes | Path) -> None:
    """Write a served file atomically, readable by a web server running as another user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        write_file(temp, source)
        os.chmod(temp, 0o644)  # mkstemp makes 0600
        atomic_replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise PublishError(f"cannot write {path}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _locked(repo: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the repository's write lock (a cron refresh and a publish must not interleave)."""
    lock_path = repo / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise PublishError(f"cannot lock {repo}: {exc.strerror or exc}") from exc
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise PublishError(f"cannot lock {repo}: {exc.strerror}") from exc
                if time.monotonic() > deadline:
                    raise PublishError(
                        f"the repository {repo} is busy: another edge-export command has held "
                        f"its lock for {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def _open(repo: str | os.PathLike[str], keys: str | os.PathLike[str] | None) -> _Repository:
    return _Repository(Path(repo), Path(keys) if keys is not None else None)


# --------------------------------------------------------------------------------------------
# init


def init_repository(
    repo: str | os.PathLike[str],
    *,
    keys: str | os.PathLike[str] | None = None,
    expires_days: Mapping[str, float] | None = None,
    thresholds: Mapping[str, int] | None = None,
    now: datetime | None = None,
) -> InitResult:
    """Create a repository: keys for the four roles, and their first signed metadata.

    ``thresholds``: signatures each role needs (default 1); that many keys are made for it.
    ``keys``: where the private keys go (default ``REPO/keys``); never inside ``metadata/`` or
    ``targets/``. Everything inside ``REPO`` appears at once (built beside it, then renamed).

    Raises:
        PublishError: ``repo`` is not empty, the keys folder would be served, or an expiry or
            threshold is invalid.
    """
    root_dir = Path(repo)
    moment = _utcnow(now)
    days = _parse_days(expires_days)
    counts = {role: 1 for role in ROLES}
    for role, value in (thresholds or {}).items():
        if role not in counts:
            raise PublishError(f"unknown role '{role}' (roles: {', '.join(ROLES)})")
        if not isinstance(value, int) or not 1 <= value <= 9:
            raise PublishError(f"threshold of {role} must be 1..9, got {value}")
        counts[role] = value
    if root_dir.exists() and (not root_dir.is_dir() or any(root_dir.iterdir())):
        what = "a repository" if (root_dir / CONFIG_NAME).exists() else "files"
        raise PublishError(f"{root_dir} already holds {what}; choose a new or empty folder")
    keys_dir = Path(keys) if keys is not None else root_dir / KEYS_DIR
    _check_keys_location(root_dir, keys_dir)
    keys_inside = keys_dir.resolve() == (root_dir / KEYS_DIR).resolve()

    root_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{root_dir.name}.", suffix=".partial", dir=root_dir.parent)
    )
    try:
        stage_keys = staging / KEYS_DIR if keys_inside else keys_dir
        signers = {role: [_new_key(stage_keys, role) for _ in range(counts[role])]
                   for role in ROLES}
        expiry = {role: moment + timedelta(days=days[role]) for role in ROLES}
        root = Root(expires=expiry["root"], consistent_snapshot=True)
        for role in ROLES:
            root.roles[role] = Role([], counts[role])
            for signer in signers[role]:
                root.add_key(signer.public_key, role)
        targets = Targets(expires=expiry["targets"])
        snapshot = Snapshot(expires=expiry["snapshot"])
        snapshot.meta["targets.json"] = MetaFile(version=targets.version)
        timestamp = Timestamp(expires=expiry["timestamp"])
        timestamp.snapshot_meta = MetaFile(version=snapshot.version)

        metadata = staging / METADATA_DIR
        (staging / TARGETS_DIR).mkdir()
        files: dict[str, Metadata[Any]] = {
            "1.root.json": Metadata(root),
            "1.targets.json": Metadata(targets),
            "1.snapshot.json": Metadata(snapshot),
            "timestamp.json": Metadata(timestamp),
        }
        for (name, md), role in zip(files.items(), ROLES):
            for signer in signers[role]:
                md.sign(signer, append=True)
            write_file(metadata / name, md.to_bytes(_SERIALIZER))
        write_file(metadata / "root.json", (metadata / "1.root.json").read_bytes())
        stored_keys = None if keys_inside else str(keys_dir.resolve())
        config = {"format": 1, "expires_days": days, "keys": stored_keys}
        write_file(staging / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
        fsync_tree(staging)
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; a web server must reach metadata/
        if root_dir.exists():
            root_dir.rmdir()  # empty, checked above
        os.rename(staging, root_dir)
        fsync_directory(root_dir.parent)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise PublishError(f"cannot create the repository {root_dir}: {exc}") from exc
        raise
    return InitResult(
        repo=root_dir,
        keys=root_dir / KEYS_DIR if keys_inside else keys_dir,
        root_json=root_dir / METADATA_DIR / "root.json",
        keyids={role: [s.public_key.keyid for s in signers[role]] for role in ROLES},
        expires_days=days,
    )


# --------------------------------------------------------------------------------------------
# publish and rollout


def target_path_for(name: str, version: int) -> str:
    """The TUF target path of a bundle: ``NAME/NAME-VERSION.tar``."""
    return f"{name}/{name}-{version}.tar"


def _bundle_fields(target: TargetFile) -> TargetFields:
    try:
        return read_target_fields(target.custom, where=f"target {target.path}")
    except TargetFieldsError as exc:
        raise PublishError(str(exc)) from exc


def _newest_on(targets: Targets, name: str, channel: str) -> int | None:
    versions = []
    for target in targets.targets.values():
        if not isinstance(target.custom, dict) or CUSTOM_KEY not in target.custom:
            continue
        fields = _bundle_fields(target)
        if fields.name == name and channel in fields.channels:
            versions.append(fields.version)
    return max(versions, default=None)


def _check_profiles(
    profiles: Sequence[str], allowed: Sequence[str], *, custom_profiles: bool
) -> None:
    shipped = set(list_profiles())
    for profile in profiles:
        if not _PROFILE.match(profile):
            raise PublishError(f"'{profile}' is not a device profile name")
        if profile not in shipped and not custom_profiles:
            raise PublishError(
                f"unknown device profile '{profile}' (shipped: {', '.join(sorted(shipped))}); "
                "pass --custom-profiles for devices with a profile file of their own"
            )
    if allowed and not profiles:
        raise PublishError(
            f"the bundle is made for the profiles {', '.join(allowed)}: a target for any device "
            "would be downloaded and then refused by the others"
        )
    outside = [p for p in profiles if allowed and p not in allowed]
    if outside:
        raise PublishError(
            f"the bundle's compatible.profiles ({', '.join(allowed)}) does not include "
            f"{', '.join(outside)}: devices would download it and then refuse it"
        )


def publish_bundle(
    repo: str | os.PathLike[str],
    bundle: str | os.PathLike[str],
    *,
    channel: str,
    rollout: int = 100,
    profiles: Sequence[str] | None = None,
    custom_profiles: bool = False,
    keys: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
) -> PublishedTarget:
    """Add a bundle (directory or ``.tar``) as a target on ``channel`` and re-sign.

    The bundle is validated (manifest, labels, every artifact's sha256) and packed as a
    reproducible ``.tar``, so a directory and its ``.tar`` publish the same bytes. ``profiles``
    defaults to the manifest's ``compatible.profiles`` (empty: any device). A version already
    published on another channel is added to this one (the same bytes only).

    Raises:
        PublishError: a bad channel, rollout or profile, or a version not above the newest of
            this model on this channel, or different bytes under a published version.
        BundleError: the bundle is invalid.
    """
    moment = _utcnow(now)
    if not _CHANNEL.match(channel):
        raise PublishError(
            f"channel '{channel}' must be lower-case letters, digits, '.', '_' or '-' "
            "(e.g. stable, beta)"
        )
    if isinstance(rollout, bool) or not isinstance(rollout, int) or not 1 <= rollout <= 100:
        raise PublishError(f"rollout must be a whole percent 1..100, got {rollout}")
    repository = _open(repo, keys)

    with contextlib.ExitStack() as stack:
        loaded = stack.enter_context(load_bundle(bundle))
        manifest = loaded.manifest
        chosen = list(profiles) if profiles is not None else list(manifest.compatible.profiles)
        _check_profiles(chosen, manifest.compatible.profiles, custom_profiles=custom_profiles)
        staging = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix=".publish-", dir=repository.root)))
        tar = pack_bundle(loaded.root, staging / "bundle.tar")
        sha256 = sha256_file(tar)
        manifest_sha = sha256_file(loaded.root / MANIFEST_NAME)
        path = target_path_for(manifest.name, manifest.version)

        with _locked(repository.root):
            root = repository.root_md().signed
            timestamp = repository.timestamp_md()
            snapshot = repository.snapshot_md(timestamp)
            targets = repository.targets_md(snapshot)
            label = f"{manifest.name} v{manifest.version}"
            existing = targets.signed.targets.get(path)
            if existing is not None:
                fields = _bundle_fields(existing)
                if existing.hashes.get("sha256") != sha256:
                    raise PublishError(
                        f"{label} is already published with other contents (sha256 "
                        f"{existing.hashes.get('sha256', '?')[:12]}, this bundle {sha256[:12]}): "
                        "a version number names one bundle; export it as a new version"
                    )
                if channel in fields.channels:
                    raise PublishError(
                        f"{label} is already on {channel}; change its rollout with "
                        f"`edge-export repo rollout {repository.root} {manifest.name} "
                        f"{manifest.version} PERCENT --channel {channel}`"
                    )
                if profiles is not None and tuple(chosen) != fields.profiles:
                    raise PublishError(
                        f"{label} is published for the profiles "
                        f"{', '.join(fields.profiles) or 'any'}; one version has one profile "
                        "list on every channel"
                    )
            newest = _newest_on(targets.signed, manifest.name, channel)
            if newest is not None and manifest.version <= newest:
                raise PublishError(
                    f"{label} is not newer than v{newest}, the newest {manifest.name} on "
                    f"{channel}: versions on a channel only grow"
                )
            release = Release(rollout=rollout, published=moment)
            if existing is not None:
                fields = _bundle_fields(existing)
                fields = fields.model_copy(
                    update={"channels": {**fields.channels, channel: release}}
                )
            else:
                fields = TargetFields(
                    name=manifest.name,
                    version=manifest.version,
                    channels={channel: release},
                    profiles=tuple(chosen),
                    runtime=manifest.compatible.runtime,
                    manifest_sha256=manifest_sha,
                    created=manifest.created,
                )
            others = existing.custom if existing is not None else None
            info = TargetFile(
                length=tar.stat().st_size,
                hashes={"sha256": sha256},
                path=path,
                unrecognized_fields={"custom": {**(others or {}), **fields.to_custom()}},
            )
            repository.add_target_file(path, tar, sha256)
            targets.signed.targets[path] = info
            versions = repository.commit(root, timestamp, snapshot, targets, now=moment)
    return PublishedTarget(path, info.length, sha256, fields, versions)


def set_rollout(
    repo: str | os.PathLike[str],
    name: str,
    version: int,
    percent: int,
    *,
    channel: str | None = None,
    keys: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
) -> PublishedTarget:
    """Change the rollout percent of a published version on one of its channels, and re-sign.

    ``channel`` may be left out when the version is on one channel only. Lowering a rollout stops
    further devices from taking the version; devices that took it keep it.

    Raises:
        PublishError: no such version or channel, or a percent outside 1..100.
    """
    moment = _utcnow(now)
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        raise PublishError(f"rollout must be a whole percent 1..100, got {percent}")
    repository = _open(repo, keys)
    path = target_path_for(name, version)
    with _locked(repository.root):
        root = repository.root_md().signed
        timestamp = repository.timestamp_md()
        snapshot = repository.snapshot_md(timestamp)
        targets = repository.targets_md(snapshot)
        existing = targets.signed.targets.get(path)
        if existing is None:
            raise PublishError(f"{name} v{version} is not published in {repository.root}")
        fields = _bundle_fields(existing)
        if channel is None:
            if len(fields.channels) > 1:
                raise PublishError(
                    f"{name} v{version} is on {', '.join(sorted(fields.channels))}: "
                    "say which with --channel"
                )
            channel = next(iter(fields.channels))
        if channel not in fields.channels:
            raise PublishError(
                f"{name} v{version} is not on {channel} (it is on "
                f"{', '.join(sorted(fields.channels))})"
            )
        release = fields.channels[channel].model_copy(update={"rollout": percent})
        fields = fields.model_copy(update={"channels": {**fields.channels, channel: release}})
        existing.unrecognized_fields["custom"] = {
            **(existing.custom or {}),
            **fields.to_custom(),
        }
        versions = repository.commit(root, timestamp, snapshot, targets, now=moment)
    sha256 = existing.hashes.get("sha256", "")
    return PublishedTarget(path, existing.length, sha256, fields, versions)


# --------------------------------------------------------------------------------------------
# status


def repository_status(
    repo: str | os.PathLike[str],
    *,
    keys: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
) -> RepositoryStatus:
    """Roles (version, expiry, threshold, key ids, signatures), targets and channels.

    ``problems`` lists what devices would refuse: expired or badly signed metadata, or a target
    file that is missing or of the wrong size.

    Raises:
        PublishError: no repository at ``repo``, or its metadata cannot be read.
    """
    moment = _utcnow(now)
    repository = _open(repo, keys)
    root_md = repository.root_md()
    root = root_md.signed
    timestamp = repository.timestamp_md()
    snapshot = repository.snapshot_md(timestamp)
    targets = repository.targets_md(snapshot)
    problems: list[str] = []
    roles: list[RoleStatus] = []
    for role, md in (("root", root_md), ("targets", targets), ("snapshot", snapshot),
                     ("timestamp", timestamp)):
        spec = root.roles[role]
        try:
            root.verify_delegate(role, md.signed_bytes, md.signatures)
            signed = True
        except UnsignedMetadataError:
            signed = False
            problems.append(f"{role} v{md.signed.version} is not signed by its keys in root")
        left = (md.signed.expires - moment).total_seconds() / 86400
        if left <= 0:
            fix = " --all" if role == "root" else ""
            problems.append(
                f"{role} v{md.signed.version} expired {md.signed.expires:%Y-%m-%d %H:%M} UTC: "
                f"run `edge-export repo refresh {repository.root}{fix}`"
            )
        here = sum(
            _key_file(repository.keys, role, keyid).is_file() for keyid in spec.keyids
        )
        roles.append(
            RoleStatus(
                role=role,
                version=md.signed.version,
                expires=md.signed.expires.isoformat(),
                expires_in_days=round(left, 2),
                threshold=spec.threshold,
                keyids=list(spec.keyids),
                keys_here=here,
                signed=signed,
            )
        )
    rows: list[TargetStatus] = []
    for path, target in sorted(targets.signed.targets.items()):
        try:
            fields = read_target_fields(target.custom, where=f"target {path}")
        except TargetFieldsError as exc:
            problems.append(str(exc))
            continue
        sha256 = target.hashes.get("sha256", "")
        parent, _, base = path.rpartition("/")
        stored = repository.targets_dir / parent / f"{sha256}.{base}"
        present = stored.is_file() and stored.stat().st_size == target.length
        if not present:
            problems.append(f"target file {stored} is missing or not {target.length} bytes")
        rows.append(
            TargetStatus(
                path=path,
                name=fields.name,
                version=fields.version,
                length=target.length,
                sha256=sha256,
                profiles=list(fields.profiles),
                runtime=fields.runtime,
                channels={
                    c: r.model_dump(mode="json", exclude_none=True)
                    for c, r in sorted(fields.channels.items())
                },
                file_present=present,
            )
        )
    return RepositoryStatus(
        repo=str(repository.root),
        consistent_snapshot=bool(root.consistent_snapshot),
        roles=roles,
        targets=rows,
        problems=problems,
    )


# --------------------------------------------------------------------------------------------
# rotate-key and refresh


def _retire(repository: _Repository, role: str, keyids: Sequence[str], moment: datetime) -> list[
    Path
]:
    """Move replaced private keys to ``keys/retired/`` (kept, never used again)."""
    moved = []
    retired_dir = repository.keys / RETIRED_DIR
    for keyid in keyids:
        source = _key_file(repository.keys, role, keyid)
        if not source.is_file():
            continue
        _make_keys_dir(retired_dir)
        destination = retired_dir / f"{moment:%Y%m%dT%H%M%SZ}-{source.name}"
        os.rename(source, destination)
        moved.append(destination)
    if moved:
        fsync_tree(repository.keys)
    return moved


def rotate_key(
    repo: str | os.PathLike[str],
    role: str,
    *,
    keys: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
) -> RotationResult:
    """Replace every key of ``role`` with a new one, in a new root version.

    The new root is signed by the current root keys (and, for root itself, by the new ones
    too), so devices verify the chain from the root they trust. For targets, snapshot and
    timestamp, the role's metadata is re-signed with the new key (and the old one, when it is
    here, so it verifies under the old root and the new one alike) before the new root is
    written. The old private keys move to ``keys/retired/``.

    Raises:
        PublishError: an unknown role, or the root keys (always needed) are not here.
    """
    if role not in ROLES:
        raise PublishError(f"unknown role '{role}' (roles: {', '.join(ROLES)})")
    moment = _utcnow(now)
    repository = _open(repo, keys)
    with _locked(repository.root):
        root_md = repository.root_md()
        root_signers = repository.signers(root_md.signed, "root")
        old_keyids = list(root_md.signed.roles[role].keyids)
        count = max(len(old_keyids), root_md.signed.roles[role].threshold)
        old_signers = repository.signers(root_md.signed, role, required=False)
        new_signers = [_new_key(repository.keys, role) for _ in range(count)]

        new_root_md = copy.deepcopy(root_md)
        new_root = new_root_md.signed
        for keyid in old_keyids:
            new_root.revoke_key(keyid, role)
        for signer in new_signers:
            new_root.add_key(signer.public_key, role)
        repository.bump(new_root, "root", moment)

        if role != "root":
            # Signed by old and new keys: valid under the root devices have and the new one.
            timestamp = repository.timestamp_md()
            snapshot = repository.snapshot_md(timestamp)
            targets = repository.targets_md(snapshot) if role == "targets" else None
            repository.commit(
                root_md.signed,
                timestamp,
                snapshot,
                targets,
                now=moment,
                resign_snapshot=role == "snapshot",
                signers_for={role: [*new_signers, *old_signers]},
            )
            repository.sign(new_root_md, root_signers)
        else:
            repository.sign(new_root_md, root_signers + new_signers)
        repository.write_root(new_root_md)
        retired = _retire(repository, role, old_keyids, moment)
    return RotationResult(
        role=role,
        old_keyids=old_keyids,
        new_keyids=[s.public_key.keyid for s in new_signers],
        root_version=new_root.version,
        retired=retired,
    )


def refresh_repository(
    repo: str | os.PathLike[str],
    *,
    keys: str | os.PathLike[str] | None = None,
    all_roles: bool = False,
    now: datetime | None = None,
) -> RefreshResult:
    """Re-sign what is close to expiry; meant for cron.

    Timestamp is always re-signed (new version, new expiry). Snapshot and targets are re-signed
    when less than a third of their period is left (or with ``all_roles``); root only with
    ``all_roles`` (it needs the offline root key), and a warning says when it is due. Run it
    several times per timestamp period (e.g. every 6 hours for the default one day).

    Raises:
        PublishError: a key that is needed is not here; what could be signed was signed and
            written first, and the message says what is left.
    """
    moment = _utcnow(now)
    repository = _open(repo, keys)
    warnings: list[str] = []
    resigned: dict[str, int] = {}
    with _locked(repository.root):
        root_md = repository.root_md()
        root = root_md.signed
        timestamp = repository.timestamp_md()
        snapshot = repository.snapshot_md(timestamp)
        targets = repository.targets_md(snapshot)

        def due(role: str, md: Metadata[Any]) -> bool:
            left = md.signed.expires - moment
            return all_roles or left < timedelta(
                days=repository.expires_days[role] * RESIGN_SHARE_LEFT
            )

        root_signers = repository.signers(root, "root") if all_roles else []
        failure = None
        resign_targets = due("targets", targets)
        if resign_targets:
            try:
                repository.signers(root, "targets")
            except PublishError as exc:
                days_left = (targets.signed.expires - moment).total_seconds() / 86400
                failure = f"targets expires in {days_left:.1f} days and was not re-signed: {exc}"
                resign_targets = False
        resigned.update(
            repository.commit(
                root,
                timestamp,
                snapshot,
                targets if resign_targets else None,
                now=moment,
                resign_snapshot=due("snapshot", snapshot),
            )
        )
        if all_roles:
            repository.bump(root, "root", moment)
            repository.sign(root_md, root_signers)
            repository.write_root(root_md)
            resigned["root"] = root.version
        else:
            root_left = root.expires - moment
            warn_at = min(ROOT_WARNING_DAYS, repository.expires_days["root"] * RESIGN_SHARE_LEFT)
            if root_left < timedelta(days=warn_at):
                warnings.append(
                    f"root expires in {root_left.total_seconds() / 86400:.1f} days: run "
                    f"`edge-export repo refresh {repository.root} --all` with the root key"
                )
    if failure:
        done = ", ".join(f"{role} v{v}" for role, v in resigned.items())
        raise PublishError(f"re-signed {done}; but {failure}")
    return RefreshResult(resigned=resigned, warnings=warnings)


# --------------------------------------------------------------------------------------------
# serve


class _RepositoryRequestHandler(http.server.SimpleHTTPRequestHandler):
    """Static files under ``metadata/`` and ``targets/`` only: never keys, never listings."""

    server_version = "edge-export-serve"
    quiet = False
    _status = 200

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def translate_path(self, path: str) -> str:
        resolved = Path(super().translate_path(path))
        base = Path(self.directory).resolve()
        real = resolved.resolve()
        for served in (base / METADATA_DIR, base / TARGETS_DIR):
            if served in real.parents and real.is_file():
                return str(real)
        return str(base / ".not-served")  # answered 404 by the caller

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404, "No listings")
        return None

    def end_headers(self) -> None:
        # Versioned and hash-prefixed files never change; timestamp.json and root.json do, and
        # a missing N.root.json is how a device learns there is no newer root: never cache it.
        name = self.path.rsplit("/", 1)[-1].split("?", 1)[0]
        if self._status >= 400:
            self.send_header("Cache-Control", "no-store")
        elif name in ("timestamp.json", "root.json"):
            self.send_header("Cache-Control", "no-cache")
        else:
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)


def make_server(
    repo: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000, *, quiet: bool = False
) -> http.server.ThreadingHTTPServer:
    """An HTTP server of ``REPO/metadata`` and ``REPO/targets`` (port 0: a free port).

    Raises:
        PublishError: no repository at ``repo``, or the address cannot be bound.
    """
    root = Path(repo)
    if not (root / METADATA_DIR / "1.root.json").is_file():
        raise PublishError(f"no repository at {root}: run `edge-export repo init {root}` first")
    handler = type(
        "RepositoryRequestHandler",
        (_RepositoryRequestHandler,),
        {"quiet": quiet},
    )

    def factory(*args: Any, **kwargs: Any) -> http.server.BaseHTTPRequestHandler:
        return handler(*args, directory=str(root.resolve()), **kwargs)

    try:
        return http.server.ThreadingHTTPServer((host, port), factory)
    except OSError as exc:
        raise PublishError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def server_url(server: http.server.ThreadingHTTPServer) -> str:
    """The base URL of a server from :func:`make_server`."""
    host, port = server.server_address[:2]
    text = host.decode() if isinstance(host, bytes) else str(host)
    shown = f"[{text}]" if ":" in text else text
    return f"http://{shown}:{port}/"


def serve(
    repo: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_requests: int | None = None,
    quiet: bool = False,
    announce: Callable[[str], None] = print,
) -> int:
    """Serve the repository until interrupted (or for ``max_requests`` requests).

    Raises:
        PublishError: no repository, or the address cannot be bound.
    """
    with make_server(repo, host, port, quiet=quiet) as server:
        announce(server_url(server))
        try:
            if max_requests is None:
                server.serve_forever()
            else:
                for _ in range(max_requests):
                    server.handle_request()
        except KeyboardInterrupt:
            pass
    return 0


__all__ = [
    "DEFAULT_EXPIRES_DAYS",
    "PASSPHRASE_ENV",
    "ROLES",
    "InitResult",
    "PublishedTarget",
    "RefreshResult",
    "RepositoryStatus",
    "RotationResult",
    "init_repository",
    "make_server",
    "publish_bundle",
    "refresh_repository",
    "repository_status",
    "rotate_key",
    "serve",
    "server_url",
    "set_rollout",
    "target_path_for",
]
