"""The Raspberry Pi camera through picamera2 (libcamera): ``picamera2:0``.

picamera2 names formats after libcamera/DRM fourccs, which describe a little-endian pixel word:
its ``RGB888`` arrives in memory as ``[B, G, R]`` per pixel and its ``BGR888`` as ``[R, G, B]``
(likewise ``XRGB8888`` is ``[B, G, R, 255]`` and ``XBGR8888`` is ``[R, G, B, 255]``). The table
below says which byte order each format really has, so every frame is converted to RGB once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import Field

from edge_runtime.errors import ConfigError, SourceError
from edge_runtime.imageio import to_rgb
from edge_runtime.registry import require
from edge_runtime.sources.live import Captured, LiveOptions, LiveSource

log = logging.getLogger(__name__)

#: picamera2 format name -> the channel order of the numpy array it delivers
MEMORY_ORDER = {"RGB888": "BGR", "XRGB8888": "BGR", "BGR888": "RGB", "XBGR8888": "RGB"}


def parse_camera_number(uri: str) -> int:
    """``picamera2:1`` -> 1 (``picamera2:`` alone means camera 0).

    Raises:
        ConfigError: the URI names no camera number.
    """
    rest = uri.partition(":")[2].lstrip("/").split("?", 1)[0] or "0"
    if not rest.isdigit():
        raise ConfigError(f"'{uri}' names no camera: use picamera2:0, picamera2:1, ...")
    return int(rest)


class Picamera2Options(LiveOptions):
    """Options of ``picamera2:N`` (a Raspberry Pi camera module)."""

    width: int = Field(640, ge=1, description="Output width; the ISP scales for free.")
    height: int = Field(480, ge=1, description="Output height.")
    fps: float | None = Field(None, gt=0, description="Frame rate; default the sensor's.")
    pixel_format: str = Field(
        "RGB888", description=f"One of {', '.join(sorted(MEMORY_ORDER))}."
    )
    buffer_count: int = Field(4, ge=1, description="Buffers libcamera cycles through.")


class Picamera2Source(LiveSource):
    """A Raspberry Pi camera module.

    Options: ``width``, ``height`` (default 640x480: the ISP scales for free, so asking for little
    more than the model's input size saves work), ``fps``, ``pixel_format`` (one of
    ``MEMORY_ORDER``; default ``RGB888``), ``buffer_count``, plus the ``LiveSource`` options.
    Needs the ``picamera2`` package from Raspberry Pi OS (``sudo apt install python3-picamera2``).
    """

    Options = Picamera2Options

    def __init__(
        self,
        uri: str,
        *,
        width: int = 640,
        height: int = 480,
        fps: float | None = None,
        pixel_format: str = "RGB888",
        buffer_count: int = 4,
        **live: Any,
    ) -> None:
        super().__init__(uri.split("?", 1)[0], **live)
        if pixel_format not in MEMORY_ORDER:
            known = ", ".join(sorted(MEMORY_ORDER))
            raise ConfigError(
                f"picamera2 format '{pixel_format}' is not supported (use one of {known})"
            )
        self.camera_number = parse_camera_number(uri)
        self.width, self.height, self.fps = width, height, fps
        self.format = pixel_format
        self.buffer_count = buffer_count
        self._camera: Any = None

    def _connect(self) -> None:
        picamera2 = require("picamera2", "rpi", "the Raspberry Pi camera source")
        cameras = picamera2.Picamera2.global_camera_info()
        if self.camera_number >= len(cameras):
            raise SourceError(
                f"no Raspberry Pi camera {self.camera_number} (found {len(cameras)}): check the "
                "ribbon cable and run `rpicam-hello --list-cameras`"
            )
        controls = {"FrameRate": float(self.fps)} if self.fps else {}
        camera = None
        try:
            camera = picamera2.Picamera2(self.camera_number)
            config = camera.create_video_configuration(
                main={"size": (self.width, self.height), "format": self.format},
                controls=controls,
                buffer_count=self.buffer_count,
            )
            camera.configure(config)
            camera.start()
        except Exception as exc:  # libcamera reports failures with many exception types
            if camera is not None:
                self._close_camera(camera)
            raise SourceError(
                f"cannot start Raspberry Pi camera {self.camera_number}: {exc} (is another "
                "program using it?)"
            ) from exc
        self._camera = camera

    def _capture(self) -> Captured | None:
        camera = self._camera
        if camera is None:
            return None
        array = camera.capture_array("main")
        timestamp = time.monotonic()
        return Captured(to_rgb(array, MEMORY_ORDER[self.format]), timestamp=timestamp)

    def _disconnect(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            self._close_camera(camera)

    def _close_camera(self, camera: Any) -> None:
        for step in (camera.stop, camera.close):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - a camera that vanished fails to stop
                log.debug("%s: %s failed: %s", self.uri, step.__name__, exc)

    def preflight(self, devices: str = "/dev") -> list[str]:
        import importlib.util

        notes = [f"{self.uri}: the camera is opened through libcamera on the Raspberry Pi"]
        if importlib.util.find_spec("picamera2") is None:
            notes.append(
                "picamera2 is not installed here (on the Pi: apt install python3-picamera2, "
                "and a venv made with --system-site-packages)"
            )
        return notes

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "width": self.width,
            "height": self.height,
            "format": self.format,
        }
