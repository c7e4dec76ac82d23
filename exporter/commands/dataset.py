"""``edge-export dataset``: render synthetic datasets, report on image folders, import field
frames."""

from __future__ import annotations

import argparse
import json
from typing import Any

from exporter.errors import DatasetError

SYNTH_EXAMPLE = """\
example:
  edge-export dataset synth --scenario traffic-signs --out data/signs --per-class 200 --size 96
"""

REPORT_EXAMPLE = """\
examples:
  edge-export dataset report data/signs
  edge-export dataset report data/gtsrb --group-pattern '^(\\d+_\\d+)_' --json
"""


DATASET_EXAMPLES = """\
examples:
  edge-export dataset synth --scenario banknotes --out data/notes --per-class 200 --size 32
  edge-export dataset report data/notes
  edge-export dataset report data/gtsrb --group-pattern '^(\\d+_\\d+)_' --json
  edge-export dataset import field/ --into data/notes --label-map 'blurry=,fake=counterfeit'

Each action has its own --help with more.
"""

IMPORT_EXAMPLES = """\
examples:
  edge-export dataset import field/ --into data/notes
  edge-export dataset import field/ --into data/notes --label-map 'unknown=empty,blurry='

field/ is what `edge-runtime run --collect field/` saved on a device, reviewed: each picture
moved into the folder of its true class (or deleted). unknown/ is left out unless mapped; a
FOLDER= entry drops a folder. Nothing is moved or overwritten. A dataset with train/ val/ test/
gets each capture group into one split; a plain one gets field-<group>_... names: train with
--group-pattern '^field-([^_]+)_' to keep each group on one side of the split.
"""


def parse_fractions(text: str) -> tuple[float, float, float]:
    """Parse ``--split 0.7,0.15,0.15``.

    Raises:
        DatasetError: not three numbers.
    """
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise DatasetError(f"--split must be three fractions like 0.7,0.15,0.15, got '{text}'")
    return (values[0], values[1], values[2])


