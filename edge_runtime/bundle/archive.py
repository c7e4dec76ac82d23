"""Bundle ``.tar`` files: unpacking with an allow-list, and packing reproducibly.

A ``.tar`` may come from the network: :func:`extract_bundle_tar` writes only regular files whose
names the archive's own manifest expects, each of the size the manifest gives it, and refuses
links, devices, sparse files, ``..`` names, tar bombs and damaged archives before anything is
written. Members are streamed to disk in chunks and artifacts hashed on the way, so memory stays
small whatever the archive holds and the sha256 check needs no second read.
:func:`write_bundle_tar` packs a bundle directory the caller has validated (see
:func:`edge_runtime.bundle.pack_bundle`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shlex
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from edge_runtime.bundle.manifest import (
    LABELS_NAME,
    MANIFEST_NAME,
    MAX_LABELS_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SAMPLE_BYTES,
    BundleManifest,
    parse_manifest,
)
from edge_runtime.errors import BundleError
from edge_runtime.fsutil import atomic_replace, fsync_file
from edge_runtime.inputfiles import describe, format_size, open_regular_file

# Limits for unpacking a .tar from the network: generous for real models, fatal for tar bombs.
MAX_TAR_BYTES = 2 * 1024**3
MAX_TAR_MEMBERS = 2000
_CHUNK = 1 << 20

# Errors the tarfile module raises on damaged input, besides its own TarError: a short read
# (EOFError), numbers or names it cannot decode (ValueError, UnicodeError), a failed read.
_TAR_ERRORS = (tarfile.TarError, EOFError, ValueError, OSError, OverflowError)

#: leading bytes of compressed files: (magic, format name, command that uncompresses stdin)
COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "gzip", "gunzip"),
    (b"BZh", "bzip2", "bunzip2"),
    (b"\xfd7zXZ\x00", "xz", "unxz"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
)


def compressed_message(path: str | os.PathLike[str], head: bytes) -> str | None:
    """What to tell the user when the file ``path``, starting with ``head``, is compressed
    (gzip, bzip2, xz or zstd), or None when it is not."""
    for magic, name, tool in COMPRESSED_MAGIC:
        if head.startswith(magic):
            quoted = shlex.quote(os.fspath(path))
            return (
                f"{os.fspath(path)} is {name}-compressed, but a bundle .tar must be "
                f"uncompressed: unpack it with `{tool} < {quoted} > bundle.tar`, or pack the "
                "bundle without compression (edge-export bundle writes a plain .tar)"
            )
    return None


def check_plain_tar(path: str | os.PathLike[str], *, not_tar: str | None = None) -> None:
    """Raise unless ``path`` is a regular file that opens as an uncompressed tar archive.

    ``not_tar`` replaces the message for a file that is no tar archive at all.

    Raises:
        BundleError: a FIFO or device (refused unopened), a compressed file (the message says
            how to unpack it), or not a tar archive.
    """
    with _open_archive(path, not_tar=not_tar):
        pass


def is_plain_tar(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file that opens as an uncompressed tar archive."""
    try:
        check_plain_tar(path)
    except BundleError:
        return False
    return True


@contextlib.contextmanager
def _open_archive(
    path: str | os.PathLike[str], *, not_tar: str | None = None
) -> Iterator[tuple[BinaryIO, tarfile.TarFile]]:
    """The regular file ``path`` and a tar reader over it, both closed after the block.

    Raises:
        BundleError: not a regular file, compressed, or not a tar archive.
    """
    where = os.fspath(path)
    try:
        handle = open_regular_file(path)
    except OSError as exc:
        raise BundleError(f"cannot open bundle archive {where}: {describe(exc)}") from None
    with handle:
        try:
            message = compressed_message(path, handle.read(8))
            handle.seek(0)
        except OSError as exc:
            raise BundleError(f"cannot read bundle archive {where}: {describe(exc)}") from None
        if message is not None:
            raise BundleError(message)
        try:
            archive = tarfile.open(fileobj=handle, mode="r:")
        except _TAR_ERRORS as exc:
            raise BundleError(not_tar or f"{where} is not a tar archive: {_reason(exc)}") from None
        with archive:
            yield handle, archive


def _member_name(raw: str) -> str:
    """Validate a tar member name and return it normalised, or raise BundleError."""
    if not raw or raw.startswith(("/", "\\")) or "\\" in raw or "\x00" in raw:
        raise BundleError(f"bundle archive has an unsafe member name {raw!r}")
    if re.match(r"^[A-Za-z]:", raw):
        raise BundleError(f"bundle archive has an unsafe member name {raw!r}")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise BundleError(f"bundle archive has an unsafe member name {raw!r}")
    return "/".join(parts)


