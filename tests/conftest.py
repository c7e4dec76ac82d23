"""Shared fixtures: where the real test data is, and tiny models built on the spot.

Keep fixtures generic (several test modules use them) and cheap: anything expensive is
session-scoped and built only when a test asks for it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT / ".." / "shared" / "testdata"


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``precision = "auto"`` caches its measured choices under ``$XDG_CACHE_HOME``: the tests'
    go to a directory of their own (child processes inherit it), never to the user's cache."""
    path = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(path)
    yield path
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def testdata_dir() -> Path:
    """The shared third-party test data (``../shared/testdata``); skips the test when absent."""
    if not TESTDATA.is_dir():
        pytest.skip(f"third-party test data not found at {TESTDATA.resolve()}")
    return TESTDATA.resolve()


@pytest.fixture(scope="session")
def imagenet_dir(testdata_dir: Path) -> Path:
    """``imagenet/``: a MobileNet v1 uint8 model with TFLite metadata, bird.bmp, parrot.jpg."""
    folder = testdata_dir / "imagenet"
    needed = ["mobilenet_v1_0.25_128_quant.tflite", "bird.bmp", "parrot.jpg"]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        pytest.skip(f"imagenet test data incomplete at {folder}: missing {', '.join(missing)}")
    return folder


@pytest.fixture(scope="session")
def imagenet_model(imagenet_dir: Path) -> Path:
    return imagenet_dir / "mobilenet_v1_0.25_128_quant.tflite"


# ------------------------------------------------------------------------------------------------
# Tiny ONNX classifiers whose output numpy can compute


@dataclass(frozen=True)
class TinyOnnxClassifier:
    """An ONNX model that averages each colour channel and applies a fixed linear layer.

    ``scores = mean_rgb(input) @ weights + bias``, then softmax unless ``logits``. ``expected``
    computes the same from an input tensor with numpy.
    """

    path: Path
    weights: np.ndarray
    bias: np.ndarray
    layout: str
    dtype: str
    logits: bool
    height: int
    width: int

    @property
    def classes(self) -> int:
        return int(self.bias.shape[0])

    def expected(self, tensor: np.ndarray) -> np.ndarray:
        axes = (1, 2) if self.layout == "NHWC" else (2, 3)
        means = tensor.astype(np.float64).mean(axis=axes)[0]
        scores = means @ self.weights.astype(np.float64) + self.bias
        if self.logits:
            return scores
        exp = np.exp(scores - scores.max())
        return exp / exp.sum()


