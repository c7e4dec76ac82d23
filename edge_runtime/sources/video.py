"""Video files through OpenCV: every frame in order, None at the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
from pydantic import Field

from edge_runtime.errors import SourceError
from edge_runtime.imageio import DEFAULT_MAX_PIXELS, to_rgb
from edge_runtime.sources.base import Source, SourceOptions
from edge_runtime.types import Frame

#: suffixes ``open_source`` treats as video files
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}
    | {".mjpeg", ".mjpg", ".h264", ".h265", ".3gp", ".ogv"}
)


def is_video_path(path: str | Path) -> bool:
    """True when the file name ends in a video suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


class VideoOptions(SourceOptions):
    """Options of a video file."""

    loop: bool = Field(False, description="Start over at the end instead of stopping.")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="A video with larger frames is refused at open."
    )


def check_frame_size(what: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse a video whose declared frame size is over ``max_pixels`` (0 x 0: not known yet).

    Raises:
        SourceError: the frames are too large; the message names both sizes.
    """
    if width > 0 and height > 0 and width * height > max_pixels:
        raise SourceError(
            f"{what} has {width}x{height} frames ({width * height / 1e6:.1f} megapixels), over "
            f"the limit of {max_pixels / 1e6:g} megapixels (option max_pixels)"
        )


class VideoFileSource(Source):
    """Every frame of a video file, in order.

    ``Frame.timestamp`` is when the frame was decoded (``time.monotonic()``);
    ``meta['position_ms']`` is its position in the video. Options: ``loop`` (start over at the end),
    ``max_pixels`` (a video whose frames are larger is refused when it opens),
    ``capture_factory`` (replaces ``cv2.VideoCapture``).
    """

    Options = VideoOptions

    def __init__(
        self,
        uri: str,
        *,
        loop: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        capture_factory: Any = None,
    ) -> None:
        super().__init__()
        self.uri = uri
        self.loop = loop
        self.max_pixels = max_pixels
        self._factory = capture_factory or cv2.VideoCapture
        self._cap: Any = None
        self._index = 0
        self._frames_this_pass = 0
        self._closed = False
        self._info: dict[str, Any] = {}

    def open(self) -> None:
        """Open the file.

        Raises:
            SourceError: the file is missing, OpenCV cannot decode it, or its frames are over
                ``max_pixels``.
        """
        if self._cap is not None:
            return
        if self._closed:
            raise SourceError(f"{self.uri}: the source was closed; open a new one")
        if not Path(self.location).is_file():
            raise SourceError(f"no such video file: {self.uri}")
        cap = self._factory(self.location)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot decode video {self.uri}: unknown container or codec for this OpenCV"
            )
        try:
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            check_frame_size(f"video {self.uri}", width, height, self.max_pixels)
        except SourceError:
            cap.release()
            raise
        self._cap = cap
        self._info = {
            "width": width,
            "height": height,
            "fps": float(cap.get(cv2.CAP_PROP_FPS)),
            "frame_count": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
        }

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame; None after the last one (unless ``loop``) or after ``close()``.

        Raises:
            SourceError: as ``open``; or ``loop`` is set and the video has no frame at all.
        """
        if self._cap is None:
            if self._closed:
                return None
            self.open()
        while True:
            ok, image = self._cap.read()
            timestamp = time.monotonic()
            if ok and image is not None:
                # After a read, OpenCV reports the position of the frame just decoded.
                position_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
                break
            if not self.loop:
                self.close()
                return None
            if self._frames_this_pass == 0:
                raise SourceError(f"video {self.uri} has no frame to loop over")
            self._restart()
        self._frames_this_pass += 1
        frame = Frame(
            image=to_rgb(image),
            index=self._index,
            timestamp=timestamp,
            source=self.uri,
            meta={"position_ms": position_ms},
        )
        self._index += 1
        self._count(captured=1, delivered=1)
        return frame

    @property
    def ended(self) -> bool:
        return self._closed

    def _restart(self) -> None:
        # Seeking to 0 is unreliable with some codecs; reopening always works.
        self._cap.release()
        self._cap = None
        self.open()
        self._frames_this_pass = 0

    def close(self) -> None:
        self._closed = True
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._info}
