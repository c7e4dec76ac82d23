"""The hand-written TFLite metadata writer and the ONNX metadata_props, read back by the runtime's
reader (the one reader of the contract; it is checked on a file written by the official
tflite-support tools in test_metadata.py) and by any zip tool."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.metadata import FACTS_FILE_NAME as FACTS_FILE
from edge_runtime.metadata import LABELS_FILE_NAME as LABELS_FILE
from edge_runtime.metadata import (
    ModelMetadata,
    parse_onnx_metadata,
    parse_tflite_metadata_flatbuffer,
    read_tflite_metadata,
    tflite_metadata_buffer,
)
from exporter.errors import ExportError
from exporter.export.metadata import (
    ModelFacts,
    build_tflite_metadata,
    onnx_metadata_props,
    populate_tflite_metadata,
    set_onnx_metadata,
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
    assert (theirs["author"], theirs["min_parser_version"]) == ("edge-classify", "1.0.0")
    assert theirs["input_range"] == (0.0, 255.0)
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

    runtime = _read(tmp_path, model)
    assert runtime.source == "tflite-metadata"
    assert runtime.min_parser_version == "1.0.0"
    assert (runtime.name, runtime.version, runtime.author) == ("signs", "7", "edge-classify")
    assert runtime.labels == FACTS.labels and runtime.labels_file == LABELS_FILE
    assert (runtime.input_height, runtime.input_width) == (24, 32)
    assert (runtime.resize, runtime.interpolation, runtime.color) == ("letterbox", "linear", "RGB")
    assert (runtime.mean, runtime.std, runtime.input_range) == ((0.0,), (1.0,), (0.0, 255.0))
    files = {f.name: f.type for f in runtime.associated_files}
    assert files == {LABELS_FILE: "TENSOR_AXIS_LABELS", FACTS_FILE: "DESCRIPTIONS"}

    # Any zip tool sees the associated files, stored uncompressed as readers map them directly.
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        assert archive.namelist() == [LABELS_FILE, FACTS_FILE]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
        assert archive.read(LABELS_FILE).decode().splitlines() == list(FACTS.labels)
        assert json.loads(archive.read(FACTS_FILE))["resize"] == "letterbox"

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
    assert _read(tmp_path, renamed).name == "other"
    assert len(renamed) == len(model)


@pytest.mark.tensorflow
def test_populate_refuses_labels_that_do_not_fit_and_non_models() -> None:
    plain = _tiny_tflite(4)
    with pytest.raises(ExportError, match="outputs 4 scores but there are 3 labels"):
        populate_tflite_metadata(plain, FACTS)
    with pytest.raises(ExportError, match="not a TFLite model"):
        populate_tflite_metadata(b"not a model at all", FACTS)


@pytest.mark.tensorflow
def test_replacing_metadata_of_a_third_party_quantized_model_keeps_it_working(
    tmp_path: Path,
) -> None:
    if not THIRD_PARTY.is_file():
        pytest.skip(f"third-party test data not found at {THIRD_PARTY}")
    from ai_edge_litert.interpreter import Interpreter

    original = THIRD_PARTY.read_bytes()
    labels = read_tflite_metadata(THIRD_PARTY).labels
    assert labels is not None and len(labels) == 1001
    facts = ModelFacts("imagenet", 1, labels, 128, 128, "squash", "area")
    rewritten = populate_tflite_metadata(original, facts)
    assert _read(tmp_path, rewritten).labels == labels
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
    stored = {p.key: p.value for p in model.metadata_props}
    assert stored["producer_note"] == "kept"
    assert stored["labels"] == props["labels"]
    assert [p.key for p in model.metadata_props].count("labels") == 1

    parsed = parse_onnx_metadata(stored)
    assert parsed.labels == FACTS.labels
    assert (parsed.input_height, parsed.input_width) == (24, 32)
    assert (parsed.resize, parsed.interpolation, parsed.color) == ("letterbox", "linear", "RGB")
    assert (parsed.name, parsed.version) == ("signs", "7")


def _read(folder: Path, model: bytes) -> ModelMetadata:
    """What the device's reader makes of a model file."""
    path = folder / "read.tflite"
    path.write_bytes(model)
    return read_tflite_metadata(path)


def _tiny_tflite(classes: int) -> bytes:
    import keras

    from exporter.export.tflite import convert_tflite

    inputs = keras.Input((24, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return convert_tflite(keras.Model(inputs, outputs), "fp32")


@pytest.mark.tensorflow
def test_int8_conversion_keeps_the_quantizers_settings_line_off_the_terminal(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quantizer prints ``fully_quantize: 0, inference_type: 6, ...`` from C++ on every int8
    conversion; the command line (quiet unless --verbose) must not show it."""
    import keras

    from edge_runtime import nativelog
    from exporter.export.tflite import convert_tflite

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    calibration = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype(np.float32)

    monkeypatch.setattr(nativelog, "_quiet", False)  # a Python program: the library's own
    capfd.readouterr()
    convert_tflite(model, "int8", calibration)
    shown = capfd.readouterr().err
    monkeypatch.setattr(nativelog, "_quiet", True)  # what the command lines turn on
    convert_tflite(model, "int8", calibration)
    quiet = capfd.readouterr().err
    if "fully_quantize:" not in shown:
        pytest.skip("this TensorFlow's quantizer prints no settings line")
    assert "fully_quantize:" not in quiet
