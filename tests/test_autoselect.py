"""``precision = "auto"``: the pure choice from timings, the gate, and the timing cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime import autoselect
from edge_runtime.backends import Backend, BackendOptions
from edge_runtime.bundle import Artifact, load_bundle
from edge_runtime.errors import MissingDependencyError
from edge_runtime.model import load_model
from edge_runtime.selection import ArtifactTiming, choose_measured, gate_verdict
from edge_runtime.types import TensorSpec
from tests.fakes_io import FakeClock

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "traffic-signs"


def timing(name: str, ms: float | None, eligible: bool = True) -> ArtifactTiming:
    fmt, precision = ("onnx" if name.endswith(".onnx") else "tflite"), name.split("-")[1][:4]
    return ArtifactTiming(name, fmt, precision, "litert", ms, 10, eligible)


def test_the_fastest_eligible_artifact_wins_and_near_ties_keep_the_profile_order() -> None:
    order = ["model-int8.tflite", "model-fp32.tflite", "model-fp32.onnx"]
    timings = [
        timing("model-int8.tflite", 2.0),
        timing("model-fp32.tflite", 1.0),
        timing("model-fp32.onnx", 1.3),
    ]
    chosen = choose_measured(timings, order)
    assert chosen is not None and chosen.artifact == "model-fp32.tflite"
    # Within 5% of the fastest is a tie: the profile's first choice stays.
    close = [timing("model-int8.tflite", 1.04), timing("model-fp32.tflite", 1.0)]
    chosen = choose_measured(close, order)
    assert chosen is not None and chosen.artifact == "model-int8.tflite"
    # An artifact that failed the gate, or could not be timed, is never chosen.
    gated = [timing("model-int8.tflite", 0.1, eligible=False), timing("model-fp32.onnx", None)]
    gated.append(timing("model-fp32.tflite", 3.0))
    chosen = choose_measured(gated, order)
    assert chosen is not None and chosen.artifact == "model-fp32.tflite"
    assert choose_measured([timing("model-fp32.onnx", None)], order) is None


def manifest_with(export: dict[str, Any], accuracy: float | None) -> Any:
    bundle = load_bundle(BUNDLE)
    manifest = bundle.manifest
    training = manifest.training.model_copy(update={"details": {"export": export}})
    int8 = manifest.artifact("model-int8.tflite").model_copy(update={"accuracy": accuracy})
    return manifest.model_copy(update={"training": training}), int8


def test_gate_verdict_reads_the_exporters_decision_or_the_recorded_accuracy() -> None:
    manifest, int8 = manifest_with({"gate": {"decisions": {"tflite-int8": "pass"}}}, 0.5)
    assert gate_verdict(manifest, int8) == (True, "accuracy gate: pass")
    manifest, int8 = manifest_with({"gate": {"decisions": {"tflite-int8": "allowed"}}}, 0.99)
    assert gate_verdict(manifest, int8) == (False, "accuracy gate: allowed")
    # No decision recorded (older bundles): top-1 against float, within the recorded limit.
    recorded = {"float_accuracy": 0.90, "max_accuracy_drop_points": 1.0}
    manifest, int8 = manifest_with(recorded, 0.895)
    assert gate_verdict(manifest, int8)[0] is True
    manifest, int8 = manifest_with(recorded, 0.88)
    eligible, reason = gate_verdict(manifest, int8)
    assert not eligible and "2.0 points below float" in reason
    manifest, int8 = manifest_with({}, None)
    assert gate_verdict(manifest, int8) == (True, "no accuracy recorded")
    fp32 = manifest.artifact("model-fp32.tflite")
    assert gate_verdict(manifest, fp32) == (True, "float reference")
    # The bundled model's own manifest: int8 is within the gate.
    bundled = load_bundle(BUNDLE).manifest
    assert gate_verdict(bundled, bundled.artifact("model-int8.tflite"))[0] is True


class TimedBackend(Backend):
    """A backend whose every run takes ``ms`` milliseconds of the fake clock."""

    name = "fake"

    def __init__(self, clock: FakeClock, ms: float) -> None:
        self.clock, self.ms, self.runs = clock, ms, 0
        self.input = TensorSpec("x", (1, 2, 2, 3), "uint8", layout="NHWC")
        self.output = TensorSpec("y", (1, 3), "float32")
        self.closed = False

    def run(self, tensor: np.ndarray) -> np.ndarray:
        self.runs += 1
        self.clock.advance(self.ms / 1e3)
        return np.zeros(3, np.float32)

    def close(self) -> None:
        self.closed = True


def test_choice_is_timed_once_then_read_from_the_cache(tmp_path: Path) -> None:
    clock = FakeClock(start=0.0)
    speeds = {"model-int8.tflite": 2.0, "model-fp32.tflite": 0.8, "model-fp32.onnx": 1.2}
    opened: list[TimedBackend] = []

    def opener(item: Artifact) -> Backend:
        if item.format == "onnx":
            raise MissingDependencyError("onnxruntime", "onnx", "the backend 'onnxruntime'")
        backend = TimedBackend(clock, speeds[item.path])
        opened.append(backend)
        return backend

    budget = autoselect.TimingBudget(seconds=0.01, min_runs=3, max_runs=50)
    options = BackendOptions(threads=2)
    with load_bundle(BUNDLE) as bundle:
        candidates = list(bundle.manifest.artifacts)

        def measurer(items: Any) -> list[ArtifactTiming]:
            return autoselect.measure(bundle, items, opener, budget, clock)

        def choose() -> autoselect.MeasuredChoice:
            return autoselect.choose(
                bundle, candidates, measurer, backend="auto", options=options, cache_dir=tmp_path
            )

        first = choose()
        assert first.measured and first.artifact == "model-fp32.tflite"
        by_name = {t.artifact: t for t in first.timings}
        assert by_name["model-fp32.tflite"].median_ms == pytest.approx(0.8)
        # Runs until the budget: 0.01 s of 2 ms runs is 5, of 0.8 ms runs 13.
        assert by_name["model-int8.tflite"].runs == 5 and by_name["model-fp32.tflite"].runs == 13
        assert by_name["model-fp32.onnx"].median_ms is None
        assert "pip install 'edge-classify[onnx]'" in by_name["model-fp32.onnx"].error
        assert all(backend.closed for backend in opened)  # one loaded at a time, all freed

        cached = json.loads((tmp_path / autoselect.CACHE_NAME).read_text())
        assert cached["schema"] == 1 and first.key in cached["entries"]
        opened.clear()
        second = choose()
        assert not second.measured and second.artifact == "model-fp32.tflite" and not opened
        assert second.to_json()["source"] == "cached"

        # Other settings are another key: timed again.
        options = BackendOptions(threads=1)
        assert choose().measured
        # A damaged cache is an empty one, never an error.
        (tmp_path / autoselect.CACHE_NAME).write_text("{not json")
        options = BackendOptions(threads=2)
        assert choose().measured


CHILD_TIMING = """
import json, sys
from edge_runtime import autoselect
from edge_runtime.backends import BackendOptions
from edge_runtime.bundle import load_bundle
with load_bundle(sys.argv[1]) as bundle:
    options = BackendOptions(threads=1)
    def measurer(items):
        return autoselect.measure_isolated(
            bundle, items, backend="auto", options=options, profile="",
            budget=autoselect.TimingBudget(seconds=0.02, min_runs=3, max_runs=5),
        )
    choice = autoselect.choose(
        bundle, list(bundle.manifest.artifacts), measurer, backend="auto", options=options,
        cache_dir=sys.argv[2],
    )
