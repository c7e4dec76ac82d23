"""Bundle ``.tar`` files: unpacking with an allow-list, and packing reproducibly.

A ``.tar`` may come from the network: :func:`extract_bundle_tar` writes only regular files whose
names the archive's own manifest expects, and refuses links, devices, ``..`` names and tar bombs
before anything is written. :func:`write_bundle_tar` packs a bundle directory the caller has
validated (see :func:`edge_runtime.bundle.pack_bundle`).
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
import tempfile
from pathlib import Path

from edge_runtime.bundle.manifest import MANIFEST_NAME, BundleManifest, parse_manifest
from edge_runtime.errors import BundleError
from edge_runtime.fsutil import atomic_replace, fsync_file

# Limits for unpacking a .tar from the network: generous for real models, fatal for tar bombs.
MAX_TAR_BYTES = 2 * 1024**3
MAX_TAR_MEMBERS = 2000


def is_plain_tar(path: Path) -> bool:
    """Whether ``path`` opens as an uncompressed tar archive."""
    try:
        with tarfile.open(path, "r:"):
            return True
    except (tarfile.TarError, OSError):
        return False


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
    under one top-level folder, which is dropped). Links, devices, absolute or ``..`` names,
    duplicates, unexpected members and archives over :data:`MAX_TAR_BYTES` or
    :data:`MAX_TAR_MEMBERS` are refused before anything is written.

    Returns the names written.

    Raises:
        BundleError: the archive cannot be read, or it is unsafe or not a bundle.
    """
    destination = Path(dest)
    try:
        archive = tarfile.open(tar_path, "r:")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"cannot open bundle archive {tar_path}: {exc}") from exc
    with archive:
        members = _safe_members(archive)
        manifest_member = members.get(MANIFEST_NAME)
        if manifest_member is None:
            raise BundleError(f"bundle archive {tar_path} has no {MANIFEST_NAME}")
        manifest = parse_manifest(
            _read_member(archive, manifest_member), where=f"{tar_path}:{MANIFEST_NAME}"
        )
        allowed = manifest.member_names()
        unexpected = sorted(set(members) - allowed)
        if unexpected:
            raise BundleError(f"bundle archive {tar_path} has unexpected member {unexpected[0]!r}")

        root = destination.resolve()
        for name, member in sorted(members.items()):
            target = (root / name).resolve()
            if root not in target.parents:  # pragma: no cover - names were validated above
                raise BundleError(f"bundle archive member {name!r} points outside the bundle")
            target.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(target, flags, 0o644)
            with os.fdopen(fd, "wb") as out:
                out.write(_read_member(archive, member))
        return sorted(members)


def _safe_members(archive: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    files: dict[str, tarfile.TarInfo] = {}
    total = 0
    count = 0
    for member in archive:
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
        if name in files:
            raise BundleError(f"bundle archive has member {name!r} twice")
        total += member.size
        if total > MAX_TAR_BYTES:
            raise BundleError(f"bundle archive unpacks to more than {MAX_TAR_BYTES} bytes")
        files[name] = member

    # A bundle packed as one top-level folder ("traffic-signs/manifest.json") loses that folder.
    if MANIFEST_NAME not in files:
        tops = {name.split("/", 1)[0] for name in files}
        if len(tops) == 1 and all("/" in name for name in files):
            top = tops.pop()
            files = {name[len(top) + 1 :]: member for name, member in files.items()}
    return files


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:  # pragma: no cover - regular files always have data
        raise BundleError(f"cannot read bundle archive member {member.name!r}")
    data = handle.read(member.size + 1)
    if len(data) != member.size:
        raise BundleError(f"bundle archive member {member.name!r} is truncated")
    return data


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
        with tarfile.open(temp_name, "w", format=tarfile.PAX_FORMAT) as archive:
            for name in sorted(manifest.member_names()):
                data = (root / name).read_bytes()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = mtime
                info.mode = stat.S_IFREG | 0o644
                archive.addfile(info, io.BytesIO(data))
        fsync_file(temp_name)
        atomic_replace(temp_name, out)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return out


__all__ = [
    "MAX_TAR_BYTES",
    "MAX_TAR_MEMBERS",
    "extract_bundle_tar",
    "is_plain_tar",
    "write_bundle_tar",
]
