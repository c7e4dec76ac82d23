"""The runtime's live status: what the status server's /status and /metrics, the console and the
service read.

One ``RuntimeStatus`` per running service, handed to the pipeline (``Pipeline(status=...)``): it
outlives a model swap and a restart of the pipeline, so what it reports never vanishes during a
reload. The pipeline writes to it from its threads; readers take a ``snapshot()``, a JSON-ready
dict, so a server never holds the lock while it talks to a client. Observers (the Prometheus
metrics) see every recorded prediction; other parts of the service (updates, reloads) publish
their own sections with ``set_section``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edge_runtime.types import UNKNOWN, Prediction

log = logging.getLogger(__name__)

#: called with each recorded prediction, on the pipeline's output thread; must be quick
Observer = Callable[[Prediction], None]


class LatencyWindow:
    """The last ``size`` samples of one stage's latency, with percentiles."""

    def __init__(self, size: int = 512) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.count = 0
        self.total = 0.0

    def add(self, value_ms: float) -> None:
        self._samples.append(value_ms)
        self.count += 1
        self.total += value_ms

    def summary(self) -> dict[str, float]:
        if not self._samples:
            return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "mean": 0.0}
        values = np.fromiter(self._samples, dtype=np.float64)
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {
            "p50": round(float(p50), 3),
            "p95": round(float(p95), 3),
            "p99": round(float(p99), 3),
            "mean": round(float(values.mean()), 3),
        }


class RuntimeStatus:
    """Thread-safe counters, latest result and latency windows of a running pipeline."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, fps_window_s: float = 5.0
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._fps_window_s = fps_window_s
        self._frame_times: deque[float] = deque()
        self._latency: dict[str, LatencyWindow] = {}
        self._model: dict[str, Any] = {}
        self._source: dict[str, Any] = {}
        self._source_stats: Callable[[], Mapping[str, Any]] | None = None
        self._latest: Prediction | None = None
        self._last_frame_at: float | None = None
        self._observers: list[Observer] = []
        self._sections: dict[str, dict[str, Any]] = {}
        self._frames = 0
        self._unknown = 0
        self._events = 0
        self._errors: dict[str, int] = {}
        self._labels: dict[str, int] = {}
        self._truth_seen = 0
        self._truth_correct = 0
        self._state = "starting"
        self._message = ""

    # -- writers -------------------------------------------------------------------------------
    def set_state(self, state: str, message: str = "") -> None:
        """``starting``, ``running``, ``reloading``, ``stopped`` or ``failed``, with a reason."""
        with self._lock:
            self._state = state
            self._message = message

    def set_model(self, info: Mapping[str, Any]) -> None:
        """Describe the model now serving (name, version, artifact, backend, ...)."""
        with self._lock:
            self._model = dict(info)

    def set_source(
        self, info: Mapping[str, Any], stats: Callable[[], Mapping[str, Any]] | None = None
    ) -> None:
        """Describe the source; ``stats`` returns its live counters (dropped, corrupt, ...)."""
        with self._lock:
            self._source = dict(info)
            self._source_stats = stats

    def set_section(self, name: str, info: Mapping[str, Any] | None) -> None:
        """Publish (or, with None, withdraw) a named part of the snapshot, e.g. ``update`` for
        the state of model updates. Names of the built-in keys are refused.

        Raises:
            ValueError: ``name`` is one of the snapshot's own keys.
        """
        if name in _OWN_KEYS:
            raise ValueError(f"'{name}' is a built-in part of the status")
        with self._lock:
            if info is None:
                self._sections.pop(name, None)
            else:
                self._sections[name] = dict(info)

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer`` with every prediction recorded from now on."""
        with self._lock:
            self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop calling ``observer`` (no error when it was not added)."""
        with self._lock:
            if observer in self._observers:
                self._observers.remove(observer)

    def count_error(self, kind: str) -> None:
        """Count a non-fatal failure (a corrupt frame, a sink that could not send)."""
        with self._lock:
            self._errors[kind] = self._errors.get(kind, 0) + 1

    def record(self, prediction: Prediction) -> None:
        """Account for one finished frame."""
        now = self._clock()
        with self._lock:
            self._latest = prediction
            self._last_frame_at = now
            self._frames += 1
            self._frame_times.append(now)
            while self._frame_times and now - self._frame_times[0] > self._fps_window_s:
                self._frame_times.popleft()
            if prediction.label == UNKNOWN:
                self._unknown += 1
            self._labels[prediction.label] = self._labels.get(prediction.label, 0) + 1
            if prediction.event:
                self._events += 1
            if prediction.truth is not None:
                self._truth_seen += 1
                self._truth_correct += int(prediction.label == prediction.truth)
            for stage, value in prediction.latency_ms.items():
                window = self._latency.get(stage)
                if window is None:
                    window = self._latency[stage] = LatencyWindow()
                window.add(value)
            observers = list(self._observers)
        for observer in observers:
            try:
                observer(prediction)
            except Exception:  # a failing observer must not stop the frame loop
                log.exception("status observer %r failed", observer)

    # -- readers -------------------------------------------------------------------------------
    @property
    def frames(self) -> int:
        with self._lock:
            return self._frames

    @property
    def latest(self) -> Prediction | None:
        with self._lock:
            return self._latest

    def last_frame_age_s(self) -> float | None:
        """Seconds since the latest prediction was recorded; None before the first."""
        with self._lock:
            return self._age_locked()

    def _age_locked(self) -> float | None:
        last = self._last_frame_at
        return None if last is None else max(0.0, self._clock() - last)

    def fps(self) -> float:
        """Frames per second over the last few seconds."""
        with self._lock:
            return self._fps_locked()

    def _fps_locked(self) -> float:
        times = self._frame_times
        if len(times) < 2:
            return 0.0
        span = times[-1] - times[0]
        return (len(times) - 1) / span if span > 0 else 0.0

    def accuracy(self) -> float | None:
        """Share of frames with a known truth whose label matched it; None without truth."""
        with self._lock:
            return self._truth_correct / self._truth_seen if self._truth_seen else None

    def snapshot(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        stats_fn = self._source_stats
        source_stats = dict(stats_fn()) if stats_fn is not None else {}
        with self._lock:
            latest = self._latest.to_dict() if self._latest is not None else None
            age = self._age_locked()
            return {
                **{name: dict(info) for name, info in self._sections.items()},
                "state": self._state,
                "message": self._message,
                "uptime_s": round(self._clock() - self._started, 3),
                "model": dict(self._model),
                "source": {**self._source, **source_stats},
                "frames": self._frames,
                "fps": round(self._fps_locked(), 3),
                "unknown": self._unknown,
                "events": self._events,
                "labels": dict(self._labels),
                "errors": dict(self._errors),
                "accuracy": (
                    round(self._truth_correct / self._truth_seen, 6) if self._truth_seen else None
                ),
                "frames_with_truth": self._truth_seen,
                "latency_ms": {stage: w.summary() for stage, w in self._latency.items()},
                "last_frame_age_s": None if age is None else round(age, 3),
                "latest": latest,
            }


#: the keys every snapshot has; ``set_section`` may not use them
_OWN_KEYS = frozenset(
    {
        "state",
        "message",
        "uptime_s",
        "model",
        "source",
        "frames",
        "fps",
        "unknown",
        "events",
        "labels",
        "errors",
        "accuracy",
        "frames_with_truth",
        "latency_ms",
        "last_frame_age_s",
        "latest",
    }
)
