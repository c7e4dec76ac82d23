"""GStreamer pipelines through OpenCV: ``gst:<pipeline>`` and Jetson CSI cameras ``csi://0``."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import cv2
from pydantic import Field

from edge_runtime.errors import ConfigError, SourceError
from edge_runtime.redaction import redact
from edge_runtime.sources.opencv import CaptureOptions, OpenCVCaptureSource

NO_GSTREAMER_FIX = (
    "OpenCV here was built without GStreamer (the opencv-python wheels from PyPI are): use an "
    "OpenCV built with GStreamer, e.g. on a Jetson create the virtualenv with "
    "--system-site-packages and `pip uninstall opencv-python-headless` so JetPack's cv2 is used"
)


@functools.lru_cache(maxsize=1)
def _opencv_build_information() -> str:
    return str(cv2.getBuildInformation())


def gstreamer_enabled(build_information: str) -> bool:
    """True when ``cv2.getBuildInformation()`` text says GStreamer support is compiled in."""
    match = re.search(r"^\s*GStreamer:\s*(\S+)", build_information, re.MULTILINE)
    return match is not None and match.group(1).upper() not in ("NO", "OFF")


def csi_pipeline(
    sensor_id: int = 0,
    *,
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    flip: int = 0,
    sensor_mode: int | None = None,
) -> str:
    """The GStreamer pipeline that reads a Jetson CSI camera into BGR frames for OpenCV.

    nvarguscamerasrc gives NV12 in NVMM (GPU) memory; nvvidconv copies it out as BGRx (scaling
    and flipping on the hardware), videoconvert drops the x, and the appsink keeps only the
    newest buffer so a slow consumer never reads stale frames.
    """
    mode = f" sensor-mode={sensor_mode}" if sensor_mode is not None else ""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id}{mode} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1,format=NV12 ! "
        f"nvvidconv flip-method={flip} ! "
        f"video/x-raw,width={width},height={height},format=BGRx ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1"
    )


class GStreamerOptions(CaptureOptions):
    """Options of ``gst:<pipeline>`` and ``csi://N`` (the size and rate apply to ``csi://``)."""

    width: int = Field(1280, ge=1, description="CSI capture width.")
    height: int = Field(720, ge=1, description="CSI capture height.")
    fps: int = Field(30, ge=1, description="CSI frame rate.")
    flip: int = Field(0, ge=0, le=7, description="nvvidconv flip-method, 0..7.")
    sensor_mode: int | None = Field(None, ge=0, description="The sensor mode to capture in.")


class GStreamerSource(OpenCVCaptureSource):
    """A GStreamer pipeline ending in ``appsink`` (``gst:...``) or a Jetson CSI camera (``csi://N``).

    Options for ``csi://``: ``width``, ``height``, ``fps``, ``flip`` (nvvidconv flip-method 0..7),
    ``sensor_mode``. ``build_information`` replaces ``cv2.getBuildInformation()`` (tests), plus the
    ``OpenCVCaptureSource`` options.
    """

    Options = GStreamerOptions

    def __init__(
        self,
        uri: str,
        *,
        width: int = 1280,
        height: int = 720,
        fps: int = 30,
        flip: int = 0,
        sensor_mode: int | None = None,
        build_information: str | Callable[[], str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(uri, **options)
        scheme, _, rest = uri.partition(":")
        if scheme == "csi":
            sensor = rest.lstrip("/") or "0"
            if not sensor.isdigit():
                raise ConfigError(f"'{self.uri}' names no CSI sensor: use csi://0, csi://1, ...")
            self.pipeline = csi_pipeline(
                int(sensor), width=width, height=height, fps=fps, flip=flip, sensor_mode=sensor_mode
            )
        else:
            self.pipeline = rest.strip()
            if "appsink" not in self.pipeline:
                raise ConfigError(
                    f"the GStreamer pipeline in '{self.uri}' must end in appsink "
                    "(e.g. gst:videotestsrc ! videoconvert ! appsink drop=1 max-buffers=1)"
                )
        self._build_information = build_information

    def preflight(self, devices: str = "/dev") -> list[str]:
        notes = [f"{self.uri}: the GStreamer pipeline is started on the device"]
        info = self._build_information
        text = (
            info() if callable(info) else info if info is not None else _opencv_build_information()
        )
        if not gstreamer_enabled(text):
            notes.append("this machine's OpenCV has no GStreamer (JetPack's OpenCV has)")
        return notes

    def _open_args(self) -> tuple[int | str, int, Sequence[int]]:
        info = self._build_information
        if info is None:
            info = _opencv_build_information
        text = info() if callable(info) else info
        if not gstreamer_enabled(text):
            raise SourceError(f"cannot open {self.uri}: {NO_GSTREAMER_FIX}")
        return self.pipeline, cv2.CAP_GSTREAMER, ()

    def _unreachable(self) -> str:
        return (
            f"cannot start the GStreamer pipeline for {self.uri}: check the camera is connected "
            f"and try the pipeline with gst-launch-1.0 ({redact(self.pipeline)})"
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pipeline": redact(self.pipeline)}
