"""The daemon in this process, on a thread: the exact sd_notify sequences (start, reloads, stop),
the watchdog while frames flow, while the camera is reconnected and not when the loop is wedged,
the reload history in /status, and the fail-safe outputs.

The daemon runs without signal handlers here (they belong to the main thread); the subprocess
tests in test_daemon_process.py send real signals. Waits are bounded and generous; no assertion
is about how long something took.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.service.daemon import Daemon, changed_keys, service_config
from tests.fakes_io import free_port, wait_until
from tests.fakes_service import (
    CONTROLS,
    MODEL,
    NotifySocket,
    WedgeableLoader,
    notify_socket,
    register_fake_sources,
    without_watchdog,
    write_config,
)

pytestmark = pytest.mark.skipif(
    not (MODEL / "manifest.json").exists(), reason="the bundled models are not built"
)

SYNTHETIC = "synthetic:traffic-signs?fps=40&width=96&height=72"


def config_text(
    port: int, *, threshold: float | None = None, source: str = SYNTHETIC, extra: str = ""
) -> str:
    post = f"\n[postprocess]\nthreshold = {threshold}\n" if threshold is not None else ""
    return (
        f'[model]\npath = "{MODEL}"\n\n[source]\nuri = "{source}"\n\n'
        f'[service]\nhttp = "127.0.0.1:{port}"\nstale_after_s = 1.0\n{post}{extra}'
    )


class Running:
    """A daemon on a thread, stopped and joined at the end."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.error: BaseException | None = None
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.code = self.daemon.run()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.error = exc

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the daemon did not stop"

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.daemon.server_url}/status", timeout=10) as answer:
            return dict(json.loads(answer.read()))


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    with notify_socket(abstract=True) as listener:
        yield listener


def start(path: Path, notify: NotifySocket, loader: Any = None, **env: str) -> Running:
    daemon = Daemon(
        path,
        environ=notify.env(**env),
        signals=False,
        configure_logging=False,
        **({"loader": loader} if loader is not None else {}),
    )
    running = Running(daemon)
    assert wait_until(lambda: daemon.started.is_set() or running.error is not None, 60)
    assert running.error is None, running.error
    return running


def test_start_reload_and_stop_send_the_exact_sequence(
    tmp_path: Path, notify: NotifySocket
) -> None:
    path = write_config(tmp_path / "config.toml", config_text(free_port()))
    running = start(path, notify)
    try:
        assert wait_until(lambda: "READY" in notify.kinds(), 10)
        start_kinds = without_watchdog(notify.kinds())
        assert start_kinds == ["EXTEND_TIMEOUT_USEC", "READY"]
        ready = next(m for m in notify.snapshot() if m.startswith("READY=1"))
        # READY carries the model and the rate: "STATUS=traffic-signs v1 (... on ...): N fps"
        assert "STATUS=traffic-signs v1 (" in ready and " fps" in ready

        # A good reload: a changed threshold, swapped in without a new model.
        before = len(notify.snapshot())
        path.write_text(config_text(running.daemon.server.port, threshold=0.9))
        record = running.daemon.reload()
        assert record.outcome == "applied" and record.changed == ("postprocess.threshold",)
        reload_kinds = without_watchdog(notify.kinds()[before:])
        assert reload_kinds == ["RELOADING", "READY"]
        reloading = next(m for m in notify.snapshot()[before:] if m.startswith("RELOADING=1"))
        assert reloading.split("\n")[1].startswith("MONOTONIC_USEC=")
        assert int(reloading.split("\n")[1].split("=")[1]) > 0
        # /status pages are rendered at most twice a second: wait for the fresh one.
        assert wait_until(lambda: len(running.status()["service"]["reloads"]) == 1, 10)
        service = running.status()["service"]
        assert service["decisions"]["threshold"] == 0.9
        assert service["reloads"][-1]["outcome"] == "applied"

        # A bad reload: refused, the old settings keep serving, READY ends the reload anyway.
        before = len(notify.snapshot())
        path.write_text(config_text(running.daemon.server.port) + "\n[postprocess]\nbogus = 1\n")
        record = running.daemon.reload()
        assert record.outcome == "refused" and "bogus" in record.detail
        assert without_watchdog(notify.kinds()[before:]) == ["RELOADING", "READY"]
        assert wait_until(lambda: len(running.status()["service"]["reloads"]) == 2, 10)
        status = running.status()
        assert status["service"]["decisions"]["threshold"] == 0.9
        assert status["service"]["reloads"][-1]["outcome"] == "refused"
        assert status["service"]["reload_counts"] == {"applied": 1, "refused": 1}
        assert "bogus" in status["service"]["last_error"]["message"]
        frames = status["frames"]
        assert wait_until(lambda: running.status()["frames"] > frames, 10), "it stopped serving"

        before = len(notify.snapshot())
    finally:
        running.stop()
    assert running.error is None and running.code == 0
    assert without_watchdog(notify.kinds()[before:]) == ["STOPPING"]


