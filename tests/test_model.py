"""Loading models (bundle, bare .tflite, bare .onnx) and classifying with them."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import BUNDLE_LABELS, write_onnx_bundle

from edge_runtime.backends import BackendOptions
from edge_runtime.bundle import load_bundle, pack_bundle, write_bundle
from edge_runtime.errors import (
    BackendError,
    BundleError,
    ConfigError,
    IncompatibleBundleError,
    MissingDependencyError,
    ModelError,
    PreprocessError,
    UnknownComponentError,
)
from edge_runtime.imageio import read_image
from edge_runtime.model import InputWriter, artifact_candidates, load_model, pixel_quantization
from edge_runtime.postprocess import top_k
from edge_runtime.preprocess import PreprocessSpec, prepare, quantize_pixels
from edge_runtime.types import UNKNOWN, TensorSpec

# -- the third-party MobileNet -------------------------------------------------------------------


def reference_top5(model_path: Path, image_path: Path) -> list[tuple[int, int]]:
    """Top-5 (index, uint8 score) from the plain interpreter, fed as PROVENANCE.md says."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    interpreter.allocate_tensors()
    rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    tensor = cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA)[None]
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    row = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0].astype(int)
    order = sorted(range(row.size), key=lambda i: (-row[i], i))[:5]
    return [(i, int(row[i])) for i in order]


@pytest.mark.parametrize(
    ("image", "index", "label", "score"),
    [("bird.bmp", 20, "chickadee", 131), ("parrot.jpg", 89, "macaw", 206)],
)
def test_mobilenet_reproduces_the_reference(
    imagenet_dir: Path, image: str, index: int, label: str, score: int
) -> None:
    model_path = imagenet_dir / "mobilenet_v1_0.25_128_quant.tflite"
    pixels = read_image(imagenet_dir / image)
    reference = cv2.resize(pixels, (128, 128), interpolation=cv2.INTER_AREA)[None]
    with load_model(model_path, options=BackendOptions(threads=1)) as model:
        assert model.info["labels_from"].endswith("imagenet_labels.txt")  # from the model itself
        # Fed the reference's tensor, the runtime's model path gives the reference's scores:
        # uint8 output, scale 1/256, so the probability times 256 is the score, exactly.
        probabilities = model.decode(model.run(reference))
        top5 = [(int(i), round(float(probabilities[i]) * 256)) for i in top_k(probabilities, 5)]
        assert top5[0] == (index, score)
        assert top5 == reference_top5(model_path, imagenet_dir / image)
        # The runtime's own preprocessing is INTER_AREA within rounding. A large reduction
        # (the 512x929 parrot) goes through the integral image, which differs from OpenCV only
        # where a box mean is an exact tie (x.5) that the two round apart: 2 of 49,152 values
        # here, by one level. (That moves this small int8 model's top score from 206 to 201 of
        # 256; the class does not change.)
        ours = model.prepare(pixels)
        difference = np.abs(ours.astype(int) - reference.astype(int))
        assert difference.max() <= 1 and np.count_nonzero(difference) <= 4
        top = model.classify(pixels, top_k=5)
    assert (top[0].index, top[0].label) == (index, label)
    if not difference.any():
        assert top[0].score * 256 == score


def test_mobilenet_model_facts(imagenet_model: Path) -> None:
    with load_model(imagenet_model) as model:
        assert len(model.labels) == 1001 and model.labels[0] == "background"
        spec = model.preprocess_spec
        assert (spec.height, spec.width, spec.resize, spec.interpolation) == (
            128,
            128,
            "squash",
            "area",
        )
        assert model.thresholds.default == 0.0
        info = model.info
        assert (info["format"], info["backend"], info["precision"]) == ("tflite", "litert", "int8")
        assert info["name"] == "ImageClassifier" and info["provider"] == "xnnpack"
        assert json.loads(json.dumps(info)) == info  # /status serves it as JSON
        # Quantized in a normalized domain (scale 1/128): the pixels go in as they are.
        assert info["input"]["feed"] == "copy"
        image = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)
        tensor = model.prepare(image)
        np.testing.assert_array_equal(tensor[0], prepare(image, spec))
        probabilities = model.infer(tensor)
        assert probabilities.dtype == np.float32 and probabilities.shape == (1001,)
        assert model.metadata is not None and model.metadata.mean == (127.5,)


