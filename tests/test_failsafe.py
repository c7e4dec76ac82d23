"""Fail-safe outputs: the pure logic on an injected clock, the supervisor over real sinks (GPIO on
gpiozero's mock pin factory, the reject action, a webhook on loopback) and a stalled source."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from edge_runtime.config import parse_config
from edge_runtime.service.failsafe import FailSafeLogic, FailSafeSupervisor
from edge_runtime.sinks.action import RejectSink
from edge_runtime.sinks.gpio import GpioSink
from edge_runtime.sinks.webhook import WebhookSink
from edge_runtime.status import RuntimeStatus
from edge_runtime.types import UNKNOWN
from tests.fakes_io import FakeClock, WebhookReceiver, prediction, wait_until


def fresh(clock: FakeClock, label: str = "counterfeit", *, event: bool = True, age: float = 0.0):
    decided = prediction(0, label, 0.95, event=event)
    import dataclasses

    return dataclasses.replace(decided, timestamp=clock() - age)


def test_the_logic_starts_safe_leaves_on_a_fresh_decision_and_enters_when_stale() -> None:
    clock = FakeClock()
    logic = FailSafeLogic(2.0, clock())
    assert logic.state.active and logic.state.reason.startswith("starting")
    assert logic.observe(fresh(clock, UNKNOWN), clock()) is None  # not confident
    assert logic.observe(fresh(clock, age=3.0), clock()) is None  # a stale frame
    assert logic.observe(fresh(clock), clock()) == "leave"
    clock.advance(1.9)
    assert logic.tick(clock()) is None
    clock.advance(0.2)
    assert logic.tick(clock()) == "enter"
    assert logic.state.reason == "no fresh decision for 2 s"
    assert logic.tick(clock()) is None  # once
    assert logic.observe(fresh(clock), clock()) == "leave"


def test_a_final_fail_safe_is_never_left() -> None:
    clock = FakeClock()
    logic = FailSafeLogic(2.0, clock())
    logic.observe(fresh(clock), clock())
    assert logic.force("stopping", clock(), final=True) == "enter"
    assert logic.observe(fresh(clock), clock()) is None
    assert logic.state.active and logic.state.final


def test_a_gate_on_the_mock_pin_factory_holds_its_fail_safe_level() -> None:
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    clock = FakeClock()
    status = RuntimeStatus(clock=clock)
    supervisor = FailSafeSupervisor(1.0, status, clock=clock)
    # The kiosk's gate: the pin on = gate closed. It follows "counterfeit" when decisions flow.
    gate = GpioSink(17, "counterfeit", hold_s=0.0, pin_factory=factory, fail_safe="on", clock=clock)
    (guarded,) = supervisor.guard([gate])
    guarded.open()
    pin = factory.pin(17)
    assert gate.held and pin.state  # safe from the start: no decision yet

    genuine = fresh(clock, "genuine-10")
    guarded.emit(genuine)
    status.record(genuine)  # the supervisor sees it after the sinks: leaves, follows it
    assert not gate.held and not pin.state

    clock.advance(1.5)  # the source stalls: no fresh decision
    supervisor.tick()
    assert gate.held and pin.state
    assert status.snapshot()["fail_safe"]["active"] is True
    stale = fresh(clock, "genuine-10", age=5.0)  # a frame from before the stall
    guarded.emit(stale)
    status.record(stale)
    assert gate.held and pin.state

    counterfeit = fresh(clock, "counterfeit")
    guarded.emit(counterfeit)
    status.record(counterfeit)
    assert not gate.held and pin.state  # following the decision, which closes it too
    supervisor.enter("the daemon is stopping", final=True)
    guarded.close()
    supervisor.close()
    # The last level the pin was driven to before it was released: the fail-safe one.
    driven = [s.state for s in pin.states]
    assert driven[-1] is True or driven[-1] == 1
    assert gpiozero.DigitalOutputDevice is not None


def test_the_reject_action_announces_its_fail_safe() -> None:
    out = io.StringIO()
    clock = FakeClock()
    status = RuntimeStatus(clock=clock)
    supervisor = FailSafeSupervisor(1.0, status, clock=clock)
    (sink,) = supervisor.guard([RejectSink("counterfeit", stream=out, fail_safe="reject")])
    sink.open()
    decision = fresh(clock, "counterfeit")
    sink.emit(decision)  # held: the fail-safe already rejects everything
    status.record(decision)
    sink.emit(fresh(clock, "counterfeit"))
    sink.close()
    assert out.getvalue().splitlines() == [
        "  >>> REJECT all (fail-safe: starting: no decision yet)",
        "  >>> REJECT lifted: decisions are fresh again",
        "  >>> REJECT frame #0: counterfeit 0.950",
        "  >>> REJECT all (fail-safe: output closing)",
    ]


def test_a_webhook_hears_the_fail_safe_state_and_predictions_wait() -> None:
    clock = FakeClock()
    status = RuntimeStatus(clock=clock)
    supervisor = FailSafeSupervisor(1.0, status, clock=clock)
    with WebhookReceiver() as hook:
        webhook = WebhookSink(hook.url, fail_safe="closed", retries=0)
        (sink,) = supervisor.guard([webhook])
        sink.open()
        sink.emit(fresh(clock, "counterfeit"))  # held back while in the fail-safe state
        decision = fresh(clock, "counterfeit")
        status.record(decision)
        sink.emit(decision)
        supervisor.enter("the model failed to load: gone")
        sink.close()
        assert wait_until(lambda: len(hook.bodies) == 4, 10)
    starting = {"fail_safe": True, "state": "closed", "reason": "starting: no decision yet"}
    assert hook.bodies[0] == starting
    assert hook.bodies[1]["fail_safe"] is False
    assert hook.bodies[2]["label"] == "counterfeit"
    assert hook.bodies[3] == {
        "fail_safe": True,
        "state": "closed",
        "reason": "the model failed to load: gone",
    }


def test_outputs_without_a_fail_safe_are_left_alone() -> None:
    status = RuntimeStatus()
    supervisor = FailSafeSupervisor(1.0, status)
    plain = RejectSink("counterfeit", stream=io.StringIO())
    assert supervisor.guard([plain]) == [plain]


def test_fail_safe_states_are_part_of_each_outputs_config(tmp_path: Path) -> None:
    base = {"model": {"path": "m"}, "source": {"uri": "camera:0"}}
    config = parse_config(
        {
            **base,
            "outputs": {
                "gpio": {"pin": 17, "label": "counterfeit", "fail_safe": "on"},
                "reject": {"label": "counterfeit", "fail_safe": "reject"},
                "mqtt": {"url": "mqtt://b", "fail_safe": "closed"},
                "webhook": {"url": "http://h/x", "fail_safe": "closed"},
            },
        }
    )
    states = {key: config.outputs.get(key) for key in ("gpio", "reject", "mqtt", "webhook")}
    assert {key: value.fail_safe for key, value in states.items()} == {  # type: ignore[union-attr]
        "gpio": "on",
        "reject": "reject",
        "mqtt": "closed",
        "webhook": "closed",
    }
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="outputs.gpio.fail_safe"):
        parse_config({**base, "outputs": {"gpio": {"pin": 1, "label": "a", "fail_safe": "up"}}})
