"""Crash a bundle write at every file-system step: the driver behind tests/test_bundle_atomic.py.

Run as ``python crash_writer.py PLAN.json``. For every kill point it prepares a destination (with
the old bundle, or nothing), forks, and the child writes the new bundle over it and SIGKILLs
itself at that point: right before its N-th file-system operation (an audit event such as
``open``, ``os.rename``, ``shutil.rmtree`` or the exchange), or half-way through copying its K-th
file. Printing one JSON line per attempt, it leaves the destinations for the test to inspect.

Forking from this small, single-threaded process (rather than from pytest) makes each attempt
cost milliseconds instead of a fresh interpreter's import time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

# Operations that change or read the file system, as CPython (and fsutil.exchange) audit them.
EVENTS = {
    "open",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.mkdir",
    "os.symlink",
    "os.truncate",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.move",
    "tempfile.mkdtemp",
    "tempfile.mkstemp",
    "edge_runtime.fsutil.exchange",
}


def attempt(
    dest: Path,
    manifest: dict[str, Any],
    files: dict[str, Any],
    *,
    kill_at: int | None = None,
    kill_in_copy: int | None = None,
) -> tuple[str, int, str]:
    """Write in a forked child; returns (how it ended, events seen, last event)."""
    import edge_runtime.fsutil as fsutil
    from edge_runtime.bundle import write_bundle

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        try:
            seen: list[str] = []
            copies = [0]
            real_copy = fsutil.shutil.copyfileobj

            def hook(event: str, args: tuple[Any, ...]) -> None:
                if event in EVENTS:
                    seen.append(event)
                    os.write(write_end, (event + "\n").encode())
                    if kill_at is not None and len(seen) == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)

            def copy(src: Any, dst: Any, length: int = 0) -> None:
                copies[0] += 1
                if copies[0] != kill_in_copy:
                    real_copy(src, dst, length)
                    return
                data = src.read()
                dst.write(data[: len(data) // 2])
                dst.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            fsutil.shutil.copyfileobj = copy
            sys.addaudithook(hook)
            write_bundle(dest, manifest, files, force=True)
            os._exit(0)
        except BaseException:  # noqa: BLE001 - report anything, then die without cleanup
            traceback.print_exc()
            os._exit(3)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    events = b"".join(chunks).decode().split()
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        ended = "killed"
    elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        ended = "finished"
    else:
        ended = f"failed ({status})"
    return ended, len(events), events[-1] if events else ""


def main(plan_path: str) -> int:
    from edge_runtime.bundle import write_bundle

    plan = json.loads(Path(plan_path).read_text())
    work = Path(plan["work"])
    old, new = plan["old"], plan["new"]
    new_files = {name: Path(path) for name, path in new["files"].items()}
    old_files = {name: Path(path) for name, path in old["files"].items()}

    for series in ("replace", "fresh"):
        # A clean run first tells how many kill points there are.
        probe = work / f"{series}-probe" / plan["name"]
        if series == "replace":
            write_bundle(probe, old["manifest"], old_files)
        ended, total, _ = attempt(probe, new["manifest"], new_files)
        assert ended == "finished", ended
        points: list[tuple[str, int]] = [("event", n) for n in range(1, total + 1)]
        points += [("copy", k) for k in range(1, len(new_files) + 1)]
        for kind, number in points:
            dest = work / f"{series}-{kind}-{number:03d}" / plan["name"]
            if series == "replace":
                write_bundle(dest, old["manifest"], old_files)
            else:
                dest.parent.mkdir(parents=True)
            ended, seen, last = attempt(
                dest,
                new["manifest"],
                new_files,
                kill_at=number if kind == "event" else None,
                kill_in_copy=number if kind == "copy" else None,
            )
            record = {
                "series": series,
                "kind": kind,
                "point": number,
                "of": total,
                "ended": ended,
                "last_event": last,
                "dest": str(dest),
            }
            print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