def test_mobilenet_with_a_label_file(imagenet_dir: Path, tmp_path: Path) -> None:
    model_path = imagenet_dir / "mobilenet_v1_0.25_128_quant.tflite"
    labels_file = imagenet_dir / "imagenet_labels.txt"
    with load_model(model_path, labels=labels_file) as model:
        assert model.labels[20] == "chickadee"
        assert model.info["labels_from"] == str(labels_file)
    without_background = tmp_path / "1000.txt"
    lines = labels_file.read_text().splitlines()[1:]
    without_background.write_text("\n".join(lines) + "\n")
    with pytest.raises(ModelError, match="1000 labels but the model outputs 1001 scores"):
        load_model(model_path, labels=without_background)


# -- bare ONNX models ------------------------------------------------------------------------------


def test_onnx_labels_and_input_from_metadata(onnx_classifier: Callable[..., Any]) -> None:
    tiny = onnx_classifier(
        props={
            "labels": '["w", "x", "y", "z"]',
            "model_name": "tiny",
            "model_version": "4",
            "resize": "center-crop",
            "interpolation": "linear",
        }
    )
    with load_model(tiny.path) as model:
        assert model.labels == ["w", "x", "y", "z"]
        assert (model.info["name"], model.info["version"]) == ("tiny", "4")
        assert model.info["labels_from"].endswith("metadata_props:labels")
        spec = model.preprocess_spec
        assert (spec.resize, spec.interpolation) == ("center-crop", "linear")
        image = np.random.default_rng(5).integers(0, 256, (30, 50, 3), dtype=np.uint8)
        expected = tiny.expected(prepare(image, spec)[None])
        top = model.classify(image, top_k=4)
        assert [c.index for c in top] == sorted(range(4), key=lambda i: (-expected[i], i))
        np.testing.assert_allclose([c.score for c in top], np.sort(expected)[::-1], rtol=1e-5)


def test_onnx_labels_as_lines_and_overrides(onnx_classifier: Callable[..., Any]) -> None:
    tiny = onnx_classifier(props={"labels": "background\na\nb\nc"})
    with load_model(tiny.path) as model:
        assert model.labels == ["background", "a", "b", "c"]
    with load_model(tiny.path, labels=["p", "q", "r", "s"]) as model:
        assert model.labels == ["p", "q", "r", "s"]
    with pytest.raises(ModelError, match="3 labels but the model outputs 4 scores"):
        load_model(tiny.path, labels=["p", "q", "r"])


def test_onnx_without_labels_numbers_the_classes(
    onnx_classifier: Callable[..., Any], caplog: Any
) -> None:
    with load_model(onnx_classifier().path) as model:
        assert model.labels == ["0", "1", "2", "3"]
        assert model.info["labels_from"] == "none"
    assert "carries no labels" in caplog.text


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_onnx_float_input_gets_raw_pixels(onnx_classifier: Callable[..., Any], layout: str) -> None:
    tiny = onnx_classifier(dtype="float32", layout=layout, height=6, width=9)
    with load_model(tiny.path) as model:
        image = np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        tensor = model.prepare(image)
        pixels = prepare(image, model.preprocess_spec).astype(np.float32)
        expected = pixels.transpose(2, 0, 1) if layout == "NCHW" else pixels
        assert tensor.dtype == np.float32
        np.testing.assert_array_equal(tensor[0], expected)
        np.testing.assert_allclose(model.infer(tensor), tiny.expected(tensor), rtol=1e-5)


def test_onnx_int8_input_is_shifted_by_128(onnx_classifier: Callable[..., Any]) -> None:
    tiny = onnx_classifier(dtype="int8")
    with load_model(tiny.path) as model:
        image = np.random.default_rng(4).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        tensor = model.prepare(image)
        assert tensor.dtype == np.int8
        np.testing.assert_array_equal(tensor[0].astype(int), image.astype(int) - 128)


def test_onnx_logits_get_a_softmax(onnx_classifier: Callable[..., Any]) -> None:
    tiny = onnx_classifier(logits=True, classes=3)
    with load_model(tiny.path, labels=["a", "b", "c"]) as model:
        tensor = model.prepare(np.full((8, 8, 3), 200, np.uint8))
        logits = tiny.expected(tensor)
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(model.infer(tensor), expected, rtol=1e-5)
    with load_model(tiny.path, labels=["a", "b", "c"], activation="none") as model:
        tensor = model.prepare(np.full((8, 8, 3), 200, np.uint8))
        np.testing.assert_allclose(model.infer(tensor), logits, rtol=1e-5)