def build_onnx_classifier(
    path: Path,
    *,
    height: int = 8,
    width: int = 8,
    classes: int = 4,
    dtype: str = "uint8",
    layout: str = "NHWC",
    logits: bool = False,
    props: Mapping[str, str] | None = None,
    batch: str | int = "N",
    dynamic_size: bool = False,
    seed: int = 0,
) -> TinyOnnxClassifier:
    """Write a :class:`TinyOnnxClassifier` to ``path`` (opset 17, built with onnx.helper)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    # Weights big enough that different mean colours give clearly different classes.
    weights = rng.normal(0.0, 0.05, size=(3, classes)).astype(np.float32)
    bias = rng.normal(0.0, 0.5, size=classes).astype(np.float32)
    element = {
        "uint8": TensorProto.UINT8,
        "int8": TensorProto.INT8,
        "float32": TensorProto.FLOAT,
    }[dtype]
    h: str | int = "height" if dynamic_size else height
    w: str | int = "width" if dynamic_size else width
    shape = [batch, h, w, 3] if layout == "NHWC" else [batch, 3, h, w]
    image = helper.make_tensor_value_info("image", element, shape)
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, classes])
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node(
            "ReduceMean",
            ["pixels"],
            ["means"],
            axes=[1, 2] if layout == "NHWC" else [2, 3],
            keepdims=0,
        ),
        helper.make_node("MatMul", ["means", "weights"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["scores" if logits else "logits"]),
    ]
    if not logits:
        nodes.append(helper.make_node("Softmax", ["logits"], ["scores"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "tiny-classifier",
        [image],
        [scores],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (props or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return TinyOnnxClassifier(
        path, weights, bias.astype(np.float64), layout, dtype, logits, height, width
    )


@pytest.fixture
def onnx_classifier(tmp_path: Path) -> Callable[..., TinyOnnxClassifier]:
    """Factory: ``onnx_classifier(name="m.onnx", **build_onnx_classifier options)``."""

    def make(name: str = "model.onnx", **options: object) -> TinyOnnxClassifier:
        return build_onnx_classifier(tmp_path / name, **options)  # type: ignore[arg-type]

    return make


# ------------------------------------------------------------------------------------------------
# Tiny TFLite models (TensorFlow needed; tests using them are marked ``tensorflow``)


@dataclass(frozen=True)
class TinyTfliteModels:
    """One tiny Keras classifier (16x16 RGB -> 3 classes) exported three ways."""

    float32: Path
    int8_uint8_input: Path
    int8_int8_input: Path
    calibration: np.ndarray
    keras_probabilities: np.ndarray


@pytest.fixture(scope="session")
def tiny_tflite_models(tmp_path_factory: pytest.TempPathFactory) -> TinyTfliteModels:
    """A float TFLite model and two full-integer ones (uint8 and int8 input), built once."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    folder = tmp_path_factory.mktemp("tiny-tflite")
    rng = np.random.default_rng(7)
    # Three colours to tell apart: normalization happens inside the graph (raw pixels in).
    images = np.concatenate(
        [
            np.clip(rng.normal(base, 20.0, size=(24, 16, 16, 3)), 0, 255)
            for base in ([200, 40, 40], [40, 200, 40], [40, 40, 200])
        ]
    ).astype(np.float32)
    labels = np.repeat(np.arange(3), 24)
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Rescaling(1.0 / 127.5, offset=-1.0),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=15, batch_size=24, verbose=0)

    def convert(name: str, quantize: bool, input_type: object = None) -> Path:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([img[None]] for img in images[::3])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = input_type
            converter.inference_output_type = input_type
        path = folder / name
        with warnings.catch_warnings():
            # TensorFlow warns about input statistics it does not need with a representative set.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            path.write_bytes(converter.convert())
        return path

    return TinyTfliteModels(
        float32=convert("tiny_fp32.tflite", False),
        int8_uint8_input=convert("tiny_int8_u8.tflite", True, tf.uint8),
        int8_int8_input=convert("tiny_int8_i8.tflite", True, tf.int8),
        calibration=images.astype(np.uint8),
        keras_probabilities=np.asarray(model.predict(images, verbose=0)),
    )


# ------------------------------------------------------------------------------------------------
# A bundle of tiny ONNX artifacts (no TensorFlow needed)

BUNDLE_LABELS = ["red", "green", "blue"]


def write_onnx_bundle(
    dest: Path,
    *,
    thresholds: Mapping[str, object] | None = None,
    height: int = 8,
    width: int = 8,
) -> Path:
    """A valid bundle directory with two artifacts of the same tiny classifier: ``model_int8.onnx``
    (uint8 input, precision int8) and ``model_fp32.onnx`` (float32 input, NCHW)."""
    from edge_runtime.bundle import write_bundle

    work = dest.parent / f".{dest.name}-models"
    int8 = build_onnx_classifier(
        work / "model_int8.onnx", height=height, width=width, classes=3, dtype="uint8"
    )
    fp32 = build_onnx_classifier(
        work / "model_fp32.onnx",
        height=height,
        width=width,
        classes=3,
        dtype="float32",
        layout="NCHW",
    )
    manifest = {
        "name": "colours",
        "version": 2,
        "labels": list(BUNDLE_LABELS),
        "input": {"height": height, "width": width, "resize": "squash", "interpolation": "area"},
        "artifacts": [
            {
                "path": "model_fp32.onnx",
                "format": "onnx",
                "precision": "fp32",
                "input_dtype": "float32",
                "output_size": 3,
                "opset": 17,
            },
            {
                "path": "model_int8.onnx",
                "format": "onnx",
                "precision": "int8",
                "input_dtype": "uint8",
                "output_size": 3,
                "opset": 17,
            },
        ],
        "thresholds": dict(thresholds or {"default": 0.0, "per_class": {}}),
    }
    write_bundle(dest, manifest, {"model_int8.onnx": int8.path, "model_fp32.onnx": fp32.path})
    return dest


@pytest.fixture
def onnx_bundle(tmp_path: Path) -> Path:
    """A bundle directory of two tiny ONNX artifacts (see :func:`write_onnx_bundle`)."""
    return write_onnx_bundle(tmp_path / "colours")
