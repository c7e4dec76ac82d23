"""write_bundle replaces a bundle atomically: failures, crashes and power cuts leave old or new.

Three ways of breaking a write, each at every step it has:
- an OSError injected at each rename (exchange and fallback) and in the middle of a copy;
- a spy on fsync: every file, then every directory, is synced before the one step that
  publishes them, and the parent directory after it (what survives a power cut);
- a child process SIGKILLed before each of its file-system operations and half-way through each
  copy (tests/crash_writer.py): the destination always holds the old or the new bundle, complete
  and matching its sha256 (load_bundle verifies them).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_runtime import fsutil
from edge_runtime.bundle import load_bundle, write_bundle
from edge_runtime.errors import BundleError

HERE = Path(__file__).resolve().parent
LABELS = ["stop", "yield"]


def bundle_spec(version: int, tag: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A manifest and its files; the two versions share some names and differ in others, so a
    destination that mixed them would show files of both."""
    artifacts = [f"model-{tag}.tflite", "model.onnx"]
    samples = ["samples/stop-0.png", f"samples/yield-{tag}.png"]
    manifest = {
        "name": "signs",
        "version": version,
        "created": "2026-11-28T10:00:00+00:00",
        "labels": list(LABELS),
        "input": {"height": 8, "width": 8},
        "artifacts": [
            {
                "path": name,
                "format": name.rsplit(".", 1)[1],
                "precision": "int8",
                "input_dtype": "uint8",
                "output_size": len(LABELS),
            }
            for name in artifacts
        ],
        "samples": [{"path": name, "label": LABELS[i]} for i, name in enumerate(samples)],
    }
    files = {name: f"{tag}:{name}:".encode() * 200 for name in artifacts + samples}
    return manifest, files


OLD = bundle_spec(1, "old")
NEW = bundle_spec(2, "new")


