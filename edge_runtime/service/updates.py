"""Over-the-air updates inside ``edge-runtime daemon``: a background thread that checks the
repository every ``interval_s`` (with jitter), follows the store (an ``edge-runtime update`` or
``models rollback`` run beside the daemon), judges the model on probation and rolls it back,
and hot-swaps each change into the running pipeline between two frames.

The thread never loads a model while holding the store lock and never touches the pipeline but
through the daemon's :meth:`~edge_runtime.service.daemon.Daemon.swap_model_path`, the same path
a SIGHUP reload takes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.ota.agent import UpdateAgent, summary
from edge_runtime.ota.errors import OtaError
from edge_runtime.ota.policy import ProbationStats
from edge_runtime.ota.probation import ProbationModel
from edge_runtime.redaction import redact
from edge_runtime.serving import ServingModel

if TYPE_CHECKING:
    from edge_runtime.config import RuntimeConfig
    from edge_runtime.pipeline import Pipeline
    from edge_runtime.service.notify import Notifier
    from edge_runtime.status import RuntimeStatus

log = logging.getLogger("edge_runtime.daemon")

class ServingHost(Protocol):
    """What the update thread needs of the daemon that runs it
    (:class:`edge_runtime.service.daemon.Daemon`)."""

    notifier: Notifier
    status: RuntimeStatus
    config: RuntimeConfig | None
    pipeline: Pipeline | None

    def serving_path(self) -> str | None: ...

    def load_model_at(self, path: str) -> ServingModel: ...

    def swap_model_path(self, path: str, detail: str) -> None: ...


#: seconds between two looks at the store and the probation counters
POLL_S = 1.0


class UpdateWorker:
    """The daemon's update thread (see the module docstring).

    Injectable: ``clock`` (monotonic), ``rng`` (the jitter), ``poll_s``.
    """

    def __init__(
        self,
        daemon: ServingHost,
        agent: UpdateAgent,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        self.daemon = daemon
        self.agent = agent
        self.section = agent.section
        self._clock = clock
        self._rng = rng or random.Random()
        self._poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_check = clock() + self._interval()
        self.last_error: str | None = None
        self.checks = {"installed": 0, "up-to-date": 0, "refused": 0}
        self.rollbacks = 0
        self._stalled = False
        self._pending_watchdog = 0
        self._probation: ProbationModel | None = None

    # -- the serving model ----------------------------------------------------------------
    def wrap(self, serving: ServingModel, path: str) -> ServingModel:
        """``serving`` on probation when it is the store's model on probation."""
        state = self.agent.state()
        probation = state.probation
        active = state.active
        if probation is None or active is None or probation.version != active.version:
            return serving
        if path != str(self.agent.store.slot_path(active)):
            return serving
        shadow = None
        if self.section.shadow and state.previous is not None:
            shadow = self._load_shadow(str(self.agent.store.slot_path(state.previous)))
        model = ProbationModel(
            serving.model,
            probation.version,
            shadow=shadow,
            shadow_interval_s=self.section.shadow_interval_s,
            clock=self._clock,
        )
        self._probation = model
        log.info("update: v%d is on probation", probation.version)
        return ServingModel(model, serving.postprocessor)  # type: ignore[arg-type]

    def _load_shadow(self, path: str) -> Any:
        try:
            return self.daemon.load_model_at(path).model
        except EdgeRuntimeError as exc:
            log.warning("update: shadow probation off, the previous model does not load: %s", exc)
            return None

    # -- the thread -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="updates", daemon=True)
        self._thread.start()
        self.publish()

    def stop(self) -> None:
        """Stop the thread; the probation counters are saved, as after a clean stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._flush(stopping=True)

    def check_now(self) -> None:
        """Check the repository at the next turn (tests, an operator's signal)."""
        self._next_check = self._clock()
        self._wake.set()

    def _interval(self) -> float:
        jitter = self.section.jitter
        return float(self.section.interval_s * self._rng.uniform(1 - jitter, 1 + jitter))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._turn()
            except Exception:  # the update thread must not die and leave the daemon unwatched
                log.exception("update: the update thread failed a turn")
            self._wake.wait(self._poll_s)
            self._wake.clear()

    def _turn(self) -> None:
        self._watch_stall()
        self._flush()
        if self._clock() >= self._next_check:
            self._next_check = self._clock() + self._interval()
            self._check()
        self._follow_store()
        self.publish()

    def _check(self) -> None:
        try:
            result = self.agent.check()
        except OtaError as exc:
            self.last_error = exc.reason
            self.checks["refused"] += 1
            return
        self.checks[result.outcome] = self.checks.get(result.outcome, 0) + 1
        if result.outcome == "installed":
            self.last_error = None

    def _follow_store(self) -> None:
        """Serve what the store says is active, if the daemon serves something else."""
        try:
            path = self.agent.store.active_path()
        except OtaError as exc:
            self.last_error = exc.reason
            return
        if path is None or self.daemon.serving_path() == str(path):
            return
        state = self.agent.state()
        version = state.active.version if state.active else "?"
        try:
            self.daemon.swap_model_path(str(path), f"update: v{version} swapped in")
        except EdgeRuntimeError as exc:
            # It passed its smoke test in a child, yet does not load here: it is not trusted.
            reason = f"v{version} does not load in the daemon: {exc}"
            log.error("update: %s", reason)
            self._roll_back(reason)
            return
        log.info("update: now serving v%s from %s", version, path)

    def _flush(self, stopping: bool = False) -> None:
        model = self._probation
        delta = model.take() if model is not None else ProbationStats()
        if self._pending_watchdog and not stopping:
            watchdog, self._pending_watchdog = self._pending_watchdog, 0
            delta = ProbationStats(
                frames=delta.frames,
                errors=delta.errors,
                watchdog_restarts=watchdog,
                shadow_compared=delta.shadow_compared,
                shadow_agreed=delta.shadow_agreed,
            )
        try:
            decision = self.agent.record_probation(delta, stopping=stopping)
        except OtaError as exc:
            self.last_error = exc.reason
            return
        if decision is None or stopping:
            return
        if decision.verdict == "pass" and model is not None:
            model.end()
            self._probation = None
        elif decision.verdict == "rollback":
            self._roll_back(decision.reason)

    def _roll_back(self, reason: str) -> None:
        try:
            self.agent.rollback(reason)
        except OtaError as exc:
            self.last_error = f"{reason}; and no rollback: {exc.reason}"
            log.error("update: %s", self.last_error)
            return
        self.rollbacks += 1
        self.last_error = f"rolled back: {reason}"
        self._probation = None
        self._follow_store()

    def _watch_stall(self) -> None:
        """A frame loop that stopped while a new model is on probation: systemd's watchdog
        is about to restart the service; the store remembers it (judged as a watchdog restart
        when the counters are flushed, and at the next start if the loop never comes back)."""
        if self._probation is None:
            return
        interval = self.daemon.notifier.watchdog_interval_s
        age = self.daemon.status.last_frame_age_s()
        if interval is None or age is None or age <= interval:
            self._stalled = False
            return
        if self._stalled:
            return
        pipeline = self.daemon.pipeline
        if pipeline is not None and pipeline.source.reconnecting_on_schedule(
            self.daemon_config_grace()
        ):
            return
        self._stalled = True
        self._pending_watchdog += 1
        log.error("update: no frame for %.1f s while v%d is on probation", age,
                  self._probation.version)

    def daemon_config_grace(self) -> float:
        config = self.daemon.config
        return config.service.reconnect_grace_s if config is not None else 5.0

    # -- status ---------------------------------------------------------------------------
    def publish(self) -> None:
        try:
            state = summary(self.agent.state())
        except OtaError as exc:
            state = {"store_error": exc.reason}
        self.daemon.status.set_section(
            "update",
            {
                "url": redact(self.section.url),
                "name": self.section.name,
                "channel": self.section.channel,
                "device_id": self.agent.device_id,
                "serving": self.daemon.serving_path(),
                **state,
                "last_error": self.last_error or state.get("last_error"),
                "checks": dict(self.checks),
                "rollbacks": self.rollbacks,
                "next_check_in_s": round(max(0.0, self._next_check - self._clock()), 1),
            },
        )


__all__ = ["POLL_S", "UpdateWorker"]
