"""``edge-export verify``: run a bundle's artifacts on labelled images through the runtime."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXAMPLE = """\
example:
  edge-export verify bundles/signs --data runs/signs        # the run's held-out split, vs Keras
  edge-export verify bundles/signs.tar --data data/signs-2024 --artifact model-int8.tflite
  edge-export verify models/traffic-signs                    # on the bundle's own samples/

DIR is a run directory (its test split; the Keras model is the float reference) or a
class-per-folder dataset (its test/ split when it has one, else every image); without --data the
bundle's own samples/ are used. Without a run directory the bundle's fp32 artifact is the
reference. Exits 1 when an artifact loses more than --max-accuracy-drop points
of top-1 against the reference.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="measure a bundle's artifacts on labelled images through the device runtime",
        description="Run every artifact of a bundle on labelled images with the runtime's own "
        "backends: top-1, agreement with float, largest score difference and latency.",
        epilog=EXAMPLE,
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
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="most top-1 points an artifact may lose against the reference (default 1.0)",
    )
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0 = all)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from exporter.commands.export import format_table
    from exporter.errors import ExportError
    from exporter.export.verify import check_accuracy_gate, verify_bundle
    from exporter.progress import Progress

    result = verify_bundle(
        args.bundle,
        args.data,
        artifacts=args.artifact,
        threads=args.threads,
        progress=Progress(quiet=args.quiet or args.json),
    )
    failure = None
    if result.reference_accuracy is not None:
        try:
            check_accuracy_gate(result.reports, result.reference_accuracy, args.max_accuracy_drop)
        except ExportError as exc:
            failure = str(exc).split(". The limit is")[0]
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
                },
                indent=2,
            )
        )
    else:
        print(f"{result.count} images: {result.source}")
        if result.reference is not None:
            print(f"reference: {result.reference}, top-1 {result.reference_accuracy:.1%}")
        print(format_table(result.rows()))
    if failure:
        raise ExportError(
            f"{failure}; the limit is {args.max_accuracy_drop:g} points (--max-accuracy-drop)"
        )
    return 0
