"""Decisions over time: smoothing over the last frames and debounced events.

Each class keeps a little state and has ``reset()``, called when the stream or the model changes.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.types import UNKNOWN


def _check_frames(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a whole number of frames, at least 1, got {value!r}")
    return value


class EmaSmoother:
    """Exponential moving average of probability rows over about ``frames`` frames.

    ``alpha = 2 / (frames + 1)`` (the usual span convention), so ``frames=1`` is no smoothing.
    The first row after a reset is taken as it is.

    Raises (constructor):
        ConfigError: ``frames`` below 1.
    """

    def __init__(self, frames: int) -> None:
        self.frames = _check_frames(frames, "the smoothing window")
        self.alpha = 2.0 / (self.frames + 1)
        self._state: np.ndarray | None = None

    def update(self, probabilities: np.ndarray) -> np.ndarray:
        """Blend in one row; returns the smoothed row (reused by the next call)."""
        if self._state is None or self._state.shape != probabilities.shape:
            self._state = np.array(probabilities, dtype=np.float32, copy=True)
        else:
            self._state *= np.float32(1.0 - self.alpha)
            self._state += np.float32(self.alpha) * probabilities
        return self._state

    def reset(self) -> None:
        self._state = None


class MajorityVote:
    """The label most frames among the last ``frames`` voted for.

    A tie goes to the tied label seen most recently. The score is the mean score of the frames
    that voted for the winner.

    Raises (constructor):
        ConfigError: ``frames`` below 1.
    """

    def __init__(self, frames: int) -> None:
        self.frames = _check_frames(frames, "the voting window")
        self._votes: deque[tuple[str, float]] = deque(maxlen=self.frames)

    def update(self, label: str, score: float) -> tuple[str, float]:
        self._votes.append((label, score))
        counts: dict[str, int] = {}
        last_seen: dict[str, int] = {}
        totals: dict[str, float] = {}
        for position, (name, value) in enumerate(self._votes):
            counts[name] = counts.get(name, 0) + 1
            totals[name] = totals.get(name, 0.0) + value
            last_seen[name] = position
        winner = max(counts, key=lambda name: (counts[name], last_seen[name]))
        return winner, totals[winner] / counts[winner]

    def reset(self) -> None:
        self._votes.clear()


class Debouncer:
    """Fires an event on the frame where a label has held for ``frames`` consecutive frames.

    A label fires once per stretch: it fires again only after another label (or ``unknown``) has
    itself held for ``frames`` frames in between. ``unknown`` never fires unless
    ``announce_unknown``, but holding it still ends the stretch of the previous label.

    Raises (constructor):
        ConfigError: ``frames`` below 1.
    """

    def __init__(self, frames: int = 1, announce_unknown: bool = False) -> None:
        self.frames = _check_frames(frames, "the debounce length")
        self.announce_unknown = announce_unknown
        self._candidate: str | None = None
        self._held = 0
        self.current: str | None = None

    def update(self, label: str) -> bool:
        """Account for one frame's label; True when this frame fires an event."""
        if label == self._candidate:
            self._held += 1
        else:
            self._candidate, self._held = label, 1
        if self._held == self.frames and label != self.current:
            self.current = label
            return label != UNKNOWN or self.announce_unknown
        return False

    def reset(self) -> None:
        self._candidate, self._held, self.current = None, 0, None
