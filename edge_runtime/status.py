"""The runtime's live status: what the HTTP sink's /status and /metrics, the console and the daemon
read.

One ``RuntimeStatus`` per pipeline. The pipeline writes to it from its threads; readers take a
``snapshot()``, a JSON-ready dict, so a server never holds the lock while it talks to a client.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edge_runtime.types import UNKNOWN, Prediction


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

    def count_error(self, kind: str) -> None:
        """Count a non-fatal failure (a corrupt frame, a sink that could not send)."""
        with self._lock:
            self._errors[kind] = self._errors.get(kind, 0) + 1

    def record(self, prediction: Prediction) -> None:
        """Account for one finished frame."""
        now = self._clock()
        with self._lock:
            self._latest = prediction
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

    # -- readers -------------------------------------------------------------------------------
    @property
    def frames(self) -> int:
        with self._lock:
            return self._frames

    @property
    def latest(self) -> Prediction | None:
        with self._lock:
            return self._latest

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
            return {
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
                "latest": latest,
            }
