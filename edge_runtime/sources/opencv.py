"""Cameras through OpenCV's VideoCapture: ``camera:0``, ``v4l2:///dev/video0``.

``OpenCVCaptureSource`` is also the base of the network-stream and GStreamer sources: they differ
only in what they hand to ``cv2.VideoCapture``.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import cv2
import numpy as np
from pydantic import Field

from edge_runtime.errors import ConfigError, SourceError
from edge_runtime.imageio import DEFAULT_MAX_PIXELS, to_rgb
from edge_runtime.sources.live import Captured, LiveOptions, LiveSource
from edge_runtime.sources.video import check_frame_size

log = logging.getLogger(__name__)


class VideoCaptureLike(Protocol):
    """The part of ``cv2.VideoCapture`` the sources use (tests pass a fake)."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def set(self, prop: int, value: float) -> bool: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


CaptureFactory = Callable[..., VideoCaptureLike]


def parse_camera_uri(uri: str) -> tuple[int | str, int]:
    """``camera:0`` -> (0, CAP_ANY); ``v4l2:///dev/video2`` -> ('/dev/video2', CAP_V4L2);
    ``v4l2:1`` -> (1, CAP_V4L2); ``camera:/dev/video0`` -> ('/dev/video0', CAP_ANY).

    Raises:
        ConfigError: the URI names no camera.
    """
    scheme, _, rest = uri.partition(":")
    api = cv2.CAP_V4L2 if scheme == "v4l2" else cv2.CAP_ANY
    rest = rest.split("?", 1)[0]
    if rest.startswith("//"):
        rest = rest[2:]
    if rest.isdigit():
        return int(rest), api
    if rest.startswith("/"):
        return rest, api
    raise ConfigError(
        f"cannot tell which camera '{uri}' means: use camera:N (N = 0, 1, ...) "
        "or v4l2:///dev/videoN"
    )


def fourcc_code(fourcc: str) -> int:
    """The integer OpenCV uses for a four-character code such as ``MJPG`` or ``YUYV``.

    Raises:
        ConfigError: the code is not four characters.
    """
    if len(fourcc) != 4:
        raise ConfigError(f"fourcc must be four characters such as MJPG or YUYV, got '{fourcc}'")
    return int(cv2.VideoWriter.fourcc(*fourcc.upper()))


class CaptureOptions(LiveOptions):
    """Options every source read through OpenCV's VideoCapture takes."""

    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        description="A stream whose frames are larger is refused when it opens.",
    )


