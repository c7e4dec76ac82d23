"""The source interface: frames in capture order, each with a capture timestamp."""

from __future__ import annotations

import abc
import dataclasses
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from edge_runtime.errors import SourceError
from edge_runtime.redaction import redact
from edge_runtime.types import Frame


@dataclass
class SourceStats:
    """Counters a source keeps; read by /status and the pretty console.

    ``dropped``: frames a live source captured but overwrote before anyone read them (latest frame
    wins). ``corrupt``: frames or files that could not be decoded and were skipped.
    ``reconnects``: times a live source reopened its device.
    """

    captured: int = 0
    delivered: int = 0
    dropped: int = 0
    corrupt: int = 0
    reconnects: int = 0


class SourceOptions(BaseModel):
    """The options a source takes from ``[source] options`` or a URI's query string: each source
    module declares a subclass (unknown keys refused, every field documented), which
    ``open_source`` and the runtime config validate with. Values a test or a program passes in
    (clocks, fake devices) are constructor arguments, not options."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(abc.ABC):
    """A stream of RGB frames.

    ``live`` sources (cameras, network streams) capture in their own thread into a one-slot
    latest-frame-wins buffer, so a slow consumer always gets the newest frame; file sources deliver
    every frame in order and ``read`` returns None at the end.

    Sources are returned unopened by ``open_source``; ``open()`` (or ``with source:``, or the first
    ``read()``) opens them.

    ``stills`` sources deliver unrelated still pictures (image files) rather than consecutive
    frames of one scene, so decisions are not debounced across them by default.

    ``uri`` is what people see (messages, logs, /status, each frame's ``source``): assigning it
    keeps the real URI in ``location``, for opening, and shows it with its credentials redacted.
    """

    _location: str = ""
    _shown: str = ""
    live: bool = False
    stills: bool = False
    #: frames a device may hand over from before anyone asked (a V4L2 driver's queue, filled
    #: while the camera was opened): :meth:`snapshot` skips this many after opening
    stale_frames: int = 0
    Options: ClassVar[type[SourceOptions]] = SourceOptions

    def __init__(self) -> None:
        self.stats = SourceStats()
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        """The source's URI as shown: passwords and secret parameters redacted."""
        return self._shown

    @uri.setter
    def uri(self, value: str) -> None:
        self._location, self._shown = value, redact(value)

    @property
    def location(self) -> str:
        """The URI as given, credentials included: for opening the source, never for showing."""
        return self._location

    def open(self) -> None:
        """Open the device or file. Raises SourceError when it cannot be opened."""

    @abc.abstractmethod
    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None at the end of a finite stream (or after ``timeout`` seconds
        without a frame from a live one).

        Raises:
            SourceError: the source failed for good (a live source retries before giving up).
        """

    def close(self) -> None:
        """Stop capturing and release the device. Safe to call twice."""

    def snapshot(self, timeout: float = 10.0) -> Frame:
        """One fresh frame, opening the source first if needed.

        A live source (camera, stream) returns a frame captured after the call, never one
        waiting in its latest-frame slot, nor one of the first ``stale_frames`` after opening
        (a V4L2 driver hands out frames queued before it was asked); a file source returns its
        next frame. ``frame.image`` is the RGB uint8 picture::

            with open_source("camera:0") as camera:
                frame = camera.snapshot()
                print(frame.image.shape)  # (480, 640, 3)

        Raises:
            SourceError: the source cannot be opened, has no frame left, or delivered no fresh
                frame within ``timeout`` seconds.
        """
        self.open()
        if not self.live:
            frame = self.read(timeout)
            if frame is None:
                raise SourceError(f"{self.uri}: no frame left to take")
            return frame
        asked = time.monotonic()
        deadline = asked + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SourceError(f"{self.uri}: no fresh frame within {timeout:g} s")
            frame = self.read(timeout=remaining)
            if frame is None:
                if self.ended:
                    raise SourceError(f"{self.uri}: the stream ended before a fresh frame")
                continue
            if frame.timestamp >= asked and frame.index >= self.stale_frames:
                return frame

    @property
    def ended(self) -> bool:
        """True once the stream is over for good: a finite source delivered its last frame, or the
        source was closed. A live source's ``read`` also returns None on a timeout; this tells the
        two apart."""
        return False

    def describe(self) -> dict[str, Any]:
        """What this source is, for /status: its URI (no credentials), kind and liveness."""
        return {"uri": self.uri, "live": self.live, "kind": type(self).__name__}

    @property
    def state(self) -> str:
        """``streaming`` or ``ended``; a live source also says ``connecting``, ``reconnecting``
        (its device was lost and it is trying again) and ``failed``."""
        return "ended" if self.ended else "streaming"

    def preflight(self, devices: str = "/dev") -> list[str]:
        """The checks that need no device, for ``check-config``: raises for what is wrong
        whatever the device (an unknown scenario, a camera number OpenCV cannot take), and
        returns what can only be checked by opening the source on the device itself, one line
        each. ``devices`` is where device nodes live (tests pass a fake). Opens nothing.

        Raises:
            SourceError, ConfigError: the source cannot work as configured.
        """
        return []

    def reconnecting_on_schedule(self, grace_s: float) -> bool:
        """Whether the source is reconnecting and its next attempt is due at most ``grace_s``
        seconds ago (an attempt stuck in the driver makes this false): what a watchdog may
        count as progress while no frame arrives. False for sources that never reconnect."""
        return False

    def stats_snapshot(self) -> dict[str, Any]:
        """A consistent copy of the counters, with the ``state`` (safe from any thread)."""
        state = self.state
        with self._lock:
            return {"state": state, **dataclasses.asdict(self.stats)}

    def _count(self, **increments: int) -> None:
        """Add to counters under the lock; capture threads and readers both count."""
        with self._lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
