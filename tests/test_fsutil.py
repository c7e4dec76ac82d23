"""Durable and atomic file-system updates (what the bundle writer and the OTA store stand on)."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_runtime import fsutil


def make_dir(path: Path, **contents: str) -> Path:
    path.mkdir()
    for name, text in contents.items():
        (path / name).write_text(text)
    return path


def listing(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(path.iterdir())}


@pytest.fixture
def exchange_works(tmp_path: Path) -> None:
    """Skip where this kernel or file system has no renameat2(RENAME_EXCHANGE)."""
    a, b = make_dir(tmp_path / ".probe-a"), make_dir(tmp_path / ".probe-b")
    try:
        fsutil.exchange(a, b)
    except fsutil.ExchangeNotSupportedError as exc:
        pytest.skip(f"no atomic exchange on this system: {exc}")
    finally:
        a.rmdir()
        b.rmdir()


def failing_at(monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> list[tuple[str, str]]:
    """Make os.rename fail with EIO on the given call numbers (1-based); returns the call log."""
    real = os.rename
    log: list[tuple[str, str]] = []

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        log.append((os.fspath(src), os.fspath(dst)))
        if len(log) in calls:
            raise OSError(errno.EIO, "injected rename failure")
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    return log


def no_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsutil, "_renameat2", lambda: None)


# -- exchange -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("exchange_works")
def test_exchange_swaps_two_directories(tmp_path: Path) -> None:
    old = make_dir(tmp_path / "old", a="1")
    new = make_dir(tmp_path / "new", b="2")
    fsutil.exchange(new, old)
    assert listing(old) == {"b": "2"} and listing(new) == {"a": "1"}


@pytest.mark.usefixtures("exchange_works")
def test_exchange_with_a_missing_name_is_a_real_error(tmp_path: Path) -> None:
    make_dir(tmp_path / "here")
    with pytest.raises(FileNotFoundError) as error:
        fsutil.exchange(tmp_path / "here", tmp_path / "missing")
    assert not isinstance(error.value, fsutil.ExchangeNotSupportedError)
    assert (tmp_path / "here").is_dir()


def test_exchange_unsupported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = make_dir(tmp_path / "a", x="1"), make_dir(tmp_path / "b", y="2")
    no_exchange(monkeypatch)
    with pytest.raises(fsutil.ExchangeNotSupportedError):
        fsutil.exchange(a, b)

    # A file system without the flag answers EINVAL: also "not supported", not a failure.
    def refuses(a: bytes, b: bytes, flags: int) -> int:
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(fsutil, "_renameat2", lambda: refuses)
    with pytest.raises(fsutil.ExchangeNotSupportedError, match="Invalid argument"):
        fsutil.exchange(a, b)
    assert listing(a) == {"x": "1"} and listing(b) == {"y": "2"}


# -- replace_directory --------------------------------------------------------------------------


def test_replace_directory_into_a_free_name(tmp_path: Path) -> None:
    new = make_dir(tmp_path / "new", a="1")
    assert fsutil.replace_directory(new, tmp_path / "dest") is None
    assert listing(tmp_path / "dest") == {"a": "1"} and not new.exists()


@pytest.mark.usefixtures("exchange_works")
def test_replace_directory_exchanges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = make_dir(tmp_path / "dest", a="old")
    new = make_dir(tmp_path / "new", a="new")
    renames = failing_at(monkeypatch, set())
    retired = fsutil.replace_directory(new, dest)
    assert retired == new and listing(retired) == {"a": "old"}
    assert listing(dest) == {"a": "new"}
    assert renames == []  # one exchange, no renames


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_replace_directory_that_fails_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    dest = make_dir(tmp_path / "dest", a="old")
    new = make_dir(tmp_path / "new", a="new")
    if mode == "exchange":

        def broken(a: bytes, b: bytes, flags: int) -> int:
            ctypes.set_errno(errno.EIO)
            return -1

        monkeypatch.setattr(fsutil, "_renameat2", lambda: broken)
    else:
        no_exchange(monkeypatch)
        failing_at(monkeypatch, {1})
    with pytest.raises(OSError, match="Input/output error|injected"):
        fsutil.replace_directory(new, dest)
    assert listing(dest) == {"a": "old"} and listing(new) == {"a": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "new"]


def test_fallback_moves_aside_then_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = make_dir(tmp_path / "dest", a="old")
    new = make_dir(tmp_path / "new", a="new")
    no_exchange(monkeypatch)
    renames = failing_at(monkeypatch, set())
    retired = fsutil.replace_directory(new, dest)
    assert retired is not None and listing(retired) == {"a": "old"}
    assert listing(dest) == {"a": "new"}
    assert renames == [(str(dest), str(retired)), (str(new), str(dest))]


def test_fallback_rolls_back_when_the_second_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = make_dir(tmp_path / "dest", a="old")
    new = make_dir(tmp_path / "new", a="new")
    no_exchange(monkeypatch)
    renames = failing_at(monkeypatch, {2})
    with pytest.raises(OSError, match="injected"):
        fsutil.replace_directory(new, dest)
    assert len(renames) == 3 and renames[2] == (renames[0][1], str(dest))  # the undo
    assert listing(dest) == {"a": "old"} and listing(new) == {"a": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "new"]


def test_fallback_that_cannot_undo_says_where_the_old_one_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = make_dir(tmp_path / "dest", a="old")
    new = make_dir(tmp_path / "new", a="new")
    no_exchange(monkeypatch)
    renames = failing_at(monkeypatch, {2, 3})
    with pytest.raises(OSError, match="could not be put back") as error:
        fsutil.replace_directory(new, dest)
    retired = Path(renames[0][1])
    assert f"It is intact at {retired}" in str(error.value)
    assert listing(retired) == {"a": "old"}


# -- files --------------------------------------------------------------------------------------


def fsync_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the path of every fsync'ed descriptor (Linux /proc)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to name the synced files")
    real = os.fsync
    synced: list[str] = []

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return synced


def test_atomic_write_replaces_and_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    synced = fsync_spy(monkeypatch)
    fsutil.atomic_write(target, b"new")
    assert target.read_text() == "new"
    # The temporary file's data first, then the directory that now names it.
    assert len(synced) == 2 and synced[1] == str(tmp_path)
    assert synced[0].startswith(str(tmp_path / ".state.json."))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.parametrize("fail", ["write", "replace"])
def test_atomic_write_failure_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str
) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")

    def broken(*args: object) -> None:
        raise OSError(errno.ENOSPC, "injected: no space left")

    monkeypatch.setattr(os, "fsync" if fail == "write" else "replace", broken)
    with pytest.raises(OSError, match="no space left"):
        fsutil.atomic_write(target, b"new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_file_and_tree_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 3_000_000)  # more than one copy chunk
    root = tmp_path / "tree"
    synced = fsync_spy(monkeypatch)
    fsutil.write_file(root / "a" / "b" / "copy.bin", source)
    fsutil.write_file(root / "top.txt", b"top")
    fsutil.fsync_tree(root)
    assert (root / "a" / "b" / "copy.bin").read_bytes() == source.read_bytes()
    assert synced == [
        str(root / "a" / "b" / "copy.bin"),
        str(root / "top.txt"),
        str(root / "a" / "b"),
        str(root / "a"),
        str(root),
    ]


def test_fsync_directory_tolerates_file_systems_that_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def answer(code: int) -> Callable[[int], None]:
        def fsync(fd: int) -> None:
            raise OSError(code, os.strerror(code))

        return fsync

    monkeypatch.setattr(os, "fsync", answer(errno.EINVAL))
    fsutil.fsync_directory(tmp_path)
    monkeypatch.setattr(os, "fsync", answer(errno.EIO))
    with pytest.raises(OSError, match="Input/output"):
        fsutil.fsync_directory(tmp_path)


def test_fsync_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_text("x")
    synced = fsync_spy(monkeypatch)
    fsutil.fsync_file(tmp_path / "f")
    assert synced == [str(tmp_path / "f")]
