"""ONNX export: fp32 through tf2onnx and int8 (QDQ static quantization), with metadata_props."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import ExportError
from exporter.export.metadata import ModelFacts, set_onnx_metadata
from exporter.quantize import quantize_onnx_int8

#: ONNX opset of exported models: supported by onnxruntime >= 1.13 on every device we target.
DEFAULT_OPSET = 17
INPUT_NAME = "image"


def convert_onnx(model: Any, height: int, width: int, opset: int = DEFAULT_OPSET) -> Any:
    """Convert a Keras model to an ``onnx.ModelProto`` taking float32 NHWC raw pixels.

    Raises:
        ExportError: tf2onnx failed.
    """
    import tensorflow as tf
    import tf2onnx

    signature = (tf.TensorSpec((None, height, width, 3), tf.float32, name=INPUT_NAME),)
    # tf2onnx logs every graph rewrite at INFO; keep warnings and errors only.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception as exc:  # tf2onnx raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"ONNX conversion (opset {opset}) failed: {first}") from exc
    return proto


def save_onnx(proto: Any, facts: ModelFacts, dest: Path) -> Path:
    """Write ``proto`` to ``dest`` with the facts in its ``metadata_props``."""
    import onnx

    set_onnx_metadata(proto, facts)
    onnx.save(proto, str(dest))
    return dest


def export_onnx_fp32(model: Any, facts: ModelFacts, dest: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Convert and write the fp32 ONNX model.

    Raises:
        ExportError: conversion failed.
    """
    return save_onnx(convert_onnx(model, facts.height, facts.width, opset), facts, dest)


def export_onnx_int8(
    fp32_path: Path, facts: ModelFacts, dest: Path, calibration: np.ndarray, work: Path
) -> Path:
    """Quantize the fp32 ONNX model at ``fp32_path`` to int8 QDQ and write ``dest``.

    Raises:
        ExportError: quantization failed.
    """
    import onnx

    raw = work / f"{dest.stem}.raw.onnx"
    quantize_onnx_int8(fp32_path, raw, calibration, work)
    return save_onnx(onnx.load(str(raw)), facts, dest)


def onnx_opset(path: Path) -> int:
    """The default-domain opset of an ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError(f"{path} declares no ONNX opset")
