"""Verification: scores, the accuracy gate, and ``edge-export verify`` through the runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import load_bundle
from exporter.cli import main
from exporter.errors import AccuracyGateError
from exporter.export.gate import GateOptions
from exporter.export.verify import Scores, check_accuracy_gate, compare

LABELS = ["cat", "dog", "fox"]


def test_scores_count_top1_per_class() -> None:
    probabilities = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0, 0.1, 0.9]])
    scores = Scores.of(probabilities, np.array([0, 1, 1, 2]), LABELS)
    assert scores.accuracy == 0.75
    assert scores.per_class == {"cat": 1.0, "dog": 0.5, "fox": 1.0}
    assert scores.predictions.tolist() == [0, 1, 0, 2]


def _one_hot(predictions: np.ndarray) -> np.ndarray:
    return np.eye(len(LABELS), dtype=np.float32)[predictions]


def test_compare_judges_each_artifact_and_the_gate_names_only_the_failures() -> None:
    truth = np.repeat(np.arange(3), 30)
    reference = _one_hot(truth)
    fine = compare("tflite-fp32", Path("model-fp32.tflite"), LABELS, reference, 1.0, truth,
                   reference)  # fmt: skip
    broken = truth.copy()
    broken[:20] = 1  # 20 "cat" images turn into "dog"
    bad = compare("tflite-int8", Path("model-int8.tflite"), LABELS, _one_hot(broken), 1.0, truth,
                  reference)  # fmt: skip
    assert fine.gate is not None and fine.gate.passed and fine.agreement_with_float == 1.0
    assert bad.gate is not None and not bad.gate.passed
    assert bad.agreement_with_float == pytest.approx(70 / 90)
    assert bad.max_abs_diff == 1.0
    assert bad.per_class_change["cat"] == pytest.approx(-200 / 3)
    assert bad.details()["gate"]["lost"] == 20

    assert check_accuracy_gate([fine], GateOptions(), writes=True) == []
    with pytest.raises(AccuracyGateError) as caught:
        check_accuracy_gate([fine, bad], GateOptions(), writes=True)
    message = str(caught.value)
    assert "\n" not in message and "tflite-fp32" not in message
    assert message.startswith("tflite-int8 (model-int8.tflite) fails the accuracy gate: ")
    assert "20 turned wrong, 0 turned right" in message and "collapsed class cat" in message
    assert "Nothing was written" in message
    with pytest.raises(AccuracyGateError) as caught:
        check_accuracy_gate([bad], GateOptions(), writes=False)
    assert "Nothing was written" not in str(caught.value)
    # --allow-accuracy-drop: no error, the failures come back for the warning.
    allowed = check_accuracy_gate([fine, bad], GateOptions(allow_accuracy_drop=True), writes=True)
    assert [d.key for d in allowed] == ["tflite-int8"]


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
    # Each artifact on the held-out split, then the device's smoke test of each on samples/
    # (which loads the bundle and names the artifact).
    assert loaded == [
        "model-fp32.tflite:litert",
        "model-int8.tflite:litert",
        "model-fp32.onnx:onnxruntime",
    ] + [f"{bundle.name}:{backend}" for backend in ("litert", "litert", "onnxruntime")]
    assert result["reference"] == "keras float model"
    assert result["images"] == 120 and result["failure"] is None
    assert [s["artifact"] for s in result["smoke"]] == [
        "model-fp32.tflite",
        "model-int8.tflite",
        "model-fp32.onnx",
    ]
    assert all(s["passed"] and s["samples"] == 6 for s in result["smoke"])
    rows = {row["file"]: row for row in result["artifacts"]}
    assert [row["artifact"] for row in result["artifacts"]] == [
        "tflite-fp32",
        "tflite-int8",
        "onnx-fp32",
    ]
    assert rows["model-fp32.tflite"]["agreement_with_float"] == 1.0
    assert rows["model-fp32.tflite"]["max_abs_diff"] < 1e-4
    # Same data, same runtime: the figures recorded at export come back, and so does the gate.
    with load_bundle(bundle) as loaded_bundle:
        recorded = loaded_bundle.manifest.training.details["export"]["artifacts"]
    for row in rows.values():
        assert row["accuracy"] == pytest.approx(row["recorded_accuracy"], abs=1e-6)
        assert row["gate"]["decision"] == "pass"
        assert row["gate"] == recorded[row["artifact"]]["gate"]


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
    assert out.splitlines()[0] == f"270 images: all images of {data.resolve()}"
    assert "reference: model-fp32.tflite" in out
    assert [line.split()[:2] for line in out.splitlines()[3:]] == [
        ["tflite-int8", "model-int8.tflite"],
        ["smoke", "test:"],
    ]
    assert out.splitlines()[-1].endswith("model-int8.tflite on litert: all 6 samples right")

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
    assert err.startswith(
        "edge-export: error: tflite-int8 (model-int8.tflite) fails the accuracy gate: "
    )
    assert "turned wrong" in err and "p=" in err and "--max-accuracy-drop 1 points" in err
    assert "Nothing was written" not in err
    # The same options as export: --allow-accuracy-drop lets verify pass such a bundle, saying so.
    assert main(["verify", str(weak), "--data", str(run), "--quiet", "--allow-accuracy-drop"]) == 0
    err = capsys.readouterr().err
    assert "fails the accuracy gate" in err and "(allowed by --allow-accuracy-drop)" in err
    # Loosening the drop limit and the agreement floor still leaves its collapsed classes.
    loose = ["--max-accuracy-drop", "100", "--min-agreement", "0"]
    assert main(["verify", str(weak), "--data", str(run), "--quiet", *loose]) == 1
    err = capsys.readouterr().err
    assert "fails the accuracy gate: collapsed class" in err and "significant drop" not in err
    assert main(["verify", str(weak), "--data", str(run), "--gate-confidence", "2"]) == 1
    assert "--gate-confidence must be at least 0.5" in capsys.readouterr().err


@pytest.mark.tensorflow
def test_verify_fails_a_bundle_whose_samples_the_device_would_refuse(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, bundle = exported
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    first = manifest["samples"][0]
    first["label"] = "green" if first["label"] != "green" else "red"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["verify", str(broken), "--quiet", "--artifact", "model-fp32.onnx"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "model-fp32.onnx on onnxruntime: 5 of 6 samples right; wrong: " in err
    assert err.endswith("a device would refuse this bundle after installing it")