def add_split_options(
    parser: argparse.ArgumentParser, seed_help: str = "random seed of the split (default 0)"
) -> None:
    """Options that decide how a dataset is split (shared with ``edge-export train``)."""
    parser.add_argument(
        "--split",
        default="0.7,0.15,0.15",
        metavar="TRAIN,VAL,TEST",
        help="fractions of each class for train, val and test (default 0.7,0.15,0.15); "
        "ignored where DATA has train/, val/ and test/ folders",
    )
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument(
        "--group-pattern",
        metavar="REGEX",
        help="regular expression on file names whose first group (or whole match) names a group "
        "of near-duplicates kept on one side of the split, e.g. '^(\\d+_\\d+)_' for GTSRB tracks",
    )
    parser.add_argument(
        "--min-per-class",
        type=int,
        default=10,
        metavar="N",
        help="flag classes with fewer images than this in the report (default 10)",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dataset",
        help="render synthetic datasets, report on image folders",
        description="Render labelled synthetic datasets, check class-per-folder datasets, and "
        "import reviewed field frames into one.",
        epilog=DATASET_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION")
    parser.set_defaults(handler=lambda args: _help(parser))

    synth = sub.add_parser(
        "synth",
        help="render a labelled dataset of a synthetic scenario into class folders",
        description="Render labelled images of a synthetic scenario into DIR/<class>/ (PNG), with "
        "the renderer the runtime's synthetic source uses. The same seed gives the same files.",
        epilog=SYNTH_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    synth.add_argument(
        "--scenario", required=True, help="scenario to render: traffic-signs or banknotes"
    )
    synth.add_argument("--out", required=True, metavar="DIR", help="folder to write (empty)")
    synth.add_argument("--per-class", type=int, default=100, metavar="N", help="images per class")
    synth.add_argument("--size", type=int, default=96, metavar="S", help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--jpeg-quality",
        type=int,
        metavar="Q",
        help="write JPEG files at this quality (1..100) instead of PNG, like a camera",
    )
    synth.add_argument("--force", action="store_true", help="write into a non-empty folder")
    synth.add_argument("--quiet", action="store_true", help="no progress output")
    synth.set_defaults(handler=run_synth)

    report = sub.add_parser(
        "report",
        help="class counts, imbalance, split sizes and unreadable files of a dataset",
        description="Decode every image of a dataset folder and report class counts, imbalance, "
        "the train/val/test split training would use, and files that cannot be read.",
        epilog=REPORT_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("data", metavar="DIR", help="dataset folder (one folder per class)")
    add_split_options(report)
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--quiet", action="store_true", help="no progress output")
    report.set_defaults(handler=run_report)

    field = sub.add_parser(
        "import",
        help="merge reviewed field frames (edge-runtime --collect) into a dataset",
        description="Copy reviewed field frames into a class-folder dataset, each capture group "
        "kept on one side of the train/test split.",
        epilog=IMPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    field.add_argument("source", metavar="DIR", help="the collect folder, reviewed")
    field.add_argument("--into", required=True, metavar="DATASET", help="the dataset folder")
    field.add_argument(
        "--label-map",
        metavar="F=C,...",
        help="collect folder -> dataset class, e.g. 'unknown=empty,fake=counterfeit'; "
        "'F=' drops a folder",
    )
    field.add_argument(
        "--split",
        default="0.7,0.15,0.15",
        metavar="TRAIN,VAL,TEST",
        help="shares of capture groups per split where DATASET has train/ val/ test/",
    )
    field.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    field.add_argument("--json", action="store_true", help="print the summary as JSON")
    field.set_defaults(handler=run_import)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_synth(args: argparse.Namespace) -> int:
    from exporter.dataset import synthesize_dataset
    from exporter.progress import Progress

    progress = Progress(quiet=args.quiet)
    summary = synthesize_dataset(
        args.scenario,
        args.out,
        per_class=args.per_class,
        size=args.size,
        seed=args.seed,
        jpeg_quality=args.jpeg_quality,
        force=args.force,
        progress=progress,
    )
    print(
        f"wrote {summary.images} images of {len(summary.labels)} classes "
        f"({', '.join(summary.labels)}) to {summary.out}"
    )
    return 0


def run_report(args: argparse.Namespace) -> int:
    from exporter.dataset import prepare_dataset
    from exporter.progress import Progress

    prepared = prepare_dataset(
        args.data,
        None,
        fractions=parse_fractions(args.split),
        seed=args.seed,
        group_pattern=args.group_pattern,
        min_per_class=args.min_per_class,
        progress=Progress(quiet=args.quiet or args.json),
    )
    if args.json:
        data = prepared.report.to_json()
        data["dataset_fingerprint"] = prepared.fingerprint
        print(json.dumps(data, indent=2))
    else:
        print(prepared.report.to_text())
    return 0


def run_import(args: argparse.Namespace) -> int:
    import dataclasses

    from exporter.dataset import check_fractions
    from exporter.field import GROUP_PATTERN, import_field_frames, parse_label_map

    summary = import_field_frames(
        args.source,
        args.into,
        label_map=parse_label_map(args.label_map),
        fractions=check_fractions(parse_fractions(args.split)),
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(summary), indent=2))
        return 0
    classes = ", ".join(f"{label} {n}" for label, n in sorted(summary.by_class.items()))
    print(
        f"imported {summary.imported} frames in {summary.groups} capture groups into "
        f"{args.into}" + (f" ({classes})" if classes else "")
    )
    if summary.by_split:
        print("splits: " + ", ".join(f"{k} {v}" for k, v in summary.by_split.items()))
    elif summary.imported:
        print(f"train with --group-pattern '{GROUP_PATTERN}' to keep each group on one side")
    skipped = [
        (summary.skipped_unsorted, "in unknown/ (not reviewed; --label-map unknown=CLASS)"),
        (summary.skipped_existing, "already in the dataset"),
        (summary.dropped_by_map, "dropped by --label-map"),
    ]
    for count, why in skipped:
        if count:
            print(f"skipped {count} {why}")
    return 0
