"""Verification: run every exported artifact through the device runtime and compare it to float.

Artifacts run through ``edge_runtime.model.load_model``, the same loading, preprocessing and
backends (LiteRT, ONNX Runtime) the device uses, on held-out images prepared by
``edge_runtime.preprocess``. Measured per artifact: top-1 accuracy, agreement of top-1 with the
float model, the largest score difference, per-class accuracy change and median latency; the
accuracy gate (:mod:`exporter.export.gate`) judges the artifact image by image against float. A
bundle's ``samples/`` also go through the device's own smoke test (:mod:`edge_runtime.smoke`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.errors import AccuracyGateError, ExportError
from exporter.export.gate import GateDecision, GateOptions, Outcome, gate_message, judge
from exporter.progress import QUIET, Progress

if TYPE_CHECKING:
    from edge_runtime.bundle import Artifact, Bundle
    from edge_runtime.smoke import SmokeResult

#: fewest timed inferences behind a latency figure
MIN_LATENCY_RUNS = 20


@dataclass(frozen=True)
class Scores:
    """Top-1 accuracy overall and per class (fractions), from probabilities and true classes."""

    accuracy: float
    per_class: dict[str, float]
    predictions: np.ndarray

    @classmethod
    def of(cls, probabilities: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> Scores:
        predictions = np.argmax(probabilities, axis=1)
        correct = predictions == truth
        per_class = {}
        for index, label in enumerate(labels):
            members = truth == index
            if members.any():
                per_class[label] = float(correct[members].mean())
        accuracy = float(correct.mean()) if len(truth) else 0.0
        return cls(accuracy=accuracy, per_class=per_class, predictions=predictions)


@dataclass
class ArtifactReport:
    """What verification measured for one artifact (``gate`` when there was a float reference)."""

    key: str
    path: Path
    count: int
    accuracy: float
    per_class: dict[str, float]
    latency_ms: float
    probabilities: np.ndarray | None = None
    agreement_with_float: float | None = None
    max_abs_diff: float | None = None
    per_class_change: dict[str, float] = field(default_factory=dict)  # points vs float
    gate: GateDecision | None = None

    def worst_classes(self, count: int = 3) -> list[tuple[str, float]]:
        """The classes that lost most against float, as (label, change in points)."""
        ranked = sorted(self.per_class_change.items(), key=lambda kv: kv[1])
        return [(label, change) for label, change in ranked[:count] if change < 0]

    def details(self) -> dict[str, Any]:
        """JSON-ready details beyond the manifest's artifact fields (the gate's decision too)."""
        return {
            "images": self.count,
            "accuracy": round(self.accuracy, 6),
            "agreement_with_float": _round(self.agreement_with_float),
            "max_abs_score_diff": _round(self.max_abs_diff, 8),
            "latency_ms": round(self.latency_ms, 4),
            "per_class_accuracy_change_points": {
                k: round(v, 3) for k, v in self.per_class_change.items()
            },
            "gate": self.gate.to_json() if self.gate is not None else None,
        }


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def run_artifact(
    path: Path, labels: Sequence[str], images: np.ndarray, threads: int = 0
) -> tuple[np.ndarray, float]:
    """Probabilities (N x classes) of the model at ``path`` on prepared images, and the median
    latency of one inference in milliseconds, measured through the device runtime.

    Raises:
        EdgeRuntimeError: the runtime cannot load or run the model.
    """
    from edge_runtime.backends import BackendOptions
    from edge_runtime.model import load_model

    with load_model(path, labels=list(labels), options=BackendOptions(threads=threads)) as model:
        # prepare() reuses one buffer per model: keep a copy of each tensor.
        tensors = [np.array(model.prepare(image), copy=True) for image in images]
        probabilities = np.stack(
            [np.array(model.infer(t), dtype=np.float32, copy=True) for t in tensors]
        )
        times = []
        runs = max(MIN_LATENCY_RUNS, len(tensors))
        for i in range(runs):
            tensor = tensors[i % len(tensors)]
            start = time.perf_counter()
            model.infer(tensor)
            times.append((time.perf_counter() - start) * 1000.0)
    return probabilities, float(np.median(times))


def verify_artifact(
    key: str,
    path: Path,
    labels: Sequence[str],
    images: np.ndarray,
    truth: np.ndarray,
    reference: np.ndarray | None = None,
    threads: int = 0,
    gate: GateOptions | None = None,
) -> ArtifactReport:
    """Run one artifact on the held-out images and, when the float ``reference`` probabilities
    are given, compare with them and judge the artifact with the accuracy gate.

    Raises:
        EdgeRuntimeError: the runtime cannot load or run the model.
    """
    probabilities, latency = run_artifact(path, labels, images, threads)
    return compare(key, path, labels, probabilities, latency, truth, reference, gate)


def compare(
    key: str,
    path: Path,
    labels: Sequence[str],
    probabilities: np.ndarray,
    latency_ms: float,
    truth: np.ndarray,
    reference: np.ndarray | None = None,
    gate: GateOptions | None = None,
) -> ArtifactReport:
    """The report of an artifact's probabilities, against the float ``reference`` when given."""
    scores = Scores.of(probabilities, truth, labels)
    report = ArtifactReport(
        key=key,
        path=path,
        count=len(truth),
        accuracy=scores.accuracy,
        per_class=scores.per_class,
        latency_ms=latency_ms,
        probabilities=probabilities,
    )
    if reference is not None:
        ref = Scores.of(reference, truth, labels)
        report.agreement_with_float = float(np.mean(scores.predictions == ref.predictions))
        report.max_abs_diff = float(np.max(np.abs(probabilities - reference)))
        report.per_class_change = {
            label: (scores.per_class[label] - ref.per_class[label]) * 100.0
            for label in ref.per_class
        }
        report.gate = judge(
            key,
            path.name,
            scores.predictions,
            ref.predictions,
            truth,
            labels,
            gate or GateOptions(),
        )
    return report


