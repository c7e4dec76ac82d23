"""The float reference every artifact is judged against: the run's Keras model.

Both the export pipeline and ``edge-export verify`` load it from here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exporter.errors import ExportError
from exporter.export.rundir import RunDirectory


def load_keras_model(run: RunDirectory) -> Any:
    """The run's Keras model, checked against its labels and input size.

    Raises:
        ExportError: it cannot be loaded or does not fit the run's labels or input size.
    """
    import keras

    try:
        model = keras.saving.load_model(run.model_path)
    except Exception as exc:  # Keras raises many kinds for a bad file
        raise ExportError(f"cannot load {run.model_path}: {exc}") from exc
    outputs = model.outputs[0].shape[-1]
    if outputs != len(run.labels):
        raise ExportError(
            f"{run.model_path} outputs {outputs} scores but labels.txt has {len(run.labels)} labels"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if shape != (run.height, run.width, 3):
        raise ExportError(
            f"{run.model_path} takes input {shape} but run.json says input_size "
            f"[{run.height}, {run.width}]"
        )
    return model


def float_probabilities(model: Any, images: np.ndarray) -> np.ndarray:
    """The Keras model's probabilities on prepared uint8 images (fed as float32 pixels 0..255)."""
    return np.asarray(
        model.predict(images.astype(np.float32), batch_size=32, verbose=0), dtype=np.float32
    )
