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
    assert summary.accuracy is not None and summary.accuracy >= 0.95, summary.status