def gate_failures(reports: Sequence[ArtifactReport]) -> list[GateDecision]:
    """The gate decisions of the artifacts that failed."""
    return [r.gate for r in reports if r.gate is not None and not r.gate.passed]


def check_accuracy_gate(
    reports: Sequence[ArtifactReport], options: GateOptions, *, writes: bool
) -> list[GateDecision]:
    """Raise unless every artifact passed the gate, or ``--allow-accuracy-drop`` lets the failures
    through; returns those failures (empty when all passed).

    ``writes``: the caller is ``export`` (the message says nothing was written) rather than
    ``verify``.

    Raises:
        AccuracyGateError: one line naming each failing artifact, why, and its statistics.
    """
    failures = gate_failures(reports)
    if failures and not options.allow_accuracy_drop:
        outcome: Outcome = "refused" if writes else "checked"
        raise AccuracyGateError(gate_message(failures, outcome))
    return failures


def gate_warnings(reports: Sequence[ArtifactReport]) -> list[str]:
    """``artifact: warning`` for every decision the gate could not make with confidence."""
    return [
        f"{r.gate.name}: {warning}"
        for r in reports
        if r.gate is not None
        for warning in r.gate.warnings
    ]


@dataclass
class BundleVerification:
    """The result of verifying a bundle's artifacts on a labelled data set."""

    source: str
    count: int
    reference: str | None
    reference_accuracy: float | None
    reports: list[ArtifactReport]
    recorded: dict[str, float | None]
    sizes: dict[str, int] = field(default_factory=dict)
    smoke: list[SmokeResult] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "artifact": r.key,
                "file": r.path.name,
                "bytes": self.sizes.get(r.path.name),
                "accuracy": r.accuracy,
                "recorded_accuracy": self.recorded.get(r.path.name),
                "agreement_with_float": r.agreement_with_float,
                "max_abs_diff": r.max_abs_diff,
                "latency_ms": r.latency_ms,
                "gate": r.gate.to_json() if r.gate is not None else None,
            }
            for r in self.reports
        ]

    def smoke_failures(self) -> list[SmokeResult]:
        return [s for s in self.smoke if not s.passed]


def _labelled_images(data: Path, labels: Sequence[str]) -> tuple[str, list[tuple[Path, str]]]:
    """``(description, items)`` of a run directory's held-out split or a class-folder dataset."""
    from exporter.dataset import scan_dataset
    from exporter.export.rundir import SPLITS_NAME, load_run_directory

    if (data / SPLITS_NAME).is_file():
        run = load_run_directory(data)
        if list(run.labels) != list(labels):
            raise ExportError(
                f"run directory {data} has labels {list(run.labels)[:5]}..., the bundle has "
                f"{list(labels)[:5]}...: they do not belong together"
            )
        split, items = run.held_out()
        return f"{split} split of run {data}", items
    scanned = scan_dataset(data)
    samples = list((scanned.given or {}).get("test") or scanned.samples)
    unknown = sorted({s.label for s in samples} - set(labels))
    if unknown:
        raise ExportError(
            f"{data} has class folder '{unknown[0]}', which is not a label of the bundle"
        )
    where = "test split of" if scanned.given and scanned.given.get("test") else "all images of"
    return f"{where} {data}", [(scanned.root / s.path, s.label) for s in samples]


