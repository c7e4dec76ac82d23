"""Options that several ``edge-export`` commands share: the accuracy gate's."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.export.gate import GateOptions

GATE_HELP = """\
accuracy gate: each artifact is compared with the float model image by image. It fails when its
top-1 drops by more than --max-accuracy-drop points AND the drop is significant at
--gate-confidence (one-sided exact McNemar test on the images where exactly one of the two is
right), when its top-1 agrees with float's on fewer than --min-agreement of the images, or when a
class keeps less than half of its float accuracy (significantly, Bonferroni over the classes).
"""


def add_gate_arguments(parser: argparse.ArgumentParser, *, allow_help: str) -> None:
    """Add --max-accuracy-drop, --gate-confidence, --min-agreement and --allow-accuracy-drop."""
    from exporter.export.gate import (
        DEFAULT_GATE_CONFIDENCE,
        DEFAULT_MAX_ACCURACY_DROP,
        DEFAULT_MIN_AGREEMENT,
    )

    group = parser.add_argument_group("accuracy gate")
    group.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=DEFAULT_MAX_ACCURACY_DROP,
        metavar="POINTS",
        help="most top-1 points an artifact may lose against float before a significant drop "
        f"fails it (default {DEFAULT_MAX_ACCURACY_DROP:g})",
    )
    group.add_argument(
        "--gate-confidence",
        type=float,
        default=DEFAULT_GATE_CONFIDENCE,
        metavar="C",
        help="confidence a drop must reach to count (0.5..1, default "
        f"{DEFAULT_GATE_CONFIDENCE:g}: at most 5%% of good exports fail by chance)",
    )
    group.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        metavar="F",
        help="fewest images (fraction) whose top-1 must agree with float's (default "
        f"{DEFAULT_MIN_AGREEMENT:g})",
    )
    group.add_argument("--allow-accuracy-drop", action="store_true", help=allow_help)


def gate_options(args: argparse.Namespace) -> GateOptions:
    """The checked :class:`GateOptions` of parsed arguments.

    Raises:
        ExportError: a setting out of range.
    """
    from exporter.export.gate import GateOptions

    return GateOptions(
        max_accuracy_drop=args.max_accuracy_drop,
        confidence=args.gate_confidence,
        min_agreement=args.min_agreement,
        allow_accuracy_drop=args.allow_accuracy_drop,
    ).check()
