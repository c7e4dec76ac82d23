"""Inference backends: a model file in, raw output rows out.

Backends are looked up by name in :mod:`edge_runtime.registry` and imported only when chosen, so a
device without onnxruntime still runs TFLite models.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from edge_runtime.backends.base import Backend, BackendOptions
from edge_runtime.errors import ConfigError
from edge_runtime.registry import entry, load

#: which backends can run which model file format
FORMAT_BACKENDS: dict[str, tuple[str, ...]] = {
    "tflite": ("litert",),
    "onnx": ("onnxruntime",),
}


def backends_for_format(fmt: str, preference: Iterable[str] = ()) -> list[str]:
    """Backends able to run ``fmt``, those named in ``preference`` first, in its order."""
    able = FORMAT_BACKENDS.get(fmt, ())
    preferred = [name for name in preference if name in able]
    return preferred + [name for name in able if name not in preferred]


def check_backend_for_format(name: str, fmt: str) -> None:
    """Raise unless backend ``name`` can run a ``fmt`` model.

    Raises:
        UnknownComponentError: ``name`` is not a backend.
        ConfigError: it cannot run this format.
    """
    entry("backend", name)  # raises UnknownComponentError listing the known names
    if name not in FORMAT_BACKENDS.get(fmt, ()):
        able = ", ".join(FORMAT_BACKENDS.get(fmt, ())) or "none"
        raise ConfigError(f"the backend '{name}' cannot run {fmt} models (use: {able})")


def open_backend(
    name: str, path: str | os.PathLike[str], options: BackendOptions | None = None
) -> Backend:
    """Load ``path`` into backend ``name`` (imported now).

    Raises:
        UnknownComponentError: no backend of that name.
        MissingDependencyError: its package is not installed (names the extra).
        BackendError: the model cannot be loaded.
    """
    backend_class = load("backend", name)
    backend = backend_class(path, options or BackendOptions())  # type: ignore[operator]
    if not isinstance(backend, Backend):  # pragma: no cover - a misregistered component
        raise ConfigError(f"the registered backend '{name}' is not a Backend")
    return backend


__all__ = [
    "FORMAT_BACKENDS",
    "Backend",
    "BackendOptions",
    "backends_for_format",
    "check_backend_for_format",
    "open_backend",
]
