"""TFLite export: fp32, fp16, dynamic-range and full-integer int8, each with metadata."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.nativelog import filtered_native_stderr
from exporter.errors import ExportError
from exporter.export.metadata import ModelFacts, populate_tflite_metadata
from exporter.quantize import configure_tflite_converter


def convert_tflite(model: Any, precision: str, calibration: np.ndarray | None = None) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer in ``precision`` (no metadata yet).

    Raises:
        ExportError: the converter failed; the message carries its reason.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    configure_tflite_converter(converter, precision, calibration)
    # The converter saves a temporary SavedModel and prints about it, and its quantizer prints
    # its settings from C++ to fd 2: neither is for users (``--verbose`` shows the fd 2 lines).
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
            filtered_native_stderr(),
        ):
            # Raised for every uint8-input model; our input statistics come from calibration.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return bytes(converter.convert())
    except Exception as exc:  # TensorFlow raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"TFLite {precision} conversion failed: {first}") from exc


def input_quantization(model_bytes: bytes) -> tuple[str, float, int]:
    """``(dtype, scale, zero_point)`` of a TFLite model's input, read by the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    return np.dtype(detail["dtype"]).name, float(scale), int(zero_point)


def export_tflite(
    model: Any,
    precision: str,
    facts: ModelFacts,
    dest: Path,
    calibration: np.ndarray | None = None,
) -> Path:
    """Convert, attach metadata (labels, input description) and write ``dest``.

    Raises:
        ExportError: conversion or metadata failed.
    """
    flat = convert_tflite(model, precision, calibration)
    dest.write_bytes(populate_tflite_metadata(flat, facts))
    return dest
