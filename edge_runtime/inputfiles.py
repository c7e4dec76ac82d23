"""Opening the files a user, a config or an archive names: only regular files, with a size cap.

A path given on the command line or in a config may name a FIFO (opening it for reading blocks
until a writer comes, maybe never), a device such as ``/dev/zero`` (reading it never ends) or a
socket. Every file the runtime opens from user input goes through :func:`check_file_kind` or
:func:`open_regular_file`, which refuse those before anything is opened, and small text files
(configs, manifests, label files) are read with :func:`read_limited`, which never reads more than
its cap, whatever the file claims to be.

Every function raises :class:`OSError` as the operating system reports it, or one of the
subclasses below; callers turn it into their own error with context (``ConfigError``,
``ModelError``, ``BundleError``). ``str()`` of the subclasses is a plain sentence.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

#: what each kind of non-regular file is called in messages
_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotAFileError(OSError):
    """The path names a FIFO, a device or a socket: reading it could block or never end."""

    def __init__(self, path: str | os.PathLike[str], kind: str, expected: str) -> None:
        self.reason = f"it is {kind}, not {expected}"
        super().__init__(errno.EINVAL, f"{os.fspath(path)} is {kind}, not {expected}")
        self.filename = os.fspath(path)
        self.kind = kind

    def __str__(self) -> str:
        return str(self.strerror)


class FileTooLargeError(OSError):
    """A file is larger than the cap for its kind (a config, a manifest, a label file)."""

    def __init__(self, path: str | os.PathLike[str], limit: int) -> None:
        self.reason = f"it is larger than {format_size(limit)}, the limit"
        super().__init__(
            errno.EFBIG, f"{os.fspath(path)} is larger than {format_size(limit)}, the limit"
        )
        self.filename = os.fspath(path)
        self.limit = limit

    def __str__(self) -> str:
        return str(self.strerror)


def format_size(count: int) -> str:
    """``1048576`` -> ``'1 MiB'``; ``1500`` -> ``'1500 bytes'``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


def kind_of(mode: int) -> str | None:
    """What a non-regular, non-directory ``st_mode`` is ("a FIFO (named pipe)", ...), or None
    for a regular file or a directory."""
    for test, name in _KINDS:
        if test(mode):
            return name
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "not a regular file"  # pragma: no cover - door files, whiteouts and the like


def describe(exc: OSError) -> str:
    """Why a file could not be read, without its path (the caller's message names it):
    "it is a FIFO (named pipe), not a regular file", "No such file or directory"."""
    if isinstance(exc, (NotAFileError, FileTooLargeError)):
        return exc.reason
    return str(exc.strerror or exc)


def _is_a_directory(path: str | os.PathLike[str]) -> IsADirectoryError:
    return IsADirectoryError(errno.EISDIR, "it is a directory, not a regular file", str(path))


def check_file_kind(path: str | os.PathLike[str], *, directory_ok: bool = True) -> os.stat_result:
    """The ``stat`` of ``path`` (symlinks followed) once it is known to be a regular file, or a
    directory when ``directory_ok``. Nothing is opened.

    Raises:
        FileNotFoundError: nothing is there.
        NotAFileError: a FIFO, a device, a socket (or a directory without ``directory_ok``:
            IsADirectoryError).
        OSError: the path cannot be examined (a permission, a loop of links).
    """
    info = os.stat(path)
    kind = kind_of(info.st_mode)
    expected = "a regular file or a directory" if directory_ok else "a regular file"
    if kind is not None:
        raise NotAFileError(path, kind, expected)
    if stat.S_ISDIR(info.st_mode) and not directory_ok:
        raise _is_a_directory(path)
    return info


def open_regular_file(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a regular file for reading in binary mode, refusing anything else.

    The kind is checked before opening, and again on the open descriptor: the path is opened
    with ``O_NONBLOCK`` so that a FIFO swapped in between the two returns at once instead of
    waiting for a writer, and ``fstat`` then refuses it.

    Raises:
        FileNotFoundError, IsADirectoryError, NotAFileError, OSError: as
            :func:`check_file_kind`, or the file cannot be opened.
    """
    check_file_kind(path, directory_ok=False)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        kind = kind_of(info.st_mode)
        if kind is not None:
            raise NotAFileError(path, kind, "a regular file")
        if stat.S_ISDIR(info.st_mode):
            raise _is_a_directory(path)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(path: str | os.PathLike[str], limit: int) -> bytes:
    """The whole content of the regular file ``path``, which must hold at most ``limit`` bytes.

    Never reads more than ``limit + 1`` bytes, whatever ``stat`` said (a file may grow, and
    files in ``/proc`` report size 0).

    Raises:
        FileTooLargeError: the file holds more than ``limit`` bytes.
        FileNotFoundError, IsADirectoryError, NotAFileError, OSError: as
            :func:`open_regular_file`.
    """
    with open_regular_file(path) as handle:
        if os.fstat(handle.fileno()).st_size > limit:
            raise FileTooLargeError(path, limit)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileTooLargeError(path, limit)
    return data


__all__ = [
    "FileTooLargeError",
    "NotAFileError",
    "check_file_kind",
    "describe",
    "format_size",
    "kind_of",
    "open_regular_file",
    "read_limited",
]
