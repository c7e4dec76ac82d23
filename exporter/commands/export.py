"""``edge-export export``: convert a trained run to TFLite and ONNX, verify, and bundle."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter.commands.common import GATE_HELP, add_gate_arguments, gate_options

EXAMPLE = """\
example:
  edge-export export runs/signs --out bundles/signs --name traffic-signs --version 3
  edge-export export runs/signs --out bundles/signs --name traffic-signs --version 4 \\
      --formats tflite-int8,onnx-fp32 --calibration-images 200 --tar --force

formats: tflite-fp32, tflite-fp16, tflite-dynamic, tflite-int8 (uint8 in/out, full integer),
         onnx-fp32, onnx-int8 (QDQ, float in/out). Default: all six.
Each artifact runs through the device runtime on the run's held-out split and must pass the
accuracy gate against the float Keras model; when one fails, the export stops and writes nothing.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="quantize, export TFLite/ONNX, verify every artifact and write a model bundle",
        description="Convert the model of a training run directory to TFLite and ONNX, verify "
        "each file through the device runtime, and write a model bundle.",
        epilog=EXAMPLE + "\n" + GATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by train")
    parser.add_argument("--out", required=True, metavar="BUNDLE_DIR", help="bundle directory")
    parser.add_argument("--name", required=True, help="bundle name, e.g. traffic-signs")
    parser.add_argument(
        "--version",
        required=True,
        dest="bundle_version",
        metavar="V",
        help="bundle version: a positive integer that grows with every release",
    )
    parser.add_argument(
        "--formats",
        default=",".join(_formats()),
        metavar="LIST",
        help="comma-separated formats to export (default: all six)",
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=100,
        metavar="N",
        help="training images (stratified by class) that calibrate int8 (default 100)",
    )
    add_gate_arguments(
        parser, allow_help="bundle artifacts that fail the accuracy gate anyway (with a warning)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="default minimum confidence; below it the device reports 'unknown' (default 0.5)",
    )
    parser.add_argument(
        "--profiles",
        default="",
        metavar="LIST",
        help="device profiles the bundle is meant for, comma-separated (default: any)",
    )
    parser.add_argument(
        "--samples-per-class",
        type=int,
        default=2,
        metavar="N",
        help="held-out images per class copied into samples/ for the device smoke test",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument(
        "--threads", type=int, default=0, help="inference threads while verifying (0 = all)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")
    parser.add_argument("--tar", action="store_true", help="also pack BUNDLE_DIR.tar")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=run)


def _formats() -> tuple[str, ...]:
    from exporter.export.pipeline import DEFAULT_FORMATS

    return DEFAULT_FORMATS


def run(args: argparse.Namespace) -> int:
    from exporter.bundle import check_version
    from exporter.export.pipeline import ExportOptions, export_run, parse_formats
    from exporter.progress import Progress

    gate = gate_options(args)
    options = ExportOptions(
        out=Path(args.out),
        name=args.name,
        version=check_version(args.bundle_version),
        formats=parse_formats(args.formats),
        calibration_images=args.calibration_images,
        max_accuracy_drop=gate.max_accuracy_drop,
        allow_accuracy_drop=gate.allow_accuracy_drop,
        gate_confidence=gate.confidence,
        min_agreement=gate.min_agreement,
        force=args.force,
        tar=args.tar,
        threshold=args.threshold,
        profiles=tuple(p.strip() for p in args.profiles.split(",") if p.strip()),
        samples_per_class=args.samples_per_class,
        opset=args.opset,
        threads=args.threads,
    )
    result = export_run(args.run_dir, options, Progress(quiet=args.quiet or args.json))
    rows = result.rows()
    if args.json:
        print(
            json.dumps(
                {
                    "bundle": str(result.bundle.root),
                    "tar": str(result.tar_path) if result.tar_path else None,
                    "name": result.bundle.manifest.name,
                    "version": result.bundle.manifest.version,
                    "held_out": {"split": result.held_out, "images": result.images},
                    "float_accuracy": result.float_accuracy,
                    "artifacts": rows,
                    "gate_allowed": [d.name for d in result.allowed],
                    "warnings": result.warnings,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"float Keras model: top-1 {result.float_accuracy:.1%} on {result.images} "
        f"{result.held_out} images"
    )
    print(format_table(rows))
    print(
        f"bundle: {result.bundle.root}" + (f"  (and {result.tar_path})" if result.tar_path else "")
    )
    return 0


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary table: artifact, size, top-1, agreement with float, max score diff, latency
    and the accuracy gate's decision."""
    header = ("artifact", "file", "size", "top-1", "agreement", "max diff", "latency", "gate")
    lines = [header]
    for row in rows:
        diff = row.get("max_abs_diff")
        lines.append(
            (
                row["artifact"],
                row.get("file", row["artifact"]),
                _size(row.get("bytes")),
                _percent(row.get("accuracy")),
                _percent(row.get("agreement_with_float")),
                "-" if diff is None else f"{diff:.1e}",
                f"{row['latency_ms']:.2f} ms",
                (row.get("gate") or {}).get("decision", "-"),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines
    )