loaded = sorted(m for m in ("onnxruntime", "ai_edge_litert") if m in sys.modules)
print(json.dumps({"choice": choice.to_json(), "loaded": loaded}))
"""


def test_artifacts_are_timed_in_a_child_process(tmp_path: Path) -> None:
    # Timing loads every artifact; done here, it would leave ONNX Runtime (some 30 MB) in a
    # process that then serves the .tflite. The parent must load no backend at all.
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", CHILD_TIMING, str(BUNDLE), str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    timings = result["choice"]["timings"]
    assert {t["artifact"] for t in timings if t["median_ms"] is not None} == {
        "model-int8.tflite", "model-fp32.tflite", "model-fp32.onnx"
    }  # fmt: skip
    assert all(3 <= t["runs"] <= 5 for t in timings)
    assert result["choice"]["artifact"] in {t["artifact"] for t in timings}


def test_a_failing_timing_child_leaves_the_profile_order(tmp_path: Path) -> None:
    with load_bundle(BUNDLE) as bundle:
        timings = autoselect.measure_isolated(
            bundle, list(bundle.manifest.artifacts), backend="auto",
            options=BackendOptions(), profile="", python=str(tmp_path / "no-python"),
        )  # fmt: skip
    assert [t.median_ms for t in timings] == [None, None, None]
    assert choose_measured(timings, [t.artifact for t in timings]) is None


def test_cpu_description_names_the_speed_flags() -> None:
    described = autoselect.cpu_description()
    machine, model, flags = described.split(" | ")
    assert machine and model
    assert set(filter(None, flags.split(","))) <= autoselect.SPEED_FLAGS


def test_load_model_auto_runs_the_measured_choice(tmp_path: Path) -> None:
    with load_model(BUNDLE, precision="auto", cache_dir=tmp_path) as model:
        selection = model.info["selection"]
        assert selection["source"] == "measured"
        assert model.info["artifact"] == selection["artifact"]
        timed = {row["artifact"] for row in selection["timings"] if row["median_ms"]}
        assert timed == {"model-int8.tflite", "model-fp32.tflite", "model-fp32.onnx"}
        assert selection["artifact"] in timed
    with load_model(BUNDLE, precision="auto", cache_dir=tmp_path) as model:
        assert model.info["selection"]["source"] == "cached"
        assert model.info["artifact"] == selection["artifact"]
    # An explicit artifact or precision wins, untimed.
    with load_model(BUNDLE, precision="fp32", cache_dir=tmp_path) as model:
        assert model.info["selection"] == {"source": "asked"} and model.info["precision"] == "fp32"
    with load_model(BUNDLE, cache_dir=tmp_path) as model:
        assert model.info["selection"] == {"source": "profile"}
