"""``edge-export export``: run directory -> converted, verified artifacts -> model bundle.

Order: check every precondition (cheap), load the Keras model and the held-out images, convert
each requested format into a private work directory, verify each artifact through the device
runtime, apply the accuracy gate, and only then write the bundle atomically. A failure at any
step leaves nothing behind: no bundle directory, no partial files.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edge_runtime.bundle import Bundle
from exporter.bundle import (
    BundledArtifact,
    build_manifest,
    check_destination,
    check_name,
    check_version,
    choose_samples,
    write_model_bundle,
)
from exporter.dataset import load_images
from exporter.errors import ExportError
from exporter.export.gate import (
    DEFAULT_GATE_CONFIDENCE,
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_MIN_AGREEMENT,
    GateDecision,
    GateOptions,
    gate_message,
)
from exporter.export.metadata import ModelFacts
from exporter.export.reference import float_probabilities, load_keras_model
from exporter.export.rundir import RunDirectory, load_run_directory
from exporter.export.verify import (
    ArtifactReport,
    Scores,
    check_accuracy_gate,
    gate_warnings,
    verify_artifact,
)
from exporter.progress import QUIET, Progress
from exporter.quantize import calibration_paths


@dataclass(frozen=True)
class ExportFormat:
    """One kind of artifact: its file format, precision and file name in the bundle."""

    key: str
    format: str
    precision: str
    filename: str
    input_dtype: str
    needs_calibration: bool = False


FORMATS: dict[str, ExportFormat] = {
    f.key: f
    for f in (
        ExportFormat("tflite-fp32", "tflite", "fp32", "model-fp32.tflite", "float32"),
        ExportFormat("tflite-fp16", "tflite", "fp16", "model-fp16.tflite", "float32"),
        ExportFormat("tflite-dynamic", "tflite", "dynamic", "model-dynamic.tflite", "float32"),
        ExportFormat("tflite-int8", "tflite", "int8", "model-int8.tflite", "uint8", True),
        ExportFormat("onnx-fp32", "onnx", "fp32", "model-fp32.onnx", "float32"),
        ExportFormat("onnx-int8", "onnx", "int8", "model-int8.onnx", "float32", True),
    )
}
DEFAULT_FORMATS = tuple(FORMATS)
DEFAULT_CALIBRATION_IMAGES = 100
DEFAULT_THRESHOLD = 0.5


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """Format keys from ``'tflite-fp32,onnx-int8'`` (or a list), in the canonical order.

    Raises:
        ExportError: empty, or a format that does not exist.
    """
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    if not items:
        raise ExportError(f"--formats is empty; choose from {', '.join(FORMATS)}")
    unknown = [t for t in items if t not in FORMATS]
    if unknown:
        raise ExportError(f"unknown format '{unknown[0]}' (choose from {', '.join(FORMATS)})")
    return tuple(key for key in FORMATS if key in items)


T = TypeVar("T")


def _timed(say: Progress, label: str, action: Callable[[], T]) -> T:
    """Run ``action`` announced as a stage, then note how long it took."""
    say.stage(label)
    start = time.perf_counter()
    result = action()
    say.note(f"done in {time.perf_counter() - start:.1f} s")
    return result


@dataclass(frozen=True)
class ExportOptions:
    """Everything ``edge-export export`` takes besides the run directory."""

    out: Path
    name: str
    version: int
    formats: tuple[str, ...] = DEFAULT_FORMATS
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    allow_accuracy_drop: bool = False
    gate_confidence: float = DEFAULT_GATE_CONFIDENCE
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    force: bool = False
    tar: bool = False
    threshold: float = DEFAULT_THRESHOLD
    profiles: tuple[str, ...] = ()
    samples_per_class: int = 2
    opset: int = 17
    threads: int = 0
    seed: int = 0

    @property
    def gate(self) -> GateOptions:
        """The accuracy gate's settings."""
        return GateOptions(
            max_accuracy_drop=self.max_accuracy_drop,
            confidence=self.gate_confidence,
            min_agreement=self.min_agreement,
            allow_accuracy_drop=self.allow_accuracy_drop,
        )


