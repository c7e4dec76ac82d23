"""RuntimeStatus: counters, FPS over a window, accuracy, percentiles, thread safety."""

from __future__ import annotations

import json
import threading

import pytest

from edge_runtime import status as status_module
from edge_runtime.status import LatencyWindow, RuntimeStatus
from edge_runtime.types import UNKNOWN, Classification, Prediction


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def prediction(index: int, label: str, truth: str | None = None, event: bool = False) -> Prediction:
    return Prediction(
        frame_index=index,
        timestamp=float(index),
        label=label,
        score=0.9,
        top=(Classification(0, label, 0.9),),
        truth=truth,
        event=event,
        latency_ms={"inference": float(index), "total": 2.0 * index},
    )


def test_counts_fps_and_accuracy() -> None:
    clock = FakeClock()
    status = RuntimeStatus(clock=clock, fps_window_s=5.0)
    status.set_model({"name": "signs", "version": 3})
    status.set_state("running")
    for i in range(11):
        clock.now = 100.0 + i * 0.1  # 10 frames per second
        label = UNKNOWN if i == 3 else ("stop" if i % 2 else "yield")
        status.record(prediction(i, label, truth="stop", event=(i == 5)))
    snapshot = status.snapshot()
    assert snapshot["frames"] == 11
    assert snapshot["fps"] == pytest.approx(10.0)
    assert snapshot["unknown"] == 1 and snapshot["events"] == 1
    assert snapshot["accuracy"] == pytest.approx(4 / 11)  # frames 1, 5, 7, 9 are "stop"
    assert snapshot["model"] == {"name": "signs", "version": 3}
    assert snapshot["latest"]["frame"] == 10
    assert snapshot["latency_ms"]["inference"]["p50"] == pytest.approx(5.0)
    json.dumps(snapshot)  # JSON-ready


def test_fps_window_forgets_old_frames() -> None:
    clock = FakeClock()
    status = RuntimeStatus(clock=clock, fps_window_s=1.0)
    for i in range(5):
        clock.now = 100.0 + i * 0.5  # 2 FPS
        status.record(prediction(i, "stop"))
    clock.now = 200.0
    status.record(prediction(5, "stop"))
    assert status.fps() == 0.0  # one frame in the window: no rate yet


def test_no_truth_means_no_accuracy() -> None:
    status = RuntimeStatus()
    status.record(prediction(0, "stop"))
    assert status.accuracy() is None and status.snapshot()["accuracy"] is None


def test_latency_window_percentiles() -> None:
    window = LatencyWindow(size=100)
    for value in range(1, 101):
        window.add(float(value))
    summary = window.summary()
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p99"] == pytest.approx(99.01)
    assert LatencyWindow().summary()["p95"] == 0.0


def test_source_stats_and_errors_in_snapshot() -> None:
    status = RuntimeStatus()
    status.set_source({"uri": "camera:0"}, lambda: {"dropped": 7})
    status.count_error("corrupt_frame")
    status.count_error("corrupt_frame")
    snapshot = status.snapshot()
    assert snapshot["source"] == {"uri": "camera:0", "dropped": 7}
    assert snapshot["errors"] == {"corrupt_frame": 2}


def test_concurrent_writers_and_readers() -> None:
    status = RuntimeStatus()

    def write(offset: int) -> None:
        for i in range(500):
            status.record(prediction(offset + i, "stop"))

    def read() -> None:
        for _ in range(200):
            json.dumps(status.snapshot())

    threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(4)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert status.frames == 2000


def test_observers_sections_and_last_frame_age() -> None:
    clock = FakeClock()
    status = RuntimeStatus(clock=clock)
    seen: list[int] = []

    def broken(item: Prediction) -> None:
        raise RuntimeError("observer bug")

    status.add_observer(broken)  # logged, never raised into the frame loop
    status.add_observer(lambda item: seen.append(item.frame_index))
    assert status.last_frame_age_s() is None and status.snapshot()["last_frame_age_s"] is None
    status.record(prediction(0, "stop"))
    clock.now += 1.5
    status.record(prediction(1, "stop"))
    clock.now += 0.25
    assert seen == [0, 1] and status.last_frame_age_s() == pytest.approx(0.25)
    status.remove_observer(broken)
    status.remove_observer(broken)  # not an error

    status.set_section("update", {"state": "downloading", "version": 4})
    snapshot = status.snapshot()
    assert snapshot["update"] == {"state": "downloading", "version": 4}
    assert snapshot["last_frame_age_s"] == 0.25
    status.set_section("update", None)
    assert "update" not in status.snapshot()
    with pytest.raises(ValueError, match="built-in"):
        status.set_section("frames", {})
    # Every key a snapshot has of its own is protected from sections.
    assert set(RuntimeStatus().snapshot()) == status_module._OWN_KEYS
