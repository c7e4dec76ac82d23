"""Idle connections against the status server of a running `edge-runtime run --http`.

Starts the runtime on ``synthetic:traffic-signs`` (paced at 30 frames/s) with the status server on
a free loopback port, opens ``--connections`` TCP connections that never send a byte, and reports
the process's thread count before and one second after, how many of the connections the server
still holds open after ``--wait`` seconds, and whether /healthz still answers meanwhile.

    python benchmarks/status_connections.py
    python benchmarks/status_connections.py --connections 500 --wait 13 --json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no thread count")


def health(url: str) -> str:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
            return str(response.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except OSError as exc:
        return type(exc).__name__


def still_open(sock: socket.socket) -> bool:
    """True while the server has neither closed nor answered the connection."""
    sock.setblocking(False)  # a socket with a timeout would wait for it first
    try:
        sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)  # an answer (503) or the end
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def measure(connections: int, wait_s: float) -> dict[str, object]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "edge_runtime.cli", "run", "--model"]
    command += [str(ROOT / "models" / "traffic-signs"), "--source"]
    command += ["synthetic:traffic-signs?fps=30", "--output", "none", "--http", f"127.0.0.1:{port}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    sockets: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while health(url) != "200":
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the runtime did not start")
            time.sleep(0.2)
        before = threads_of(process.pid)
        for _ in range(connections):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(1.0)
        after = threads_of(process.pid)
        during = health(url)
        time.sleep(max(0.0, wait_s - 1.0))
        held = sum(still_open(sock) for sock in sockets)
        return {
            "connections": connections,
            "threads_before": before,
            "threads_1s_after": after,
            "healthz_while_held": during,
            "wait_s": wait_s,
            "still_open_after_wait": held,
            "threads_after_wait": threads_of(process.pid),
            "healthz_after_wait": health(url),
        }
    finally:
        for sock in sockets:
            sock.close()
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--wait", type=float, default=13.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.connections, args.wait)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
