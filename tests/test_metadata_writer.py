"""The hand-written TFLite metadata writer and the ONNX metadata_props, read back three ways:
our own reader, the runtime's reader, and (for the reader) a third-party file written by the
official tflite-support tools."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.metadata import (
    parse_onnx_metadata,
    parse_tflite_metadata_flatbuffer,
)
from edge_runtime.metadata import (
    read_tflite_metadata as runtime_read_tflite_metadata,
)
from exporter.errors import ExportError
from exporter.export.metadata import (
    FACTS_FILE,
    LABELS_FILE,
    ModelFacts,
    build_tflite_metadata,
    onnx_metadata_props,
    populate_tflite_metadata,
    read_onnx_metadata,
    read_tflite_metadata,
    set_onnx_metadata,
    tflite_metadata_buffer,
)

TESTDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "testdata"
THIRD_PARTY = TESTDATA / "imagenet" / "mobilenet_v1_0.25_128_quant.tflite"

FACTS = ModelFacts(
    name="signs",
    version=7,
    labels=("stop", "yield", "speed limit 50"),
    height=24,
    width=32,
    resize="letterbox",
    interpolation="linear",
)


def test_metadata_flatbuffer_round_trips_through_both_readers() -> None:
    data = build_tflite_metadata(FACTS)
    assert data[4:8] == b"M001"

    theirs = parse_tflite_metadata_flatbuffer(data)
    assert theirs["name"] == "signs"
    assert theirs["version"] == "7"
    assert theirs["labels_file"] == LABELS_FILE
    assert (theirs["input_height"], theirs["input_width"]) == (24, 32)
    assert theirs["color"] == "RGB"
    assert theirs["mean"] == (0.0,) and theirs["std"] == (1.0,)
    files = {f.name: f.type for f in theirs["associated_files"]}
    assert files == {LABELS_FILE: "TENSOR_AXIS_LABELS", FACTS_FILE: "DESCRIPTIONS"}


@pytest.mark.tensorflow
def test_populated_model_is_a_flatbuffer_and_a_zip_and_runs_unchanged(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    plain = _tiny_tflite(len(FACTS.labels))
    model = populate_tflite_metadata(plain, FACTS)

    ours = read_tflite_metadata(model)
    assert ours.min_parser_version == "1.0.0"
    assert ours.name == "signs" and ours.version == "7" and ours.author == "edge-classify"
    assert ours.labels() == list(FACTS.labels)
    (image,) = ours.inputs
    assert image.content == "image" and image.color_space == "RGB"
    assert image.default_size == (24, 32)
    assert (image.mean, image.std) == ([0.0], [1.0])
    assert (image.stats_min, image.stats_max) == ([0.0], [255.0])
    (probability,) = ours.outputs
    assert probability.content == "feature"
    assert probability.associated_files == [(LABELS_FILE, "TENSOR_AXIS_LABELS")]
    assert json.loads(ours.packed_files[FACTS_FILE])["resize"] == "letterbox"

    # Any zip tool sees the associated files, stored uncompressed as readers map them directly.
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        assert archive.namelist() == [LABELS_FILE, FACTS_FILE]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
        assert archive.read(LABELS_FILE).decode().splitlines() == list(FACTS.labels)

    path = tmp_path / "model.tflite"
    path.write_bytes(model)
    runtime = runtime_read_tflite_metadata(path)
    assert runtime.source == "tflite-metadata"
    assert runtime.labels == FACTS.labels
    assert (runtime.input_height, runtime.input_width) == (24, 32)
    assert (runtime.resize, runtime.interpolation, runtime.color) == ("letterbox", "linear", "RGB")

    # The interpreter ignores the metadata: same outputs as the model without it.
    frame = np.random.default_rng(0).uniform(0, 255, (1, 24, 32, 3)).astype(np.float32)
    outputs = []
    for content in (plain, model):
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], frame)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outputs[0], outputs[1])

    # Populating again replaces the metadata instead of stacking a second copy.
    assert populate_tflite_metadata(model, FACTS) == model
    renamed = populate_tflite_metadata(model, ModelFacts(**{**vars(FACTS), "name": "other"}))
    assert read_tflite_metadata(renamed).name == "other"
    assert len(renamed) == len(model)


@pytest.mark.tensorflow
def test_populate_refuses_labels_that_do_not_fit_and_non_models() -> None:
    plain = _tiny_tflite(4)
    with pytest.raises(ExportError, match="outputs 4 scores but there are 3 labels"):
        populate_tflite_metadata(plain, FACTS)
    with pytest.raises(ExportError, match="not a TFLite model"):
        populate_tflite_metadata(b"not a model at all", FACTS)


def test_reader_understands_a_file_written_by_the_official_tools() -> None:
    if not THIRD_PARTY.is_file():
        pytest.skip(f"third-party test data not found at {THIRD_PARTY}")
    meta = read_tflite_metadata(THIRD_PARTY.read_bytes())
    assert meta.min_parser_version == "1.0.0"
    assert meta.inputs[0].content == "image" and meta.inputs[0].color_space == "RGB"
    assert meta.inputs[0].mean == [127.5] and meta.inputs[0].std == [127.5]
    labels = meta.labels()
    assert len(labels) == 1001 and labels[:2] == ["background", "tench, Tinca tinca"]


@pytest.mark.tensorflow
def test_replacing_metadata_of_a_third_party_quantized_model_keeps_it_working() -> None:
    if not THIRD_PARTY.is_file():
        pytest.skip(f"third-party test data not found at {THIRD_PARTY}")
    from ai_edge_litert.interpreter import Interpreter

    original = THIRD_PARTY.read_bytes()
    labels = tuple(read_tflite_metadata(original).labels())
    facts = ModelFacts("imagenet", 1, labels, 128, 128, "squash", "area")
    rewritten = populate_tflite_metadata(original, facts)
    assert read_tflite_metadata(rewritten).labels() == list(labels)
    assert tflite_metadata_buffer(rewritten) == build_tflite_metadata(facts)

    frame = np.random.default_rng(1).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    outputs = []
    for content in (original, rewritten):
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], frame)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_onnx_metadata_props_carry_the_same_facts() -> None:
    onnx = pytest.importorskip("onnx")
    props = onnx_metadata_props(FACTS)
    assert set(props) == {
        "labels",
        "input_height",
        "input_width",
        "resize",
        "interpolation",
        "color",
        "model_name",
        "model_version",
    }
    assert json.loads(props["labels"]) == list(FACTS.labels)

    model = onnx.ModelProto()
    model.metadata_props.add(key="producer_note", value="kept")
    model.metadata_props.add(key="labels", value="stale")
    set_onnx_metadata(model, FACTS)
    stored = read_onnx_metadata(model)
    assert stored["producer_note"] == "kept"
    assert stored["labels"] == props["labels"]
    assert [p.key for p in model.metadata_props].count("labels") == 1

    parsed = parse_onnx_metadata(stored)
    assert parsed.labels == FACTS.labels
    assert (parsed.input_height, parsed.input_width) == (24, 32)
    assert (parsed.resize, parsed.interpolation, parsed.color) == ("letterbox", "linear", "RGB")
    assert (parsed.name, parsed.version) == ("signs", "7")


def _tiny_tflite(classes: int) -> bytes:
    import keras

    from exporter.export.tflite import convert_tflite

    inputs = keras.Input((24, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return convert_tflite(keras.Model(inputs, outputs), "fp32")
