"""Bundle directories: loading and validating them, writing them atomically, packing them.

:func:`load_bundle` validates everything a device relies on before a model is trusted (manifest,
labels, artifact sizes and sha256, samples); :func:`write_bundle` writes a bundle so that a failure
leaves nothing behind and an existing bundle is replaced in one atomic step (see
:func:`edge_runtime.fsutil.replace_directory`).

A ``.tar`` bundle is unpacked into a fresh ``edge-bundle-*`` directory in the temporary folder,
removed when the bundle is closed. The process holds an exclusive ``flock`` on that directory
while it uses it; the kernel drops the lock when the process ends, however it ends, so the next
:func:`load_bundle` of a ``.tar`` removes the directories that a killed process (SIGKILL, a power
cut) left behind and nobody holds any more.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edge_runtime.bundle.archive import check_plain_tar, extract_bundle_tar, write_bundle_tar
from edge_runtime.bundle.manifest import (
    LABELS_NAME,
    MANIFEST_NAME,
    MAX_LABELS_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SAMPLE_BYTES,
    SCHEMA_VERSION,
    BundleManifest,
    parse_manifest,
)
from edge_runtime.errors import BundleError, ModelError
from edge_runtime.fsutil import fsync_tree, replace_directory, write_file
from edge_runtime.inputfiles import (
    check_file_kind,
    describe,
    format_size,
    open_regular_file,
    read_limited,
)
from edge_runtime.labels import decode_labels

log = logging.getLogger(__name__)

#: name prefix of the directories ``.tar`` bundles are unpacked into
EXTRACT_PREFIX = "edge-bundle-"
#: an unlocked extraction directory younger than this may be one another process has just
#: made and not yet locked: it is left for a later sweep
STALE_AFTER_S = 60.0


def sha256_file(path: Path) -> str:
    """Hex sha256 of a regular file, read in chunks.

    Raises:
        OSError: the file cannot be read, or it is a FIFO or a device (NotAFileError).
    """
    digest = hashlib.sha256()
    with open_regular_file(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A validated bundle on disk. Use as a context manager when it came from a ``.tar``."""

    root: Path
    manifest: BundleManifest
    source: Path
    _tempdir: Path | None = field(default=None, repr=False)
    _lock: int | None = field(default=None, repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    def path_of(self, name: str) -> Path:
        """Absolute path of a member file."""
        return self.root / name

    def close(self) -> None:
        """Remove the unpacked copy of a ``.tar`` bundle (nothing to do for a directory).
        Safe to call twice."""
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_bundle(
    path: str | os.PathLike[str],
    *,
    verify_hashes: bool = True,
    extract_to: str | os.PathLike[str] | None = None,
) -> Bundle:
    """Load and validate a bundle directory or ``.tar``.

    A ``.tar`` is unpacked with an allow-list extractor into ``extract_to`` (a new or empty
    directory) or a fresh temporary directory that :meth:`Bundle.close` removes (see the module
    doc for what happens when the process is killed first). A ``.tar``'s artifacts are always
    checked against their sha256 while they are unpacked.

    Raises:
        BundleError: the path is not a bundle (a FIFO or a device is refused unopened; a
            compressed ``.tar`` is named as such), or the bundle is invalid, incomplete,
            tampered with (sha256 mismatch), or unsafe to unpack. Nothing is left behind on
            failure; messages about a ``.tar`` name the archive.
    """
    source = Path(path)
    try:
        info = check_file_kind(source)
    except FileNotFoundError:
        raise BundleError(f"no bundle at {source}: no such file or directory") from None
    except OSError as exc:
        raise BundleError(f"cannot open bundle {source}: {describe(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        return Bundle(
            root=source, manifest=validate_directory(source, verify_hashes), source=source
        )
    check_plain_tar(
        source, not_tar=f"{source} is neither a bundle directory nor an uncompressed .tar bundle"
    )

    lock: int | None = None
    if extract_to is None:
        target, lock = _new_extraction_directory()
    else:
        # Checked before anything is written: on failure this directory is emptied again, which
        # must never touch files that were there before.
        target = Path(extract_to)
        target.mkdir(parents=True, exist_ok=True)
        if any(target.iterdir()):
            raise BundleError(f"cannot unpack into {target}: the directory is not empty")
    try:
        extract_bundle_tar(source, target)
        # The extractor checked every artifact's sha256 as it wrote it.
        manifest = validate_directory(target, verify_hashes=False, where=source)
    except BaseException:
        if lock is not None:
            shutil.rmtree(target, ignore_errors=True)
            os.close(lock)
        else:
            _empty_directory(target)
        raise
    return Bundle(
        root=target,
        manifest=manifest,
        source=source,
        _tempdir=target if lock is not None else None,
        _lock=lock,
    )


def _new_extraction_directory() -> tuple[Path, int]:
    """A new ``edge-bundle-*`` directory in the temporary folder and a descriptor holding an
    exclusive lock on it (after removing the directories of processes that died)."""
    parent = Path(tempfile.gettempdir())
    remove_stale_extractions(parent)
    target = Path(tempfile.mkdtemp(prefix=EXTRACT_PREFIX, dir=parent))
    fd = os.open(target, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    try:
        _lock(fd)  # a fresh directory: nobody else holds it
    except OSError as exc:
        log.debug("cannot lock %s (left behind if this process is killed): %s", target, exc)
    return target, fd


def _lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting: True when taken, False when another
    process holds it.

    Raises:
        OSError: this file system cannot lock (the caller then cannot tell who holds it).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system: no locks, no sweeping
        raise OSError(errno.ENOTSUP, "no flock on this system") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def remove_stale_extractions(parent: Path, *, now: float | None = None) -> list[Path]:
    """Remove the ``edge-bundle-*`` directories in ``parent`` that this user owns, that nobody
    holds locked (their process has ended) and that are older than :data:`STALE_AFTER_S`
    (younger ones may not be locked yet). Returns those removed; problems are logged, never
    raised: this is housekeeping.
    """
    moment = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError as exc:
        log.debug("cannot list %s for stale bundle copies: %s", parent, exc)
        return removed
    for entry in entries:
        if not entry.name.startswith(EXTRACT_PREFIX):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            if moment - info.st_mtime < STALE_AFTER_S:
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
            try:
                if not _lock(fd):
                    continue  # a running process uses it
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
            finally:
                os.close(fd)
        except OSError as exc:
            log.debug("leaving %s: %s", entry.path, exc)
    if removed:
        log.info("removed %d unpacked bundle(s) left by ended processes", len(removed))
    return removed


def _empty_directory(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def validate_directory(
    root: Path, verify_hashes: bool = True, *, where: str | os.PathLike[str] | None = None
) -> BundleManifest:
    """The manifest of the bundle directory ``root`` once every file it names checks out.

    Files are read only when they are regular files of a sane size: the manifest and labels up
    to their caps, artifacts of exactly the manifest's size. ``where`` is what messages call the
    bundle (default ``root``; the ``.tar`` it was unpacked from).

    Raises:
        BundleError: no manifest, an invalid one, labels that differ from it, or a missing,
            resized or (with ``verify_hashes``) changed artifact, or a missing sample.
    """
    name = os.fspath(where) if where is not None else os.fspath(root)

    def member(path: str) -> str:
        return f"{name}:{path}" if where is not None else os.fspath(root / path)

    manifest_path = root / MANIFEST_NAME
    if not os.path.lexists(manifest_path):
        raise BundleError(f"{name} is not a bundle: it has no {MANIFEST_NAME}")
    manifest = parse_manifest(
        _read_member_file(manifest_path, MAX_MANIFEST_BYTES, member(MANIFEST_NAME)),
        where=member(MANIFEST_NAME),
    )

    labels_path = root / LABELS_NAME
    if not os.path.lexists(labels_path):
        raise BundleError(f"bundle {name} is missing {LABELS_NAME}")
    try:
        file_labels = decode_labels(
            _read_member_file(labels_path, MAX_LABELS_BYTES, member(LABELS_NAME)),
            member(LABELS_NAME),
        )
    except ModelError as exc:
        raise BundleError(str(exc)) from None
    if file_labels != manifest.labels:
        raise BundleError(
            f"{member(LABELS_NAME)} ({len(file_labels)} labels) does not match the manifest's "
            f"{len(manifest.labels)} labels"
        )

    for item in manifest.artifacts:
        size = _member_size(root / item.path, member(item.path))
        if size is None:
            raise BundleError(f"bundle {name} is missing artifact {item.path}")
        if size != item.bytes:
            raise BundleError(
                f"artifact {member(item.path)} is {size} bytes, the manifest says {item.bytes}: "
                "the file was changed or truncated"
            )
        if verify_hashes:
            try:
                digest = sha256_file(root / item.path)
            except OSError as exc:
                raise BundleError(f"cannot read {member(item.path)}: {describe(exc)}") from None
            if digest != item.sha256:
                raise BundleError(
                    f"artifact {member(item.path)} does not match its sha256 in the manifest: "
                    "the file was changed or corrupted"
                )
    for sample in manifest.samples:
        size = _member_size(root / sample.path, member(sample.path))
        if size is None:
            raise BundleError(f"bundle {name} is missing sample {sample.path}")
        if size > MAX_SAMPLE_BYTES:
            raise BundleError(
                f"sample {member(sample.path)} is larger than {format_size(MAX_SAMPLE_BYTES)}"
            )
    return manifest


def _read_member_file(path: Path, limit: int, where: str) -> bytes:
    try:
        return read_limited(path, limit)
    except OSError as exc:
        raise BundleError(f"cannot read {where}: {describe(exc)}") from None


def _member_size(path: Path, where: str) -> int | None:
    """The size of a bundle member that must be a regular file; None when it is missing."""
    try:
        return check_file_kind(path, directory_ok=False).st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"cannot read {where}: {describe(exc)}") from None


def write_bundle(
    dest: str | os.PathLike[str],
    manifest: Mapping[str, Any] | BundleManifest,
    files: Mapping[str, Path | bytes],
    *,
    force: bool = False,
) -> Bundle:
    """Write a bundle directory atomically and return it loaded.

    ``manifest`` is the manifest as a mapping (``sha256`` and ``bytes`` of artifacts may be left
    out: they are computed here) or a model. ``files`` maps every artifact and sample name to a
    source path or bytes; ``labels.txt`` and ``manifest.json`` are written from the manifest.
    Everything goes to a temporary directory beside ``dest``: each file is written and fsynced,
    then the directories, and the result is swapped with ``dest`` in one atomic step
    (``renameat2(RENAME_EXCHANGE)``, see :mod:`edge_runtime.fsutil`) before the parent directory
    is synced and the old bundle deleted. A failure or a crash at any point leaves ``dest``
    holding the old bundle or the new one, complete; never a half-written or a missing one.

    Raises:
        BundleError: ``dest`` holds a bundle and ``force`` is false, ``dest`` is something else
            than a bundle, the manifest is invalid, a file is missing or extra, or writing failed.
    """
    target = Path(dest)
    if target.exists():
        if not target.is_dir() or target.is_symlink():
            raise BundleError(f"{target} exists and is not a bundle directory")
        if (target / MANIFEST_NAME).exists():
            if not force:
                raise BundleError(f"{target} already holds a bundle; pass --force to replace it")
        elif any(target.iterdir()):
            raise BundleError(
                f"{target} is a non-empty directory that is not a bundle; choose another"
            )

    raw = (
        manifest.model_dump(mode="json", by_alias=True)
        if isinstance(manifest, BaseModel)
        else dict(manifest)
    )
    raw = json.loads(json.dumps(raw, default=str))  # deep copy, datetimes as text
    raw.setdefault("schema", SCHEMA_VERSION)
    raw.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    artifacts = raw.get("artifacts") or []
    samples = raw.get("samples") or []
    expected = {a.get("path") for a in artifacts if isinstance(a, dict)}
    expected |= {s.get("path") for s in samples if isinstance(s, dict)}
    missing = sorted(str(n) for n in expected - set(files))
    if missing:
        raise BundleError(f"no file given for bundle member {missing[0]}")
    extra = sorted(set(files) - expected)
    if extra:
        raise BundleError(f"file {extra[0]} is not named in the manifest")
    for name, source in files.items():
        if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
            raise BundleError(f"file for bundle member {name} does not exist: {source}")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    )
    try:
        for name, source in files.items():
            write_file(staging / name, source)
        for item in artifacts:
            written = staging / item["path"]
            item["sha256"] = sha256_file(written)
            item["bytes"] = written.stat().st_size
        model = parse_manifest(json.dumps(raw), where=f"manifest for {target}")
        write_file(staging / LABELS_NAME, ("\n".join(model.labels) + "\n").encode("utf-8"))
        write_file(staging / MANIFEST_NAME, model.to_json().encode("utf-8"))
        validate_directory(staging, verify_hashes=True)
        # Every file is synced; now their names, then the one step that publishes them all.
        fsync_tree(staging)
        retired = replace_directory(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise BundleError(f"cannot write bundle {target}: {exc}") from exc
        raise
    if retired is not None:
        # The old bundle, now under a hidden name; the new one is in place and durable already.
        shutil.rmtree(retired, ignore_errors=True)
    return load_bundle(target, verify_hashes=False)


def pack_bundle(
    bundle_dir: str | os.PathLike[str], tar_path: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Pack a valid bundle directory into a reproducible uncompressed ``.tar``, atomically.

    Members are sorted, owned by root and dated by the manifest's ``created``, so the same bundle
    packs to the same bytes.

    Raises:
        BundleError: the directory is not a valid bundle, or ``tar_path`` exists and ``force`` is
            false.
    """
    with load_bundle(bundle_dir) as bundle:
        return write_bundle_tar(bundle.root, bundle.manifest, tar_path, force=force)


__all__ = [
    "EXTRACT_PREFIX",
    "Bundle",
    "load_bundle",
    "pack_bundle",
    "remove_stale_extractions",
    "sha256_file",
    "validate_directory",
    "write_bundle",
]
