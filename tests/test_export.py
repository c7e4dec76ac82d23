"""``edge-export export`` end to end: a small trained model to all six formats, checked through
the device runtime's own command line, plus the accuracy gate and the refusals of bad input.

The tiny run's classes overlap (tests/tiny_run.py): float top-1 is about 85%, with images near the
decision boundaries, so an int8 model that computes badly shows in the figures. The figures the
manifest records are checked against ones computed here independently (Keras, and the runtime's
``classify`` command), so a verifier that made them up would fail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_run import LABELS, make_run_dir

from edge_runtime.bundle import load_bundle
from exporter.cli import main

pytestmark = pytest.mark.tensorflow

ALL_FORMATS = "tflite-fp32,tflite-fp16,tflite-dynamic,tflite-int8,onnx-fp32,onnx-int8"
FILES = {
    "tflite-fp32": "model-fp32.tflite",
    "tflite-fp16": "model-fp16.tflite",
    "tflite-dynamic": "model-dynamic.tflite",
    "tflite-int8": "model-int8.tflite",
    "onnx-fp32": "model-fp32.onnx",
    "onnx-int8": "model-int8.onnx",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("run")
    return make_run_dir(base / "run", base / "data")


@pytest.fixture(scope="module")
def bundle(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "colours"
    code = main(
        ["export", str(run_dir), "--out", str(out), "--name", "colours", "--version", "3",
         "--formats", ALL_FORMATS, "--calibration-images", "30", "--quiet", "--tar"]
    )  # fmt: skip
    assert code == 0
    return out


def _test_images(run_dir: Path) -> tuple[list[Path], list[str]]:
    splits = json.loads((run_dir / "splits.json").read_text())
    root = Path(splits["root"])
    return [root / rel for rel, _ in splits["test"]], [label for _, label in splits["test"]]


def _keras_probabilities(run_dir: Path, paths: list[Path]) -> np.ndarray:
    import keras

    from edge_runtime.preprocess import PreprocessSpec
    from exporter.dataset import load_images

    model = keras.saving.load_model(run_dir / "model.keras")
    images = load_images(paths, PreprocessSpec(32, 32, resize="squash", interpolation="area"))
    return np.asarray(model.predict(images.astype(np.float32), verbose=0))


def _runtime_classify(capsys: pytest.CaptureFixture[str], model: Path, paths: list[Path],
                      *extra: str) -> np.ndarray:  # fmt: skip
    """Scores per image and label, as the device's `edge-runtime classify --json` prints them."""
    from edge_runtime.cli import main as runtime_main

    capsys.readouterr()
    code = runtime_main(
        ["classify", *map(str, paths), "--model", str(model), "--json", "--top-k", "3", *extra]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["image"]) for r in rows] == paths
    scores = np.zeros((len(rows), len(LABELS)))
    for i, row in enumerate(rows):
        for item in row["top"]:
            scores[i, LABELS.index(item["label"])] = item["score"]
    return scores


