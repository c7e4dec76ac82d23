"""``edge-export verify``: run a bundle's artifacts on labelled images through the runtime."""

from __future__ import annotations

import argparse
import json
from typing import Any

from exporter.commands.common import GATE_HELP, add_gate_arguments, gate_options

EXAMPLE = """\
example:
  edge-export verify bundles/signs --data runs/signs        # the run's held-out split, vs Keras
  edge-export verify bundles/signs.tar --data data/signs-2024 --artifact model-int8.tflite
  edge-export verify models/traffic-signs                    # on the bundle's own samples/

DIR is a run directory (its test split; the Keras model is the float reference) or a
class-per-folder dataset (its test/ split when it has one, else every image); without --data the
bundle's own samples/ are used. Without a run directory the bundle's fp32 artifact is the
reference. Every artifact also runs the device's smoke test on the bundle's samples/ (each must
get its label, as a device checks after an update). Exits 1 when an artifact fails the accuracy
gate (unless --allow-accuracy-drop) or the smoke test.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="measure a bundle's artifacts on labelled images through the device runtime",
        description="Run every artifact of a bundle on labelled images with the runtime's own "
        "backends: top-1, agreement with float, largest score difference and latency, judged by "
        "the same accuracy gate as export; then the device's smoke test on samples/.",
        epilog=EXAMPLE + "\n" + GATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar")
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="run directory or dataset folder (default: the bundle's own samples/)",
    )
    parser.add_argument(
        "--artifact",
        action="append",
        default=[],
        metavar="FILE",
        help="verify only this artifact (repeatable)",
    )
    add_gate_arguments(
        parser, allow_help="report artifacts that fail the accuracy gate but exit 0 (a warning)"
    )
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0 = all)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from exporter.commands.export import format_table
    from exporter.errors import AccuracyGateError, ExportError
    from exporter.export.gate import gate_message
    from exporter.export.verify import gate_failures, gate_warnings, verify_bundle
    from exporter.progress import Progress

    gate = gate_options(args)
    progress = Progress(quiet=args.quiet or args.json)
    result = verify_bundle(
        args.bundle,
        args.data,
        artifacts=args.artifact,
        threads=args.threads,
        gate=gate,
        progress=progress,
    )
    failures = gate_failures(result.reports)
    failure = gate_message(failures, "checked") if failures else None
    smoke_failures = result.smoke_failures()
    if args.json:
        print(
            json.dumps(
                {
                    "data": result.source,
                    "images": result.count,
                    "reference": result.reference,
                    "reference_accuracy": result.reference_accuracy,
                    "artifacts": result.rows(),
                    "failure": failure,
                    "allowed": bool(failures) and gate.allow_accuracy_drop,
                    "warnings": gate_warnings(result.reports),
                    "smoke": [s.to_json() for s in result.smoke],
                },
                indent=2,
            )
        )
    else:
        print(f"{result.count} images: {result.source}")
        if result.reference is not None:
            print(f"reference: {result.reference}, top-1 {result.reference_accuracy:.1%}")
        print(format_table(result.rows()))
        for smoke in result.smoke:
            print(f"smoke test: {smoke.summary()}")
    for warning in gate_warnings(result.reports):
        progress.warn(warning)
    if smoke_failures:
        raise ExportError(
            "; ".join(s.summary() for s in smoke_failures)
            + ": a device would refuse this bundle after installing it"
        )
    if failure and not gate.allow_accuracy_drop:
        raise AccuracyGateError(failure)
    if failure:
        progress.warn(failure + " (allowed by --allow-accuracy-drop)")
    return 0