def test_prepare_into_a_given_buffer(onnx_classifier: Callable[..., Any]) -> None:
    with load_model(onnx_classifier(dtype="float32", layout="NCHW").path) as model:
        buffers = [model.new_input(), model.new_input()]
        images = [np.full((8, 8, 3), v, np.uint8) for v in (10, 240)]
        for buffer, image in zip(buffers, images):
            assert model.prepare(image, out=buffer) is buffer
        assert buffers[0].max() == 10 and buffers[1].min() == 240
        with pytest.raises(PreprocessError, match="input buffer"):
            model.prepare(images[0], out=np.zeros((1, 8, 8, 3), np.float32))


# -- errors --------------------------------------------------------------------------------------


def test_loading_errors(tmp_path: Path, onnx_classifier: Callable[..., Any]) -> None:
    with pytest.raises(ModelError, match="no model at"):
        load_model(tmp_path / "missing.tflite")
    odd = tmp_path / "model.pb"
    odd.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="expected a bundle directory"):
        load_model(odd)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"garbage" * 10)
    with pytest.raises(BackendError, match="cannot load ONNX model"):
        load_model(corrupt)
    tiny = onnx_classifier().path
    with pytest.raises(UnknownComponentError, match="unknown backend 'tensorrt'"):
        load_model(tiny, backend="tensorrt")
    with pytest.raises(ConfigError, match="cannot run onnx"):
        load_model(tiny, backend="litert")
    with pytest.raises(ConfigError, match="bundle's artifacts"):
        load_model(tiny, precision="int8")
    with pytest.raises(ConfigError, match="unknown device profile"):
        load_model(tiny, profile="toaster")


def test_corrupt_tflite_is_one_clear_backend_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(BackendError, match="cannot load TFLite model") as error:
        load_model(corrupt)
    assert "\n" not in str(error.value)


def test_missing_backend_package_names_the_extra(
    onnx_classifier: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = onnx_classifier().path
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"edge-classify\[onnx\]"):
        load_model(path)


# -- bundles ---------------------------------------------------------------------------------------


def test_bundle_artifact_choice(onnx_bundle: Path) -> None:
    with load_model(onnx_bundle) as model:
        # Without a profile: int8 first.
        assert model.info["artifact"] == "model_int8.onnx"
        assert (model.info["name"], model.info["version"]) == ("colours", 2)
        assert model.info["precision"] == "int8" and model.labels == BUNDLE_LABELS
    with load_model(onnx_bundle, precision="fp32") as model:
        assert model.info["artifact"] == "model_fp32.onnx"
        assert model.input.layout == "NCHW"
    with load_model(onnx_bundle, artifact="model_fp32.onnx") as model:
        assert model.info["artifact"] == "model_fp32.onnx"
    # The Jetson profile prefers fp32 ONNX.
    with load_model(onnx_bundle, profile="jetson-orin-nano") as model:
        assert model.info["artifact"] == "model_fp32.onnx"
        assert model.info["threads"] == 6  # the profile's thread count
    with pytest.raises(BundleError, match="no artifact 'model.tflite'"):
        load_model(onnx_bundle, artifact="model.tflite")
    with pytest.raises(BundleError, match="in precision fp16"):
        load_model(onnx_bundle, precision="fp16")
    with pytest.raises(BundleError, match="no tflite"):
        load_model(onnx_bundle, backend="litert")


def test_bundle_artifacts_agree(onnx_bundle: Path) -> None:
    image = np.random.default_rng(9).integers(0, 256, (50, 30, 3), dtype=np.uint8)
    results = []
    for precision in ("int8", "fp32"):
        with load_model(onnx_bundle, precision=precision) as model:
            results.append(model.infer(model.prepare(image)))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5)


