"""The service's small parts: sd_notify, the journal's log lines, the board's health in
/metrics (fake sysfs and command runner)."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from edge_runtime.service import logs
from edge_runtime.service.hardware import (
    BoardMonitor,
    parse_throttled,
    soc_temperature_c,
    throttled_flags,
)
from edge_runtime.service.notify import Notifier, monotonic_usec
from tests.fakes_io import FakeClock
from tests.fakes_service import notify_socket


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_messages_reach_the_notify_socket(abstract: bool) -> None:
    with notify_socket(abstract) as listener:
        notifier = Notifier(listener.env())
        assert notifier.ready("model x v1: 3.0 fps")
        assert notifier.reloading()
        assert notifier.stopping()
        notifier.close()
        messages = listener.snapshot()
    assert messages[0] == "READY=1\nSTATUS=model x v1: 3.0 fps"
    assert messages[1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert messages[2] == "STOPPING=1"


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.ready() and not notifier.watchdog()


def test_a_vanished_supervisor_is_no_error(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.notify("READY=1") is False


def test_the_watchdog_pings_at_half_the_interval() -> None:
    clock = FakeClock()
    with notify_socket() as listener:
        notifier = Notifier(listener.env(WATCHDOG_USEC="2000000"), clock=clock)
        assert notifier.watchdog_interval_s == 2.0
        assert notifier.watchdog()  # the first at once
        clock.advance(0.9)
        assert not notifier.watchdog()
        clock.advance(0.2)
        assert notifier.watchdog()
        assert listener.kinds() == ["WATCHDOG", "WATCHDOG"]


def test_watchdog_settings_meant_for_another_process_are_ignored() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000"}
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 1.0
    assert Notifier({**env, "WATCHDOG_PID": "1"}, pid=5).watchdog_interval_s is None
    assert Notifier({**env, "WATCHDOG_USEC": "0"}).watchdog_interval_s is None


def test_monotonic_usec_is_clock_monotonic() -> None:
    import time

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= monotonic_usec() <= before + 5_000_000


def _log_lines(log_format: logs.LogFormat, environ: dict[str, str], stream: io.StringIO) -> str:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.configure("debug", log_format, environ=environ, stream=stream)
        logger = logging.getLogger("edge_runtime.test")
        logger.error("camera %s lost", "camera:0")
        logger.warning("rtsp://admin:secret@cam/live answered\nslowly")
        logger.info("ready")
        logger.debug("detail")
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            logger.exception("it failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    return stream.getvalue()


def test_journal_lines_carry_priorities_one_line_per_event() -> None:
    text = _log_lines("journal", {}, io.StringIO())
    lines = text.splitlines()
    assert lines[0] == "<3>edge_runtime.test: camera camera:0 lost"
    # A line break inside a message is shown escaped, as on every console line of the runtime.
    assert lines[1] == "<4>edge_runtime.test: rtsp://admin:***@cam/live answered\\x0aslowly"
    assert lines[2] == "<6>edge_runtime.test: ready"
    assert lines[3] == "<7>edge_runtime.test: detail"
    assert lines[4].startswith("<3>edge_runtime.test: it failed: ValueError: bad value | ")
    assert len(lines) == 5


def test_plain_lines_outside_the_journal(tmp_path: Path) -> None:
    text = _log_lines("auto", {}, io.StringIO())
    assert not text.startswith("<") and " ERROR edge_runtime.test: camera camera:0 lost" in text


def test_auto_finds_the_journal_by_stderrs_device_and_inode(tmp_path: Path) -> None:
    with (tmp_path / "stream").open("w") as stream:
        info = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert logs.stderr_is_journal(env, stream)  # type: ignore[arg-type]
        assert not logs.stderr_is_journal({"JOURNAL_STREAM": "1:2"}, stream)  # type: ignore[arg-type]


def fake_sysfs(root: Path, zones: dict[str, str]) -> Path:
    for index, (kind, temp) in enumerate(zones.items()):
        zone = root / "class" / "thermal" / f"thermal_zone{index}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(temp + "\n")
    return root


def test_soc_temperature_from_sysfs(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", {"gpu-thermal": "41000", "cpu-thermal": "63250"})
    assert soc_temperature_c(sysfs) == 63.25
    assert soc_temperature_c(tmp_path / "none") is None


def test_throttling_flags_from_vcgencmd() -> None:
    flags = parse_throttled("throttled=0x50005\n")
    assert flags is not None
    assert flags["under_voltage"] and flags["throttled"] and not flags["arm_frequency_capped"]
    assert flags["under_voltage_occurred"] and flags["throttled_occurred"]
    assert throttled_flags(lambda cmd: (0, "throttled=0x0")) == {k: False for k in flags}

    def missing(command: object) -> tuple[int, str]:
        raise FileNotFoundError("vcgencmd")

    assert throttled_flags(missing) is None
    assert throttled_flags(lambda cmd: (1, "")) is None
    assert parse_throttled("garbage") is None


def test_the_board_is_in_the_metrics(tmp_path: Path) -> None:
    client = pytest.importorskip("prometheus_client")
    from edge_runtime.service.metrics import PredictionMetrics

    sysfs = fake_sysfs(tmp_path / "sys", {"cpu-thermal": "71500"})
    calls: list[object] = []

    def run(command: object) -> tuple[int, str]:
        calls.append(command)
        return 0, "throttled=0x4"

    monitor = BoardMonitor(sysfs=sysfs, run=run, clock=FakeClock())
    metrics = PredictionMetrics(client, lambda: {"state": "running"}, monitor.read)
    text = metrics.render()[0].decode()
    assert "edge_classify_soc_temperature_celsius 71.5" in text
    assert 'edge_classify_throttled{flag="throttled"} 1.0' in text
    assert 'edge_classify_throttled{flag="under_voltage"} 0.0' in text
    metrics.render()
    assert len(calls) == 1  # read once per interval, not per scrape