def extract_bundle_tar(tar_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[str]:
    """Unpack a bundle ``.tar`` into the empty directory ``dest`` with an allow-list.

    Only regular files whose names the bundle's own manifest expects are written (optionally all
    under one top-level folder, which is dropped). Links, devices, sparse files, absolute or
    ``..`` names, duplicates, unexpected or missing members, members whose size differs from
    the manifest's (or over the caps for the manifest, labels and samples), damaged headers,
    truncated archives and archives over :data:`MAX_TAR_BYTES` or :data:`MAX_TAR_MEMBERS` are
    refused before anything is written. Members are streamed to disk; an artifact whose sha256
    differs from the manifest's is refused once read, and then every file written is removed.

    Returns the names written.

    Raises:
        BundleError: the archive cannot be read, or it is unsafe, damaged or not a bundle; the
            message names the archive.
    """
    where = os.fspath(tar_path)
    destination = Path(dest)
    with _open_archive(tar_path) as (handle, archive):
        members = _safe_members(archive, handle, where)
        manifest_member = members.get(MANIFEST_NAME)
        if manifest_member is None:
            raise BundleError(f"bundle archive {where} has no {MANIFEST_NAME}")
        _check_size(manifest_member, MAX_MANIFEST_BYTES, where)
        manifest = parse_manifest(
            _read_member(archive, manifest_member, where), where=f"{where}:{MANIFEST_NAME}"
        )
        allowed = manifest.member_names()
        unexpected = sorted(set(members) - allowed)
        if unexpected:
            raise BundleError(f"bundle archive {where} has unexpected member {unexpected[0]!r}")
        missing = sorted(allowed - set(members))
        if missing:
            raise BundleError(
                f"bundle archive {where} lacks {missing[0]}, which its manifest names"
            )
        digests = _check_member_sizes(members, manifest, where)

        root = destination.resolve()
        written: list[Path] = []
        try:
            for name, member in sorted(members.items()):
                target = (root / name).resolve()
                if root not in target.parents:  # pragma: no cover - names were validated above
                    raise BundleError(f"bundle archive member {name!r} points outside the bundle")
                if not target.parent.exists():
                    target.parent.mkdir(parents=True)
                    written.append(target.parent)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(target, flags, 0o644)
                written.append(target)
                with os.fdopen(fd, "wb") as out:
                    digest = _copy_member(archive, member, out, where)
                expected = digests.get(name)
                if expected is not None and digest != expected:
                    raise BundleError(
                        f"artifact {name} in bundle archive {where} does not match its sha256: "
                        "the file was changed or corrupted"
                    )
        except BaseException:
            for path in reversed(written):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            raise
        return sorted(members)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, tarfile.TarError):
        return describe(exc)
    return str(exc) or type(exc).__name__


def _safe_members(
    archive: tarfile.TarFile, handle: BinaryIO, where: str
) -> dict[str, tarfile.TarInfo]:
    files: dict[str, tarfile.TarInfo] = {}
    total = 0
    count = 0
    members = iter(archive)
    while True:
        try:
            member = next(members)
        except StopIteration:
            break
        except _TAR_ERRORS as exc:
            raise BundleError(
                f"bundle archive {where} is truncated or damaged: {_reason(exc)}"
            ) from None
        count += 1
        if count > MAX_TAR_MEMBERS:
            raise BundleError(f"bundle archive has more than {MAX_TAR_MEMBERS} members")
        name = _member_name(member.name)
        if member.isdir():
            continue
        if not member.isreg():
            kind = "link" if (member.issym() or member.islnk()) else "special file"
            raise BundleError(
                f"bundle archive member {member.name!r} is a {kind}; only files are allowed"
            )
        if member.issparse():
            raise BundleError(
                f"bundle archive member {member.name!r} is a sparse file; only plain files "
                "are allowed"
            )
        if name in files:
            raise BundleError(f"bundle archive has member {name!r} twice")
        total += member.size
        if total > MAX_TAR_BYTES:
            raise BundleError(f"bundle archive unpacks to more than {MAX_TAR_BYTES} bytes")
        files[name] = member
    _check_end(archive, handle, where)

    # A bundle packed as one top-level folder ("traffic-signs/manifest.json") loses that folder.
    if MANIFEST_NAME not in files:
        tops = {name.split("/", 1)[0] for name in files}
        if len(tops) == 1 and all("/" in name for name in files):
            top = tops.pop()
            files = {name[len(top) + 1 :]: member for name, member in files.items()}
    return files


