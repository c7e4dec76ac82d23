"""The daemon's update thread notices a frame loop that stalls while a new model is on
probation (systemd's watchdog is about to restart the service) and hands it to the store's
probation counters as a watchdog restart; the policy that turns it into a rollback is tested in
tests/test_ota_policy.py. Clocks and ages are injected: nothing here waits."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from edge_runtime.ota.policy import ProbationStats
from edge_runtime.service.updates import UpdateWorker


class FakeSource:
    def __init__(self) -> None:
        self.reconnecting = False

    def reconnecting_on_schedule(self, grace_s: float) -> bool:
        return self.reconnecting


class FakeHost:
    """What the update thread reads of the daemon (``ServingHost`` in service/updates.py)."""

    def __init__(self, watchdog_s: float | None) -> None:
        self.notifier = SimpleNamespace(watchdog_interval_s=watchdog_s)
        self.age: float | None = 0.0
        self.status = SimpleNamespace(last_frame_age_s=lambda: self.age)
        self.source = FakeSource()
        self.pipeline = SimpleNamespace(source=self.source)
        self.config = None

    def serving_path(self) -> str | None:
        return None

    def load_model_at(self, path: str) -> Any:
        raise AssertionError("not used here")

    def swap_model_path(self, path: str, detail: str) -> None:
        raise AssertionError("not used here")


class FakeAgent:
    def __init__(self) -> None:
        self.section = SimpleNamespace(interval_s=900.0, jitter=0.1)
        self.recorded: list[ProbationStats] = []

    def record_probation(self, delta: ProbationStats, stopping: bool = False) -> None:
        self.recorded.append(delta)
        return None


class OnProbation:
    version = 2

    def take(self) -> ProbationStats:
        return ProbationStats()


def worker(watchdog_s: float | None = 10.0) -> tuple[UpdateWorker, FakeHost, FakeAgent]:
    host, agent = FakeHost(watchdog_s), FakeAgent()
    update = UpdateWorker(host, agent, clock=lambda: 0.0)  # type: ignore[arg-type]
    update._probation = OnProbation()  # type: ignore[assignment]
    return update, host, agent


def test_a_stall_on_probation_is_recorded_once_as_a_watchdog_restart() -> None:
    update, host, agent = worker()
    host.age = 4.0  # frames flow
    update._watch_stall()
    host.age = 12.0  # past the watchdog interval: systemd will restart the service
    update._watch_stall()
    update._watch_stall()  # the same stall, seen again, counts once
    update._flush()
    assert agent.recorded[-1].watchdog_restarts == 1
    host.age = 1.0  # frames again, then a second stall
    update._watch_stall()
    host.age = 30.0
    update._watch_stall()
    update._flush()
    assert agent.recorded[-1].watchdog_restarts == 1 and len(agent.recorded) == 2


def test_no_stall_is_recorded_while_the_camera_reconnects_on_schedule() -> None:
    update, host, agent = worker()
    host.age = 60.0
    host.source.reconnecting = True
    update._watch_stall()
    update._flush()
    assert agent.recorded[-1].watchdog_restarts == 0


def test_no_stall_without_a_watchdog_or_a_model_on_probation() -> None:
    update, host, agent = worker(watchdog_s=None)
    host.age = 60.0
    update._watch_stall()
    update._flush()
    assert agent.recorded[-1].watchdog_restarts == 0
    update, host, agent = worker()
    update._probation = None
    host.age = 60.0
    update._watch_stall()
    assert update._pending_watchdog == 0


def test_a_stall_is_not_counted_when_the_daemon_is_stopping() -> None:
    update, host, agent = worker()
    host.age = 60.0
    update._watch_stall()
    update._flush(stopping=True)  # a clean stop is no watchdog restart
    assert agent.recorded[-1].watchdog_restarts == 0
