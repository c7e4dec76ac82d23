"""From a raw output row to probabilities, and the top-k of them.

Pure functions over numpy arrays. Quantized rows are widened before the zero point is subtracted,
so ``uint8`` 0 with zero point 255 or ``int8`` -128 with zero point 127 cannot wrap around.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from edge_runtime.errors import ConfigError

Activation = Literal["auto", "softmax", "none"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)

#: how far outside [0, 1] a score may lie and still count as a probability (rounding)
RANGE_TOLERANCE = 1e-3
#: how far from 1 the sum of a probability row may be: quantized probabilities round each class
#: (a uint8 MobileNet's 1001 scores sum to 0.94..1.0)
SUM_TOLERANCE = 0.2


def dequantize(
    row: np.ndarray, scale: float, zero_point: int, out: np.ndarray | None = None
) -> np.ndarray:
    """``scale * (q - zero_point)`` as float32, computed in int64 so nothing overflows.

    A row that is not quantized (``scale == 0``) is only converted to float32.
    """
    if out is None:
        out = np.empty(row.shape, dtype=np.float32)
    if scale == 0.0 or row.dtype.kind == "f":
        np.copyto(out, row, casting="unsafe")
        return out
    wide = row.astype(np.int64) - np.int64(zero_point)
    np.multiply(wide, np.float64(scale), out=out, casting="unsafe")
    return out


def softmax(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Numerically stable softmax of a 1-D row, as float32."""
    if out is None:
        out = np.empty(logits.shape, dtype=np.float32)
    np.subtract(logits, np.max(logits), out=out, casting="unsafe")
    np.exp(out, out=out)
    np.divide(out, np.sum(out, dtype=np.float64), out=out, casting="unsafe")
    return out


def looks_like_probabilities(
    scores: np.ndarray,
    range_tolerance: float = RANGE_TOLERANCE,
    sum_tolerance: float = SUM_TOLERANCE,
) -> bool:
    """True when every score is within [0, 1] and they sum to about 1."""
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        return False
    if scores.min() < -range_tolerance or scores.max() > 1.0 + range_tolerance:
        return False
    return abs(float(np.sum(scores, dtype=np.float64)) - 1.0) <= sum_tolerance


def check_activation(activation: str) -> Activation:
    """Validate an activation name.

    Raises:
        ConfigError: not ``auto``, ``softmax`` or ``none``.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation '{activation}' (choose {', '.join(ACTIVATIONS)})")
    return activation  # type: ignore[return-value]


class ScoreDecoder:
    """Turns a raw output row into probabilities: dequantize, then softmax when needed.

    ``activation='auto'`` applies softmax to a row that does not look like probabilities (a value
    outside [0, 1] or a sum far from 1) and decides again for every row, so one odd row cannot
    mislabel a model for good; ``last_activation`` says what the last row got. The returned array
    is reused by the next call: copy it to keep it.

    Raises (constructor):
        ConfigError: unknown activation.
    """

    def __init__(
        self,
        size: int,
        *,
        scale: float = 0.0,
        zero_point: int = 0,
        activation: str = "auto",
    ) -> None:
        self.activation = check_activation(activation)
        self.scale = float(scale)
        self.zero_point = int(zero_point)
        self.last_activation: str = "none"
        self._values = np.empty(size, dtype=np.float32)
        self._probabilities = np.empty(size, dtype=np.float32)

    def __call__(self, row: np.ndarray) -> np.ndarray:
        values = dequantize(row.reshape(-1), self.scale, self.zero_point, out=self._values)
        use_softmax = self.activation == "softmax" or (
            self.activation == "auto" and not looks_like_probabilities(values)
        )
        self.last_activation = "softmax" if use_softmax else "none"
        if use_softmax:
            return softmax(values, out=self._probabilities)
        return values


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first; ties go to the lower index, NaN last.

    Deterministic whatever the ties, and cheap for a small ``k`` over many classes.
    """
    n = scores.shape[0]
    k = max(0, min(int(k), n))
    if k == 0:
        return np.empty(0, dtype=np.intp)
    keys = scores if scores.dtype.kind == "f" else scores.astype(np.float64)
    if np.isnan(keys).any():
        keys = np.where(np.isnan(keys), -np.inf, keys)
    if k < n:
        # Keep every candidate tied with the k-th best, then order them all: partitioning alone
        # would pick among tied scores arbitrarily.
        kth = np.partition(keys, n - k)[n - k]
        candidates = np.flatnonzero(keys >= kth)
    else:
        candidates = np.arange(n)
    order = np.argsort(-keys[candidates], kind="stable")
    return candidates[order[:k]]