def contents(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative name (manifest and labels excluded)."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_file() and name not in ("manifest.json", "labels.txt"):
            found[name] = path.read_bytes()
    return found


def holds(dest: Path) -> str:
    """'old', 'new' or 'missing'; fails on anything else (partial, mixed, corrupt)."""
    if not os.path.lexists(dest):
        return "missing"
    bundle = load_bundle(dest)  # verifies every artifact's size and sha256
    version = {1: "old", 2: "new"}[bundle.manifest.version]
    expected = (OLD if version == "old" else NEW)[1]
    assert contents(dest) == expected, f"{dest} holds a mix or a partial copy"
    return version


@pytest.fixture
def old_bundle(tmp_path: Path) -> Path:
    write_bundle(tmp_path / "signs", OLD[0], OLD[1])
    return tmp_path / "signs"


def exchange_supported(tmp_path: Path) -> bool:
    a, b = tmp_path / ".probe-a", tmp_path / ".probe-b"
    a.mkdir()
    b.mkdir()
    try:
        fsutil.exchange(a, b)
        return True
    except fsutil.ExchangeNotSupportedError:
        return False
    finally:
        a.rmdir()
        b.rmdir()


def use(mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if mode == "fallback":
        monkeypatch.setattr(fsutil, "_renameat2", lambda: None)
    elif not exchange_supported(tmp_path):
        pytest.skip("no renameat2(RENAME_EXCHANGE) on this kernel or file system")


def siblings(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir())


# -- injected failures --------------------------------------------------------------------------


def renames_failing(monkeypatch: pytest.MonkeyPatch, fail: set[int]) -> list[str]:
    """Count every rename-like step (os.rename and fsutil.exchange); fail the given ones."""
    steps: list[str] = []
    real_rename, real_exchange = os.rename, fsutil.exchange

    def step(kind: str) -> None:
        steps.append(kind)
        if len(steps) in fail:
            raise OSError(errno.EIO, f"injected failure of {kind} #{len(steps)}")

    def rename(src: Any, dst: Any) -> None:
        step("rename")
        real_rename(src, dst)

    def exchange(a: Any, b: Any) -> None:
        step("exchange")
        real_exchange(a, b)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(fsutil, "exchange", exchange)
    return steps


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_a_clean_replace_uses_one_exchange_or_two_renames(
    old_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    use(mode, tmp_path, monkeypatch)
    steps = renames_failing(monkeypatch, set())
    write_bundle(old_bundle, NEW[0], NEW[1], force=True)
    assert holds(old_bundle) == "new" and siblings(old_bundle) == ["signs"]
    # The exchange is attempted first either way; the fallback then moves aside and in.
    assert steps == ["exchange"] if mode == "exchange" else ["exchange", "rename", "rename"]


@pytest.mark.parametrize(
    ("mode", "fail"),
    [
        ("exchange", {1}),  # the exchange itself
        ("fallback", {2}),  # moving the old bundle aside
        ("fallback", {3}),  # moving the new one in: the old one is put back
    ],
)
def test_a_failed_rename_keeps_the_old_bundle(
    old_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, fail: set[int]
) -> None:
    use(mode, tmp_path, monkeypatch)
    # Step 1 is the exchange (in fallback mode it is tried and found missing); renames follow.
    steps = renames_failing(monkeypatch, fail)
    with pytest.raises(BundleError, match="cannot write bundle .*injected failure") as error:
        write_bundle(old_bundle, NEW[0], NEW[1], force=True)
    assert "\n" not in str(error.value)
    assert holds(old_bundle) == "old"
    assert siblings(old_bundle) == ["signs"]  # no staging or retired copy is left behind
    if fail == {3}:
        assert steps == ["exchange", "rename", "rename", "rename"]  # the last one undid the first


def test_a_failed_undo_says_where_the_old_bundle_is(
    old_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsutil, "_renameat2", lambda: None)
    renames_failing(monkeypatch, {3, 4})
    with pytest.raises(BundleError, match="could not be put back") as error:
        write_bundle(old_bundle, NEW[0], NEW[1], force=True)
    kept = Path(str(error.value).rsplit("It is intact at ", 1)[1])
    assert holds(kept) == "old"


@pytest.mark.parametrize("which", [1, 2, 4])
def test_a_failure_mid_copy_keeps_the_old_bundle(
    old_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: int
) -> None:
    sources = {}
    for name, data in NEW[1].items():
        sources[name] = tmp_path / "src" / name.replace("/", "_")
        sources[name].parent.mkdir(exist_ok=True)
        sources[name].write_bytes(data)
    copies = [0]
    real = fsutil.shutil.copyfileobj

    def copy(src: Any, dst: Any, length: int = 0) -> None:
        copies[0] += 1
        if copies[0] == which:
            dst.write(src.read(100))
            raise OSError(errno.ENOSPC, "injected: no space left on device")
        real(src, dst, length)

    monkeypatch.setattr(fsutil.shutil, "copyfileobj", copy)
    with pytest.raises(BundleError, match="no space left on device"):
        write_bundle(old_bundle, NEW[0], sources, force=True)
    assert holds(old_bundle) == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signs", "src"]


# -- what a power cut needs: fsync, in order ----------------------------------------------------


@pytest.mark.parametrize("over", ["nothing", "old"])
def test_files_then_directories_are_synced_before_the_swap_and_the_parent_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, over: str
) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to name the synced descriptors")
    dest = tmp_path / "signs"
    if over == "old":
        write_bundle(dest, OLD[0], OLD[1])
    log: list[tuple[str, str]] = []
    real_fsync, real_rename, real_exchange = os.fsync, os.rename, fsutil.exchange

    def fsync(fd: int) -> None:
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src: Any, dst: Any) -> None:
        log.append(("swap", os.fspath(src)))
        real_rename(src, dst)

    def exchange(a: Any, b: Any) -> None:
        log.append(("swap", os.fspath(a)))
        real_exchange(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(fsutil, "exchange", exchange)
    write_bundle(dest, NEW[0], NEW[1], force=True)
    assert holds(dest) == "new"

    swaps = [i for i, (kind, _) in enumerate(log) if kind == "swap"]
    assert len(swaps) == 1, log
    swap = swaps[0]
    staging = Path(log[swap][1])

    def synced_at(path: Path) -> int:
        found = [i for i, entry in enumerate(log) if entry == ("fsync", str(path))]
        assert found, f"{path} was never synced: {log}"
        return found[0]

    members = [*NEW[1], "labels.txt", "manifest.json"]
    for name in members:  # each file before the directory that names it
        assert synced_at(staging / name) < synced_at((staging / name).parent), name
    assert synced_at(staging / "samples") < synced_at(staging) < swap
    after = [i for i, entry in enumerate(log) if entry == ("fsync", str(tmp_path))]
    assert after and after[0] > swap, "the parent directory must be synced after the swap"


# -- SIGKILL at every step ----------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_at_every_step_leaves_the_old_or_the_new_bundle(tmp_path: Path) -> None:
    if not exchange_supported(tmp_path):
        pytest.skip("no renameat2(RENAME_EXCHANGE) on this kernel or file system")
    plan: dict[str, Any] = {"work": str(tmp_path / "work"), "name": "signs"}
    for key, (manifest, files) in (("old", OLD), ("new", NEW)):
        folder = tmp_path / f"src-{key}"
        paths = {}
        for name, data in files.items():
            paths[name] = str(folder / name.replace("/", "_"))
            folder.mkdir(exist_ok=True)
            Path(paths[name]).write_bytes(data)
        plan[key] = {"manifest": manifest, "files": paths}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    result = subprocess.run(
        [sys.executable, str(HERE / "crash_writer.py"), str(tmp_path / "plan.json")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]

    for series in ("replace", "fresh"):
        runs = [r for r in records if r["series"] == series]
        assert runs and all(r["ended"] == "killed" for r in runs), [
            r for r in runs if r["ended"] != "killed"
        ]
        outcomes = {}
        for run in runs:
            where = f"{series}, killed before {run['kind']} #{run['point']} ({run['last_event']})"
            try:
                outcomes[(run["kind"], run["point"])] = holds(Path(run["dest"]))
            except (BundleError, AssertionError, KeyError) as exc:
                pytest.fail(f"{where}: the destination is broken: {exc}")
            # Leftovers of a crash are hidden staging names beside it, never visible ones.
            extra = [n for n in siblings(Path(run["dest"])) if n != "signs"]
            assert all(n.startswith(".signs.") for n in extra), (where, extra)
        events = [outcomes[("event", n)] for n in range(1, runs[0]["of"] + 1)]
        before = "old" if series == "replace" else "missing"
        assert before in events and "new" in events, events  # the kill points span the swap
        assert set(events) == {before, "new"}, events
        # Once the new bundle is visible it stays: one switch, from old to new.
        switch = events.index("new")
        assert events[switch:] == ["new"] * (len(events) - switch), events
        copies = [v for (kind, _), v in outcomes.items() if kind == "copy"]
        assert copies and set(copies) == {before}, copies  # a half-copied bundle is never seen
