"""The bundled default models: valid bundles, correct on their own samples, accurate on fresh
synthetic data, and the demo stream classified as the README says."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.cli import main as runtime_main
from edge_runtime.config import parse_config
from edge_runtime.wiring import build_pipeline

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
NAMES = ("traffic-signs", "banknotes")
sys.path.insert(0, str(ROOT / "benchmarks"))

from default_models import TEST_SEED, evaluate  # noqa: E402


@pytest.fixture(params=NAMES)
def bundle_dir(request: pytest.FixtureRequest) -> Path:
    path = MODELS / request.param
    if not (path / "manifest.json").exists():
        pytest.fail(f"{path} is missing: rebuild it with edge-export build models/recipes/")
    return path


def test_bundle_is_valid_small_and_verified(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)  # checks every sha256
    manifest = bundle.manifest
    formats = {(a.format, a.precision) for a in manifest.artifacts}
    assert {("tflite", "int8"), ("tflite", "fp32"), ("onnx", "fp32")} <= formats
    assert sum(a.bytes for a in manifest.artifacts) < 4 * 1024**2, "a few MB in all"
    for artifact in manifest.artifacts:
        # Figures recorded when the bundle was built (nothing is measured here, so no CPU can
        # move them): 98.8% and 99.4% on the 840 / 540 held-out images of the recipes.
        assert artifact.accuracy is not None and artifact.accuracy >= 0.95
        assert artifact.agreement_with_float is not None and artifact.latency_ms is not None
    assert manifest.training is not None and manifest.training.weights == "none"
    assert len(manifest.samples) >= len(manifest.labels)


def test_classify_gets_its_own_samples_right(
    bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = load_bundle(bundle_dir).manifest
    for precision in ("int8", "fp32"):
        paths = [str(bundle_dir / s.path) for s in manifest.samples]
        code = runtime_main(
            ["classify", *paths, "--model", str(bundle_dir), "--precision", precision, "--json"]
        )
        assert code == 0
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        got = {Path(r["image"]).name: r["top"][0]["label"] for r in records}
        expected = {Path(s.path).name: s.label for s in manifest.samples}
        wrong = {name: got[name] for name in expected if got[name] != expected[name]}
        assert not wrong, f"{precision}: {wrong}"


@pytest.mark.tensorflow
def test_export_verify_passes_on_its_own_samples(
    bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.cli import main as export_main

    assert export_main(["verify", str(bundle_dir), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failure"] is None
    assert all(row["accuracy"] == 1.0 for row in report["artifacts"]), report["artifacts"]


def test_accuracy_on_a_fresh_synthetic_test_set() -> None:
    # The test set is rendered from a fixed seed: the same 560 sign and 240 note images on every
    # machine, so only the models' arithmetic differs between CPUs. int8 kernels differ by a step
    # or two of the output's 1/256 scale, so only an image whose top-2 margin or distance to the
    # bundle's threshold is under about 0.05 can change its answer: 4 of the 560 signs and none
    # of the 240 notes (measured through the runtime). Each bound below leaves more images of
    # slack than that: signs top-1 99.3% measured (556 right, 532 needed: 24 spare), genuine vs
    # counterfeit 99.0% of 200 notes (198 right, 196 needed: 2 spare, 0 near the boundary),
    # unknown 0.2% (1 image; 16 allowed), every artifact at least 98.9% (a 0.93 floor).
    scores = {(s.bundle, s.artifact): s for s in evaluate(MODELS, per_class=40, seed=TEST_SEED)}
    signs = scores[("traffic-signs", "model-int8.tflite")]
    assert signs.top1 >= 0.95, signs
    notes = scores[("banknotes", "model-int8.tflite")]
    assert notes.genuine_vs_counterfeit is not None and notes.genuine_vs_counterfeit >= 0.98, notes
    assert notes.unknown_rate < 0.03, notes
    for score in scores.values():
        assert score.top1 >= 0.93, score


@pytest.mark.parametrize(("name", "smooth"), [("traffic-signs", 5), ("banknotes", 3)])
def test_demo_stream_running_accuracy(name: str, smooth: int) -> None:
    """What `make demo` and `make demo-banknotes` show: the running accuracy on the stream."""
    config = parse_config(
        {
            "model": {"path": str(MODELS / name)},
            "source": {"uri": f"synthetic:{name}"},
            "postprocess": {"smoothing": "ema", "window": smooth},
            "outputs": {"console": "none"},
            "run": {"max_frames": 900},
        }
    )
    summary = build_pipeline(config).run()
    assert summary.frames == 900
    # Both streams measured 100% of their truth-defined frames (about 550 of the 900, a fixed
    # seed: the same frames everywhere). 95% leaves about 27 frames, several signs' or notes'
    # worth of smoothed decisions, for an int8 kernel's rounding to move: far more than the
    # near-boundary images the fresh-test-set check above finds (4 of 560, 0 of 240).
    assert summary.accuracy is not None and summary.accuracy >= 0.95, summary.status
