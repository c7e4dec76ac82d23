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
from pathlib import Path
from typing import Any

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
from exporter.export.metadata import ModelFacts
from exporter.export.rundir import RunDirectory, load_run_directory
from exporter.export.verify import ArtifactReport, Scores, check_accuracy_gate, verify_artifact
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
DEFAULT_MAX_ACCURACY_DROP = 1.0
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


def _timed(say: Progress, label: str, action: Callable[[], Any]) -> Any:
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
    force: bool = False
    tar: bool = False
    threshold: float = DEFAULT_THRESHOLD
    profiles: tuple[str, ...] = ()
    samples_per_class: int = 2
    opset: int = 17
    threads: int = 0
    seed: int = 0


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
    if not options.max_accuracy_drop >= 0:
        raise ExportError(f"--max-accuracy-drop must be >= 0, got {options.max_accuracy_drop}")
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


def load_keras_model(run: RunDirectory) -> Any:
    """The run's Keras model, checked against its labels and input size.

    Raises:
        ExportError: it cannot be loaded or does not fit the run's labels or input size.
    """
    import keras

    try:
        model = keras.saving.load_model(run.model_path)
    except Exception as exc:  # Keras raises many kinds for a bad file
        raise ExportError(f"cannot load {run.model_path}: {exc}") from exc
    outputs = model.outputs[0].shape[-1]
    if outputs != len(run.labels):
        raise ExportError(
            f"{run.model_path} outputs {outputs} scores but labels.txt has {len(run.labels)} labels"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if shape != (run.height, run.width, 3):
        raise ExportError(
            f"{run.model_path} takes input {shape} but run.json says input_size "
            f"[{run.height}, {run.width}]"
        )
    return model


def float_probabilities(model: Any, images: np.ndarray) -> np.ndarray:
    """The Keras model's probabilities on prepared uint8 images (fed as float32 pixels 0..255)."""
    return np.asarray(
        model.predict(images.astype(np.float32), batch_size=32, verbose=0), dtype=np.float32
    )


def export_run(
    run_dir: str | Path, options: ExportOptions, progress: Progress | None = None
) -> ExportResult:
    """Export, verify and bundle the model of a run directory.

    Raises:
        ExportError: bad options or run directory, a conversion failed, or the bundle cannot be
            written. AccuracyGateError (an ExportError): an artifact lost more top-1 than allowed.
            In every case nothing is written.
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
        resize=run.resize,
        interpolation=run.interpolation,
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
                lambda fmt=fmt: _convert(fmt, model, facts, work, calibration, options.opset),
            )
            report = _timed(
                say,
                f"{step}: verifying on {len(items)} images through the runtime",
                lambda fmt=fmt, path=path: verify_artifact(
                    fmt.key, path, run.labels, images, truth, reference, options.threads
                ),
            )
            say.note(
                f"{step}: {path.stat().st_size / 1e6:.2f} MB, top-1 {report.accuracy:.1%}, "
                f"agreement {report.agreement_with_float:.1%}, {report.latency_ms:.2f} ms"
            )
            reports.append(report)
            artifacts.append(_bundled(fmt, path, len(run.labels), report))

        if options.allow_accuracy_drop:
            try:
                check_accuracy_gate(reports, float_scores.accuracy, options.max_accuracy_drop)
            except ExportError as exc:
                say.stage(f"warning (allowed by --allow-accuracy-drop): {exc}")
        else:
            check_accuracy_gate(reports, float_scores.accuracy, options.max_accuracy_drop)

        samples = choose_samples(items, run.labels, options.samples_per_class, options.seed)
        manifest = build_manifest(
            name=options.name,
            version=options.version,
            labels=run.labels,
            input_description={
                "height": run.height,
                "width": run.width,
                "color": "RGB",
                "resize": run.resize,
                "interpolation": run.interpolation,
            },
            artifacts=artifacts,
            training=_training(
                run, options, held_out, len(items), float_scores, reports, calibration_count
            ),
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
    return ExportResult(
        bundle=bundle,
        tar_path=tar_path,
        float_accuracy=float_scores.accuracy,
        held_out=held_out,
        images=len(items),
        reports=reports,
        artifacts=artifacts,
    )


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
) -> dict[str, Any]:
    info = run.run
    validation = info.get("validation_accuracy")
    settings = (
        "input_size",
        "resize",
        "interpolation",
        "fine_tune_layers",
        "batch_size",
        "learning_rate",
        "seed",
        "group_pattern",
        "test_accuracy",
        "created",
        "versions",
    )
    details: dict[str, Any] = {key: info[key] for key in settings if key in info}
    details["export"] = {
        "verified_on": f"{held_out} split, {count} images",
        "float_accuracy": round(float_scores.accuracy, 6),
        "calibration_images": calibration_count,
        "max_accuracy_drop_points": options.max_accuracy_drop,
        "allow_accuracy_drop": options.allow_accuracy_drop,
        "onnx_opset": options.opset,
        "artifacts": {r.key: r.details() for r in reports},
    }
    return {
        "architecture": str(info.get("arch", "unknown")),
        "weights": str(info.get("weights", "unknown")),
        "dataset_fingerprint": str(info.get("dataset_fingerprint", "")),
        "epochs": int(info.get("epochs", 0) or 0),
        "validation_accuracy": (
            float(validation) if isinstance(validation, (int, float)) else None
        ),
        "details": details,
    }