def test_bundle_thresholds_reach_the_postprocessor(tmp_path: Path) -> None:
    bundle = write_onnx_bundle(
        tmp_path / "strict", thresholds={"default": 1.0, "per_class": {"green": 0.1}}
    )
    with load_model(bundle) as model:
        assert model.thresholds.default == 1.0
        post = model.postprocessor()
        probabilities = model.infer(model.prepare(np.full((8, 8, 3), 128, np.uint8)))
        best = int(np.argmax(probabilities))
        prediction = post.process(probabilities, frame_index=0, timestamp=0.0)
        expected = "green" if BUNDLE_LABELS[best] == "green" else UNKNOWN
        assert prediction.label == expected
        assert post.process(np.array([0.05, 0.9, 0.05], np.float32)).label == "green"
        assert post.process(np.array([0.9, 0.05, 0.05], np.float32)).label == UNKNOWN
        relaxed = model.postprocessor(model.default_postprocess_config(threshold=0.0))
        assert relaxed.process(probabilities).label == BUNDLE_LABELS[best]


def test_tar_bundle_is_cleaned_up_on_close(onnx_bundle: Path, tmp_path: Path) -> None:
    tar = pack_bundle(onnx_bundle, tmp_path / "colours.tar")
    model = load_model(tar)
    unpacked = Path(str(model.info["path"]))
    assert unpacked == tar
    root = model._bundle.root if model._bundle is not None else None
    assert root is not None and root.is_dir()
    model.close()
    assert not root.exists()
    model.close()  # twice is fine


def test_artifact_candidates_order(onnx_bundle: Path) -> None:
    from devices import load_profile

    with load_bundle(onnx_bundle) as bundle:
        names = [a.path for a in artifact_candidates(bundle)]
        assert names == ["model_int8.onnx", "model_fp32.onnx"]
        jetson = load_profile("jetson-orin-nano")
        assert [a.path for a in artifact_candidates(bundle, profile=jetson)] == [
            "model_fp32.onnx",
            "model_int8.onnx",
        ]
        with pytest.raises(ConfigError, match="cannot run onnx"):
            artifact_candidates(bundle, artifact="model_fp32.onnx", backend="litert")


def test_bundle_whose_artifact_disagrees_with_the_manifest(
    tmp_path: Path, onnx_classifier: Callable[..., Any]
) -> None:
    tiny = onnx_classifier(classes=3, height=8, width=8)
    manifest = {
        "name": "liar",
        "version": 1,
        "labels": ["a", "b", "c"],
        "input": {"height": 16, "width": 16},
        "artifacts": [
            {
                "path": "m.onnx",
                "format": "onnx",
                "precision": "fp32",
                "input_dtype": "uint8",
                "output_size": 3,
            }
        ],
    }
    write_bundle(tmp_path / "liar", manifest, {"m.onnx": tiny.path})
    with pytest.raises(BundleError, match="takes 8x8 images but the manifest says 16x16"):
        load_model(tmp_path / "liar")


# -- how pixels enter the model --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "scale", "zero_point", "expected"),
    [
        ("uint8", 1.0, 0, (1.0, 0)),  # our exports
        ("uint8", 1.0039, 0, (1.0039, 0)),  # pixel domain, calibrated a little off 1
        ("uint8", 0.0078125, 128, (1.0, 0)),  # MobileNet: normalized domain -> raw pixels
        ("int8", 1.0, -128, (1.0, -128)),
        ("int8", 0.0078125, 0, (1.0, -128)),
        ("int8", 0.0, 0, (1.0, -128)),  # not quantized (ONNX int8)
        ("uint8", 0.0, 0, (1.0, 0)),
    ],
)
def test_pixel_quantization(
    dtype: str, scale: float, zero_point: int, expected: tuple[float, int]
) -> None:
    spec = TensorSpec("in", (1, 4, 4, 3), dtype, scale, zero_point, "NHWC")
    assert pixel_quantization(spec) == expected


def test_pixel_quantization_refuses_other_integers() -> None:
    with pytest.raises(ModelError, match="int16"):
        pixel_quantization(TensorSpec("in", (1, 4, 4, 3), "int16", 1.0, 0, "NHWC"))


def test_input_writer_quantizes_pixel_domain_inputs() -> None:
    spec = PreprocessSpec(2, 2)
    tensor = TensorSpec("in", (1, 2, 2, 3), "uint8", 2.0, 10, "NHWC")
    writer = InputWriter(spec, tensor)
    assert writer.mode == "quantize"
    image = np.array([[[0, 100, 255]] * 2] * 2, np.uint8)
    out = writer.write(image)
    assert out is writer.buffer and writer.write(image) is out  # one reused buffer
    np.testing.assert_array_equal(out[0, 0, 0], [10, 60, 138])  # round(p / 2 + 10)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_input_writer_shifts_int8_inputs_like_quantize_pixels(layout: str) -> None:
    spec = PreprocessSpec(16, 16)
    shape = (1, 16, 16, 3) if layout == "NHWC" else (1, 3, 16, 16)
    tensor = TensorSpec("in", shape, "int8", 1.0, -128, layout)  # type: ignore[arg-type]
    writer = InputWriter(spec, tensor)
    assert writer.mode == "quantize"
    image = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    image[0, :4] = [[0, 127, 128], [255, 1, 254], [0, 0, 0], [255, 255, 255]]
    out = writer.write(image)
    expected = quantize_pixels(prepare(image, spec), np.int8, 1.0, -128)
    if layout == "NCHW":
        expected = expected.transpose(2, 0, 1)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out[0], expected)
    black = writer.write(np.zeros((16, 16, 3), np.uint8))
    assert np.array_equal(black[0], np.full(shape[1:], -128))


def test_input_writer_normalizes_float_inputs_from_metadata() -> None:
    spec = PreprocessSpec(2, 2)
    tensor = TensorSpec("in", (1, 3, 2, 2), "float32", layout="NCHW")
    writer = InputWriter(spec, tensor, mean=[127.5], std=[127.5])
    assert writer.normalization == ([127.5] * 3, [127.5] * 3)
    out = writer.write(np.array([[[0, 127.5, 255]] * 2] * 2, np.uint8))
    np.testing.assert_allclose(out[0, :, 0, 0], [-1.0, (127 - 127.5) / 127.5, 1.0])
    identity = InputWriter(spec, tensor, mean=[0.0], std=[1.0])
    assert identity.normalization is None
    with pytest.raises(ModelError, match="std"):
        InputWriter(spec, tensor, mean=[0.0], std=[0.0])


# -- TFLite models made here (TensorFlow builds them) ---------------------------------------------


@pytest.mark.tensorflow
def test_tflite_float_and_int8_models(tiny_tflite_models: Any) -> None:
    labels = ["red", "green", "blue"]
    images = tiny_tflite_models.calibration
    keras_top1 = tiny_tflite_models.keras_probabilities.argmax(axis=1)
    with load_model(tiny_tflite_models.float32, labels=labels) as model:
        assert model.info["input"]["feed"] == "float"
        probabilities = np.stack([model.infer(model.prepare(img)) for img in images])
        np.testing.assert_allclose(probabilities, tiny_tflite_models.keras_probabilities, atol=1e-4)
    for path, dtype in (
        (tiny_tflite_models.int8_uint8_input, "uint8"),
        (tiny_tflite_models.int8_int8_input, "int8"),
    ):
        with load_model(path, labels=labels) as model:
            assert model.input.dtype == dtype and model.info["precision"] == "int8"
            # Normalization is inside the graph: the input is quantized in the pixel domain.
            assert model.input.scale > 0.25
            top1 = np.array([model.classify(img, 1)[0].index for img in images])
            # 72 images of three well-separated colours: Keras's top-2 margin is above 0.99 on
            # every one, while int8 scores differ from float by about one output step (1/256)
            # on any CPU. Allowing 3 of 72 to disagree is slack no kernel's rounding can use up.
            assert (top1 == keras_top1).mean() >= 0.95


