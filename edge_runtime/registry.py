"""Lazy registry of backends, sources and sinks.

A component is named by a key and its module is imported only when that key is chosen, so a device
without onnxruntime still runs TFLite models and a missing optional package is reported by name with
the extra that installs it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from edge_runtime.errors import MissingDependencyError, UnknownComponentError

Kind = Literal["backend", "source", "sink"]


@dataclass(frozen=True)
class Entry:
    """Where a component lives (``module:attribute``) and which extra provides its dependencies."""

    target: str
    extra: str | None = None
    summary: str = ""


# Keys are what users type: backend names, URI schemes, sink names. Sinks are built, and receive
# each prediction, in this order; each sink module declares its own [outputs] key and settings.
_ENTRIES: dict[str, dict[str, Entry]] = {
    "backend": {
        "litert": Entry("edge_runtime.backends.litert:LiteRTBackend", "tflite", "LiteRT / TFLite"),
        "onnxruntime": Entry(
            "edge_runtime.backends.onnxruntime:OnnxRuntimeBackend", "onnx", "ONNX Runtime"
        ),
    },
    # URI schemes; a plain path is an image, a folder, a glob or a video (see sources.open_source).
    "source": {
        "synthetic": Entry(
            "edge_runtime.sources.synthetic:SyntheticSource", None, "rendered scenes"
        ),
        "images": Entry(
            "edge_runtime.sources.files:ImageFilesSource", None, "image file/folder/glob"
        ),
        "video": Entry("edge_runtime.sources.video:VideoFileSource", None, "video file"),
        "camera": Entry(
            "edge_runtime.sources.opencv:OpenCVCameraSource", None, "camera:N (OpenCV)"
        ),
        "v4l2": Entry("edge_runtime.sources.opencv:OpenCVCameraSource", None, "v4l2:///dev/videoN"),
        "rtsp": Entry("edge_runtime.sources.network:NetworkStreamSource", None, "RTSP stream"),
        "http": Entry("edge_runtime.sources.network:NetworkStreamSource", None, "MJPEG over HTTP"),
        "https": Entry(
            "edge_runtime.sources.network:NetworkStreamSource", None, "MJPEG over HTTPS"
        ),
        "gst": Entry("edge_runtime.sources.gstreamer:GStreamerSource", None, "GStreamer pipeline"),
        "csi": Entry("edge_runtime.sources.gstreamer:GStreamerSource", None, "Jetson CSI camera"),
        "picamera2": Entry(
            "edge_runtime.sources.picamera2:Picamera2Source", "rpi", "Raspberry Pi camera"
        ),
    },
    "sink": {
        "pretty": Entry("edge_runtime.sinks.console:PrettySink", None, "human-readable console"),
        "reject": Entry("edge_runtime.sinks.action:RejectSink", None, "announce a reject action"),
        "jsonl": Entry(
            "edge_runtime.sinks.jsonl:JsonLinesSink", None, "JSON lines, stdout or file"
        ),
        "mqtt": Entry("edge_runtime.sinks.mqtt:MqttSink", "mqtt", "MQTT broker"),
        "webhook": Entry("edge_runtime.sinks.webhook:WebhookSink", None, "HTTP POST per event"),
        "gpio": Entry("edge_runtime.sinks.gpio:GpioSink", "rpi", "drive a pin on a label"),
        "preview": Entry("edge_runtime.sinks.preview:PreviewSink", None, "annotated frames"),
        "collect": Entry("edge_runtime.sinks.collect:CollectSink", None, "field data to review"),
    },
}


def register(
    kind: Kind, name: str, target: str, extra: str | None = None, summary: str = ""
) -> None:
    """Add or replace a component. ``target`` is ``'package.module:Attribute'``."""
    _ENTRIES[kind][name] = Entry(target, extra, summary)


def names(kind: Kind, *, sort: bool = True) -> list[str]:
    """The keys known for ``kind``, sorted (or in the order they were registered)."""
    keys = list(_ENTRIES[kind])
    return sorted(keys) if sort else keys


def entry(kind: Kind, name: str) -> Entry:
    """The registry entry for ``name``.

    Raises:
        UnknownComponentError: ``name`` is not registered; the message lists the known names.
    """
    try:
        return _ENTRIES[kind][name]
    except KeyError:
        known = ", ".join(names(kind)) or "none"
        raise UnknownComponentError(f"unknown {kind} '{name}' (known: {known})") from None


def load(kind: Kind, name: str) -> object:
    """Import the module of component ``name`` and return the attribute it names.

    Raises:
        UnknownComponentError: ``name`` is not registered.
        MissingDependencyError: the module needs a package that is not installed.
    """
    found = entry(kind, name)
    module_name, _, attribute = found.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only blame the extra when the missing module is a third-party one, not our own code.
        missing = (exc.name or "").split(".")[0]
        if found.extra and missing and missing != module_name.split(".")[0]:
            raise MissingDependencyError(missing, found.extra, f"the {kind} '{name}'") from exc
        raise
    return getattr(module, attribute)


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional third-party module or explain which extra installs it.

    Raises:
        MissingDependencyError: the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc
