"""Verification: scores, the accuracy gate, and ``edge-export verify`` through the runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from exporter.cli import main
from exporter.errors import AccuracyGateError
from exporter.export.verify import ArtifactReport, Scores, check_accuracy_gate

LABELS = ["cat", "dog", "fox"]


def _report(key: str, accuracy: float, change: dict[str, float]) -> ArtifactReport:
    return ArtifactReport(
        key=key,
        path=Path(f"{key}.tflite"),
        count=100,
        accuracy=accuracy,
        per_class={},
        latency_ms=1.0,
        per_class_change=change,
    )


def test_scores_count_top1_per_class() -> None:
    probabilities = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0, 0.1, 0.9]])
    scores = Scores.of(probabilities, np.array([0, 1, 1, 2]), LABELS)
    assert scores.accuracy == 0.75
    assert scores.per_class == {"cat": 1.0, "dog": 0.5, "fox": 1.0}
    assert scores.predictions.tolist() == [0, 1, 0, 2]


def test_gate_passes_within_the_limit_and_names_the_failures() -> None:
    fine = _report("tflite-fp32", 0.95, {"cat": 0.0})
    close = _report("onnx-int8", 0.941, {"cat": -0.9})
    check_accuracy_gate([fine, close], 0.95, 1.0)

    bad = _report("tflite-int8", 0.90, {"cat": -12.0, "dog": -3.0, "fox": 0.0})
    with pytest.raises(AccuracyGateError) as caught:
        check_accuracy_gate([fine, bad], 0.95, 1.0)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("tflite-int8 (tflite-int8.tflite) loses 5.0 points of top-1")
    assert "worst classes: cat -12.0, dog -3.0" in message
    assert "fox" not in message and "tflite-fp32" not in message
    assert "limit is 1 points" in message
    # A larger limit lets it through.
    check_accuracy_gate([fine, bad], 0.95, 5.0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("tensorflow")
    from tiny_run import make_run_dir

    base = tmp_path_factory.mktemp("verify")
    run = make_run_dir(base / "run", base / "data")
    bundle = base / "bundle"
    code = main(
        ["export", str(run), "--out", str(bundle), "--name", "colours", "--version", "1",
         "--formats", "tflite-fp32,tflite-int8,onnx-fp32", "--quiet"]
    )  # fmt: skip
    assert code == 0
    return run, bundle


@pytest.mark.tensorflow
def test_verify_runs_every_artifact_through_the_runtime(
    exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import edge_runtime.model

    run, bundle = exported
    loaded: list[str] = []
    real = edge_runtime.model.load_model

    def spy(path: Path, **kwargs: object) -> object:
        model = real(path, **kwargs)
        loaded.append(f"{Path(path).name}:{model.backend.name}")
        return model

    monkeypatch.setattr(edge_runtime.model, "load_model", spy)
    capsys.readouterr()
    assert main(["verify", str(bundle), "--data", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert loaded == [
        "model-fp32.tflite:litert",
        "model-int8.tflite:litert",
        "model-fp32.onnx:onnxruntime",
    ]
    assert result["reference"] == "keras float model"
    assert result["images"] == 60 and result["failure"] is None
    rows = {row["file"]: row for row in result["artifacts"]}
    assert [row["artifact"] for row in result["artifacts"]] == [
        "tflite-fp32",
        "tflite-int8",
        "onnx-fp32",
    ]
    assert rows["model-fp32.tflite"]["agreement_with_float"] == 1.0
    assert rows["model-fp32.tflite"]["max_abs_diff"] < 1e-4
    # Same data, same runtime: the figures recorded at export come back.
    for row in rows.values():
        assert row["accuracy"] == pytest.approx(row["recorded_accuracy"], abs=1e-6)


@pytest.mark.tensorflow
def test_verify_on_a_class_folder_dataset_uses_the_fp32_artifact_as_reference(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, bundle = exported
    data = Path(json.loads((run / "splits.json").read_text())["root"])
    capsys.readouterr()
    code = main(["verify", str(bundle), "--data", str(data), "--artifact", "model-int8.tflite"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == f"150 images: all images of {data.resolve()}"
    assert "reference: model-fp32.tflite" in out
    assert [line.split()[:2] for line in out.splitlines()[3:]] == [
        ["tflite-int8", "model-int8.tflite"]
    ]

    stray = tmp_path / "data"
    shutil.copytree(data / "red", stray / "red")
    shutil.copytree(data / "green", stray / "purple")
    assert main(["verify", str(bundle), "--data", str(stray), "--quiet"]) == 1
    assert "class folder 'purple', which is not a label" in capsys.readouterr().err


@pytest.mark.tensorflow
def test_verify_bad_input_and_failing_artifacts(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, bundle = exported
    capsys.readouterr()
    assert main(["verify", str(bundle), "--data", str(run), "--artifact", "nope.tflite"]) == 1
    assert "bundle has no artifact 'nope.tflite'" in capsys.readouterr().err
    assert main(["verify", str(bundle), "--data", str(tmp_path / "missing")]) == 1
    assert "no data at" in capsys.readouterr().err
    assert main(["verify", str(tmp_path), "--data", str(run)]) == 1
    assert "is not a bundle" in capsys.readouterr().err

    # A bundle whose int8 was calibrated on one black image, kept with --allow-accuracy-drop.
    bad_run = tmp_path / "run"
    shutil.copytree(run, bad_run)
    splits = json.loads((bad_run / "splits.json").read_text())
    black = tmp_path / "black"
    black.mkdir()
    import cv2

    cv2.imwrite(str(black / "black.png"), np.zeros((40, 48, 3), np.uint8))
    splits["train"] = [[str(black / "black.png"), "red"]]
    (bad_run / "splits.json").write_text(json.dumps(splits))
    weak = tmp_path / "weak"
    assert (
        main(
            ["export", str(bad_run), "--out", str(weak), "--name", "weak", "--version", "1",
             "--formats", "tflite-int8", "--allow-accuracy-drop", "--quiet"]
        )  # fmt: skip
        == 0
    )
    capsys.readouterr()
    assert main(["verify", str(weak), "--data", str(run), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "model-int8.tflite" in captured.out
    err = captured.err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("edge-export: error: tflite-int8 (model-int8.tflite) loses")
    assert "--max-accuracy-drop" in err
