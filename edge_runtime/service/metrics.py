"""Prometheus metrics of a running pipeline, in a registry of their own.

Counters and latency histograms are updated per prediction (``observe``, which the status server
adds as an observer of the runtime status); gauges that the status already knows (FPS, accuracy,
source counters, model) are read from it at scrape time. A private ``CollectorRegistry`` keeps two
servers in one process (tests) from colliding in prometheus-client's global registry; one
registry lives as long as the server, so counters keep counting across model swaps.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

from edge_runtime.types import UNKNOWN, Prediction

#: returns the runtime's status as a JSON-ready mapping (``RuntimeStatus.snapshot``)
StatusProvider = Callable[[], Mapping[str, Any]]

PREFIX = "edge_classify"
#: seconds; from a fast int8 model on a desktop CPU to a float model on a Pi Zero
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: seconds; a frame's age from capture, from a fresh frame at a fast model to a backlog
AGE_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
#: where in ``Prediction.latency_ms`` a frame's age is: at the start of inference, at decision
AGE_KEYS = {"inference": "age_at_inference", "decision": "total"}
_SOURCE_COUNTERS = {
    "captured": "frames the source captured",
    "dropped": "frames a live source overwrote before they were read (latest frame wins)",
    "superseded": "frames of a live source prepared, then replaced by a newer one before the "
    "backend was free (latest frame wins)",
    "corrupt": "frames or files that could not be decoded and were skipped",
    "reconnects": "times a live source reopened its device",
}


#: returns the board's health at scrape time (``hardware.BoardMonitor.read``)
BoardProvider = Callable[[], Any]


class _StatusCollector:
    """Reads the runtime status (and the board's health) at scrape time."""

    def __init__(
        self, core: ModuleType, status: StatusProvider, board: BoardProvider | None = None
    ) -> None:
        self._core = core
        self._status = status
        self._board = board

    def collect(self) -> Iterator[Any]:
        core = self._core
        snapshot: Mapping[str, Any] = self._status()
        running = float(snapshot.get("state") == "running")
        yield core.GaugeMetricFamily(
            f"{PREFIX}_running", "1 while the pipeline is running", value=running
        )
        yield core.GaugeMetricFamily(
            f"{PREFIX}_fps", "frames classified per second, recent", value=snapshot.get("fps", 0.0)
        )
        yield core.GaugeMetricFamily(
            f"{PREFIX}_uptime_seconds",
            "seconds since the pipeline started",
            value=snapshot.get("uptime_s", 0.0),
        )
        if snapshot.get("accuracy") is not None:
            yield core.GaugeMetricFamily(
                f"{PREFIX}_accuracy",
                "share of frames with a known truth classified correctly",
                value=snapshot["accuracy"],
            )
        source = snapshot.get("source") or {}
        for key, help_text in _SOURCE_COUNTERS.items():
            if isinstance(source.get(key), (int, float)):
                yield core.CounterMetricFamily(
                    f"{PREFIX}_source_{key}", help_text, value=source[key]
                )
        errors = core.CounterMetricFamily(
            f"{PREFIX}_errors", "non-fatal failures by kind", labels=["kind"]
        )
        for kind, count in (snapshot.get("errors") or {}).items():
            errors.add_metric([str(kind)], count)
        yield errors
        model = snapshot.get("model") or {}
        if model:
            info = {k: str(v) for k, v in model.items() if isinstance(v, (str, int, float))}
            yield core.InfoMetricFamily(f"{PREFIX}_model", "the model now serving", value=info)
        fail_safe = snapshot.get("fail_safe")
        if isinstance(fail_safe, Mapping):
            yield core.GaugeMetricFamily(
                f"{PREFIX}_fail_safe",
                "1 while the actuating outputs hold their fail-safe state",
                value=float(bool(fail_safe.get("active"))),
            )
        service = snapshot.get("service")
        if isinstance(service, Mapping) and isinstance(service.get("reload_counts"), Mapping):
            reloads = core.CounterMetricFamily(
                f"{PREFIX}_reloads", "configuration reloads by outcome", labels=["outcome"]
            )
            for outcome, count in service["reload_counts"].items():
                reloads.add_metric([str(outcome)], count)
            yield reloads
        yield from self._update_metrics(snapshot.get("update"))
        yield from self._board_metrics()

    def _update_metrics(self, update: Any) -> Iterator[Any]:
        """Over-the-air update state (``/status`` ``update``), when updates are configured."""
        if not isinstance(update, Mapping):
            return
        core = self._core
        for key, help_text in (
            ("active", "version of the model the update store serves (0: none)"),
            ("previous", "version kept for rollback (0: none)"),
            ("pending", "version being installed (0: none)"),
        ):
            slot = update.get(key)
            version = slot.get("version", 0) if isinstance(slot, Mapping) else 0
            yield core.GaugeMetricFamily(
                f"{PREFIX}_update_{key}_version", help_text, value=float(version)
            )
        probation = update.get("probation")
        yield core.GaugeMetricFamily(
            f"{PREFIX}_update_probation",
            "1 while a newly installed model is on probation",
            value=float(isinstance(probation, Mapping)),
        )
        failed = core.GaugeMetricFamily(
            f"{PREFIX}_update_failed",
            "versions that failed here and are never installed again",
            labels=["version"],
        )
        for version in update.get("failed") or {}:
            failed.add_metric([str(version)], 1.0)
        yield failed
        yield core.GaugeMetricFamily(
            f"{PREFIX}_update_error",
            "1 when the last update check or install failed (see /status update.last_error)",
            value=float(bool(update.get("last_error"))),
        )
        checks = update.get("checks")
        if isinstance(checks, Mapping):
            counter = core.CounterMetricFamily(
                f"{PREFIX}_update_checks", "update checks by outcome", labels=["outcome"]
            )
            for outcome, count in checks.items():
                counter.add_metric([str(outcome)], count)
            yield counter
        if isinstance(update.get("rollbacks"), int):
            yield core.CounterMetricFamily(
                f"{PREFIX}_update_rollbacks", "automatic rollbacks", value=update["rollbacks"]
            )

    def _board_metrics(self) -> Iterator[Any]:
        if self._board is None:
            return
        core, board = self._core, self._board()
        if board.temperature_c is not None:
            yield core.GaugeMetricFamily(
                f"{PREFIX}_soc_temperature_celsius",
                "SoC temperature (sysfs thermal zone)",
                value=board.temperature_c,
            )
        if board.throttled is not None:
            flags = core.GaugeMetricFamily(
                f"{PREFIX}_throttled",
                "Raspberry Pi throttling flags (vcgencmd get_throttled), 1 when set",
                labels=["flag"],
            )
            for flag, on in board.throttled.items():
                flags.add_metric([flag], float(on))
            yield flags


class PredictionMetrics:
    """The metrics of one pipeline; ``observe`` each prediction, ``render`` for /metrics."""

    def __init__(
        self,
        client: ModuleType,
        status: StatusProvider | None = None,
        board: BoardProvider | None = None,
    ) -> None:
        self._client = client
        self.registry = client.CollectorRegistry()
        self.frames = client.Counter(
            f"{PREFIX}_frames", "frames classified", registry=self.registry
        )
        self.unknown = client.Counter(
            f"{PREFIX}_unknown", "frames no class was confident enough for", registry=self.registry
        )
        self.predictions = client.Counter(
            f"{PREFIX}_predictions", "frames by label", ["label"], registry=self.registry
        )
        self.events = client.Counter(
            f"{PREFIX}_events",
            "label changes announced, by new label",
            ["label"],
            registry=self.registry,
        )
        self.latency = client.Histogram(
            f"{PREFIX}_stage_latency_seconds",
            "time per pipeline stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.frame_age = client.Histogram(
            f"{PREFIX}_frame_age_seconds",
            "age of a frame since its capture, when its inference began (at=inference) and when "
            "its result was decided (at=decision)",
            ["at"],
            buckets=AGE_BUCKETS,
            registry=self.registry,
        )
        self.score = client.Gauge(
            f"{PREFIX}_last_score", "probability of the latest label", registry=self.registry
        )
        if status is not None:
            core = importlib.import_module(f"{client.__name__}.core")
            self.registry.register(_StatusCollector(core, status, board))

    def observe(self, prediction: Prediction) -> None:
        self.frames.inc()
        if prediction.label == UNKNOWN:
            self.unknown.inc()
        self.predictions.labels(prediction.label).inc()
        if prediction.event:
            self.events.labels(prediction.label).inc()
        self.score.set(prediction.score)
        ages = AGE_KEYS.values()
        for stage, value_ms in prediction.latency_ms.items():
            if stage in ages and stage != "total":
                continue  # an age, not a stage ("total" stays a stage, as it always was)
            self.latency.labels(stage).observe(value_ms / 1000.0)
        for at, key in AGE_KEYS.items():
            age_ms = prediction.latency_ms.get(key)
            if age_ms is not None:
                self.frame_age.labels(at).observe(age_ms / 1000.0)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._client.generate_latest(self.registry), self._client.CONTENT_TYPE_LATEST
