"""``edge-runtime classify``: results, output formats and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.cli import main
from edge_runtime.errors import install_command

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def plain_interpreter_score(model: Path, image: Path) -> tuple[int, int]:
    """Top-1 (index, uint8 score) of the plain LiteRT interpreter fed the runtime's own
    preprocessing of ``image``: what the CLI must print. (The shared test data's reference
    table used OpenCV's INTER_AREA, which the runtime matches within tie rounding; for the
    parrot two tied pixels round apart, and its score is 201, not 206, of 256.)"""
    from ai_edge_litert.interpreter import Interpreter

    from edge_runtime.imageio import read_image
    from edge_runtime.preprocess import PreprocessSpec, prepare

    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    tensor = prepare(read_image(image), PreprocessSpec(128, 128))[None]
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    row = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0].astype(int)
    best = int(row.argmax())
    return best, int(row[best])


def error_lines(err: str) -> list[str]:
    """Our lines on stderr (LiteRT's native library may add its own INFO line)."""
    return [line for line in err.splitlines() if line.startswith("edge-runtime")]


def assert_one_clear_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_classify_json_reproduces_the_reference(
    imagenet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = imagenet_dir / "mobilenet_v1_0.25_128_quant.tflite"
    bird, parrot = imagenet_dir / "bird.bmp", imagenet_dir / "parrot.jpg"
    code, out, _ = run_cli(
        capsys, "classify", str(bird), str(parrot), "--model", str(model), "--json"
    )
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in records] == [str(bird), str(parrot)]
    parrot_score = plain_interpreter_score(model, parrot)
    assert parrot_score[0] == 89
    expected = [(20, "chickadee", 131), (89, "macaw", parrot_score[1])]
    for record, (index, label, score) in zip(records, expected):
        assert len(record["top"]) == 5
        best = record["top"][0]
        assert (best["index"], best["label"]) == (index, label)
        assert round(best["score"] * 256) == score
        scores = [item["score"] for item in record["top"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_classify_table_and_top_k(imagenet_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = imagenet_dir / "mobilenet_v1_0.25_128_quant.tflite"
    code, out, _ = run_cli(
        capsys,
        "classify",
        str(imagenet_dir / "parrot.jpg"),
        "-m",
        str(model),
        "--top-k",
        "2",
        "--threads",
        "1",
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(imagenet_dir / "parrot.jpg")
    assert lines[1].split() == ["#", "index", "score", "label"]
    _, score = plain_interpreter_score(model, imagenet_dir / "parrot.jpg")
    assert lines[2].split() == ["1", "89", f"{score / 256:.4f}", "macaw"]
    assert len(lines) == 4


def test_a_non_image_is_reported_and_skipped(
    imagenet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    model = imagenet_dir / "mobilenet_v1_0.25_128_quant.tflite"
    code, out, err = run_cli(
        capsys,
        "classify",
        str(notes),
        str(imagenet_dir / "bird.bmp"),
        "--model",
        str(model),
        "--json",
    )
    assert code == 1
    assert [json.loads(line)["image"] for line in out.splitlines()] == [
        str(imagenet_dir / "bird.bmp")
    ]
    assert_one_clear_error(code, err, "notes.txt", "not a readable image")


def test_classify_an_onnx_model_with_a_label_file(
    onnx_classifier: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2
    import numpy as np

    tiny = onnx_classifier(classes=3)
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    image = tmp_path / "swatch.png"
    cv2.imwrite(str(image), np.full((20, 20, 3), (30, 60, 220), np.uint8))  # BGR on disk
    code, out, _ = run_cli(
        capsys,
        "classify",
        str(image),
        "--model",
        str(tiny.path),
        "--labels",
        str(labels),
        "--backend",
        "onnxruntime",
        "--json",
        "-k",
        "3",
    )
    assert code == 0
    top = json.loads(out)["top"]
    expected = tiny.expected(np.full((1, 8, 8, 3), (220, 60, 30), np.uint8))
    assert [t["index"] for t in top] == sorted(range(3), key=lambda i: (-expected[i], i))
    assert {t["label"] for t in top} == {"red", "green", "blue"}
    assert sum(t["score"] for t in top) == pytest.approx(1.0, abs=1e-5)


def test_console_script_works(imagenet_dir: Path) -> None:
    script = Path(sys.executable).parent / "edge-runtime"
    if not script.exists():
        pytest.skip("the edge-runtime console script is not installed in this environment")
    result = subprocess.run(
        [
            str(script),
            "classify",
            str(imagenet_dir / "bird.bmp"),
            "--model",
            str(imagenet_dir / "mobilenet_v1_0.25_128_quant.tflite"),
            "--json",
            "--top-k",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["top"][0]["index"] == 20 and record["top"][0]["label"] == "chickadee"


# -- bad input: one line, non-zero exit, no traceback ----------------------------------------------


def test_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "classify", "x.jpg", "--model", str(tmp_path / "nope.tflite"))
    assert_one_clear_error(code, err, "no model at", "nope.tflite")


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_corrupt_model(tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str) -> None:
    corrupt = tmp_path / f"broken{suffix}"
    corrupt.write_bytes(b"\x00garbage" * 32)
    code, _, err = run_cli(capsys, "classify", "x.jpg", "--model", str(corrupt))
    assert_one_clear_error(code, err, "cannot load", "broken")


def test_label_count_mismatch(
    onnx_classifier: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "two.txt"
    labels.write_text("a\nb\n")
    tiny = onnx_classifier(classes=4)
    code, _, err = run_cli(
        capsys, "classify", "x.jpg", "--model", str(tiny.path), "--labels", str(labels)
    )
    assert_one_clear_error(code, err, "2 labels but the model outputs 4 scores")


def test_unknown_backend(
    onnx_classifier: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = onnx_classifier()
    code, _, err = run_cli(capsys, "classify", "x.jpg", "-m", str(tiny.path), "--backend", "tpu")
    assert_one_clear_error(code, err, "unknown backend 'tpu'", "litert, onnxruntime")


def test_missing_backend_package(
    onnx_classifier: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tiny = onnx_classifier()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, _, err = run_cli(capsys, "classify", "x.jpg", "-m", str(tiny.path))
    assert_one_clear_error(code, err, install_command("onnx"))


def test_bad_top_k(onnx_classifier: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys, "classify", "x.jpg", "-m", str(onnx_classifier().path), "--top-k", "0"
    )
    assert_one_clear_error(code, err, "--top-k")


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["classify", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "edge-runtime classify bird.bmp" in out and "--json" in out


def test_a_bundle_for_another_device_is_refused(
    onnx_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Compatibility is not covered by the artifacts' hashes: editing it in place is a valid bundle.
    manifest_path = onnx_bundle / "manifest.json"
    raw = json.loads(manifest_path.read_text())
    raw["compatible"] = {"runtime": ">=0.1", "profiles": ["jetson-nano"]}
    manifest_path.write_text(json.dumps(raw))
    code, _, err = run_cli(
        capsys, "classify", "x.jpg", "--model", str(onnx_bundle), "--profile", "raspberry-pi-4"
    )
    assert_one_clear_error(
        code, err, "bundle colours version 2 is made for the device profiles jetson-nano"
    )