def test_bundle_holds_every_format_with_verified_results(bundle: Path, run_dir: Path) -> None:
    with load_bundle(bundle) as loaded:
        manifest = loaded.manifest
    assert (manifest.name, manifest.version) == ("colours", 3)
    assert manifest.labels == list(LABELS)
    assert (manifest.input.height, manifest.input.width) == (32, 32)
    assert (manifest.input.resize, manifest.input.interpolation) == ("squash", "area")
    assert manifest.thresholds.default == 0.5
    assert [a.path for a in manifest.artifacts] == list(FILES.values())
    by_path = {a.path: a for a in manifest.artifacts}
    assert by_path["model-int8.tflite"].input_dtype == "uint8"
    assert by_path["model-fp32.tflite"].input_dtype == "float32"
    assert by_path["model-int8.onnx"].input_dtype == "float32"
    assert by_path["model-fp32.onnx"].opset == 17 and by_path["model-int8.onnx"].opset == 17
    for artifact in manifest.artifacts:
        assert artifact.latency_ms is not None and artifact.latency_ms > 0
    # int8 files are smaller than fp32 where the format allows it (ONNX QDQ adds nodes).
    assert by_path["model-int8.tflite"].bytes < by_path["model-fp32.tflite"].bytes

    training = manifest.training
    assert training is not None
    assert (training.architecture, training.weights, training.epochs) == ("tiny_cnn", "none", 12)
    export = training.details["export"]
    assert export["calibration_images"] == 30
    assert set(export["artifacts"]) == set(FILES)
    # The gate's settings, its decision per artifact and the statistics behind it. Every good
    # artifact passes on any CPU: failing takes 13 of the 120 images disagreeing with float, or
    # at least 5 more lost than gained, while only the ~3 images within 0.05 of a decision
    # boundary can change answer with a kernel's rounding (0-2 disagreed on this machine).
    assert export["gate"]["confidence"] == 0.95 and export["gate"]["min_agreement"] == 0.9
    assert export["gate"]["decisions"] == {key: "pass" for key in FILES}
    for key, details in export["artifacts"].items():
        gate = details["gate"]
        assert gate["images"] == 120 and gate["decision"] == "pass", key
        assert gate["agree"] == round(details["agreement_with_float"] * 120), key
        assert set(gate["classes"]) == set(LABELS)

    # Samples: two held-out images per class that every artifact got right, as PNG.
    assert sorted(s.label for s in manifest.samples) == sorted(LABELS * 2)
    for sample in manifest.samples:
        assert (bundle / sample.path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (bundle / "labels.txt").read_text().splitlines() == list(LABELS)

    # --tar packed the same bundle.
    with load_bundle(bundle.with_name("colours.tar")) as packed:
        assert packed.manifest == manifest


def test_recorded_figures_match_ones_computed_independently_through_classify(
    bundle: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths, truth = _test_images(run_dir)
    targets = np.array([LABELS.index(t) for t in truth])
    reference = _keras_probabilities(run_dir, paths)
    expected = reference.argmax(axis=1)
    # The classes overlap (best possible top-1 about 85-90%): the float model learns them well
    # above chance (1/3). 0.6 is over 4 standard errors below the ~0.85 it reaches on 120 images
    # (sqrt(0.85 * 0.15 / 120) = 0.033), and training numerics differ by CPU: it holds on any.
    float_accuracy = np.mean(expected == targets)
    assert float_accuracy >= 0.6
    with load_bundle(bundle) as loaded:
        manifest = loaded.manifest
    assert manifest.training is not None
    recorded = manifest.training.details["export"]
    assert recorded["float_accuracy"] == pytest.approx(float_accuracy, abs=1e-6)
    for key, name in FILES.items():
        scores = _runtime_classify(capsys, bundle, paths, "--artifact", name)
        predictions = scores.argmax(axis=1)
        artifact = manifest.artifact(name)
        gate = recorded["artifacts"][key]["gate"]
        # Same images, same runtime: the manifest's figures are exactly these.
        agreement = np.mean(predictions == expected)
        assert artifact.agreement_with_float == pytest.approx(agreement, abs=1e-6)
        assert artifact.accuracy == pytest.approx(np.mean(predictions == targets), abs=1e-6)
        lost = int(np.sum((expected == targets) & (predictions != targets)))
        gained = int(np.sum((expected != targets) & (predictions == targets)))
        assert (gate["lost"], gate["gained"]) == (lost, gained), key
        if key in ("tflite-fp32", "onnx-fp32"):
            assert (lost, gained) == (0, 0), key
            # classify prints scores rounded to 6 decimals.
            np.testing.assert_allclose(scores, reference, atol=1e-4, err_msg=key)
        else:
            # Quantized scores stay close to float's on every image: the uint8 output has steps
            # of 1/256, and the quantized layers add a few steps of error. Over three training
            # seeds the worst image differed by 0.027 (7 steps); 0.15 (38 steps) leaves room
            # for another CPU's kernels, and a badly calibrated int8 model misses it by far
            # (see the gate test below).
            assert np.max(np.abs(scores - reference)) < 0.15, key


def test_bare_model_files_carry_their_labels(
    bundle: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths, _ = _test_images(run_dir)
    for name in ("model-int8.tflite", "model-fp32.tflite", "model-fp32.onnx", "model-int8.onnx"):
        bare = tmp_path / name  # away from the bundle's manifest and labels.txt
        shutil.copy(bundle / name, bare)
        from_bundle = _runtime_classify(capsys, bundle, paths[:6], "--artifact", name)
        alone = _runtime_classify(capsys, bare, paths[:6])  # no --labels
        np.testing.assert_allclose(alone, from_bundle, atol=1e-6, err_msg=name)


def test_int8_input_takes_the_camera_frame_as_is(bundle: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(bundle / "model-int8.tflite"))
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    assert detail["dtype"] == np.uint8
    assert abs(scale - 1.0) < 0.05 and zero_point == 0
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8


def test_int8_that_fails_the_gate_stops_the_export_and_writes_nothing(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A calibration set of one constant image: int8 ranges that fit nothing real.
    bad_run = tmp_path / "run"
    shutil.copytree(run_dir, bad_run)
    splits = json.loads((bad_run / "splits.json").read_text())
    constant = tmp_path / "constant.png"
    import cv2

    cv2.imwrite(str(constant), np.zeros((40, 48, 3), np.uint8))
    splits["train"] = [[str(constant), LABELS[0]]]
    (bad_run / "splits.json").write_text(json.dumps(splits))

    out = tmp_path / "bundles" / "colours"
    capsys.readouterr()
    code = main(
        ["export", str(bad_run), "--out", str(out), "--name", "colours", "--version", "1",
         "--formats", "tflite-fp32,tflite-int8", "--quiet", "--tar"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert err.startswith(
        "edge-export: error: tflite-int8 (model-int8.tflite) fails the accuracy gate: "
    )
    assert "turned wrong" in err and "turned right" in err and "McNemar p=" in err
    assert "worst classes:" in err and "Nothing was written" in err
    assert "--allow-accuracy-drop" in err
    assert "tflite-fp32" not in err.split("fails")[0]
    assert not out.exists()
    assert not (tmp_path / "bundles").exists() or not any((tmp_path / "bundles").iterdir())

    # --allow-accuracy-drop bundles it anyway, says so, and records the failed decision.
    code = main(
        ["export", str(bad_run), "--out", str(out), "--name", "colours", "--version", "1",
         "--formats", "tflite-int8", "--allow-accuracy-drop"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    warning = [line for line in captured.err.splitlines() if "fails the accuracy gate" in line]
    assert len(warning) == 1 and warning[0].startswith("edge-export: warning: tflite-int8")
    assert "Bundled anyway" in warning[0] and "Nothing was written" not in captured.err
    with load_bundle(out) as loaded:
        (artifact,) = loaded.manifest.artifacts
        assert loaded.manifest.training is not None
        export = loaded.manifest.training.details["export"]
    gate = export["artifacts"]["tflite-int8"]["gate"]
    assert gate["decision"] == "allowed" and gate["reasons"]
    assert gate["p_value"] < 0.05 and gate["lost"] > gate["gained"]
    assert export["gate"]["decisions"] == {"tflite-int8": "allowed"}

    # What the manifest says about the bad model is what the runtime measures, independently.
    paths, truth = _test_images(run_dir)
    reference = _keras_probabilities(run_dir, paths)
    scores = _runtime_classify(capsys, out, paths)
    agreement = np.mean(scores.argmax(axis=1) == reference.argmax(axis=1))
    assert artifact.agreement_with_float == pytest.approx(agreement, abs=1e-6)
    # Its answers are near chance (31% agreement here, 37 of 120 images; the floor is 108):
    # calibrated on black, every activation range is wrong, on any CPU.
    assert agreement < 0.9
    assert np.max(np.abs(scores - reference)) > 0.15  # the bound the good int8 model keeps


def test_too_few_held_out_images_is_a_recorded_warning(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = tmp_path / "run"
    shutil.copytree(run_dir, small)
    splits = json.loads((small / "splits.json").read_text())
    splits["test"] = splits["test"][:2] + splits["test"][-2:]  # four images: nothing to tell
    (small / "splits.json").write_text(json.dumps(splits))
    out = tmp_path / "colours"
    capsys.readouterr()
    code = main(["export", str(small), "--out", str(out), "--name", "colours", "--version", "1",
                 "--formats", "tflite-int8", "--quiet", "--samples-per-class", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert "edge-export: warning: tflite-int8 (model-int8.tflite): 4 images" in err
    assert "too few to tell anything" in err
    with load_bundle(out) as loaded:
        assert loaded.manifest.training is not None
        export = loaded.manifest.training.details["export"]
    (warning,) = export["gate"]["warnings"]
    assert "too few to tell anything" in warning
    assert export["artifacts"]["tflite-int8"]["gate"]["warnings"] == [warning.split(": ", 1)[1]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"formats": "tflite-fp32,tflite-int4"}, "unknown format 'tflite-int4'"),
        ({"version": "1.2"}, "version must be a positive whole number"),
        ({"version": "0"}, "version must be a positive whole number"),
        ({"name": "Colours!"}, "bundle name 'Colours!' is not allowed"),
        ({"run": "missing-model"}, "has no model.keras"),
        ({"run": "nowhere"}, "does not exist"),
        ({"out": "existing-bundle"}, "already holds a bundle; pass --force"),
        ({"out": "other-files"}, "non-empty directory that is not a bundle"),
        ({"calibration": "0"}, "--calibration-images must be at least 1"),
        ({"run": "no-train", "formats": "tflite-int8"}, "training split is empty"),
    ],
)
def test_bad_input_is_one_clear_line(
    change: dict[str, str],
    message: str,
    run_dir: Path,
    bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = run_dir
    if change.get("run") == "missing-model":
        run = tmp_path / "run"
        shutil.copytree(run_dir, run)
        (run / "model.keras").unlink()
    elif change.get("run") == "no-train":
        run = tmp_path / "run"
        shutil.copytree(run_dir, run)
        splits = json.loads((run / "splits.json").read_text())
        (run / "splits.json").write_text(json.dumps({**splits, "train": []}))
    elif change.get("run") == "nowhere":
        run = tmp_path / "nowhere"
    out = tmp_path / "out"
    if change.get("out") == "existing-bundle":
        out = bundle
    elif change.get("out") == "other-files":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    code = main(
        ["export", str(run), "--out", str(out), "--name", change.get("name", "colours"),
         "--version", change.get("version", "1"), "--formats", change.get("formats", "tflite-fp32"),
         "--calibration-images", change.get("calibration", "10"), "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert err.startswith("edge-export: error: ") and message in err
    if change.get("out") == "other-files":
        assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_force_replaces_an_existing_bundle(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "colours"
    args = ["export", str(run_dir), "--out", str(out), "--name", "colours", "--formats",
            "onnx-fp32", "--quiet"]  # fmt: skip
    assert main([*args, "--version", "1"]) == 0
    assert main([*args, "--version", "2"]) == 1
    assert main([*args, "--version", "2", "--force", "--threshold", "0.7"]) == 0
    with load_bundle(out) as loaded:
        assert loaded.manifest.version == 2
        assert loaded.manifest.thresholds.default == 0.7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colours"]


def test_summary_table_and_json(run_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    capsys.readouterr()
    args = ["export", str(run_dir), "--name", "colours", "--version", "1", "--formats",
            "tflite-fp32,tflite-int8"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "[2/2] tflite-int8: converting" in captured.err
    table = captured.out.splitlines()
    assert table[1].split() == [
        "artifact", "file", "size", "top-1", "agreement", "max", "diff", "latency", "gate"
    ]  # fmt: skip
    assert table[2].startswith("tflite-fp32") and table[3].startswith("tflite-int8")
    assert table[-1].startswith("bundle: ")

    assert main([*args, "--out", str(tmp_path / "b"), "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    summary = json.loads(captured.out)
    assert [row["artifact"] for row in summary["artifacts"]] == ["tflite-fp32", "tflite-int8"]
    assert summary["held_out"] == {"split": "test", "images": 120}
    assert [row["gate"]["decision"] for row in summary["artifacts"]] == ["pass", "pass"]
