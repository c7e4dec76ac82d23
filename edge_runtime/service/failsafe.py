"""Fail-safe outputs: what actuators do when the decisions stop.

An actuating sink (a GPIO gate, the reject action, MQTT, a webhook) may declare a ``fail_safe``
state in its config. The outputs enter it together:

- at start, until the first fresh confident decision (a gate stays safe while the model loads);
- when no fresh confident decision arrived for ``stale_after_s`` (a stalled camera, a wedged
  model, a stream of ``unknown``);
- when the model fails to load, and when the daemon stops (for good: nothing leaves it then).

They leave it only on a fresh confident decision: a prediction whose label is not ``unknown``
and whose frame was captured at most ``stale_after_s`` ago.

:class:`FailSafeLogic` decides (pure: the caller passes the time); :class:`FailSafeSupervisor`
ticks it on a clock thread, feeds it each prediction (a status observer, after the sinks got
the prediction, so a sink leaving the state applies that prediction at once) and calls the
sinks. :meth:`FailSafeSupervisor.guard` wraps the actuating sinks so that closing one (a stop, a
source that failed, a reload that rebuilds the outputs) enters its fail-safe state first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edge_runtime.sinks import Sink, StatusProvider
from edge_runtime.status import RuntimeStatus
from edge_runtime.types import UNKNOWN, Frame, Prediction

log = logging.getLogger(__name__)

Transition = Literal["enter", "leave"]


@dataclass(frozen=True)
class FailSafeState:
    """Whether the outputs are in their fail-safe state, why, and since when."""

    active: bool
    reason: str
    since: float
    final: bool = False


class FailSafeLogic:
    """When to enter and leave the fail-safe state (pure). Starts in it (``starting``)."""

    def __init__(self, stale_after_s: float, now: float) -> None:
        if stale_after_s <= 0:
            raise ValueError("stale_after_s must be positive")
        self.stale_after_s = stale_after_s
        self.state = FailSafeState(True, "starting: no decision yet", now)
        self._last_fresh: float | None = None

    def fresh(self, prediction: Prediction, now: float) -> bool:
        """A confident decision on a frame captured within ``stale_after_s``."""
        return prediction.label != UNKNOWN and now - prediction.timestamp <= self.stale_after_s

    def observe(self, prediction: Prediction, now: float) -> Transition | None:
        """Take one prediction; ``"leave"`` when it ends the fail-safe state."""
        if not self.fresh(prediction, now):
            return None
        self._last_fresh = now
        if self.state.active and not self.state.final:
            self.state = FailSafeState(False, "", now)
            return "leave"
        return None

    def tick(self, now: float) -> Transition | None:
        """Time passing; ``"enter"`` when the last fresh decision is too old."""
        if self.state.active:
            return None
        last = self._last_fresh
        if last is None or now - last > self.stale_after_s:
            self.state = FailSafeState(True, f"no fresh decision for {self.stale_after_s:g} s", now)
            return "enter"
        return None

    def force(self, reason: str, now: float, *, final: bool = False) -> Transition | None:
        """Enter now (a model that failed to load, a stop); ``final``: never leave again."""
        was_active = self.state.active
        if self.state.final:
            return None
        self.state = FailSafeState(True, reason, now, final)
        return None if was_active else "enter"


class FailSafeSupervisor:
    """Keeps the actuating outputs' fail-safe states in step with :class:`FailSafeLogic`.

    ``stale_after_s``: see the module docstring; ``status``: where the state is published (the
    ``fail_safe`` section) and whose predictions are watched; ``clock`` must be the clock of
    the frames' timestamps (``time.monotonic``); ``tick_s`` how often the clock thread looks.
    """

    def __init__(
        self,
        stale_after_s: float,
        status: RuntimeStatus,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float | None = None,
    ) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self.logic = FailSafeLogic(stale_after_s, clock())
        self.status = status
        self.tick_s = tick_s if tick_s is not None else min(0.25, stale_after_s / 4)
        self._sinks: list[Sink] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.transitions: list[tuple[Transition, str]] = []
        status.add_observer(self.observe)
        self._publish()

    @property
    def active(self) -> bool:
        return self.logic.state.active

    @property
    def stale_after_s(self) -> float:
        return self.logic.stale_after_s

    @stale_after_s.setter
    def stale_after_s(self, value: float) -> None:
        with self._lock:
            self.logic.stale_after_s = value

    def guard(self, sinks: Sequence[Sink]) -> list[Sink]:
        """``sinks`` with each one that declares a fail-safe state wrapped: it enters that state
        when it opens while the outputs are in it, and before it closes."""
        return [_Guarded(sink, self) if sink.fail_safe is not None else sink for sink in sinks]

    # -- the clock thread ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="fail-safe", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.tick()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self.status.remove_observer(self.observe)

    # -- inputs ---------------------------------------------------------------------------------
    def observe(self, prediction: Prediction) -> None:
        with self._lock:
            transition = self.logic.observe(prediction, self._clock())
            self._apply(transition)

    def tick(self) -> None:
        with self._lock:
            self._apply(self.logic.tick(self._clock()))

    def enter(self, reason: str, *, final: bool = False) -> None:
        """Enter the fail-safe state now (``final``: for good, the daemon is stopping)."""
        with self._lock:
            transition = self.logic.force(reason, self._clock(), final=final)
            if transition is None and self.active:
                # Already in it: a guarded sink that joined since still needs telling.
                for sink in self._sinks:
                    _call(sink.enter_fail_safe, reason)
                self._publish()
                return
            self._apply(transition)

    # -- outputs --------------------------------------------------------------------------------
    def _apply(self, transition: Transition | None) -> None:
        if transition is None:
            return
        state = self.logic.state
        self.transitions.append((transition, state.reason))
        if transition == "enter":
            log.warning("fail-safe: entered (%s)", state.reason)
            for sink in self._sinks:
                _call(sink.enter_fail_safe, state.reason)
        else:
            log.info("fail-safe: left on a fresh decision")
            for sink in self._sinks:
                _call(sink.leave_fail_safe)
        self._publish()

    def _publish(self) -> None:
        state = self.logic.state
        self.status.set_section(
            "fail_safe",
            {
                "active": state.active,
                "reason": state.reason,
                "since_s": round(max(0.0, self._clock() - state.since), 3),
                "stale_after_s": self.logic.stale_after_s,
                "outputs": [f"{sink.name}={sink.fail_safe}" for sink in self._sinks],
            },
        )

    def _joined(self, sink: Sink) -> None:
        with self._lock:
            if sink not in self._sinks:
                self._sinks.append(sink)
            if self.active:
                _call(sink.enter_fail_safe, self.logic.state.reason)
            self._publish()

    def _left(self, sink: Sink, reason: str) -> None:
        with self._lock:
            _call(sink.enter_fail_safe, reason)
            if sink in self._sinks:
                self._sinks.remove(sink)
            self._publish()


def _call(method: Callable[..., object], *args: Any) -> None:
    try:
        method(*args)
    except Exception:  # one output failing must not keep the others out of their safe state
        log.exception("fail-safe: %r failed", method)


class _Guarded(Sink):
    """An actuating sink, as the supervisor hands it to the pipeline."""

    def __init__(self, inner: Sink, supervisor: FailSafeSupervisor) -> None:
        self.inner = inner
        self.name = inner.name
        self.fail_safe = inner.fail_safe
        self._supervisor = supervisor

    def open(self, status: StatusProvider | None = None) -> None:
        self.inner.open(status)
        self._supervisor._joined(self.inner)

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        self.inner.emit(prediction, frame)

    def close(self) -> None:
        state = self._supervisor.logic.state
        reason = state.reason if state.active else "output closing"
        self._supervisor._left(self.inner, reason)
        self.inner.close()

    def enter_fail_safe(self, reason: str) -> None:
        self.inner.enter_fail_safe(reason)

    def leave_fail_safe(self) -> None:
        self.inner.leave_fail_safe()