def test_a_model_that_does_not_load_on_reload_is_refused(
    tmp_path: Path, notify: NotifySocket
) -> None:
    path = write_config(tmp_path / "config.toml", config_text(free_port()))
    running = start(path, notify)
    try:
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "manifest.json").write_text("{ not json")
        path.write_text(config_text(running.daemon.server.port).replace(str(MODEL), str(broken)))
        record = running.daemon.reload()
        assert record.outcome == "refused" and "manifest.json" in record.detail
        assert wait_until(lambda: running.status()["service"]["reloads"], 10)
        status = running.status()
        assert status["model"]["name"] == "traffic-signs"
        assert status["state"] == "running"
    finally:
        running.stop()


def test_the_watchdog_pings_while_frames_flow_and_stops_when_the_loop_wedges(
    tmp_path: Path, notify: NotifySocket
) -> None:
    path = write_config(tmp_path / "config.toml", config_text(free_port()))
    loader = WedgeableLoader()
    # WATCHDOG_USEC for this process: a ping at least every 0.15 s while frames flow.
    running = start(path, notify, loader, WATCHDOG_USEC="300000", WATCHDOG_PID=str(_pid()))
    try:
        assert running.daemon.notifier.watchdog_interval_s == pytest.approx(0.3)
        assert wait_until(lambda: notify.kinds().count("WATCHDOG") >= 3, 20)
        model = loader.models[-1]
        model.wedge.set()
        assert model.blocked.wait(10)
        pings = notify.kinds().count("WATCHDOG")
        # Several watchdog intervals with the loop stuck inside inference: not one ping.
        threading.Event().wait(1.0)
        assert notify.kinds().count("WATCHDOG") == pings
        model.release.set()
        model.wedge.clear()
        assert wait_until(lambda: notify.kinds().count("WATCHDOG") > pings, 20)
    finally:
        running.stop()


def test_a_watchdog_meant_for_another_process_is_ignored(notify: NotifySocket) -> None:
    from edge_runtime.service.notify import Notifier

    notifier = Notifier(notify.env(WATCHDOG_USEC="300000", WATCHDOG_PID="1"), pid=2)
    assert notifier.watchdog_interval_s is None and not notifier.watchdog()