def _check_end(archive: tarfile.TarFile, handle: BinaryIO, where: str) -> None:
    """tarfile ends its list of members quietly at the first header it cannot read; a tar ends
    in zero blocks (or at the end of the file), so anything else there is damage."""
    try:
        handle.seek(archive.offset)
        block = handle.read(tarfile.BLOCKSIZE)
    except OSError as exc:
        raise BundleError(f"cannot read bundle archive {where}: {describe(exc)}") from None
    if block.strip(b"\x00"):
        raise BundleError(
            f"bundle archive {where} is damaged: the tar header at byte {archive.offset} "
            "cannot be read, so the members after it are lost"
        )


def _check_size(member: tarfile.TarInfo, limit: int, where: str) -> None:
    if member.size > limit:
        raise BundleError(
            f"bundle archive {where}: member {member.name!r} is {member.size} bytes, more "
            f"than the {format_size(limit)} allowed"
        )


def _check_member_sizes(
    members: dict[str, tarfile.TarInfo], manifest: BundleManifest, where: str
) -> dict[str, str]:
    """Compare every member's size with what the manifest allows, before anything is read;
    returns the expected sha256 of each artifact by name."""
    digests: dict[str, str] = {}
    for item in manifest.artifacts:
        member = members[item.path]
        if member.size != item.bytes:
            raise BundleError(
                f"bundle archive {where}: artifact {item.path} is {member.size} bytes, the "
                f"manifest says {item.bytes}: the file was changed or truncated"
            )
        digests[item.path] = item.sha256
    _check_size(members[LABELS_NAME], MAX_LABELS_BYTES, where)
    for sample in manifest.samples:
        _check_size(members[sample.path], MAX_SAMPLE_BYTES, where)
    return digests


def _copy_member(
    archive: tarfile.TarFile, member: tarfile.TarInfo, out: BinaryIO, where: str
) -> str:
    """Stream ``member`` into ``out`` in chunks; returns its sha256.

    Raises:
        BundleError: the archive ends early or cannot be read, or ``out`` cannot be written.
    """
    digest = hashlib.sha256()
    left = member.size
    try:
        source = archive.extractfile(member)
    except _TAR_ERRORS as exc:
        raise BundleError(f"bundle archive {where} is damaged: {_reason(exc)}") from None
    if source is None:  # pragma: no cover - regular files always have data
        raise BundleError(f"cannot read bundle archive member {member.name!r} in {where}")
    while left > 0:
        try:
            chunk = source.read(min(_CHUNK, left))
        except _TAR_ERRORS as exc:
            raise BundleError(
                f"bundle archive {where} is truncated or damaged: {_reason(exc)}"
            ) from None
        if not chunk:
            raise BundleError(f"bundle archive member {member.name!r} in {where} is truncated")
        digest.update(chunk)
        try:
            out.write(chunk)
        except OSError as exc:
            raise BundleError(f"cannot unpack bundle archive {where}: {describe(exc)}") from None
        left -= len(chunk)
    return digest.hexdigest()


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> bytes:
    buffer = io.BytesIO()
    _copy_member(archive, member, buffer, where)
    return buffer.getvalue()


def write_bundle_tar(
    root: Path, manifest: BundleManifest, tar_path: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Pack the bundle directory ``root`` (already validated against ``manifest``) into a
    reproducible uncompressed ``.tar``, atomically.

    Members are sorted, owned by root and dated by the manifest's ``created``, so the same bundle
    packs to the same bytes.

    Raises:
        BundleError: ``tar_path`` exists and ``force`` is false.
        OSError: the archive cannot be written (nothing is left behind).
    """
    out = Path(tar_path)
    if out.exists() and not force:
        raise BundleError(f"{out} already exists; pass --force to replace it")
    mtime = int(manifest.created.timestamp())
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(handle)
    try:
        os.chmod(temp_name, 0o644)  # mkstemp makes it private; a bundle is for others to read
        with tarfile.open(temp_name, "w", format=tarfile.PAX_FORMAT) as archive:
            for name in sorted(manifest.member_names()):
                with open_regular_file(root / name) as member:  # streamed, not read whole
                    info = tarfile.TarInfo(name)
                    info.size = os.fstat(member.fileno()).st_size
                    info.mtime = mtime
                    info.mode = stat.S_IFREG | 0o644
                    archive.addfile(info, member)
        fsync_file(temp_name)
        atomic_replace(temp_name, out)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return out


__all__ = [
    "COMPRESSED_MAGIC",
    "MAX_TAR_BYTES",
    "MAX_TAR_MEMBERS",
    "check_plain_tar",
    "compressed_message",
    "extract_bundle_tar",
    "is_plain_tar",
    "write_bundle_tar",
]
