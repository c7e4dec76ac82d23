"""The backend interface: a model file in, raw output scores out."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.types import TensorSpec


@dataclass(frozen=True)
class BackendOptions:
    """How to run a model.

    ``threads``: intra-op threads (0 = the backend's default, all cores). ``providers``: ONNX
    Runtime execution providers in preference order; the ones this install lacks are dropped (and
    reported by ``describe()``). ``delegates``: paths or names of TFLite delegate libraries (e.g.
    ``libedgetpu.so.1`` for a Coral Edge TPU). ``busy_wait``: let ONNX Runtime spin between runs;
    off by default because other pipeline threads share few cores. ``inter_threads``: ONNX Runtime
    inter-op threads (0 = its default). ``xnnpack``: apply LiteRT's default XNNPACK delegate.
    ``warmup``: inference runs at load, so the first frame is not the slow one. ``extra``:
    backend-specific settings, as text.
    """

    threads: int = 0
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    delegates: tuple[str, ...] = ()
    busy_wait: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    inter_threads: int = 0
    xnnpack: bool = True
    warmup: int = 1


class Backend(abc.ABC):
    """One loaded model, ready to run.

    Implementations load the model in ``__init__``, run one warm-up inference, and keep their input
    and
    output buffers between calls so the hot path allocates nothing. They are not thread-safe: one
    thread runs a backend.
    """

    #: registry key, e.g. ``litert``
    name: str = ""
    #: the image input (batch 1)
    input: TensorSpec
    #: the score output (batch 1)
    output: TensorSpec
    #: key/value facts stored in the model file by its format (ONNX ``metadata_props``)
    model_metadata: dict[str, str] = {}

    @abc.abstractmethod
    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run one inference on an input of ``self.input``'s shape and dtype.

        Returns the raw output row (1-D, ``self.output``'s dtype, still quantized for quantized
        outputs). The array may be reused by the next call: copy it to keep it.

        Raises:
            BackendError: the input does not fit or the runtime failed.
        """

    def input_buffer(self) -> np.ndarray | None:
        """A buffer of the input's shape and dtype that :meth:`run` reads without copying, or
        None when the backend has none (callers then pass their own array)."""
        return None

    def describe(self) -> dict[str, object]:
        """What is running: backend, accelerator/provider, threads (for /status and bench)."""
        return {"backend": self.name}

    def close(self) -> None:
        """Free the model."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
