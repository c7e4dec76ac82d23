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
    Runtime
    execution providers in preference order. ``delegates``: paths of TFLite delegate libraries (e.g.
    ``libedgetpu.so.1``). ``busy_wait``: let ONNX Runtime spin between runs; off when other pipeline
    threads share few cores.
    """

    threads: int = 0
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    delegates: tuple[str, ...] = ()
    busy_wait: bool = False
    extra: dict[str, str] = field(default_factory=dict)


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

    @abc.abstractmethod
    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run one inference on an input of ``self.input``'s shape and dtype.

        Returns the raw output row (1-D, ``self.output``'s dtype, still quantized for quantized
        outputs). The array may be reused by the next call: copy it to keep it.

        Raises:
            BackendError: the input does not fit or the runtime failed.
        """

    def describe(self) -> dict[str, object]:
        """What is running: backend, accelerator/provider, threads (for /status and bench)."""
        return {"backend": self.name}

    def close(self) -> None:
        """Free the model."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