class OpenCVCaptureSource(LiveSource):
    """A live source read through ``cv2.VideoCapture``; subclasses say what to open.

    Options: ``max_pixels`` (a device or stream whose frames are larger is refused when it
    opens), ``capture_factory`` (default ``cv2.VideoCapture``; tests pass a fake) and every
    ``LiveSource`` option (reconnect back-off, clock, sleep).
    """

    Options = CaptureOptions

    def __init__(
        self,
        uri: str,
        *,
        capture_factory: CaptureFactory | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        **live: Any,
    ) -> None:
        super().__init__(uri, **live)
        self._factory: CaptureFactory = capture_factory or cv2.VideoCapture
        self.max_pixels = max_pixels
        self._cap: VideoCaptureLike | None = None

    # What to open: (target, api preference, open parameters) and why it could fail.
    def _open_args(self) -> tuple[int | str, int, Sequence[int]]:
        raise NotImplementedError

    def _unreachable(self) -> str:
        return f"cannot open {self.uri}"

    def _configure(self, cap: VideoCaptureLike) -> None:
        """Apply capture properties after opening."""

    def _connect(self) -> None:
        target, api, params = self._open_args()
        try:
            cap = self._factory(target, api, list(params)) if params else self._factory(target, api)
        except cv2.error as exc:
            raise SourceError(f"{self._unreachable()} ({exc})") from exc
        if not cap.isOpened():
            cap.release()
            raise SourceError(self._unreachable())
        try:
            self._configure(cap)
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            check_frame_size(self.uri, width, height, self.max_pixels)
        except SourceError:
            cap.release()
            raise
        self._cap = cap

    def _capture(self) -> Captured | None:
        cap = self._cap
        if cap is None:
            return None
        ok, image = cap.read()
        timestamp = time.monotonic()
        if not ok or image is None or image.size == 0:
            return None
        return Captured(to_rgb(image), timestamp=timestamp)

    def _disconnect(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            try:
                cap.release()
            except Exception as exc:  # noqa: BLE001 - releasing a lost device may fail; it is gone
                log.debug("%s: release failed: %s", self.uri, exc)


class CameraOptions(CaptureOptions):
    """Options of ``camera:N`` and ``v4l2:///dev/videoN``."""

    width: int | None = Field(None, ge=1, description="Frame width asked of the driver.")
    height: int | None = Field(None, ge=1, description="Frame height asked of the driver.")
    fps: float | None = Field(None, gt=0, description="Frame rate asked of the driver.")
    fourcc: str | None = Field(
        None, description="Pixel format, e.g. MJPG for full frame rates at high resolutions."
    )
    buffer_size: int | None = Field(
        1, ge=1, description="Driver queue length; 1 keeps the latency low."
    )
    stale_frames: int = Field(
        4,
        ge=0,
        description="Frames a snapshot skips after the camera opens: V4L2 drivers hand out "
        "frames queued (and exposed) before anyone asked; OpenCV queues 4.",
    )


class OpenCVCameraSource(OpenCVCaptureSource):
    """A USB/V4L2 camera: ``camera:0`` or ``v4l2:///dev/video0``.

    Options: ``width``, ``height``, ``fps`` (requested from the driver; cameras round them to a
    mode they support), ``fourcc`` (``MJPG`` lets most USB cameras deliver full frame rates at
    higher resolutions), ``buffer_size`` (driver queue length; 1 keeps latency low),
    ``stale_frames`` (frames :meth:`snapshot` skips after opening), plus the
    ``OpenCVCaptureSource`` options.
    """

    Options = CameraOptions

    def __init__(
        self,
        uri: str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = None,
        buffer_size: int | None = 1,
        stale_frames: int = 4,
        **options: Any,
    ) -> None:
        super().__init__(uri.split("?", 1)[0], **options)
        self.stale_frames = stale_frames
        self.device, self.api = parse_camera_uri(uri)
        self.width, self.height, self.fps = width, height, fps
        self.fourcc = fourcc_code(fourcc) if fourcc else None
        self.buffer_size = buffer_size
        self._granted: dict[str, Any] = {}

    def _open_args(self) -> tuple[int | str, int, Sequence[int]]:
        return self.device, self.api, ()

    def preflight(self, devices: str = "/dev") -> list[str]:
        if isinstance(self.device, int) and self.device >= 100:
            # OpenCV reads an index of 100 and more as an API preference plus a camera number.
            raise ConfigError(
                f"{self.uri}: camera numbers go from 0 to 99; use v4l2:///dev/videoN for others"
            )
        node = f"/dev/video{self.device}" if isinstance(self.device, int) else self.device
        local = (
            os.path.join(devices, node.removeprefix("/dev/")) if node.startswith("/dev/") else node
        )
        if os.path.exists(local):
            return [f"{self.uri}: {node} is there; whether it delivers frames needs opening it"]
        present = sorted(glob.glob(os.path.join(devices, "video*")))
        if present:
            names = ", ".join(f"/dev/{os.path.basename(p)}" for p in present)
            raise SourceError(f"{self.uri}: there is no {node} on this machine (there is {names})")
        return [f"{self.uri}: no V4L2 camera on this machine; {node} is checked on the device"]

    def _unreachable(self) -> str:
        return (
            f"cannot open camera {self.uri}: no such device, no permission, or another program "
            "uses it (list cameras with `v4l2-ctl --list-devices`)"
        )

    def _configure(self, cap: VideoCaptureLike) -> None:
        # V4L2 applies the pixel format first: some cameras offer large sizes only in MJPG.
        if self.fourcc is not None:
            cap.set(cv2.CAP_PROP_FOURCC, self.fourcc)
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        if self.buffer_size:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, self.buffer_size)
        # What the driver granted, read once here: querying a capture from another thread while
        # the capture thread reads it is not safe with every backend.
        self._granted = {
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": float(cap.get(cv2.CAP_PROP_FPS)),
        }

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._granted}
