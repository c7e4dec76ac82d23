"""LiteRT (TensorFlow Lite) backend: ``ai_edge_litert`` (the ``tflite`` extra), else
``tflite_runtime`` (for devices whose system NumPy is still 1.x).

Never TensorFlow, not even when it happens to be installed: the device runtime must not depend
on it, and an import by name at run time is one that import-linter cannot see.

The interpreter runs with XNNPACK (LiteRT's default CPU delegate) and ``num_threads``; extra
delegates such as the Coral Edge TPU's ``libedgetpu.so.1`` are loaded by path. Nothing is imported
until a backend is created, so importing this module is free.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends.base import Backend, BackendOptions
from edge_runtime.errors import BackendError, MissingDependencyError
from edge_runtime.nativelog import filtered_native_stderr
from edge_runtime.types import TensorSpec

log = logging.getLogger(__name__)

# Tried in this order.
_INTERPRETER_PACKAGES = ("ai_edge_litert", "tflite_runtime")


@dataclass(frozen=True)
class InterpreterApi:
    """The pieces of a LiteRT Python package the backend uses."""

    package: str
    interpreter: Any
    load_delegate: Any = None
    resolver_types: Any = None


def _api_of(package: str) -> InterpreterApi:
    module = importlib.import_module(f"{package}.interpreter")
    return InterpreterApi(
        package,
        module.Interpreter,
        getattr(module, "load_delegate", None),
        getattr(module, "OpResolverType", None),
    )


def import_interpreter() -> InterpreterApi:
    """The first LiteRT interpreter package that imports.

    Raises:
        MissingDependencyError: none is installed; names the ``tflite`` extra.
    """
    for package in _INTERPRETER_PACKAGES:
        try:
            return _api_of(package)
        except ImportError:
            continue
        except Exception as exc:  # noqa: BLE001 - a broken install (e.g. a NumPy ABI clash)
            log.debug("cannot import %s: %s", package, exc)
            continue
    raise MissingDependencyError("ai-edge-litert", "tflite", "the backend 'litert'")


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _spec(detail: dict[str, Any], layout: str = "") -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=str(detail.get("name", "")),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
        layout=layout,  # type: ignore[arg-type]
    )


class LiteRTBackend(Backend):
    """A ``.tflite`` model in a LiteRT interpreter.

    Raises (from the constructor):
        MissingDependencyError: no LiteRT interpreter is installed.
        BackendError: the file is missing or not a TFLite model, a delegate cannot be loaded, or
            the model does not have one image input and one score output.
    """

    name = "litert"

    def __init__(self, path: str | os.PathLike[str], options: BackendOptions | None = None):
        self.options = options or BackendOptions()
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"cannot load model {self.path}: no such file")
        api = import_interpreter()
        self.package = api.package
        delegates = [self._load_delegate(api, lib) for lib in self.options.delegates]
        # LiteRT's own default is a single thread; 0 means every core this process may use.
        self.threads = self.options.threads or available_cores()
        kwargs: dict[str, Any] = {"model_path": str(self.path), "num_threads": self.threads}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        if not self.options.xnnpack and api.resolver_types is not None:
            kwargs["experimental_op_resolver_type"] = (
                api.resolver_types.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        try:
            with filtered_native_stderr():  # the XNNPACK delegate announces itself on fd 2
                self._interpreter = api.interpreter(**kwargs)
                self._interpreter.allocate_tensors()
        except Exception as exc:
            raise BackendError(f"cannot load TFLite model {self.path}: {_first_line(exc)}") from exc

        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) < 1:
            raise BackendError(
                f"{self.path}: expected one image input and a score output, found "
                f"{len(inputs)} inputs and {len(outputs)} outputs"
            )
        self.input = _spec(inputs[0], layout="NHWC")
        self.output = _spec(outputs[0])
        if len(self.input.shape) != 4 or self.input.shape[0] != 1:
            raise BackendError(
                f"{self.path}: the input has shape {self.input.shape}; an image classifier takes "
                "one image of shape 1 x height x width x channels"
            )
        self.model_metadata = {}
        self._input_index = int(inputs[0]["index"])
        self._output_view = self._interpreter.tensor(int(outputs[0]["index"]))
        output_size = int(np.prod(self.output.shape))
        self._output = np.empty(output_size, dtype=np.dtype(self.output.dtype))
        self._delegates = [str(lib) for lib in self.options.delegates]
        for _ in range(max(self.options.warmup, 0)):
            self.run(np.zeros(self.input.shape, dtype=np.dtype(self.input.dtype)))

    def _load_delegate(self, api: InterpreterApi, library: str) -> Any:
        load = api.load_delegate
        if load is None:
            raise BackendError(f"this LiteRT install cannot load delegates (asked for {library})")
        try:
            return load(library)
        except Exception as exc:
            raise BackendError(
                f"cannot load the TFLite delegate {library}: {_first_line(exc)} "
                "(is the device plugged in and its runtime library installed?)"
            ) from exc

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run one inference; returns the reused raw output row (see :meth:`Backend.run`).

        Raises:
            BackendError: the input does not fit or the interpreter failed.
        """
        try:
            self._interpreter.set_tensor(self._input_index, tensor)
            self._interpreter.invoke()
            # A tensor() view must not outlive the call: the interpreter refuses to run while
            # views of its buffers exist. Copying the row out keeps the hot path allocation-free.
            np.copyto(self._output, self._output_view().reshape(-1))
        except ValueError as exc:
            raise BackendError(
                f"input of shape {getattr(tensor, 'shape', '?')} and dtype "
                f"{getattr(tensor, 'dtype', '?')} does not fit the model input "
                f"{self.input.shape} {self.input.dtype}: {_first_line(exc)}"
            ) from exc
        except RuntimeError as exc:
            raise BackendError(f"TFLite inference failed: {_first_line(exc)}") from exc
        return self._output

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "package": self.package,
            "provider": "xnnpack" if self.options.xnnpack else "builtin",
            "delegates": list(self._delegates),
            "threads": self.threads,
        }

    def close(self) -> None:
        # Dropping the interpreter frees the model; delegates are released with it.
        self.__dict__.pop("_output_view", None)
        self.__dict__.pop("_interpreter", None)
