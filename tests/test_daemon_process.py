"""`edge-runtime daemon` as systemd runs it: a process of its own, real signals, a notify socket,
the status server on a free loopback port.

One daemon runs the whole story (start, /healthz, /metrics, a good and a bad SIGHUP, SIGTERM)
so the suite pays for one start-up. Bad configs each get a process of their own: one line on
stderr, exit 1. Waits are bounded and generous for a loaded machine; how long the stop took is
measured by benchmarks/service.py, not asserted here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes_io import WebhookReceiver, free_port, wait_until
from tests.fakes_service import MODEL, NotifySocket, notify_socket

pytestmark = pytest.mark.skipif(
    not (MODEL / "manifest.json").exists(), reason="the bundled models are not built"
)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "synthetic:traffic-signs?fps=30&width=96&height=72"


def config(port: int, *, threshold: float | None = None, outputs: str = "") -> str:
    post = f"[postprocess]\nthreshold = {threshold}\n" if threshold is not None else ""
    return (
        f'[model]\npath = "{MODEL}"\n\n[source]\nuri = "{SOURCE}"\n\n'
        f'[service]\nhttp = "127.0.0.1:{port}"\nstale_after_s = 2.0\n\n{post}{outputs}'
    )


def spawn(path: Path, notify: NotifySocket | None, tmp_path: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.address
    return subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "daemon", "--config", str(path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr.txt").open("w"),
        text=True,
    )


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def status(base: str) -> dict[str, Any]:
    return dict(json.loads(get(f"{base}/status")[1]))


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    with notify_socket() as listener:
        yield listener


def test_the_daemon_serves_reloads_and_stops_as_a_service(
    tmp_path: Path, notify: NotifySocket
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    path = tmp_path / "config.toml"
    with WebhookReceiver() as hook:
        outputs = (
            "[outputs]\n"
            'reject = { label = "stop", fail_safe = "reject" }\n'
            f'webhook = {{ url = "{hook.url}", fail_safe = "closed" }}\n'
        )
        path.write_text(config(port, outputs=outputs))
        process = spawn(path, notify, tmp_path)
        try:
            assert wait_until(lambda: "READY" in notify.kinds() or process.poll() is not None, 90)
            assert process.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert wait_until(lambda: get(f"{base}/healthz")[0] == 200, 20)

            code, metrics = get(f"{base}/metrics")
            text = metrics.decode()
            assert code == 200
            assert "edge_classify_frames_total " in text
            assert 'edge_classify_stage_latency_seconds_bucket{le="0.001",stage="inference"}' in (
                text
            )
            assert "edge_classify_source_reconnects_total" in text

            # SIGHUP with a changed threshold: applied, and /status says so.
            path.write_text(config(port, threshold=0.9, outputs=outputs))
            process.send_signal(signal.SIGHUP)
            assert wait_until(
                lambda: status(base)["service"]["decisions"].get("threshold") == 0.9, 30
            )
            assert status(base)["service"]["reloads"][-1]["outcome"] == "applied"

            # SIGHUP with a broken config: refused, the old one keeps serving.
            path.write_text(config(port, outputs=outputs) + "\n[run]\nmax_frames = -1\n")
            process.send_signal(signal.SIGHUP)
            assert wait_until(
                lambda: status(base)["service"]["reloads"][-1]["outcome"] == "refused", 30
            )
            shown = status(base)
            assert "max_frames" in shown["service"]["reloads"][-1]["detail"]
            assert shown["service"]["decisions"]["threshold"] == 0.9
            assert wait_until(lambda: status(base)["frames"] > shown["frames"], 20)
            assert get(f"{base}/healthz")[0] == 200
            kinds = [k for k in notify.kinds() if k not in ("WATCHDOG", "STATUS")]
            assert kinds == [
                "EXTEND_TIMEOUT_USEC",
                "READY",
                "RELOADING",
                "READY",
                "RELOADING",
                "READY",
            ]

            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, (tmp_path / "stderr.txt").read_text()
        assert notify.kinds()[-1] == "STOPPING"
        # The fail-safe outputs on stop: the reject action stands, the webhook heard "closed".
        assert out.splitlines()[-1] == "  >>> REJECT all (fail-safe: the daemon is stopping)"
        assert hook.bodies[-1] == {
            "fail_safe": True,
            "state": "closed",
            "reason": "the daemon is stopping",
        }
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in stderr
    assert "reload refused" in stderr


def _holding(port: int) -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen(1)
    return holder


@pytest.mark.parametrize(
    "case", ["wrong type", "unknown key", "missing model", "unreachable source", "port in use"]
)
def test_a_bad_config_is_one_line_and_exit_1(tmp_path: Path, case: str) -> None:
    port = free_port()
    text = config(port)
    expected = {
        "wrong type": "service.stale_after_s",
        "unknown key": "service.colour",
        "missing model": "no model at /nowhere/model",
        "unreachable source": "cannot open camera camera:99",
        "port in use": "the port is already in use",
    }[case]
    if case == "wrong type":
        text = text.replace("stale_after_s = 2.0", 'stale_after_s = "soon"')
    elif case == "unknown key":
        text = text.replace("[service]\n", '[service]\ncolour = "blue"\n')
    elif case == "missing model":
        text = text.replace(str(MODEL), "/nowhere/model")
    elif case == "unreachable source":
        text = text.replace(SOURCE, "camera:99")
    path = tmp_path / "config.toml"
    path.write_text(text)
    holder = _holding(port) if case == "port in use" else None
    try:
        process = spawn(path, None, tmp_path)
        process.communicate(timeout=90)
    finally:
        if holder is not None:
            holder.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    errors = [line for line in stderr.splitlines() if line.startswith("edge-runtime: error:")]
    assert process.returncode == 1, stderr
    assert len(errors) == 1 and expected in errors[0], stderr
    assert "Traceback" not in stderr
    if case in ("wrong type", "unknown key", "missing model"):
        assert stderr.count("\n") == 1, stderr  # nothing but that line
