"""Quantization: calibration data, TFLite converter settings, ONNX static int8 (QDQ).

Every exported model takes raw RGB pixels 0..255 and normalizes inside its graph, so calibration
images are exactly what the device feeds: images from the training split prepared by
``edge_runtime.preprocess``. With that, the full-integer TFLite model's uint8 input comes out with
scale ~1 and zero point 0: the camera frame goes straight in.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from exporter.errors import ExportError

T = TypeVar("T")

TFLITE_PRECISIONS = ("fp32", "fp16", "dynamic", "int8")


def stratified_sample(items: Sequence[tuple[T, str]], count: int, seed: int = 0) -> list[T]:
    """Up to ``count`` items, spread evenly over the labels (round robin over shuffled classes).

    Deterministic for a given ``seed``; classes are visited in sorted order.
    """
    by_label: dict[str, list[T]] = defaultdict(list)
    for item, label in items:
        by_label[label].append(item)
    rng = random.Random(seed)
    queues = []
    for label in sorted(by_label):
        members = list(by_label[label])
        rng.shuffle(members)
        queues.append(members)
    chosen: list[T] = []
    depth = 0
    while len(chosen) < count and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(chosen) < count:
                chosen.append(queue[depth])
        depth += 1
    return chosen


def calibration_paths(train: Sequence[tuple[Path, str]], count: int, seed: int = 0) -> list[Path]:
    """The calibration sample: ``count`` training images, stratified by class.

    Raises:
        ExportError: ``count`` is not positive or the training split is empty.
    """
    if count < 1:
        raise ExportError(f"--calibration-images must be at least 1, got {count}")
    if not train:
        raise ExportError(
            "the run's training split is empty: int8 calibration needs training images"
        )
    return stratified_sample(train, count, seed)


def representative_dataset(images: np.ndarray) -> Any:
    """A TFLite ``representative_dataset``: one float32 batch of one image per step."""

    def generate() -> Iterator[list[np.ndarray]]:
        for image in images:
            yield [image[np.newaxis].astype(np.float32)]

    return generate


def configure_tflite_converter(
    converter: Any, precision: str, calibration: np.ndarray | None = None
) -> None:
    """Set a ``tf.lite.TFLiteConverter`` up for ``precision``.

    ``fp32``: no optimization. ``fp16``: float16 weights, float32 I/O. ``dynamic``: int8 weights,
    activations quantized on the fly, float32 I/O. ``int8``: full-integer with uint8 input and
    output, calibrated on ``calibration`` (uint8 N x H x W x 3 prepared images).

    Raises:
        ExportError: an unknown precision, or int8 without calibration images.
    """
    import tensorflow as tf

    if precision == "fp32":
        return
    if precision not in TFLITE_PRECISIONS:
        raise ExportError(f"unknown TFLite precision '{precision}'")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if calibration is None or len(calibration) == 0:
            raise ExportError("full-integer int8 needs calibration images")
        converter.representative_dataset = representative_dataset(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8


class _CalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over prepared images (float32 pixels 0..255)."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self.input_name = input_name
        self.images = images
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.images):
            return None
        image = self.images[self.position]
        self.position += 1
        return {self.input_name: image[np.newaxis].astype(np.float32)}

    def rewind(self) -> None:
        self.position = 0


def quantize_onnx_int8(source: Path, dest: Path, calibration: np.ndarray, work: Path) -> None:
    """Static int8 quantization of an fp32 ONNX model in QDQ format, per channel.

    The model keeps float32 input and output (QuantizeLinear/DequantizeLinear pairs sit inside the
    graph), so it takes the same raw float pixels as the fp32 model. ``quant_pre_process`` (shape
    inference and graph optimization) runs first, as ONNX Runtime recommends.

    Activations are uint8 and weights int8 (U8S8). With int8 activations (S8S8) ONNX Runtime's
    CPU provider fused only 53 of InceptionV3's 94 convolutions into integer kernels and left
    205 QuantizeLinear/DequantizeLinear nodes converting whole tensors between them: int8 ran at
    1.2x fp32 on an AVX2 CPU; U8S8 fuses all 94 and ran at 1.5-1.7x (``benchmarks/onnx_int8.py``,
    docs/benchmarks.md). U8S8 is also the form VNNI's ``vpdpbusd`` and ARM's dot products take.
    Without VNNI, AVX2's ``vpmaddubsw`` can saturate in U8S8; the accuracy gate measures the
    result on the exporting machine.

    Raises:
        ExportError: quantization failed.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ExportError("ONNX int8 quantization needs calibration images")
    prepared = work / f"{source.stem}.pre.onnx"
    try:
        quant_pre_process(str(source), str(prepared))
    except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name

    class Reader(_CalibrationReader, CalibrationDataReader):
        pass

    try:
        quantize_static(
            str(prepared),
            str(dest),
            Reader(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    except Exception as exc:  # ONNX Runtime raises many kinds; report them as one
        raise ExportError(f"ONNX int8 quantization failed: {exc}") from exc