@pytest.mark.tensorflow
def test_bundle_falls_back_to_tflite_without_onnxruntime(
    tiny_tflite_models: Any,
    onnx_classifier: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    onnx_model = onnx_classifier(classes=3, height=16, width=16)
    manifest = {
        "name": "mixed",
        "version": 1,
        "labels": ["red", "green", "blue"],
        "input": {"height": 16, "width": 16},
        "artifacts": [
            {
                "path": "model.onnx",
                "format": "onnx",
                "precision": "fp32",
                "input_dtype": "uint8",
                "output_size": 3,
            },
            {
                "path": "model_int8.tflite",
                "format": "tflite",
                "precision": "int8",
                "input_dtype": "uint8",
                "output_size": 3,
            },
        ],
    }
    files = {
        "model.onnx": onnx_model.path,
        "model_int8.tflite": tiny_tflite_models.int8_uint8_input,
    }
    bundle = tmp_path / "mixed"
    write_bundle(bundle, manifest, files)
    with load_model(bundle, profile="jetson-orin-nano") as model:
        assert model.info["artifact"] == "model.onnx"  # the Jetson prefers ONNX
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with load_model(bundle, profile="jetson-orin-nano") as model:
        assert (model.info["artifact"], model.info["backend"]) == ("model_int8.tflite", "litert")
    with pytest.raises(MissingDependencyError, match=r"edge-classify\[onnx\]"):
        load_model(bundle, backend="onnxruntime")


def test_loaded_model_with_an_int8_output_backend() -> None:
    """A backend standing in for an accelerator (an Edge TPU model has int8 in and out)."""
    from fakes import FakeBackend

    from edge_runtime.model import LoadedModel

    input_spec = TensorSpec("image", (1, 4, 4, 3), "int8", 1.0, -128, "NHWC")
    output_spec = TensorSpec("scores", (1, 3), "int8", 1 / 256, -128)
    seen: list[np.ndarray] = []

    def rows(tensor: np.ndarray) -> np.ndarray:
        seen.append(tensor.copy())
        return np.array([-128 + 30, -128 + 200, -128 + 26], np.int8)

    backend = FakeBackend(input_spec, rows, output_spec)
    model = LoadedModel(
        backend=backend,
        labels=["a", "b", "c"],
        preprocess_spec=PreprocessSpec(4, 4),
        info={"name": "fake"},
    )
    image = np.full((8, 8, 3), 255, np.uint8)
    top = model.classify(image, top_k=3)
    assert [(c.label, round(c.score * 256)) for c in top] == [("b", 200), ("a", 30), ("c", 26)]
    assert int(seen[-1].max()) == 127  # pixel 255 with zero point -128
    assert model.info["input"]["feed"] == "quantize"
    model.close()
    assert backend.closed


def with_compatible(bundle_dir: Path, dest: Path, **compatible: object) -> Path:
    """A copy of ``bundle_dir`` whose manifest says ``compatible``."""
    with load_bundle(bundle_dir) as bundle:
        raw = bundle.manifest.model_dump(mode="json", by_alias=True)
        raw["compatible"] = {**raw["compatible"], **compatible}
        files = {a.path: bundle.path_of(a.path) for a in bundle.manifest.artifacts}
        write_bundle(dest, raw, files)
    return dest


def test_a_bundle_for_another_runtime_or_device_is_refused(
    onnx_bundle: Path, tmp_path: Path
) -> None:
    from devices import load_profile

    newer = with_compatible(onnx_bundle, tmp_path / "newer", runtime=">=99")
    with pytest.raises(IncompatibleBundleError, match="needs edge-runtime >=99 but this runtime"):
        load_model(newer)
    for_pi = with_compatible(onnx_bundle, tmp_path / "for-pi", profiles=["raspberry-pi-5"])
    with pytest.raises(IncompatibleBundleError, match="not for generic-x86_64"):
        load_model(for_pi, profile="generic-x86_64")
    with load_model(for_pi, profile=load_profile("raspberry-pi-5")) as model:
        assert model.info["name"] == "colours"
    with load_model(for_pi) as model:  # no profile known: nothing to compare with
        assert model.info["name"] == "colours"
    pack_bundle(newer, tmp_path / "newer.tar")
    with pytest.raises(IncompatibleBundleError):
        load_model(tmp_path / "newer.tar")


def test_classify_top_indices_match_top_k_with_ties_and_nan() -> None:
    from edge_runtime.model import _top_indices
    from edge_runtime.postprocess import top_k

    rng = np.random.default_rng(5)
    rows = [
        np.array([0.1, 0.3, 0.3, np.nan, 0.3, 0.0, -0.0], np.float32),
        np.array([np.nan] * 4, np.float32),
        rng.integers(0, 4, 300).astype(np.float32) / 4,  # over 256 classes: top_k itself
        rng.integers(0, 4, 14).astype(np.float64) / 4,
        np.array([3, 1, 3, 2], np.uint8),  # a raw integer row goes through top_k
    ]
    for row in rows:
        for k in (0, 1, 3, 5, 400):
            assert _top_indices(row, k).tolist() == top_k(row, max(1, k)).tolist(), (row, k)
