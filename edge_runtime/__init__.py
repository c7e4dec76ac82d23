"""edge-classify device runtime: camera frames in, labels out, in real time.

The Python API, in four lines (see docs/python-api.md)::

    import edge_runtime as er
    camera = er.open_source("camera:0")            # any source URI
    model = er.load_model("models/traffic-signs")   # a bundle, a .tflite or an .onnx
    frame = camera.snapshot()                       # one fresh RGB frame
    result = model.classify(frame)                  # label, score, top, unknown, latency_ms
    er.annotate(frame, result).save("snap.jpg")     # the picture with its label drawn on it

Importing this package does nothing but define names: no hardware probing, no model loading,
and no numpy, OpenCV or inference library either: each name below is imported the first time
it is used, so ``import edge_runtime`` stays fast for a command line that needs none of them.
"""

from __future__ import annotations

import importlib
from importlib import metadata as _metadata
from typing import Any

try:
    __version__ = _metadata.version("edge-classify")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# Editors and type checkers read the names' types from __init__.pyi.

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "open_source": "edge_runtime.api",
    "load_model": "edge_runtime.api",
    "annotate": "edge_runtime.api",
    "Model": "edge_runtime.api",
    "AnnotatedImage": "edge_runtime.api",
    "Source": "edge_runtime.sources.base",
    "Frame": "edge_runtime.types",
    "Prediction": "edge_runtime.types",
    "Classification": "edge_runtime.types",
    "EdgeRuntimeError": "edge_runtime.errors",
    "ConfigError": "edge_runtime.errors",
    "SourceError": "edge_runtime.errors",
    "ModelError": "edge_runtime.errors",
    "BundleError": "edge_runtime.errors",
    "BackendError": "edge_runtime.errors",
    "PreprocessError": "edge_runtime.errors",
    "OutputError": "edge_runtime.errors",
    "MissingDependencyError": "edge_runtime.errors",
    "UnknownComponentError": "edge_runtime.errors",
}

__all__ = [
    "AnnotatedImage",
    "BackendError",
    "BundleError",
    "Classification",
    "ConfigError",
    "EdgeRuntimeError",
    "Frame",
    "MissingDependencyError",
    "Model",
    "ModelError",
    "OutputError",
    "Prediction",
    "PreprocessError",
    "Source",
    "SourceError",
    "UnknownComponentError",
    "__version__",
    "annotate",
    "load_model",
    "open_source",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_runtime' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
