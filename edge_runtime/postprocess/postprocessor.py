"""One output row in, one :class:`~edge_runtime.types.Prediction` out.

The row is a model's raw output (give the output's quantization to the constructor) or
probabilities already decoded (``LoadedModel.infer``; leave scale at 0). The order is fixed:
dequantize -> activation -> EMA smoothing (probability rows) -> allow/deny -> top-1 ->
thresholds -> majority vote (labels) -> debounce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.postprocess.config import PostprocessConfig
from edge_runtime.postprocess.rules import CategoryFilter, ConfidenceThresholds
from edge_runtime.postprocess.scores import ScoreDecoder, top_k
from edge_runtime.postprocess.temporal import Debouncer, EmaSmoother, MajorityVote
from edge_runtime.types import UNKNOWN, Classification, Prediction, TensorSpec


class Postprocessor:
    """Applies a :class:`PostprocessConfig` to the rows of one model, frame after frame.

    Not thread-safe (it keeps smoothing and debounce state); call :meth:`reset` when the stream
    or the model changes.

    Raises (constructor):
        ConfigError: an invalid setting, or thresholds/allow/deny naming classes not in ``labels``.
    """

    def __init__(
        self,
        labels: Sequence[str],
        config: PostprocessConfig | None = None,
        *,
        scale: float = 0.0,
        zero_point: int = 0,
    ) -> None:
        self.labels = list(labels)
        self.config = config or PostprocessConfig()
        size = len(self.labels)
        self.decoder = ScoreDecoder(
            size, scale=scale, zero_point=zero_point, activation=self.config.activation
        )
        self.thresholds = ConfidenceThresholds(
            self.config.threshold, self.config.per_class_thresholds, self.labels
        )
        self.categories = CategoryFilter(self.labels, self.config.allow, self.config.deny)
        self._ema = EmaSmoother(self.config.window) if self.config.smoothing == "ema" else None
        self._vote = (
            MajorityVote(self.config.window) if self.config.smoothing == "majority" else None
        )
        self.debouncer = Debouncer(self.config.debounce, self.config.announce_unknown)
        self._ranked = np.empty(size, dtype=np.float32)

    @classmethod
    def for_output(
        cls, labels: Sequence[str], output: TensorSpec, config: PostprocessConfig | None = None
    ) -> Postprocessor:
        """A postprocessor for rows of the given output tensor (its quantization)."""
        return cls(labels, config, scale=output.scale, zero_point=output.zero_point)

    def probabilities(self, row: np.ndarray) -> np.ndarray:
        """Dequantized probabilities of one raw row (no state touched; reused buffer).

        Raises:
            ConfigError: the row's size differs from the number of labels.
        """
        if row.size != len(self.labels):
            raise ConfigError(
                f"the model output has {row.size} scores but there are {len(self.labels)} labels"
            )
        return self.decoder(row)

    def top(self, probabilities: np.ndarray, k: int | None = None) -> tuple[Classification, ...]:
        """The best ``k`` allowed classes of a probability row, best first."""
        ranked = self.categories.apply(probabilities, out=self._ranked)
        indices = top_k(ranked, self.config.top_k if k is None else k)
        return tuple(
            Classification(int(i), self.labels[i], float(probabilities[i]))
            for i in indices
            if np.isfinite(ranked[i])
        )

    def process(
        self,
        row: np.ndarray,
        *,
        frame_index: int = 0,
        timestamp: float = 0.0,
        source: str = "",
        truth: str | None = None,
        latency_ms: Mapping[str, float] | None = None,
    ) -> Prediction:
        """Turn one frame's output row into a prediction, updating smoothing and debounce.

        The frame's facts (index, capture time, source, known truth, the latencies measured so
        far) are passed through into the prediction.

        Raises:
            ConfigError: the row's size differs from the number of labels.
        """
        probabilities = self.probabilities(row)
        if self.config.independent:
            self.reset()
        top = self.top(probabilities)
        if self._ema is not None:
            smoothed = self._ema.update(probabilities)
            best = self.top(smoothed, 1)
        else:
            best = top[:1]
        label, score = (best[0].label, best[0].score) if best else (UNKNOWN, 0.0)
        label = self.thresholds.apply(label, score)
        if self._vote is not None:
            label, score = self._vote.update(label, score)
        event = self.debouncer.update(label)
        return Prediction(
            frame_index=frame_index,
            timestamp=timestamp,
            label=label,
            score=score,
            top=top,
            source=source,
            truth=truth,
            event=event,
            latency_ms=dict(latency_ms or {}),
        )

    def reset(self) -> None:
        """Forget the past frames (smoothing and debounce)."""
        if self._ema is not None:
            self._ema.reset()
        if self._vote is not None:
            self._vote.reset()
        self.debouncer.reset()
