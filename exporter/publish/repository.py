"""The repository on disk: its settings, the published metadata, signing and writing new versions.

:class:`Repository` reads ``repository.json`` and the newest metadata of each role, and writes
new versions the way devices need them: every served file atomically and readable by a web
server running as another user, the new files first and ``timestamp.json`` last, so a device
only sees a new state once it is complete. :meth:`Repository.locked` keeps writers (a cron
refresh, a publish) from interleaving.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple, cast

from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from edge_runtime.bundle import sha256_file
from edge_runtime.fsutil import atomic_replace, write_file
from edge_runtime.ota.policy import METADATA_DIR, TARGETS_DIR
from exporter.errors import PublishError
from exporter.publish.keys import KEYS_DIR, CryptoSigner, check_keys_location, load_signers

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
CONFIG_NAME = "repository.json"
#: version of the ``repository.json`` format (written by :func:`encode_config`)
CONFIG_FORMAT = 1
LOCK_NAME = ".lock"
LOCK_TIMEOUT_S = 30.0
SERIALIZER = JSONSerializer(compact=False)


def utc_now(now: datetime | None) -> datetime:
    """``now`` (default: the current time) in UTC, to the second, as metadata stores it."""
    moment = now or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def check_role(role: str) -> None:
    """Refuse a name that is not one of the four top-level roles.

    Raises:
        PublishError: ``role`` is not in :data:`ROLES`.
    """
    if role not in ROLES:
        raise PublishError(f"unknown role '{role}' (roles: {', '.join(ROLES)})")


def parse_expires_days(raw: Mapping[str, float] | None) -> dict[str, float]:
    """The expiry period of every role: the defaults, overridden by ``raw``.

    Raises:
        PublishError: an unknown role, or a period that is not a positive number of days.
    """
    days = dict(DEFAULT_EXPIRES_DAYS)
    for role, value in (raw or {}).items():
        check_role(role)
        if not value > 0:
            raise PublishError(f"expiry of {role} must be a positive number of days, got {value}")
        days[role] = float(value)
    return days


def encode_config(expires_days: Mapping[str, float], keys: str | None) -> bytes:
    """The ``repository.json`` of a new repository (read back by :class:`Repository`).

    ``keys``: the absolute keys folder, or ``None`` for ``REPO/keys``.
    """
    config = {"format": CONFIG_FORMAT, "expires_days": dict(expires_days), "keys": keys}
    return (json.dumps(config, indent=2) + "\n").encode()


def no_repository(root: Path) -> PublishError:
    """The error for a folder that holds no repository, saying how to make one."""
    return PublishError(f"no repository at {root}: run `edge-export repo init {root}` first")


class PublishedMetadata(NamedTuple):
    """What devices see now: the newest root and the chain timestamp -> snapshot -> targets."""

    root: Metadata[Root]
    timestamp: Metadata[Timestamp]
    snapshot: Metadata[Snapshot]
    targets: Metadata[Targets]


class Repository:
    """A repository folder: paths, settings, the published metadata, keys and signing.

    ``keys``: the private keys' folder (default: the one ``repository.json`` names, else
    ``REPO/keys``).

    Raises:
        PublishError: no repository at ``root`` (``repository.json`` and ``1.root.json``), a
            damaged ``repository.json``, or a keys folder that a server of it would expose.
    """

    def __init__(
        self, root: str | os.PathLike[str], keys: str | os.PathLike[str] | None = None
    ) -> None:
        root = Path(root)
        self.root = root
        self.metadata = root / METADATA_DIR
        self.targets_dir = root / TARGETS_DIR
        config_path = root / CONFIG_NAME
        if not (self.metadata / "1.root.json").is_file() or not config_path.is_file():
            raise no_repository(root)
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            if config.get("format") != CONFIG_FORMAT:
                raise ValueError(f"unknown format {config.get('format')!r}")
            self.expires_days = parse_expires_days(config.get("expires_days"))
            stored_keys = config.get("keys")
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise PublishError(f"{config_path} is damaged: {exc}") from exc
        if keys is not None:
            self.keys = Path(keys)
        elif stored_keys:
            self.keys = (root / stored_keys) if not Path(stored_keys).is_absolute() else Path(
                stored_keys
            )
        else:
            self.keys = root / KEYS_DIR
        check_keys_location(root, self.keys)

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

    def published(self) -> PublishedMetadata:
        """The metadata devices see now, each role read as the chain names it.

        Raises:
            PublishError: a file is missing or is not valid TUF metadata.
        """
        timestamp = self.timestamp_md()
        snapshot = self.snapshot_md(timestamp)
        return PublishedMetadata(self.root_md(), timestamp, snapshot, self.targets_md(snapshot))

    def target_file(self, target_path: str, sha256: str) -> Path:
        """Where the target ``NAME/NAME-VERSION.tar`` of that sha256 is stored: consistent
        snapshots prefix its file name with the hash (``NAME/SHA256.NAME-VERSION.tar``)."""
        parent, _, base = target_path.rpartition("/")
        return self.targets_dir / parent / f"{sha256}.{base}"

    # -- signing --------------------------------------------------------------------------

    def signers(self, root: Root, role: str, *, required: bool = True) -> list[CryptoSigner]:
        """Signers for every key of ``role`` found in the keys folder.

        Raises:
            PublishError: ``required`` and fewer keys than the role's threshold are here.
        """
        return load_signers(self.keys, root, role, required=required)

    def sign(self, md: Metadata[Any], signers: Sequence[CryptoSigner]) -> None:
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)

    def bump(self, signed: Root | Targets | Snapshot | Timestamp, role: str, now: datetime) -> None:
        signed.version += 1
        signed.expires = now + timedelta(days=self.expires_days[role])

    def write(self, md: Metadata[Any], name: str) -> Path:
        path = self.metadata / name
        _write_public(path, md.to_bytes(SERIALIZER))
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

        Raises:
            PublishError: a key that is needed is not here, or a file cannot be written.
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
        stored = self.target_file(target_path, sha256)
        if not (stored.is_file() and sha256_file(stored) == sha256):
            _write_public(stored, tar)
        return stored

    # -- one writer at a time -------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the repository's write lock (a cron refresh and a publish must not interleave).

        Raises:
            PublishError: another command held the lock for ``timeout_s``, or it cannot be
                taken.
        """
        lock_path = self.root / LOCK_NAME
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PublishError(f"cannot lock {self.root}: {exc.strerror or exc}") from exc
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise PublishError(f"cannot lock {self.root}: {exc.strerror}") from exc
                    if time.monotonic() > deadline:
                        raise PublishError(
                            f"the repository {self.root} is busy: another edge-export command "
                            f"has held its lock for {timeout_s:.0f} s"
                        ) from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)


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


__all__ = [
    "CONFIG_FORMAT",
    "CONFIG_NAME",
    "DEFAULT_EXPIRES_DAYS",
    "LOCK_TIMEOUT_S",
    "ROLES",
    "SERIALIZER",
    "PublishedMetadata",
    "Repository",
    "check_role",
    "encode_config",
    "no_repository",
    "parse_expires_days",
    "utc_now",
]
