"""The model on probation, as the pipeline sees it: the new model, counted.

:class:`ProbationModel` wraps a freshly installed model and serves exactly what it serves, while
it counts frames and inference errors (an error becomes an "unknown" frame instead of stopping
the pipeline: a model on probation must not take the service down) and, with shadow probation,
runs the previous model on the same frames now and then and counts how often both give the
same top-1 label. The update worker takes the counts (:meth:`take`) and asks the policy
(:func:`edge_runtime.ota.policy.judge_probation`) what to do. No file or network access here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.ota.policy import ProbationStats

log = logging.getLogger("edge_runtime.ota")


class ProbationModel:
    """``inner`` with probation counters (see the module docstring); every other attribute is
    ``inner``'s. ``shadow``: the previous model, run at most once per ``shadow_interval_s`` on
    the clock; it is closed with this model, or once probation has ended."""

    def __init__(
        self,
        inner: Any,
        version: int,
        *,
        shadow: Any = None,
        shadow_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.version = version
        self._shadow = shadow
        self._shadow_interval_s = shadow_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._frames = self._errors = self._compared = self._agreed = 0
        self._images: dict[int, np.ndarray] = {}
        self._last_shadow_at: float | None = None
        self._active = True
        self._drop_shadow = False

    @property
    def info(self) -> Any:
        return self.inner.info

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def new_input(self) -> np.ndarray:
        return self.inner.new_input()

    def prepare(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        tensor = self.inner.prepare(image, out=out)
        if self._shadow is not None and self._active:
            # The pipeline reuses a few input buffers, and infers a buffer before preparing
            # into it again: its id finds the image it holds.
            self._images[id(tensor)] = image
        return tensor

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        if self._drop_shadow:
            self._close_shadow()
        if not self._active:
            return self.inner.infer(tensor)
        try:
            scores = self.inner.infer(tensor)
        except EdgeRuntimeError as exc:
            with self._lock:
                self._frames += 1
                self._errors += 1
            log.warning("model v%d on probation failed a frame: %s", self.version, exc)
            labels = len(self.inner.labels)
            return np.full(labels, 1.0 / labels, dtype=np.float32)  # no decision: unknown
        with self._lock:
            self._frames += 1
        self._maybe_compare(tensor, scores)
        return scores

    def _maybe_compare(self, tensor: np.ndarray, scores: np.ndarray) -> None:
        shadow = self._shadow
        image = self._images.pop(id(tensor), None)
        if shadow is None or image is None:
            return
        now = self._clock()
        last = self._last_shadow_at
        if last is not None and now - last < self._shadow_interval_s:
            return
        self._last_shadow_at = now
        try:
            theirs = shadow.infer(shadow.prepare(image))
        except EdgeRuntimeError as exc:  # the previous model's trouble is not the new one's
            log.warning("shadow model failed a frame: %s", exc)
            return
        mine = self.inner.labels[int(np.argmax(scores))]
        other = shadow.labels[int(np.argmax(theirs))]
        with self._lock:
            self._compared += 1
            self._agreed += int(mine == other)

    def take(self) -> ProbationStats:
        """The counts since the last call (and zero them)."""
        with self._lock:
            delta = ProbationStats(
                frames=self._frames,
                errors=self._errors,
                shadow_compared=self._compared,
                shadow_agreed=self._agreed,
            )
            self._frames = self._errors = self._compared = self._agreed = 0
        return delta

    def end(self) -> None:
        """Probation is over: stop counting; the shadow model is closed on the next frame (the
        frame loop's thread is the one that may be using it)."""
        self._active = False
        self._drop_shadow = True
        self._images.clear()

    def _close_shadow(self) -> None:
        shadow, self._shadow, self._drop_shadow = self._shadow, None, False
        if shadow is not None:
            shadow.close()

    def close(self) -> None:
        self._close_shadow()
        self.inner.close()


__all__ = ["ProbationModel"]
