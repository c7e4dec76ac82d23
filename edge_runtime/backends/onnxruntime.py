"""ONNX Runtime backend: execution providers in preference order, thread settings, no spinning.

Providers come from the options (a device profile: TensorRT, CUDA, CPU); those this install lacks
are dropped and reported. Input and output live in buffers bound once with I/O binding, so a run
copies the frame into the bound input and reads the bound output, allocating nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends.base import Backend, BackendOptions
from edge_runtime.errors import BackendError
from edge_runtime.registry import require
from edge_runtime.types import TensorSpec

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}
# metadata_props keys that give the input size of a model whose input dims are symbolic
_HEIGHT_KEY, _WIDTH_KEY = "input_height", "input_width"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def choose_providers(
    wanted: tuple[str, ...] | list[str], available: list[str]
) -> tuple[list[str], list[str]]:
    """Split the wanted providers into those to use (in order) and those this install lacks.

    The CPU provider is always appended as the last resort, since every install has it.
    """
    use = [p for p in wanted if p in available]
    dropped = [p for p in wanted if p not in available]
    if CPU_PROVIDER not in use:
        use.append(CPU_PROVIDER)
    return use, dropped


def _image_shape(
    dims: list[Any], props: dict[str, str], where: str
) -> tuple[tuple[int, int, int, int], str]:
    """Concrete batch-1 shape and layout of a 4-D image input (symbolic dims resolved)."""
    if len(dims) != 4:
        raise BackendError(
            f"{where}: the input has {len(dims)} dimensions; an image classifier takes a 4-D "
            "image tensor (NHWC or NCHW)"
        )
    if dims[1] == 3:
        layout, h_axis, w_axis = "NCHW", 2, 3
    elif dims[3] == 3:
        layout, h_axis, w_axis = "NHWC", 1, 2
    else:
        raise BackendError(
            f"{where}: cannot find the 3 colour channels in the input shape {dims} "
            "(expected 1x3xHxW or 1xHxWx3)"
        )
    shape = [1 if i == 0 else d for i, d in enumerate(dims)]
    for axis, key in ((h_axis, _HEIGHT_KEY), (w_axis, _WIDTH_KEY)):
        if not isinstance(shape[axis], int) or shape[axis] <= 0:
            value = props.get(key, "")
            if not value.isdigit() or int(value) <= 0:
                raise BackendError(
                    f"{where}: the input size is not fixed ({dims}) and the model's metadata "
                    f"has no '{key}'; export it with a fixed input size"
                )
            shape[axis] = int(value)
    return (shape[0], shape[1], shape[2], shape[3]), layout


class OnnxRuntimeBackend(Backend):
    """A ``.onnx`` model in an ONNX Runtime inference session.

    Raises (from the constructor):
        MissingDependencyError: onnxruntime is not installed (names the ``onnx`` extra).
        BackendError: the file is missing or not a valid ONNX model, or it does not take one
            image and give one score row.
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], options: BackendOptions | None = None):
        ort = require("onnxruntime", "onnx", "the backend 'onnxruntime'")
        self.options = options or BackendOptions()
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"cannot load model {self.path}: no such file")
        providers, self.dropped_providers = choose_providers(
            self.options.providers, list(ort.get_available_providers())
        )
        if self.dropped_providers:
            log.info(
                "onnxruntime here lacks %s; using %s",
                ", ".join(self.dropped_providers),
                ", ".join(providers),
            )
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = max(self.options.threads, 0)
        session_options.inter_op_num_threads = max(self.options.inter_threads, 0)
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # ONNX Runtime's own warnings (unused initializers and the like) are not the user's.
        session_options.log_severity_level = 3
        if not self.options.busy_wait:
            # Spinning threads burn the cores the capture and output threads need.
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session_options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=session_options, providers=providers
            )
        except Exception as exc:
            raise BackendError(f"cannot load ONNX model {self.path}: {_first_line(exc)}") from exc
        self.providers = list(self._session.get_providers())
        self.model_metadata = dict(self._session.get_modelmeta().custom_metadata_map)

        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise BackendError(
                f"{self.path}: expected one image input and a score output, found "
                f"{len(inputs)} inputs and {len(outputs)} outputs"
            )
        in_dtype = _DTYPES.get(inputs[0].type)
        if in_dtype is None:
            raise BackendError(f"{self.path}: unsupported input type {inputs[0].type}")
        shape, layout = _image_shape(list(inputs[0].shape), self.model_metadata, str(self.path))
        self.input = TensorSpec(inputs[0].name, shape, in_dtype, layout=layout)  # type: ignore[arg-type]
        self._input_name = inputs[0].name
        self._output_name = outputs[0].name
        self._input = np.zeros(shape, dtype=np.dtype(in_dtype))

        # One plain run learns the output's concrete shape and type (dims may be symbolic).
        try:
            first = self._session.run([self._output_name], {self._input_name: self._input})[0]
        except Exception as exc:
            raise BackendError(f"{self.path}: the model fails to run: {_first_line(exc)}") from exc
        first = np.asarray(first)
        if first.size < 1 or first.shape[0] != 1:
            raise BackendError(
                f"{self.path}: the output has shape {first.shape}; expected one row of scores"
            )
        self.output = TensorSpec(outputs[0].name, tuple(first.shape), first.dtype.name)
        self._output = np.zeros(first.shape, dtype=first.dtype)
        self._row = self._output.reshape(-1)

        # The OrtValues share memory with the numpy buffers: bind once, reuse every run.
        self._binding = self._session.io_binding()
        self._binding.bind_ortvalue_input(
            self._input_name, ort.OrtValue.ortvalue_from_numpy(self._input)
        )
        self._binding.bind_ortvalue_output(
            self._output_name, ort.OrtValue.ortvalue_from_numpy(self._output)
        )
        for _ in range(max(self.options.warmup, 0)):
            self.run(self._input)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run one inference; returns the reused raw output row (see :meth:`Backend.run`).

        Raises:
            BackendError: the input does not fit or the session failed.
        """
        if tensor is not self._input:
            if tensor.shape != self._input.shape or tensor.dtype != self._input.dtype:
                raise BackendError(
                    f"input of shape {tensor.shape} and dtype {tensor.dtype} does not fit the "
                    f"model input {self.input.shape} {self.input.dtype}"
                )
            np.copyto(self._input, tensor)
        try:
            self._session.run_with_iobinding(self._binding)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime inference failed: {_first_line(exc)}") from exc
        return self._row

    def input_buffer(self) -> np.ndarray:
        """The bound input buffer: write a frame here and pass it to :meth:`run` to skip a copy."""
        return self._input

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "package": "onnxruntime",
            "provider": self.providers[0] if self.providers else CPU_PROVIDER,
            "providers": list(self.providers),
            "providers_dropped": list(self.dropped_providers),
            "threads": self.options.threads,
            "busy_wait": self.options.busy_wait,
        }

    def close(self) -> None:
        self.__dict__.pop("_binding", None)
        self.__dict__.pop("_session", None)
