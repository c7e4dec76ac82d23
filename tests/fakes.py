"""Fakes for tests, only where the real thing needs hardware or a network.

Shared by several test modules: add new fakes at the end, keep each small and honest (it checks
what it is given the way the real component would).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edge_runtime.backends.base import Backend
from edge_runtime.errors import BackendError
from edge_runtime.types import TensorSpec


class FakeBackend(Backend):
    """A backend whose output rows come from a list (cycled) or a function of the input.

    Checks inputs like a real backend (shape and dtype) and records how often it ran. Use it for
    a model whose accelerator the test machine lacks (an Edge TPU, a Jetson's TensorRT).
    """

    name = "fake"

    def __init__(
        self,
        input_spec: TensorSpec,
        rows: Sequence[np.ndarray] | Callable[[np.ndarray], np.ndarray],
        output_spec: TensorSpec | None = None,
    ) -> None:
        self.input = input_spec
        first = (
            rows(np.zeros(input_spec.shape, np.dtype(input_spec.dtype)))
            if callable(rows)
            else rows[0]
        )
        self.output = output_spec or TensorSpec(
            "scores", (1, int(np.asarray(first).size)), np.asarray(first).dtype.name
        )
        self.model_metadata = {}
        self._rows = rows
        self.runs = 0
        self.closed = False

    def run(self, tensor: np.ndarray) -> np.ndarray:
        if tensor.shape != self.input.shape or tensor.dtype != np.dtype(self.input.dtype):
            raise BackendError(
                f"input {tensor.shape} {tensor.dtype} does not fit {self.input.shape} "
                f"{self.input.dtype}"
            )
        if callable(self._rows):
            row = self._rows(tensor)
        else:
            row = self._rows[self.runs % len(self._rows)]
        self.runs += 1
        return np.asarray(row, dtype=np.dtype(self.output.dtype)).reshape(-1)

    def describe(self) -> dict[str, object]:
        return {"backend": self.name, "provider": "fake", "threads": 1}

    def close(self) -> None:
        self.closed = True
