"""The LiteRT and ONNX Runtime backends on real (tiny or third-party) models."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.backends import (
    BackendOptions,
    backends_for_format,
    check_backend_for_format,
    open_backend,
)
from edge_runtime.backends.litert import LiteRTBackend, import_interpreter
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend, choose_providers
from edge_runtime.errors import (
    BackendError,
    ConfigError,
    MissingDependencyError,
    UnknownComponentError,
)

# -- ONNX Runtime -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "layout"), [("uint8", "NHWC"), ("float32", "NHWC"), ("float32", "NCHW")]
)
def test_onnx_backend_runs_and_matches_numpy(
    onnx_classifier: Callable[..., Any], dtype: str, layout: str
) -> None:
    model = onnx_classifier(dtype=dtype, layout=layout, height=6, width=10)
    with OnnxRuntimeBackend(model.path) as backend:
        assert backend.input.layout == layout
        assert backend.input.dtype == dtype
        assert (backend.input.height, backend.input.width) == (6, 10)
        assert backend.input.shape[0] == 1  # the symbolic batch became 1
        assert backend.output.shape == (1, model.classes)
        rng = np.random.default_rng(3)
        for _ in range(3):
            tensor = rng.integers(0, 256, size=backend.input.shape).astype(dtype)
            row = backend.run(tensor)
            assert row.shape == (model.classes,)
            np.testing.assert_allclose(row, model.expected(tensor), rtol=1e-5, atol=1e-6)


def test_onnx_backend_reuses_its_buffers(onnx_classifier: Callable[..., Any]) -> None:
    model = onnx_classifier()
    backend = OnnxRuntimeBackend(model.path)
    bound = backend.input_buffer()
    assert bound is not None
    first = backend.run(np.full(backend.input.shape, 10, np.uint8))
    kept = first.copy()
    # Writing the bound input and running it directly: no copy, same output array.
    bound[...] = 250
    second = backend.run(bound)
    assert second is first, "the output row is one preallocated buffer"
    assert not np.allclose(second, kept)
    np.testing.assert_allclose(second, model.expected(bound), rtol=1e-5)


def test_onnx_backend_rejects_a_wrong_input(onnx_classifier: Callable[..., Any]) -> None:
    backend = OnnxRuntimeBackend(onnx_classifier().path)
    with pytest.raises(BackendError, match="does not fit"):
        backend.run(np.zeros((1, 8, 8, 3), np.float32))


def test_onnx_providers_keep_only_available_ones(onnx_classifier: Callable[..., Any]) -> None:
    wanted = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    use, dropped = choose_providers(wanted, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert (use, dropped) == (
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ["TensorrtExecutionProvider"],
    )
    assert choose_providers(("NopeProvider",), ["CPUExecutionProvider"]) == (
        ["CPUExecutionProvider"],
        ["NopeProvider"],
    )
    import onnxruntime

    options = BackendOptions(threads=1, providers=wanted)
    backend = OnnxRuntimeBackend(onnx_classifier().path, options)
    described = backend.describe()
    available = set(onnxruntime.get_available_providers())
    assert described["providers_dropped"] == [p for p in wanted if p not in available]
    assert described["provider"] == backend.providers[0]
    assert described["threads"] == 1 and described["busy_wait"] is False


def test_onnx_symbolic_input_size_comes_from_metadata(onnx_classifier: Callable[..., Any]) -> None:
    sized = onnx_classifier(
        "sized.onnx", dynamic_size=True, props={"input_height": "12", "input_width": "20"}
    )
    backend = OnnxRuntimeBackend(sized.path)
    assert backend.input.shape == (1, 12, 20, 3)
    assert backend.model_metadata["input_height"] == "12"
    unsized = onnx_classifier("unsized.onnx", dynamic_size=True)
    with pytest.raises(BackendError, match="input size is not fixed"):
        OnnxRuntimeBackend(unsized.path)


def test_onnx_corrupt_and_missing_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(BackendError, match="cannot load ONNX model") as error:
        OnnxRuntimeBackend(corrupt)
    assert "\n" not in str(error.value)
    with pytest.raises(BackendError, match="no such file"):
        OnnxRuntimeBackend(tmp_path / "missing.onnx")


def test_missing_onnxruntime_names_the_extra(
    onnx_classifier: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = onnx_classifier().path
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edge-classify\[onnx\]'"):
        open_backend("onnxruntime", path)


# -- LiteRT -------------------------------------------------------------------------------------


def reference_input(image_path: Path) -> np.ndarray:
    """How PROVENANCE.md feeds the model: RGB, whole image squashed with INTER_AREA, raw uint8."""
    rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA)[None]


def test_litert_backend_matches_the_plain_interpreter(imagenet_dir: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    model_path = imagenet_dir / "mobilenet_v1_0.25_128_quant.tflite"
    plain = Interpreter(model_path=str(model_path), num_threads=1)
    plain.allocate_tensors()
    backend = LiteRTBackend(model_path, BackendOptions(threads=1))
    assert backend.input.shape == (1, 128, 128, 3) and backend.input.dtype == "uint8"
    assert (backend.input.scale, backend.input.zero_point) == (0.0078125, 128)
    assert backend.output.shape == (1, 1001) and backend.output.dtype == "uint8"
    assert backend.output.scale == pytest.approx(1 / 256)
    assert backend.describe()["package"] == "ai_edge_litert"
    for name, index, score in (("bird.bmp", 20, 131), ("parrot.jpg", 89, 206)):
        tensor = reference_input(imagenet_dir / name)
        plain.set_tensor(plain.get_input_details()[0]["index"], tensor)
        plain.invoke()
        expected = plain.get_tensor(plain.get_output_details()[0]["index"])[0]
        row = backend.run(tensor)
        np.testing.assert_array_equal(row, expected)
        assert (int(np.argmax(row)), int(row.max())) == (index, score)
    backend.close()


def test_litert_output_buffer_is_reused_and_xnnpack_can_be_off(imagenet_model: Path) -> None:
    with_xnnpack = LiteRTBackend(imagenet_model, BackendOptions(threads=1))
    without = LiteRTBackend(imagenet_model, BackendOptions(threads=1, xnnpack=False))
    assert without.describe()["provider"] == "builtin"
    tensor = np.random.default_rng(1).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    first = with_xnnpack.run(tensor)
    assert with_xnnpack.run(tensor) is first
    # Both kernels compute the same quantized model: the winner agrees.
    assert int(np.argmax(without.run(tensor))) == int(np.argmax(first))
    with pytest.raises(BackendError, match="does not fit"):
        with_xnnpack.run(np.zeros((1, 64, 64, 3), np.uint8))


def test_litert_corrupt_and_missing_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"this is not a flatbuffer" * 20)
    with pytest.raises(BackendError, match="cannot load TFLite model") as error:
        LiteRTBackend(corrupt)
    assert "\n" not in str(error.value)
    with pytest.raises(BackendError, match="no such file"):
        LiteRTBackend(tmp_path / "missing.tflite")


def test_litert_delegate_that_cannot_load(imagenet_model: Path) -> None:
    options = BackendOptions(delegates=("libedgetpu-not-here.so.1",))
    with pytest.raises(BackendError, match="libedgetpu-not-here.so.1"):
        LiteRTBackend(imagenet_model, options)


def test_missing_litert_names_the_extra(
    imagenet_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes an import fail as if the package were not installed.
    for name in (
        "ai_edge_litert",
        "ai_edge_litert.interpreter",
        "tflite_runtime",
        "tflite_runtime.interpreter",
    ):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edge-classify\[tflite\]'"):
        open_backend("litert", imagenet_model)


def fake_package(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def test_litert_never_falls_back_to_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    # A workstation with TensorFlow and no LiteRT package: the runtime must still not touch it.
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    touched: list[str] = []

    class Lite:
        def __getattr__(self, attribute: str) -> object:
            touched.append(attribute)
            return object

    monkeypatch.setitem(sys.modules, "tensorflow", fake_package("tensorflow", lite=Lite()))
    with pytest.raises(MissingDependencyError, match="ai-edge-litert"):
        import_interpreter()
    assert touched == []


def test_tflite_runtime_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)

    class Interpreter:  # stands for tflite_runtime's, which needs NumPy 1.x
        pass

    interpreter = fake_package("tflite_runtime.interpreter", Interpreter=Interpreter)
    monkeypatch.setitem(sys.modules, "tflite_runtime", fake_package("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", interpreter)
    api = import_interpreter()
    assert api.package == "tflite_runtime" and api.interpreter is Interpreter


# -- choosing backends ----------------------------------------------------------------------------


def test_backend_choice_by_format() -> None:
    assert backends_for_format("tflite") == ["litert"]
    assert backends_for_format("onnx", ["onnxruntime", "litert"]) == ["onnxruntime"]
    assert backends_for_format("bmp") == []
    check_backend_for_format("litert", "tflite")
    with pytest.raises(ConfigError, match="cannot run onnx"):
        check_backend_for_format("litert", "onnx")
    with pytest.raises(UnknownComponentError, match="known: litert, onnxruntime"):
        check_backend_for_format("tensorrt", "onnx")


def test_importing_the_backends_imports_no_runtime() -> None:
    probe = (
        "import sys, edge_runtime.backends, edge_runtime.backends.litert, "
        "edge_runtime.backends.onnxruntime, edge_runtime.model; "
        "print(sorted(m for m in ('onnxruntime', 'ai_edge_litert', 'tflite_runtime', "
        "'tensorflow') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
