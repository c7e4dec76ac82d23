"""Verification: run every exported artifact through the device runtime and compare it to float.

Artifacts run through ``edge_runtime.model.load_model``, the same loading, preprocessing and
backends (LiteRT, ONNX Runtime) the device uses, on held-out images prepared by
``edge_runtime.preprocess``. Measured per artifact: top-1 accuracy, agreement of top-1 with the
float Keras model, the largest score difference, per-class accuracy change and median latency.
The accuracy gate compares each artifact's top-1 with the float model's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import AccuracyGateError

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
    """What verification measured for one artifact."""

    key: str
    path: Path
    count: int
    accuracy: float
    per_class: dict[str, float]
    latency_ms: float
    agreement_with_float: float | None = None
    max_abs_diff: float | None = None
    per_class_change: dict[str, float] = field(default_factory=dict)  # points vs float

    def drop_points(self, reference_accuracy: float) -> float:
        """How many points of top-1 this artifact loses against the reference."""
        return (reference_accuracy - self.accuracy) * 100.0

    def worst_classes(self, count: int = 3) -> list[tuple[str, float]]:
        """The classes that lost most against float, as (label, change in points)."""
        ranked = sorted(self.per_class_change.items(), key=lambda kv: kv[1])
        return [(label, change) for label, change in ranked[:count] if change < 0]

    def details(self) -> dict[str, Any]:
        """JSON-ready details beyond the manifest's artifact fields."""
        return {
            "images": self.count,
            "accuracy": round(self.accuracy, 6),
            "agreement_with_float": _round(self.agreement_with_float),
            "max_abs_score_diff": _round(self.max_abs_diff, 8),
            "latency_ms": round(self.latency_ms, 4),
            "per_class_accuracy_change_points": {
                k: round(v, 3) for k, v in self.per_class_change.items()
            },
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

    model = load_model(path, labels=list(labels), options=BackendOptions(threads=threads))
    try:
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
    finally:
        close = getattr(model, "close", None)
        if close is not None:
            close()
    return probabilities, float(np.median(times))


def verify_artifact(
    key: str,
    path: Path,
    labels: Sequence[str],
    images: np.ndarray,
    truth: np.ndarray,
    reference: np.ndarray | None = None,
    threads: int = 0,
) -> ArtifactReport:
    """Run one artifact on the held-out images and compare it with the float ``reference``
    probabilities (when given).

    Raises:
        EdgeRuntimeError: the runtime cannot load or run the model.
    """
    probabilities, latency = run_artifact(path, labels, images, threads)
    scores = Scores.of(probabilities, truth, labels)
    report = ArtifactReport(
        key=key,
        path=path,
        count=len(truth),
        accuracy=scores.accuracy,
        per_class=scores.per_class,
        latency_ms=latency,
    )
    if reference is not None:
        ref = Scores.of(reference, truth, labels)
        report.agreement_with_float = float(np.mean(scores.predictions == ref.predictions))
        report.max_abs_diff = float(np.max(np.abs(probabilities - reference)))
        report.per_class_change = {
            label: (scores.per_class[label] - ref.per_class[label]) * 100.0
            for label in ref.per_class
        }
    return report


def check_accuracy_gate(
    reports: Sequence[ArtifactReport], float_accuracy: float, max_drop_points: float
) -> None:
    """Raise when any artifact loses more than ``max_drop_points`` of top-1 against float.

    Raises:
        AccuracyGateError: one line naming each failing artifact, its drop and its worst classes.
    """
    failures = []
    for report in reports:
        drop = report.drop_points(float_accuracy)
        if drop > max_drop_points + 1e-9:
            worst = ", ".join(f"{label} {change:+.1f}" for label, change in report.worst_classes())
            failures.append(
                f"{report.key} ({report.path.name}) loses {drop:.1f} points of top-1 "
                f"(float {float_accuracy:.1%}, {report.key} {report.accuracy:.1%}"
                + (f"; worst classes: {worst}" if worst else "")
                + ")"
            )
    if failures:
        raise AccuracyGateError(
            "; ".join(failures)
            + f". The limit is {max_drop_points:g} points: nothing was written. Use more or more "
            "representative --calibration-images, drop that format from --formats, raise "
            "--max-accuracy-drop, or pass --allow-accuracy-drop to bundle it anyway."
        )


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
            }
            for r in self.reports
        ]


def _labelled_images(data: Path, labels: Sequence[str]) -> tuple[str, list[tuple[Path, str]]]:
    """``(description, items)`` of a run directory's held-out split or a class-folder dataset."""
    from exporter.dataset import scan_dataset
    from exporter.errors import ExportError
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


def verify_bundle(
    bundle_path: str | Path,
    data: str | Path | None,
    *,
    artifacts: Sequence[str] = (),
    threads: int = 0,
    progress: Any = None,
) -> BundleVerification:
    """Run a bundle's artifacts on labelled images through the device runtime.

    ``data`` is a run directory (its held-out split is used, and the Keras model in it is the
    float reference), a class-per-folder dataset (its ``test`` split when it has split folders,
    else every image), or None for the bundle's own ``samples/``; without a run directory the
    bundle's fp32 artifact is the reference when it has one.

    Raises:
        ExportError: the bundle, the data or the labels do not fit.
        EdgeRuntimeError: an artifact cannot be loaded or run.
    """
    from edge_runtime.bundle import load_bundle
    from exporter.dataset import load_images
    from exporter.errors import ExportError
    from exporter.progress import QUIET

    say = progress or QUIET
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
            from exporter.export.pipeline import float_probabilities, load_keras_model
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
                )
            )
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
    )
