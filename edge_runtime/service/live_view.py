"""The live view: what the camera sees and what the model decides, in a browser.

The status server serves it (``[service] live_view``): ``/`` is one small self-contained page
(inline CSS and JavaScript, no CDN, no build step), ``/latest.jpg`` the latest annotated frame,
``/stream.mjpg`` the same as an MJPEG stream (a bounded number of viewers), ``/live.json`` what
the page shows besides the frame: the decision and score, FPS, per-stage latency over the last
minutes, the model, the source's state, the fail-safe and the update state.

It must never slow the frame loop. :class:`LiveView` is a sink: ``emit`` keeps a reference to the
latest frame and adds the frame's latencies to a running sum, nothing more. Frames are drawn
(:func:`edge_runtime.sinks.preview.annotate`, the preview sink's drawing), scaled down and
JPEG-encoded on the live view's own thread, only while someone watches (a viewer asked for a
frame within ``watch_window_s``), at most ``fps`` a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import cv2
import numpy as np

from edge_runtime.sinks import Sink, StatusProvider
from edge_runtime.sinks.preview import annotate
from edge_runtime.types import Frame, Prediction

log = logging.getLogger(__name__)

#: the longest side of an encoded frame: enough to see, cheap to encode on a Pi
MAX_SIDE = 640
BOUNDARY = "edge-runtime-frame"


@dataclass(frozen=True)
class EncodedFrame:
    """One JPEG of the live view: its bytes, the frame's index and how many were encoded."""

    jpeg: bytes
    frame_index: int
    sequence: int


class LatencyHistory:
    """Per-stage mean latency and frame counts in steps of ``step_s`` seconds, for the last
    ``keep_s`` seconds. ``add`` is a few dict operations: it runs on the frame thread."""

    def __init__(self, step_s: float = 2.0, keep_s: float = 300.0) -> None:
        self.step_s = step_s
        self._points: deque[dict[str, Any]] = deque(maxlen=max(1, int(keep_s / step_s)))
        self._start: float | None = None
        self._sums: dict[str, float] = {}
        self._frames = 0
        self._lock = threading.Lock()

    def add(self, latency_ms: dict[str, float], now: float) -> None:
        with self._lock:
            if self._start is None:
                self._start = now
            elif now - self._start >= self.step_s:
                self._close_step(now)
            self._frames += 1
            for stage, value in latency_ms.items():
                self._sums[stage] = self._sums.get(stage, 0.0) + value

    def _close_step(self, now: float) -> None:
        assert self._start is not None
        span = now - self._start
        if self._frames:
            self._points.append(
                {
                    "t": round(now, 3),
                    "fps": round(self._frames / span, 2) if span > 0 else 0.0,
                    "ms": {k: round(v / self._frames, 3) for k, v in self._sums.items()},
                }
            )
        self._start, self._sums, self._frames = now, {}, 0

    def points(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._points)


