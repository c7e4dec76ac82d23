"""Durable, atomic file-system updates: the bundle writer and the OTA slot store stand on these.

A device loses power without warning, so every update follows the same order: write the new data
under a temporary name, ``fsync`` it (files, then the directories that hold them), switch it into
place with one atomic rename, then ``fsync`` the parent directory so the switch itself survives a
power cut. A crash at any point leaves either the old state or the new one, never a mix.

Replacing a *directory* cannot be done with :func:`os.replace` (a directory cannot be renamed over
a non-empty one). :func:`replace_directory` uses Linux's ``renameat2(RENAME_EXCHANGE)`` (kernel
3.15+, on ext4, btrfs, xfs, f2fs, tmpfs and overlayfs among others), which swaps two names in one
step: there is no moment when the destination is missing, and the destination stays a plain
directory that any tool can read. The alternative, a symlink flipped by one rename to point at a
versioned directory beside it, is just as atomic but turns every bundle path into a symlink that
copies, archives and the exporter's own checks must then follow. Where the kernel, the C library
or the file system has no exchange (FAT on a USB stick, NFS, old kernels, other systems), the
fallback moves the old directory aside and the new one in with two renames, and moves the old one
back when the second rename fails; only a crash between those two renames leaves the destination
missing, with the old directory beside it under a ``.NAME.*.old`` name.

Every function raises :class:`OSError` as the operating system reports it; callers turn it into
their own error with context.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

#: ``renameat2`` flag: swap the two names atomically (both must exist)
RENAME_EXCHANGE = 2
_AT_FDCWD = -100
# renameat2's system call number per machine, for C libraries without the renameat2 wrapper.
_RENAMEAT2_SYSCALL = {
    "x86_64": 316,
    "amd64": 316,
    "aarch64": 276,
    "arm64": 276,
    "riscv64": 276,
    "armv6l": 382,
    "armv7l": 382,
    "armv8l": 382,
    "i386": 353,
    "i686": 353,
}
# What renameat2 answers when the kernel or the file system cannot exchange (as opposed to a real
# failure such as a missing path or a permission): the caller may fall back.
_NOT_SUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}
_COPY_CHUNK = 1 << 20


class ExchangeNotSupportedError(OSError):
    """This kernel, C library or file system cannot exchange two names atomically."""


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's data and metadata to the storage device.

    Raises:
        OSError: the file cannot be opened, or the device reports a write error.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (names created, renamed or removed in it) to the device.

    A file system that cannot sync directories (it answers EINVAL) needs no such sync.

    Raises:
        OSError: the directory cannot be opened, or the device reports a write error.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def write_file(path: str | os.PathLike[str], source: bytes | str | os.PathLike[str]) -> None:
    """Create ``path`` (and its parent folders) from bytes or a copy of a file, and fsync it.

    The new file's directory entry is not synced here: sync its folder (:func:`fsync_tree`) or
    publish it with :func:`atomic_write` / :func:`atomic_replace`.

    Raises:
        OSError: the file cannot be written (a partly written file may remain at ``path``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        if isinstance(source, (bytes, bytearray, memoryview)):
            out.write(source)
        else:
            with open(source, "rb") as handle:
                shutil.copyfileobj(handle, out, _COPY_CHUNK)
        out.flush()
        os.fsync(out.fileno())


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every directory under ``root`` (deepest first) and ``root`` itself.

    The files must already be synced (:func:`write_file`); this makes their names durable.

    Raises:
        OSError: a directory cannot be synced.
    """
    top = Path(root)
    folders = [Path(here) for here, _, _ in os.walk(top)]
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_directory(folder)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file ``path`` with ``data`` so that a crash leaves the old or the new content.

    Raises:
        OSError: it cannot be written; the old file is then untouched and no temporary is left.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".partial", dir=target.parent
    )
    os.close(handle)
    try:
        write_file(temp_name, data)
        atomic_replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def atomic_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename the synced file ``src`` over ``dst`` in one step, and make the rename durable.

    Raises:
        OSError: the rename or the directory sync failed.
    """
    os.replace(src, dst)
    fsync_directory(Path(dst).parent)
    if Path(src).parent.resolve() != Path(dst).parent.resolve():
        fsync_directory(Path(src).parent)


@functools.cache
def _renameat2() -> Callable[[bytes, bytes, int], int] | None:
    """A ``renameat2(AT_FDCWD, a, AT_FDCWD, b, flags)`` callable, or None without one."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - a Linux process always has a C library
        return None
    wrapper = getattr(libc, "renameat2", None)
    if wrapper is not None:
        wrapper.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
        wrapper.argtypes += [ctypes.c_uint]
        wrapper.restype = ctypes.c_int
        return lambda a, b, flags: int(wrapper(_AT_FDCWD, a, _AT_FDCWD, b, flags))
    # A C library older than glibc 2.28 (or musl 1.2.2) has no wrapper: call the kernel directly.
    number = _RENAMEAT2_SYSCALL.get(platform.machine().lower())
    if number is None:
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return lambda a, b, flags: int(
        syscall(
            ctypes.c_long(number),
            ctypes.c_int(_AT_FDCWD),
            ctypes.c_char_p(a),
            ctypes.c_int(_AT_FDCWD),
            ctypes.c_char_p(b),
            ctypes.c_uint(flags),
        )
    )


def exchange(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
    """Swap the names ``a`` and ``b`` (files or directories, both existing) in one atomic step.

    Raises:
        ExchangeNotSupportedError: no ``renameat2(RENAME_EXCHANGE)`` here (kernel, C library or
            file system): the caller may fall back to something weaker.
        OSError: the exchange failed (e.g. a missing path, a permission, two file systems).
    """
    call = _renameat2()
    if call is None:
        raise ExchangeNotSupportedError(errno.ENOSYS, "renameat2 is not available here")
    # An audit event like os.rename's, so crash tests can stop the process right here.
    sys.audit("edge_runtime.fsutil.exchange", os.fspath(a), os.fspath(b))
    if call(os.fsencode(a), os.fsencode(b), RENAME_EXCHANGE) == 0:
        return
    code = ctypes.get_errno()
    if code in _NOT_SUPPORTED:
        raise ExchangeNotSupportedError(code, f"cannot exchange {a} and {b}: {os.strerror(code)}")
    raise OSError(code, os.strerror(code), os.fspath(a), None, os.fspath(b))


def replace_directory(new: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path | None:
    """Put the synced directory ``new`` at ``dest`` (same file system), atomically where possible.

    When ``dest`` exists it is exchanged with ``new`` in one step (see the module doc for the
    fallback), and its old contents end up at the returned path, for the caller to delete once
    it no longer needs them; the parent directory is synced before this returns. ``None``: there
    was nothing at ``dest``.

    Raises:
        OSError: nothing was changed; or, if the fallback could neither finish nor undo its
            first rename, the message says where the old directory is.
    """
    new_path, target = Path(new), Path(dest)
    if not os.path.lexists(target):
        os.rename(new_path, target)
        fsync_directory(target.parent)
        return None
    try:
        exchange(new_path, target)
    except ExchangeNotSupportedError:
        retired = _move_aside(new_path, target)
    else:
        retired = new_path
    fsync_directory(target.parent)
    return retired


def _move_aside(new: Path, target: Path) -> Path:
    """The two-rename fallback of :func:`replace_directory`; returns where the old one went."""
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    retired.rmdir()
    os.rename(target, retired)
    try:
        os.rename(new, target)
    except OSError as exc:
        try:
            os.rename(retired, target)
        except OSError as undo:
            raise OSError(
                exc.errno,
                f"{exc.strerror}; and the old {target} could not be put back: {undo}. "
                f"It is intact at {retired}",
            ) from exc
        raise
    return retired


__all__ = [
    "RENAME_EXCHANGE",
    "ExchangeNotSupportedError",
    "atomic_replace",
    "atomic_write",
    "exchange",
    "fsync_directory",
    "fsync_file",
    "fsync_tree",
    "replace_directory",
    "write_file",
]
