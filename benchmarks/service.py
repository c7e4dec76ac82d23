"""How fast `edge-runtime daemon` starts and stops, as systemd sees it.

Each round starts the daemon on ``synthetic:traffic-signs`` (paced at 30 frames/s, the bundled
int8 model, a reject action with a fail-safe state) with a notification socket of its own, the
way ``Type=notify`` runs it, and measures:

- ready: from the process start to ``READY=1`` (interpreter, imports, model load, first frame);
- stop: from SIGTERM to the process's exit (the frame in hand, the fail-safe state entered,
  sinks flushed, the status server and the model closed, interpreter teardown);

and checks that every stop exited 0 after ``STOPPING=1``. The unit allows ``TimeoutStopSec=15``;
the service should stop well inside 2 s.

    python benchmarks/service.py
    python benchmarks/service.py --rounds 10 --json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "traffic-signs"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config_text(port: int) -> str:
    return (
        f'[model]\npath = "{MODEL}"\n\n'
        '[source]\nuri = "synthetic:traffic-signs?fps=30"\n\n'
        f'[service]\nhttp = "127.0.0.1:{port}"\n\n'
        '[outputs]\nreject = { label = "stop", fail_safe = "reject" }\n'
    )


def wait_for(sock: socket.socket, key: str, deadline: float, seen: list[str]) -> bool:
    """Read notifications until one starts with ``key`` (True) or ``deadline`` passes."""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            return False
        seen.append(message)
        if message.startswith(key):
            return True
    return False


def one_round(folder: Path) -> dict[str, object]:
    path = folder / "config.toml"
    path.write_text(config_text(free_port()))
    address = str(folder / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        env["NOTIFY_SOCKET"] = address
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime.cli", "daemon", "--config", str(path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen: list[str] = []
        try:
            if not wait_for(sock, "READY=1", started + 120, seen):
                raise RuntimeError(f"no READY=1: {process.communicate(timeout=30)[1][-2000:]}")
            ready_s = time.monotonic() - started
            time.sleep(1.0)  # frames flow
            stop_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
            stop_s = time.monotonic() - stop_at
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
            os.unlink(address)
        stopping = wait_for(sock, "STOPPING=1", time.monotonic() + 1, seen)
    return {
        "ready_s": round(ready_s, 3),
        "stop_s": round(stop_s, 3),
        "exit": process.returncode,
        "stopping_sent": stopping,
        "fail_safe_logged": "fail-safe: entered (the daemon is stopping)" in stderr,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="daemon starts and stops (5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if not (MODEL / "manifest.json").exists():
        print("service.py: the bundled models are not built (make demo builds them)")
        return 1
    rounds = []
    with tempfile.TemporaryDirectory(prefix="service-bench-") as scratch:
        for index in range(args.rounds):
            folder = Path(scratch, str(index))
            folder.mkdir()
            rounds.append(one_round(folder))
    ready = [float(str(r["ready_s"])) for r in rounds]
    stop = [float(str(r["stop_s"])) for r in rounds]
    summary = {
        "rounds": rounds,
        "ready_s": {"median": statistics.median(ready), "max": max(ready)},
        "stop_s": {"median": statistics.median(stop), "max": max(stop)},
        "all_exit_0": all(r["exit"] == 0 for r in rounds),
        "all_stopping_sent": all(r["stopping_sent"] for r in rounds),
        "all_fail_safe_on_stop": all(r["fail_safe_logged"] for r in rounds),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for index, r in enumerate(rounds):
            print(
                f"round {index}: ready {r['ready_s']:.2f} s  stop {r['stop_s']:.2f} s  "
                f"exit {r['exit']}  STOPPING {r['stopping_sent']}  "
                f"fail-safe {r['fail_safe_logged']}"
            )
        print(
            f"ready: median {summary['ready_s']['median']:.2f} s, max {max(ready):.2f} s; "
            f"stop: median {summary['stop_s']['median']:.2f} s, max {max(stop):.2f} s; "
            f"all exit 0: {summary['all_exit_0']}"
        )
    ok = summary["all_exit_0"] and summary["all_stopping_sent"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
