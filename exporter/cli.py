"""``edge-export``: the workstation command line.

Each subcommand lives in ``exporter/commands/<name>.py`` with ``register(subparsers)`` (adds its
parser
and sets ``handler``). This module dispatches and turns errors into one clear line. Command modules
import TensorFlow only inside their handlers, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edge_runtime import __version__
from edge_runtime.cli import run_parser
from edge_runtime.errors import EdgeRuntimeError
from exporter.errors import ExporterError

COMMAND_MODULES: tuple[str, ...] = (
    "exporter.commands.dataset",
    "exporter.commands.train",
    "exporter.commands.export",
    "exporter.commands.verify",
    "exporter.commands.build",
    "exporter.commands.publish",
)

EPILOG = """\
examples:
  edge-export dataset synth --scenario traffic-signs --out data/signs --per-class 200 --size 96
  edge-export dataset report data/signs
  edge-export train --data data/signs --arch mobilenet_v3_small --weights none --input-size 96 \\
      --out runs/signs
  edge-export export runs/signs --out bundles/signs --name traffic-signs --version 1
  edge-export verify bundles/signs --data runs/signs
  edge-export build models/recipes/traffic-signs.toml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-export",
        description="Train, quantize, export, verify and bundle image classifiers for devices.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edge-export {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 1 failure, 2 usage error)."""
    # TensorFlow's C++ start-up chatter (absl, oneDNN, CPU features) is not for users: run_parser
    # sets TF_CPP_MIN_LOG_LEVEL before any command imports TensorFlow, unless --verbose.
    return run_parser(build_parser(), argv, (ExporterError, EdgeRuntimeError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