class LiveView(Sink):
    """The live view's frames and history (see the module docstring).

    ``fps``: most frames encoded a second; ``watch_window_s``: how long after a viewer's last
    request frames are still encoded; ``max_streams``: MJPEG viewers at once; ``quality``: JPEG
    quality; ``clock``: for the rate and the viewers (tests).
    """

    name = "live-view"

    def __init__(
        self,
        *,
        fps: float = 5.0,
        watch_window_s: float = 5.0,
        max_streams: int = 2,
        quality: int = 80,
        clock: Callable[[], float] = time.monotonic,
        history: LatencyHistory | None = None,
    ) -> None:
        self.fps = fps
        self.watch_window_s = watch_window_s
        self.max_streams = max_streams
        self.quality = quality
        self._clock = clock
        self.history = history or LatencyHistory()
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, Prediction] | None = None
        self._latest_seq = 0
        self._encoded: EncodedFrame | None = None
        self._encoded_from = 0
        self._viewer_seen: float | None = None
        self._streams = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        #: frames encoded so far (tests and /live.json)
        self.encodes = 0

    # -- Sink (the frame thread) --------------------------------------------------------------
    def open(self, status: StatusProvider | None = None) -> None:
        """Start the encoder thread (once; the live view outlives the pipelines of reloads)."""
        with self._cond:
            self._closed = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="live view", daemon=True)
                self._thread.start()

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        self.history.add(prediction.latency_ms, self._clock())
        if frame is None or not self.watched:
            return
        with self._cond:
            self._latest = (frame.image, prediction)
            self._latest_seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Nothing: a reload closes the pipeline's sinks, the live view goes on. See
        :meth:`shutdown`."""

    def shutdown(self) -> None:
        """Stop the encoder thread and end the streams."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2.0)

    # -- viewers --------------------------------------------------------------------------------
    @property
    def watched(self) -> bool:
        seen = self._viewer_seen
        return seen is not None and self._clock() - seen <= self.watch_window_s

    def _seen(self) -> bool:
        """Mark a viewer; whether one was already watching."""
        with self._cond:
            was_watched = self.watched
            self._viewer_seen = self._clock()
            if not was_watched:
                self._cond.notify_all()
            return was_watched

    def latest(self, wait_s: float = 2.0) -> EncodedFrame | None:
        """The latest encoded frame, marking a viewer. After a pause (frames are encoded only
        while watched) it waits up to ``wait_s`` for a fresh one; None when none came."""
        with self._cond:
            if self._seen() and self._encoded is not None:
                return self._encoded
            before = self._encoded.sequence if self._encoded is not None else 0
            self._cond.wait_for(
                lambda: (
                    self._closed or (self._encoded is not None and self._encoded.sequence != before)
                ),
                timeout=wait_s,
            )
            return self._encoded

    def stream(self, write: Callable[[bytes], None], closing: threading.Event) -> None:
        """Write MJPEG parts (``multipart/x-mixed-replace``) until the viewer goes away (a write
        fails), ``closing`` is set, or the live view shuts down. Between :meth:`join_stream`
        and :meth:`leave_stream`."""
        sent = -1

        def news() -> bool:
            return self._closed or (self._encoded is not None and self._encoded.sequence != sent)

        while not closing.is_set():
            self._seen()
            with self._cond:
                self._cond.wait_for(news, timeout=1.0)
                if self._closed:
                    return
                encoded = self._encoded
            if encoded is None or encoded.sequence == sent:
                continue
            sent = encoded.sequence
            write(
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(encoded.jpeg)}\r\n\r\n".encode()
                + encoded.jpeg
                + b"\r\n"
            )

    def join_stream(self) -> bool:
        """Take one of the ``max_streams`` MJPEG slots; False when all are taken."""
        with self._cond:
            if self._streams >= self.max_streams:
                return False
            self._streams += 1
            return True

    def leave_stream(self) -> None:
        """Give back the slot :meth:`join_stream` took."""
        with self._cond:
            self._streams = max(0, self._streams - 1)

    def describe(self) -> dict[str, Any]:
        """For /live.json and /status: whether someone watches, what was encoded."""
        encoded = self._encoded
        return {
            "watched": self.watched,
            "fps_cap": self.fps,
            "encoded_frames": self.encodes,
            "streams": self._streams,
            "max_streams": self.max_streams,
            "frame_index": encoded.frame_index if encoded is not None else None,
        }

    # -- the encoder thread -------------------------------------------------------------------
    def _run(self) -> None:
        period = 1.0 / self.fps
        last = -period
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: (
                        self._closed
                        or (self._latest is not None and self._latest_seq != self._encoded_from)
                    ),
                    timeout=1.0,
                )
                if self._closed:
                    return
                if self._latest is None or self._latest_seq == self._encoded_from:
                    continue
                wait = last + period - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the cap: at most fps encodes a second
            with self._cond:
                latest, seq = self._latest, self._latest_seq
            if latest is None:
                continue
            last = time.monotonic()
            try:
                jpeg = encode_frame(latest[0], latest[1], self.quality)
            except Exception:  # a frame that cannot be drawn must not end the view
                log.exception("live view: could not encode frame %d", latest[1].frame_index)
                jpeg = None
            with self._cond:
                self._encoded_from = seq
                if jpeg is not None:
                    self.encodes += 1
                    self._encoded = EncodedFrame(jpeg, latest[1].frame_index, self.encodes)
                if not self.watched:
                    self._latest = None  # nobody watches: let the frame go
                self._cond.notify_all()


def encode_frame(image_rgb: np.ndarray, prediction: Prediction, quality: int = 80) -> bytes:
    """The frame with its decision drawn on it, at most :data:`MAX_SIDE` pixels wide or high,
    as JPEG bytes.

    Raises:
        ValueError: OpenCV cannot encode the image.
    """
    height, width = image_rgb.shape[:2]
    scale = MAX_SIDE / max(height, width)
    if scale < 1:
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        image_rgb = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA)
    canvas = annotate(image_rgb, prediction)
    ok, data = cv2.imencode(".jpg", canvas, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("cannot encode the frame as JPEG")
    return bytes(data.tobytes())


def page() -> bytes:
    """The live view's page (``live_view.html`` beside this module: HTML with inline CSS and
    JavaScript, nothing fetched from elsewhere)."""
    return (
        resources.files(__package__ or "edge_runtime.service")
        .joinpath("live_view.html")
        .read_bytes()
    )
