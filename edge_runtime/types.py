"""Small value types shared by the pipeline stages.

Stages exchange only these and numpy arrays, so each stage can be tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Precision = Literal["fp32", "fp16", "dynamic", "int8"]
ArtifactFormat = Literal["tflite", "onnx"]


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image.

    ``image`` is RGB uint8, height x width x 3. ``timestamp`` is ``time.monotonic()`` at capture, so
    latencies can be measured from the moment the light hit the sensor (or the file was read).
    ``truth`` is the known label when the source knows it (synthetic scenes, labelled folders).
    """

    image: np.ndarray
    index: int
    timestamp: float
    source: str = ""
    truth: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and quantization of a model input or output tensor.

    For quantized tensors ``real = scale * (q - zero_point)``; ``scale == 0`` means not quantized.
    ``layout`` is ``NHWC`` or ``NCHW`` for image inputs.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0
    layout: Literal["NHWC", "NCHW", ""] = ""

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0

    @property
    def height(self) -> int:
        return self.shape[2] if self.layout == "NCHW" else self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[3] if self.layout == "NCHW" else self.shape[2]


@dataclass(frozen=True)
class Classification:
    """One class of a result: its index in the model output, its label and its probability."""

    index: int
    label: str
    score: float


UNKNOWN = "unknown"


@dataclass(frozen=True)
class Prediction:
    """What the pipeline concluded for one frame, after thresholds, smoothing and debounce.

    ``label`` is ``UNKNOWN`` when no class is confident enough. ``top`` holds the raw top-k of this
    frame (probabilities). ``event`` is true on the frame where a new label has held long enough to
    be
    announced (debounce). ``latency_ms`` maps stage names (capture, preprocess, inference,
    postprocess, total) to milliseconds.
    """

    frame_index: int
    timestamp: float
    label: str
    score: float
    top: tuple[Classification, ...]
    source: str = ""
    truth: str | None = None
    event: bool = False
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def unknown(self) -> bool:
        """True when no class was confident enough (``label == "unknown"``)."""
        return self.label == UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the jsonl, HTTP, MQTT and webhook sinks send it."""
        return {
            "frame": self.frame_index,
            "timestamp": self.timestamp,
            "label": self.label,
            "score": round(self.score, 6),
            "top": [
                {"index": c.index, "label": c.label, "score": round(c.score, 6)} for c in self.top
            ],
            "source": self.source,
            "truth": self.truth,
            "event": self.event,
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
        }