@dataclass
class ExportResult:
    """What an export produced."""

    bundle: Bundle
    tar_path: Path | None
    float_accuracy: float
    held_out: str
    images: int
    reports: list[ArtifactReport] = field(default_factory=list)
    artifacts: list[BundledArtifact] = field(default_factory=list)
    #: gate failures bundled anyway under --allow-accuracy-drop
    allowed: list[GateDecision] = field(default_factory=list)
    #: what the gate could not tell (too few images, a drop too small to be significant)
    warnings: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One summary row per artifact (for the table and ``--json``)."""
        rows = []
        for report, artifact in zip(self.reports, self.artifacts):
            entry = self.bundle.manifest.artifact(artifact.path)
            rows.append(
                {
                    "artifact": report.key,
                    "file": artifact.path,
                    "bytes": entry.bytes,
                    "accuracy": report.accuracy,
                    "agreement_with_float": report.agreement_with_float,
                    "max_abs_diff": report.max_abs_diff,
                    "latency_ms": report.latency_ms,
                    "gate": report.gate.to_json() if report.gate is not None else None,
                }
            )
        return rows


def check_options(options: ExportOptions) -> ExportOptions:
    """Validate options before any work.

    Raises:
        ExportError: a bad name, version, format, limit or destination.
    """
    check_name(options.name)
    formats = parse_formats(options.formats)
    if options.calibration_images < 1:
        raise ExportError(
            f"--calibration-images must be at least 1, got {options.calibration_images}"
        )
    options.gate.check()
    if not 0.0 <= options.threshold <= 1.0:
        raise ExportError(f"--threshold must be between 0 and 1, got {options.threshold}")
    if options.samples_per_class < 0:
        raise ExportError("samples per class must be 0 or more")
    if options.opset < 13:
        raise ExportError(
            f"--opset must be 13 or more (per-channel int8 needs it), got {options.opset}"
        )
    check_destination(options.out, options.force, options.tar)
    return replace(options, version=check_version(options.version), formats=formats)


def export_run(
    run_dir: str | Path, options: ExportOptions, progress: Progress | None = None
) -> ExportResult:
    """Export, verify and bundle the model of a run directory.

    Raises:
        ExportError: bad options or run directory, a conversion failed, or the bundle cannot be
            written. AccuracyGateError (an ExportError): an artifact failed the accuracy gate
            (and ``allow_accuracy_drop`` is off). In every case nothing is written.
    """
    say = progress or QUIET
    options = check_options(options)
    run = load_run_directory(run_dir)
    held_out, items = run.held_out()
    spec = run.preprocess_spec()
    wanted = [FORMATS[key] for key in options.formats]
    # Chosen before the slow work so an empty training split is reported at once.
    calibration_files = (
        calibration_paths(run.split("train"), options.calibration_images, options.seed)
        if any(f.needs_calibration for f in wanted)
        else []
    )

    model = _timed(say, f"loading {run.model_path}", lambda: load_keras_model(run))
    images = _timed(
        say,
        f"preparing {len(items)} {held_out} images",
        lambda: load_images([p for p, _ in items], spec, progress=say, desc="held-out images"),
    )
    truth = np.array([run.labels.index(label) for _, label in items])
    reference = float_probabilities(model, images)
    float_scores = Scores.of(reference, truth, run.labels)
    say.note(
        f"float Keras model: top-1 {float_scores.accuracy:.1%} on {len(items)} {held_out} images"
    )

    calibration = None
    calibration_count = len(calibration_files)
    if calibration_files:
        calibration = _timed(
            say,
            f"preparing {calibration_count} calibration images (stratified, training split)",
            lambda: load_images(calibration_files, spec, progress=say, desc="calibration images"),
        )

    facts = ModelFacts(
        name=options.name,
        version=options.version,
        labels=run.labels,
        height=run.height,
        width=run.width,
        resize=run.input.resize,
        interpolation=run.input.interpolation,
    )
    work = Path(tempfile.mkdtemp(prefix="edge-export-"))
    try:
        artifacts: list[BundledArtifact] = []
        reports: list[ArtifactReport] = []
        for number, fmt in enumerate(wanted, 1):
            step = f"[{number}/{len(wanted)}] {fmt.key}"
            path = _timed(
                say,
                f"{step}: converting",
                partial(_convert, fmt, model, facts, work, calibration, options.opset),
            )
            report = _timed(
                say,
                f"{step}: verifying on {len(items)} images through the runtime",
                partial(
                    verify_artifact,
                    fmt.key,
                    path,
                    run.labels,
                    images,
                    truth,
                    reference,
                    options.threads,
                    options.gate,
                ),
            )
            assert report.gate is not None  # there is a float reference
            say.note(
                f"{step}: {path.stat().st_size / 1e6:.2f} MB, {report.gate.summary()}, "
                f"{report.latency_ms:.2f} ms: gate {report.gate.decision}"
            )
            reports.append(report)
            artifacts.append(_bundled(fmt, path, len(run.labels), report))

        allowed = check_accuracy_gate(reports, options.gate, writes=True)
        warnings = gate_warnings(reports)
        for warning in warnings:
            say.warn(warning)

        samples = choose_samples(
            items,
            run.labels,
            options.samples_per_class,
            options.seed,
            margins=sample_margins(truth, [r.probabilities for r in reports]),
        )
        if options.samples_per_class:
            missing = sorted(set(run.labels) - {label for _, label, _ in samples})
            if missing:
                say.warn(
                    f"no held-out image of {', '.join(missing)} was classified right by every "
                    "artifact: the bundle's smoke test (samples/) has none of "
                    + ("that class" if len(missing) == 1 else "those classes")
                )
        manifest = build_manifest(
            name=options.name,
            version=options.version,
            labels=run.labels,
            input_description=run.input.model_dump(),
            artifacts=artifacts,
            training=_training(
                run, options, held_out, len(items), float_scores, reports, calibration_count,
                warnings,
            ),  # fmt: skip
            threshold=options.threshold,
            profiles=options.profiles,
            samples=samples,
        )
        bundle, tar_path = _timed(
            say,
            f"writing bundle {options.out}",
            lambda: write_model_bundle(
                options.out, manifest, artifacts, samples, force=options.force, tar=options.tar
            ),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if allowed:
        say.warn(gate_message(allowed, "bundled"))
    return ExportResult(
        bundle=bundle,
        tar_path=tar_path,
        float_accuracy=float_scores.accuracy,
        held_out=held_out,
        images=len(items),
        reports=reports,
        artifacts=artifacts,
        allowed=allowed,
        warnings=warnings,
    )


def sample_margins(truth: np.ndarray, probabilities: Sequence[np.ndarray | None]) -> np.ndarray:
    """Per held-out image, the smallest margin by which any artifact put the true class ahead
    of the next best one (negative: some artifact got it wrong).

    The bundle's ``samples/`` are the device's smoke test: they must be images every artifact
    gets right with room to spare, so that int8 kernels that round differently on another CPU
    cannot flip one and refuse a good bundle.
    """
    margins = np.full(len(truth), np.inf)
    rows = np.arange(len(truth))
    for scores in probabilities:
        if scores is None:
            continue
        true_scores = scores[rows, truth]
        others = scores.copy()
        others[rows, truth] = -np.inf
        margins = np.minimum(margins, true_scores - others.max(axis=1))
    return margins


def _convert(
    fmt: ExportFormat,
    model: Any,
    facts: ModelFacts,
    work: Path,
    calibration: np.ndarray | None,
    opset: int,
) -> Path:
    dest = work / fmt.filename
    if fmt.format == "tflite":
        from exporter.export.tflite import export_tflite

        return export_tflite(model, fmt.precision, facts, dest, calibration)
    from exporter.export.onnx import export_onnx_fp32, export_onnx_int8

    fp32 = work / FORMATS["onnx-fp32"].filename
    if not fp32.exists():
        export_onnx_fp32(model, facts, fp32, opset)
    if fmt.precision == "fp32":
        return fp32
    assert calibration is not None
    return export_onnx_int8(fp32, facts, dest, calibration, work)


def _bundled(
    fmt: ExportFormat, path: Path, output_size: int, report: ArtifactReport
) -> BundledArtifact:
    opset = None
    input_dtype = fmt.input_dtype
    if fmt.format == "onnx":
        from exporter.export.onnx import onnx_opset

        opset = onnx_opset(path)
    else:
        from exporter.export.tflite import input_quantization

        input_dtype = input_quantization(path.read_bytes())[0]
    return BundledArtifact(
        source=path,
        path=fmt.filename,
        format=fmt.format,
        precision=fmt.precision,
        input_dtype=input_dtype,
        output_size=output_size,
        opset=opset,
        accuracy=report.accuracy,
        agreement_with_float=report.agreement_with_float,
        latency_ms=report.latency_ms,
    )


def _training(
    run: RunDirectory,
    options: ExportOptions,
    held_out: str,
    count: int,
    float_scores: Scores,
    reports: Sequence[ArtifactReport],
    calibration_count: int,
    warnings: Sequence[str],
) -> dict[str, Any]:
    info = run.run
    details: dict[str, Any] = {
        "input_size": [info.input.height, info.input.width],
        "resize": info.input.resize,
        "interpolation": info.input.interpolation,
        "fine_tune_layers": info.fine_tune_layers,
        "batch_size": info.batch_size,
        "learning_rate": info.learning_rate,
        "seed": info.seed,
        "group_pattern": info.group_pattern,
        "test_accuracy": info.test_accuracy,
        "created": info.created,
        "versions": info.versions,
    }
    details["export"] = {
        "verified_on": f"{held_out} split, {count} images",
        "float_accuracy": round(float_scores.accuracy, 6),
        "calibration_images": calibration_count,
        "max_accuracy_drop_points": options.max_accuracy_drop,
        "allow_accuracy_drop": options.allow_accuracy_drop,
        "gate": {
            **options.gate.to_json(),
            "test": "one-sided exact McNemar (binomial) test on the discordant images (right "
            "in exactly one of float and the artifact); Bonferroni over classes for collapse",
            "decisions": {r.key: r.gate.decision for r in reports if r.gate is not None},
            "warnings": list(warnings),
        },
        "onnx_opset": options.opset,
        "artifacts": {r.key: r.details() for r in reports},
    }
    return {
        "architecture": info.arch,
        "weights": info.weights,
        "dataset_fingerprint": info.dataset_fingerprint,
        "epochs": info.epochs,
        "validation_accuracy": info.validation_accuracy,
        "details": details,
    }