def test_the_watchdog_keeps_pinging_while_the_camera_is_reconnected_on_schedule(
    tmp_path: Path, notify: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_fake_sources(monkeypatch)
    CONTROLS.present.set()
    CONTROLS.wedged.clear()
    path = write_config(tmp_path / "config.toml", config_text(free_port(), source="flaky:0"))
    running = start(path, notify, WATCHDOG_USEC="300000")
    try:
        CONTROLS.present.clear()  # unplugged: reconnect attempts fail, on schedule
        assert wait_until(lambda: running.status()["source"]["state"] == "reconnecting", 10)
        frames = running.status()["frames"]
        pings = notify.kinds().count("WATCHDOG")
        assert wait_until(lambda: notify.kinds().count("WATCHDOG") >= pings + 3, 20)
        assert running.status()["frames"] <= frames + 1  # at most the frame in hand
        health = urllib.request.Request(f"{running.daemon.server_url}/healthz")
        with pytest.raises(urllib.error.HTTPError) as refused:
            # no frame for longer than stale_after_s: the daemon is alive, but not healthy
            assert wait_until(lambda: running.status()["last_frame_age_s"] > 1.5, 10)
            urllib.request.urlopen(health, timeout=10)
        assert refused.value.code == 503
        CONTROLS.present.set()  # plugged back: frames resume
        assert wait_until(lambda: running.status()["frames"] > frames + 5, 20)
        assert running.status()["source"]["state"] == "streaming"
        assert running.status()["source"]["reconnects"] >= 1
    finally:
        running.stop()
        CONTROLS.present.set()


def test_the_fail_safe_is_entered_on_a_stalled_source_and_on_stop(
    tmp_path: Path, notify: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    monkeypatch.setattr(gpiozero.Device, "pin_factory", factory)
    register_fake_sources(monkeypatch)
    out = tmp_path / "stdout.txt"
    extra = (
        '\n[outputs]\nreject = { label = "stop", fail_safe = "reject" }\n'
        'gpio = { pin = 17, label = "stop", fail_safe = "on" }\n'
    )
    path = write_config(
        tmp_path / "config.toml", config_text(free_port(), source="stalled:8", extra=extra)
    )
    with out.open("w") as stream:
        daemon = Daemon(
            path, environ=notify.env(), signals=False, configure_logging=False, stream=stream
        )
        running = Running(daemon)
        try:
            assert wait_until(lambda: daemon.started.is_set(), 60)
            assert wait_until(lambda: daemon.status.snapshot()["fail_safe"]["active"], 20)
            assert "no fresh decision" in daemon.status.snapshot()["fail_safe"]["reason"]
            assert factory.pin(17).state  # the gate's pin held at its fail-safe level
        finally:
            running.stop()
    lines = out.read_text().splitlines()
    assert lines[0] == "  >>> REJECT all (fail-safe: starting: no decision yet)"
    assert "  >>> REJECT lifted: decisions are fresh again" in lines
    assert any("no fresh decision for 1 s" in line for line in lines)


def test_what_the_status_server_owns_changes_at_the_next_restart(
    tmp_path: Path, notify: NotifySocket
) -> None:
    path = write_config(tmp_path / "config.toml", config_text(free_port()))
    running = start(path, notify)
    try:
        served = running.daemon.server_url
        text = config_text(free_port()) + "live_view_fps = 2.0\n"
        path.write_text(text)
        record = running.daemon.reload()
        assert record.outcome == "applied"
        assert set(record.changed) == {"service.http", "service.live_view_fps"}
        assert f"service.http takes effect on restart (serving {served})" in record.detail
        assert "service.live_view_fps take effect on restart" in record.detail
        assert running.daemon.server_url == served
    finally:
        running.stop()


@pytest.mark.parametrize("how", ["no model at the path", "the loader fails"])
def test_a_model_that_does_not_load_at_start_puts_the_outputs_in_their_fail_safe_state(
    tmp_path: Path, notify: NotifySocket, how: str
) -> None:
    from edge_runtime.errors import ModelError

    extra = '\n[outputs]\nreject = { label = "stop", fail_safe = "reject" }\n'
    text = config_text(free_port(), extra=extra)
    loader = None
    if how == "no model at the path":
        text = text.replace(str(MODEL), str(tmp_path / "gone"))
    else:

        def loader(*_: Any, **__: Any) -> Any:
            raise ModelError("the backend refused the artifact")

    path = write_config(tmp_path / "config.toml", text)
    out = tmp_path / "stdout.txt"
    with out.open("w") as stream:
        daemon = Daemon(
            path,
            environ=notify.env(),
            signals=False,
            configure_logging=False,
            stream=stream,
            **({"loader": loader} if loader is not None else {}),
        )
        with pytest.raises(ModelError):
            daemon.run()
    lines = out.read_text().splitlines()
    assert lines, "the reject action said nothing"
    assert lines[-1].startswith("  >>> REJECT all (fail-safe: the model failed to load: ")
    assert "READY" not in notify.kinds()


def test_reload_with_a_new_source_restarts_the_pipeline_and_a_bad_one_is_reverted(
    tmp_path: Path, notify: NotifySocket
) -> None:
    path = write_config(tmp_path / "config.toml", config_text(free_port()))
    running = start(path, notify)
    try:
        port = running.daemon.server.port
        banknotes = "synthetic:banknotes?fps=40&width=96&height=72"
        path.write_text(config_text(port, source=banknotes))
        assert running.daemon.reload().outcome == "applied"
        assert wait_until(lambda: running.status()["source"].get("scenario") == "banknotes", 20)
        # A camera that is not there: the new pipeline cannot open it, the old one comes back.
        path.write_text(config_text(port, source="camera:99"))
        assert running.daemon.reload().outcome == "applied"
        assert wait_until(
            lambda: running.status()["service"]["reloads"][-1]["outcome"] == "refused", 20
        )
        assert wait_until(lambda: running.status()["source"].get("scenario") == "banknotes", 20)
        frames = running.status()["frames"]
        assert wait_until(lambda: running.status()["frames"] > frames, 20)
    finally:
        running.stop()
    assert running.error is None


def test_service_config_retries_a_camera_for_ever_unless_told() -> None:
    from edge_runtime.config import parse_config

    base = {"model": {"path": str(MODEL)}, "source": {"uri": "camera:0"}}
    assert service_config(parse_config(base)).source.options["give_up_after_s"] == float("inf")
    told = {"model": {"path": str(MODEL)}, "source": {"uri": "camera:0?give_up_after_s=9"}}
    assert "give_up_after_s" not in service_config(parse_config(told)).source.options
    # `run` keeps the camera's own default: it gives up after a minute.
    assert "give_up_after_s" not in parse_config(base).source.options


def test_changed_keys_names_what_differs() -> None:
    from edge_runtime.config import parse_config

    a = parse_config({"model": {"path": "m"}, "source": {"uri": "camera:0"}})
    b = parse_config(
        {"model": {"path": "m"}, "source": {"uri": "camera:0"}, "postprocess": {"window": 3}}
    )
    assert changed_keys(a, b) == ("postprocess.window",)
    assert changed_keys(a, a) == ()


def _pid() -> int:
    import os

    return os.getpid()
