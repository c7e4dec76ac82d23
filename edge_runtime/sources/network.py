"""Network cameras: ``rtsp://`` and MJPEG over ``http(s)://``, through OpenCV's FFmpeg backend."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import cv2
from pydantic import Field

from edge_runtime.errors import ConfigError
from edge_runtime.sources.opencv import CaptureOptions, OpenCVCaptureSource

log = logging.getLogger(__name__)

#: OpenCV reads FFmpeg demuxer options from this variable when a capture opens.
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


class NetworkOptions(CaptureOptions):
    """Options of ``rtsp://`` and ``http(s)://`` (MJPEG) streams."""

    rtsp_tcp: bool = Field(True, description="RTSP over TCP, which survives lossy Wi-Fi.")
    open_timeout_s: float = Field(
        10.0, gt=0, description="Seconds before the stream counts as unreachable."
    )
    read_timeout_s: float = Field(
        10.0, gt=0, description="Seconds before the stream counts as lost."
    )


class NetworkStreamSource(OpenCVCaptureSource):
    """An RTSP stream or an MJPEG stream over HTTP(S).

    Options: ``rtsp_tcp`` (default True: RTSP over TCP, which survives lossy Wi-Fi where UDP
    smears frames; it sets ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` when that is not already set, because
    that is the only way to pass it to OpenCV), ``open_timeout_s`` and ``read_timeout_s`` (how
    long FFmpeg waits before the stream counts as unreachable or lost), plus the
    ``OpenCVCaptureSource`` options. Credentials in the URL never appear in logs or /status.
    """

    Options = NetworkOptions

    def __init__(
        self,
        uri: str,
        *,
        rtsp_tcp: bool = True,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(uri, **options)
        self.rtsp_tcp = rtsp_tcp
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s

    def _open_args(self) -> tuple[int | str, int, Sequence[int]]:
        if self.location.startswith("rtsp") and self.rtsp_tcp:
            if os.environ.setdefault(FFMPEG_OPTIONS_ENV, "rtsp_transport;tcp") != (
                "rtsp_transport;tcp"
            ):
                log.info("%s: keeping %s from the environment", self.uri, FFMPEG_OPTIONS_ENV)
        params = (
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.read_timeout_s * 1000),
        )
        return self.location, cv2.CAP_FFMPEG, params

    def preflight(self, devices: str = "/dev") -> list[str]:
        parts = urlsplit(self.location)
        if not parts.hostname:
            raise ConfigError(f"'{self.uri}' names no host (e.g. rtsp://camera.local/stream)")
        try:
            parts.port  # noqa: B018 - urlsplit checks the port when it is read
        except ValueError:
            raise ConfigError(f"'{self.uri}' has a bad port") from None
        return [f"{self.uri}: whether the stream answers is checked when it is opened"]

    def _unreachable(self) -> str:
        parts = urlsplit(self.location)
        port = _port(parts)
        why = _probe(parts.hostname or "", port, min(self.open_timeout_s, 2.0))
        if why is not None:
            return f"cannot open stream {self.uri}: {why}"
        return (
            f"cannot open stream {self.uri}: no video from {parts.hostname}:{port} within "
            f"{self.open_timeout_s:g} s: wrong path or credentials, or not a video stream"
        )


_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


def _port(parts: Any) -> int:
    try:
        return int(parts.port or _DEFAULT_PORTS.get(parts.scheme, 554))
    except ValueError:
        return _DEFAULT_PORTS.get(parts.scheme, 554)


def _probe(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection to the camera fails, in words, or None when it connects (then the
    stream itself is what OpenCV could not read)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return f"{host}:{port} refused the connection (nothing listens there: wrong port?)"
    except socket.gaierror:
        return f"unknown host {host}"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as exc:
        return f"cannot reach {host}:{port}: {exc.strerror or exc}"
