"""What every live source shares: a capture thread, a one-slot latest-frame-wins buffer,
dropped-frame counting, and reconnecting with bounded exponential back-off when the device goes.

A subclass implements three hooks: ``_connect`` (open the device, raise SourceError when it cannot),
``_capture`` (one image, or None when the device is lost) and ``_disconnect``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from edge_runtime.errors import ConfigError, SourceError
from edge_runtime.sources.base import Source, SourceOptions
from edge_runtime.types import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a live source retries after losing its device.

    The n-th wait (n from 0) is ``min(max_s, initial_s * factor**n)``, shortened by up to ``jitter``
    (a fraction) at random so a fleet of devices does not hammer a recovering server in step.
    After ``give_up_after_s`` seconds without a device the source fails with SourceError;
    0 gives up at the first loss.
    """

    initial_s: float = 0.5
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.25
    give_up_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s:
            raise ConfigError(
                "reconnect delays must satisfy 0 < reconnect_initial_s <= reconnect_max_s"
            )
        if self.factor < 1:
            raise ConfigError("reconnect_factor must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ConfigError("reconnect_jitter must be a fraction in [0, 1)")
        if self.give_up_after_s < 0:
            raise ConfigError("give_up_after_s must not be negative")


def backoff_delay(attempt: int, policy: ReconnectPolicy, rand: float) -> float:
    """The wait before reconnect attempt ``attempt`` (0-based); ``rand`` is uniform in [0, 1).

    Always within ``[(1 - jitter) * base, base]`` where ``base`` grows by ``factor`` per attempt
    up to ``max_s``.
    """
    # The exponent is capped so a source that retries for days cannot overflow a float.
    base = min(policy.max_s, policy.initial_s * policy.factor ** min(attempt, 64))
    return base * (1.0 - policy.jitter * rand)


class LatestFrameBuffer:
    """A one-slot buffer between a capture thread and a reader: the newest frame wins.

    ``put`` never blocks; it reports whether it overwrote a frame nobody read (a dropped frame).
    ``get`` blocks until a frame, the end of the stream, a failure or a timeout.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._finished = False
        self._error: BaseException | None = None

    def put(self, frame: Frame) -> bool:
        """Store ``frame``; True when it replaced an unread frame."""
        with self._cond:
            dropped = self._frame is not None
            self._frame = frame
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest unread frame; None at the end of the stream or after ``timeout`` seconds.

        Raises:
            BaseException: the error passed to ``fail``, once the last frame captured before the
                failure has been read (so every captured frame is either delivered or dropped).
        """
        with self._cond:
            self._cond.wait_for(
                lambda: self._frame is not None or self._finished or self._error is not None,
                timeout,
            )
            if self._frame is not None:
                frame, self._frame = self._frame, None
                return frame
            if self._error is not None:
                raise self._error
            return None

    @property
    def ended(self) -> bool:
        """True when ``finish`` was called and the last frame has been read."""
        with self._cond:
            return self._finished and self._frame is None

    @property
    def pending(self) -> bool:
        """True while a frame waits to be read."""
        with self._cond:
            return self._frame is not None

    def finish(self) -> None:
        """No more frames will come: readers get the pending frame, then None."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """The producer failed for good: readers raise ``error`` after the pending frame."""
        with self._cond:
            self._error = error
            self._cond.notify_all()


class EndOfStream(Exception):
    """Raised by ``_capture`` when a live source has no more frames by design (a frame limit)."""


@dataclass
class Captured:
    """What ``_capture`` returns: an RGB image, and what else the device knows about it.

    ``timestamp`` is ``time.monotonic()`` when the driver handed the image over (before any color
    conversion); None means now.
    """

    image: np.ndarray
    truth: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    timestamp: float | None = None


class LiveOptions(SourceOptions):
    """Options every live source takes: how it reconnects (see ReconnectPolicy)."""

    reconnect_initial_s: float = Field(0.5, gt=0, description="First wait after a lost device.")
    reconnect_max_s: float = Field(10.0, gt=0, description="Longest wait between attempts.")
    reconnect_factor: float = Field(2.0, ge=1, description="Growth of the wait per attempt.")
    reconnect_jitter: float = Field(
        0.25, ge=0, lt=1, description="Random shortening of each wait, as a fraction."
    )
    give_up_after_s: float = Field(
        60.0,
        ge=0,
        description="Seconds without a device before the source fails for good; inf never "
        "gives up (edge-runtime daemon's default).",
    )


class LiveSource(Source):
    """A source that captures in its own thread; see the module docstring for the hooks.

    Keyword options (all sources built on it take them):
      ``reconnect_initial_s``, ``reconnect_max_s``, ``reconnect_factor``, ``reconnect_jitter``,
      ``give_up_after_s``: the ``ReconnectPolicy``.
      ``clock`` (default ``time.monotonic``), ``sleep`` (default: an interruptible wait) and
      ``rand`` (default ``random.random``): injectable for tests.
    """

    live = True
    Options = LiveOptions

    def __init__(
        self,
        uri: str,
        *,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        reconnect_factor: float = 2.0,
        reconnect_jitter: float = 0.25,
        give_up_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__()
        self.uri = uri
        self.policy = ReconnectPolicy(
            reconnect_initial_s,
            reconnect_max_s,
            reconnect_factor,
            reconnect_jitter,
            give_up_after_s,
        )
        self._clock = clock
        self._stop = threading.Event()
        self._sleep: Callable[[float], object] = sleep if sleep is not None else self._stop.wait
        self._rand = rand
        self._buffer = LatestFrameBuffer()
        self._thread: threading.Thread | None = None
        self._opened = False
        self._closed = False
        self._next_index = 0
        self._state = "connecting"
        # While reconnecting: when the next attempt is due, on ``clock``.
        self._attempt_due: float | None = None

    # -- hooks -----------------------------------------------------------------------------------
    def _connect(self) -> None:
        """Open the device. Raises SourceError with a one-line reason when it cannot."""
        raise NotImplementedError

    def _capture(self) -> Captured | None:
        """One RGB image with its truth and metadata; None (or any exception) when the device is
        lost; EndOfStream when there are no more frames by design."""
        raise NotImplementedError

    def _disconnect(self) -> None:
        """Release the device; must not raise."""

    # -- Source ----------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the device and start the capture thread.

        Raises:
            SourceError: the device cannot be opened (no retry: a wrong address should fail fast).
        """
        if self._opened:
            return
        if self._closed:
            raise SourceError(f"{self.uri}: the source was closed; open a new one")
        self._connect()
        self._opened = True
        self._state = "streaming"
        self._thread = threading.Thread(target=self._run, name=f"capture {self.uri}", daemon=True)
        self._thread.start()

    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame; blocks until one arrives. None after ``close()``, at the end of a
        limited stream, or after ``timeout`` seconds without a frame.

        Raises:
            SourceError: the device could not be opened, or was lost and did not come back within
                ``give_up_after_s``.
        """
        if not self._opened:
            self.open()
        frame = self._buffer.get(timeout)
        if frame is not None:
            self._count(delivered=1)
        return frame

    @property
    def ended(self) -> bool:
        return self._buffer.ended

    @property
    def state(self) -> str:
        if self._closed:
            return "closed"
        if self._state == "streaming" and self._buffer.ended:
            return "ended"
        return self._state

    def reconnecting_on_schedule(self, grace_s: float) -> bool:
        due = self._attempt_due
        return self._state == "reconnecting" and due is not None and self._clock() <= due + grace_s

    def close(self) -> None:
        """Stop the capture thread and release the device. Safe to call twice."""
        self._closed = True
        self._stop.set()
        self._buffer.finish()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
            if thread.is_alive():
                # A driver call can block past our timeout; the daemon thread releases the
                # device itself when that call returns.
                log.warning("%s: capture thread still busy after close", self.uri)

    # -- capture thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    captured = self._capture()
                except EndOfStream:
                    break
                except Exception as exc:  # noqa: BLE001 - any driver failure means the device is lost
                    log.debug("%s: capture failed: %s", self.uri, exc)
                    captured = None
                if self._stop.is_set():
                    break
                if captured is None:
                    self._reconnect()
                    continue
                self._publish(captured)
        except SourceError as exc:
            self._state = "failed"
            self._buffer.fail(exc)
        finally:
            self._buffer.finish()
            self._disconnect()

    def _publish(self, captured: Captured) -> None:
        timestamp = captured.timestamp if captured.timestamp is not None else time.monotonic()
        frame = Frame(
            image=captured.image,
            index=self._next_index,
            timestamp=timestamp,
            source=self.uri,
            truth=captured.truth,
            meta=captured.meta,
        )
        self._next_index += 1
        dropped = self._buffer.put(frame)
        self._count(captured=1, dropped=int(dropped))

    def _reconnect(self) -> None:
        """Reopen the device with back-off until it answers, ``close()`` is called, or the policy
        gives up.

        Raises:
            SourceError: no device for ``give_up_after_s`` seconds.
        """
        self._state = "reconnecting"
        self._attempt_due = self._clock()
        self._disconnect()
        lost_at = self._clock()
        log.warning("%s: lost the device, reconnecting", self.uri)
        attempt = 0
        while not self._stop.is_set():
            delay = backoff_delay(attempt, self.policy, self._rand())
            now = self._clock()
            if now - lost_at + delay > self.policy.give_up_after_s:
                raise SourceError(
                    f"{self.uri}: lost the device and it did not come back within "
                    f"{self.policy.give_up_after_s:g} s ({attempt} reconnect attempts); "
                    "check the cable, power or network"
                )
            self._attempt_due = now + delay
            self._sleep(delay)
            if self._stop.is_set():
                return
            attempt += 1
            try:
                self._connect()
            except Exception as exc:  # noqa: BLE001 - every failure to reconnect is retried
                log.debug("%s: reconnect attempt %d failed: %s", self.uri, attempt, exc)
                continue
            self._count(reconnects=1)
            self._state, self._attempt_due = "streaming", None
            log.warning("%s: reconnected after %d attempts", self.uri, attempt)
            return


class PacedFrames(LiveSource):
    """Given pictures as a live camera: one every ``1 / fps`` seconds, cycling through
    ``frames``, the latest frame winning as from any camera (benchmarks and ``bench``'s live
    run: the pipeline's real slot and frame ages, without a device)."""

    def __init__(self, frames: list[np.ndarray], fps: float, name: str = "paced-camera") -> None:
        if not frames or fps <= 0:
            raise ConfigError("a paced camera needs at least one frame and fps > 0")
        super().__init__(name)
        self._frames = frames
        self._period = 1.0 / fps
        self._next = 0.0
        self._taken = 0

    def _connect(self) -> None:
        self._next = time.monotonic()

    def _capture(self) -> Captured:
        wait = self._next - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        self._next = max(self._next + self._period, time.monotonic())
        self._taken += 1
        return Captured(self._frames[self._taken % len(self._frames)])