def _smoke_tests(
    bundle: Bundle, chosen: Sequence[Artifact], threads: int, say: Progress
) -> list[SmokeResult]:
    """The device's smoke test (samples/) of each chosen artifact (none without samples/)."""
    from edge_runtime.backends import BackendOptions
    from edge_runtime.smoke import smoke_test

    if not bundle.manifest.samples:
        return []
    results = []
    for item in chosen:
        say.stage(
            f"smoke test of {item.path} on the bundle's {len(bundle.manifest.samples)} samples"
        )
        results.append(
            smoke_test(bundle.root, artifact=item.path, options=BackendOptions(threads=threads))
        )
    return results


def verify_bundle(
    bundle_path: str | Path,
    data: str | Path | None,
    *,
    artifacts: Sequence[str] = (),
    threads: int = 0,
    gate: GateOptions | None = None,
    progress: Progress | None = None,
) -> BundleVerification:
    """Run a bundle's artifacts on labelled images through the device runtime, judge each with
    the accuracy gate, and run the device's smoke test on the bundle's samples.

    ``data`` is a run directory (its held-out split is used, and the Keras model in it is the
    float reference), a class-per-folder dataset (its ``test`` split when it has split folders,
    else every image), or None for the bundle's own ``samples/``; without a run directory the
    bundle's fp32 artifact is the reference when it has one. The gate's decisions are in the
    reports; this function does not raise for them (see :func:`check_accuracy_gate`).

    Raises:
        ExportError: the bundle, the data or the labels do not fit.
        EdgeRuntimeError: an artifact cannot be loaded or run.
    """
    from edge_runtime.bundle import load_bundle
    from exporter.dataset import load_images

    say = progress or QUIET
    options = (gate or GateOptions()).check()
    with load_bundle(bundle_path) as bundle:
        manifest = bundle.manifest
        labels = list(manifest.labels)
        if data is None:
            if not manifest.samples:
                raise ExportError(f"bundle {bundle_path} has no samples/: give --data DIR")
            description = f"the samples/ of bundle {bundle_path}"
            items = [(bundle.path_of(s.path), s.label) for s in manifest.samples]
            data_path = bundle.root
        else:
            data_path = Path(data)
            if not data_path.exists():
                raise ExportError(
                    f"no data at {data_path}: give a run directory or a dataset folder"
                )
            description, items = _labelled_images(data_path, labels)
        spec = manifest.input.preprocess_spec()
        images = load_images([p for p, _ in items], spec, progress=say, desc="images")
        truth = np.array([labels.index(label) for _, label in items])

        chosen = list(manifest.artifacts)
        if artifacts:
            names = {a.path for a in manifest.artifacts}
            missing = [a for a in artifacts if a not in names]
            if missing:
                raise ExportError(
                    f"bundle has no artifact '{missing[0]}' (it has: {', '.join(sorted(names))})"
                )
            chosen = [a for a in manifest.artifacts if a.path in artifacts]

        reference = None
        reference_name = None
        if (data_path / "model.keras").is_file() and (data_path / "splits.json").is_file():
            from exporter.export.reference import float_probabilities, load_keras_model
            from exporter.export.rundir import load_run_directory

            say.stage("running the float Keras model of the run")
            reference = float_probabilities(load_keras_model(load_run_directory(data_path)), images)
            reference_name = "keras float model"
        else:
            for fmt in ("tflite", "onnx"):
                floats = [
                    a for a in manifest.artifacts if a.format == fmt and a.precision == "fp32"
                ]
                if floats:
                    say.stage(f"running the float reference {floats[0].path}")
                    reference, _ = run_artifact(
                        bundle.path_of(floats[0].path), labels, images, threads
                    )
                    reference_name = floats[0].path
                    break

        reports = []
        for item in chosen:
            say.stage(f"verifying {item.path} on {len(items)} images")
            reports.append(
                verify_artifact(
                    f"{item.format}-{item.precision}",
                    bundle.path_of(item.path),
                    labels,
                    images,
                    truth,
                    reference,
                    threads,
                    options,
                )
            )
        smoke = _smoke_tests(bundle, chosen, threads, say)
        recorded = {a.path: a.accuracy for a in manifest.artifacts}
        sizes = {a.path: a.bytes for a in manifest.artifacts}
    return BundleVerification(
        source=description,
        count=len(items),
        reference=reference_name,
        reference_accuracy=(
            Scores.of(reference, truth, labels).accuracy if reference is not None else None
        ),
        reports=reports,
        recorded=recorded,
        sizes=sizes,
        smoke=smoke,
    )
