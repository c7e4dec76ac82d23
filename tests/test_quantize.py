"""Calibration sampling, TFLite converter settings and ONNX static int8 (QDQ) quantization."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.errors import ExportError
from exporter.quantize import calibration_paths, stratified_sample


def test_stratified_sample_spreads_over_classes_and_is_deterministic() -> None:
    items = [(f"a{i}", "a") for i in range(50)] + [(f"b{i}", "b") for i in range(5)]
    items += [(f"c{i}", "c") for i in range(20)]
    chosen = stratified_sample(items, 21, seed=3)
    counts = Counter(name[0] for name in chosen)
    # b runs out after 5; a and c share the rest evenly.
    assert counts == {"a": 8, "b": 5, "c": 8}
    assert chosen == stratified_sample(items, 21, seed=3)
    assert chosen != stratified_sample(items, 21, seed=4)
    assert len(set(chosen)) == len(chosen)


@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from("abcde")), unique_by=lambda x: x[0]),
    st.integers(0, 40),
)
def test_stratified_sample_properties(items: list[tuple[int, str]], count: int) -> None:
    chosen = stratified_sample(items, count)
    assert len(chosen) == min(count, len(items))
    assert len(set(chosen)) == len(chosen)
    label = dict(items)
    per_class = Counter(label[c] for c in chosen)
    available = Counter(lbl for _, lbl in items)
    # No class gets more than one image above another unless that other class ran out.
    for a in per_class:
        for b in available:
            if per_class[b] < available[b]:
                assert per_class[a] <= per_class[b] + 1


def test_calibration_needs_images_and_a_training_split() -> None:
    with pytest.raises(ExportError, match="at least 1"):
        calibration_paths([(Path("x.png"), "a")], 0)
    with pytest.raises(ExportError, match="training split is empty"):
        calibration_paths([], 10)


@pytest.mark.tensorflow
def test_converter_settings_per_precision() -> None:
    import tensorflow as tf

    from exporter.quantize import configure_tflite_converter

    class Converter:
        def __init__(self) -> None:
            self.optimizations: list[object] = []
            self.target_spec = type("Spec", (), {"supported_types": [], "supported_ops": set()})()

    plain = Converter()
    configure_tflite_converter(plain, "fp32")
    assert plain.optimizations == []

    half = Converter()
    configure_tflite_converter(half, "fp16")
    assert half.target_spec.supported_types == [tf.float16]

    full = Converter()
    calibration = np.zeros((3, 8, 8, 3), np.uint8)
    configure_tflite_converter(full, "int8", calibration)
    assert full.inference_input_type == tf.uint8 and full.inference_output_type == tf.uint8
    assert full.target_spec.supported_ops == [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    batches = list(full.representative_dataset())
    assert len(batches) == 3 and batches[0][0].shape == (1, 8, 8, 3)
    assert batches[0][0].dtype == np.float32

    with pytest.raises(ExportError, match="needs calibration images"):
        configure_tflite_converter(Converter(), "int8", None)
    with pytest.raises(ExportError, match="unknown TFLite precision"):
        configure_tflite_converter(Converter(), "int4")


@pytest.mark.tensorflow
def test_onnx_int8_is_per_channel_qdq_with_float_io(tmp_path: Path) -> None:
    import onnx
    from tiny_run import build_model

    from exporter.export.metadata import ModelFacts
    from exporter.export.onnx import export_onnx_fp32, export_onnx_int8, onnx_opset

    facts = ModelFacts("tiny", 1, ("a", "b", "c"), 32, 32, "squash", "area")
    fp32 = export_onnx_fp32(build_model(), facts, tmp_path / "fp32.onnx")
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    int8 = export_onnx_int8(fp32, facts, tmp_path / "int8.onnx", calibration, tmp_path)

    model = onnx.load(str(int8))
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    elem = onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == elem
    assert model.graph.output[0].type.tensor_type.elem_type == elem
    # Per-channel weights: a conv weight's scale holds one value per output channel.
    initializers = {i.name: i for i in model.graph.initializer}
    per_channel = [
        node
        for node in model.graph.node
        if node.op_type == "DequantizeLinear"
        and node.input[0] in initializers
        and len(onnx.numpy_helper.to_array(initializers[node.input[1]]).shape) == 1
        and onnx.numpy_helper.to_array(initializers[node.input[1]]).size > 1
    ]
    assert per_channel
    assert onnx_opset(int8) == 17
    props = {p.key: p.value for p in model.metadata_props}
    assert props["model_name"] == "tiny" and props["input_height"] == "32"

    with pytest.raises(ExportError, match="needs calibration images"):
        export_onnx_int8(fp32, facts, tmp_path / "x.onnx", calibration[:0], tmp_path)
