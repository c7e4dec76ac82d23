"""Decision rules on one frame: confidence thresholds and category allow/deny lists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.types import UNKNOWN


def _check_fraction(value: float, what: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{what} must be a probability in 0..1, got {value}")
    return number


class ConfidenceThresholds:
    """Minimum probability for a label to count: one default, optionally one per class.

    Raises (constructor):
        ConfigError: a threshold outside 0..1, or a per-class threshold for a class that is not
            among ``labels`` (when labels are given), which would be a silent typo otherwise.
    """

    def __init__(
        self,
        default: float = 0.0,
        per_class: Mapping[str, float] | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        self.default = _check_fraction(default, "the confidence threshold")
        self.per_class = {
            name: _check_fraction(value, f"the threshold of '{name}'")
            for name, value in (per_class or {}).items()
        }
        if labels is not None:
            unknown = sorted(set(self.per_class) - set(labels))
            if unknown:
                raise ConfigError(
                    f"thresholds name classes the model does not have: {', '.join(unknown)}"
                )

    def threshold_for(self, label: str) -> float:
        return self.per_class.get(label, self.default)

    def apply(self, label: str, score: float) -> str:
        """``label`` when ``score`` reaches its threshold, else :data:`UNKNOWN`."""
        if label == UNKNOWN or score < self.threshold_for(label):
            return UNKNOWN
        return label


class CategoryFilter:
    """Which classes may be reported: only ``allow`` (when given), never ``deny``.

    ``mask`` is a boolean row over the model's classes; filtered classes drop out of the top-k
    and can never become the label.

    Raises (constructor):
        ConfigError: a name in ``allow`` or ``deny`` is not a class of the model, or no class
            is left.
    """

    def __init__(
        self, labels: Sequence[str], allow: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> None:
        allow, deny = list(allow), list(deny)
        known = set(labels)
        unknown = sorted((set(allow) | set(deny)) - known)
        if unknown:
            raise ConfigError(
                f"allow/deny lists name classes the model does not have: {', '.join(unknown)}"
            )
        self.mask = np.ones(len(labels), dtype=bool)
        if allow:
            allowed = set(allow)
            self.mask[:] = [name in allowed for name in labels]
        if deny:
            denied = set(deny)
            self.mask &= np.array([name not in denied for name in labels], dtype=bool)
        if not self.mask.any():
            raise ConfigError("the allow/deny lists leave no class to report")
        self.active = bool(allow or deny)

    def apply(self, scores: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``scores`` with filtered classes set to -inf (so they rank last and never win)."""
        if out is None:
            out = np.empty(scores.shape, dtype=np.float32)
        np.copyto(out, scores, casting="unsafe")
        if self.active:
            out[~self.mask] = -np.inf
        return out
