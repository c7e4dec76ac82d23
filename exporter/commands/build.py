"""``edge-export build``: run a recipe (dataset -> train -> export), skipping current stages."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLE = """\
example:
  edge-export build models/recipes/traffic-signs.toml

A recipe (TOML) has name, version, workdir, an optional [dataset] (a synthetic scenario), [train]
(the settings of edge-export train) and [export] (out, formats, gate, ...); see docs/exporting.md.
A stage whose settings and inputs did not change since its last run is "up to date" and skipped.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "build",
        help="run a recipe: dataset, train and export in one go, skipping current stages",
        description="Build a model bundle from a recipe file: render the dataset (optional), "
        "train, export and verify. Stages whose inputs did not change are skipped.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", metavar="RECIPE.toml", help="the recipe file")
    parser.add_argument(
        "--force", action="store_true", help="run every stage and replace existing outputs"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from exporter.progress import Progress
    from exporter.recipe import build

    outcomes = build(args.recipe, force=args.force, progress=Progress(quiet=args.quiet))
    for outcome in outcomes:
        print(f"{outcome.stage}: {outcome.status} ({outcome.output})")
    return 0
