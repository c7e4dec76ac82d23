"""``edge-runtime``: the device command line.

Each subcommand lives in ``edge_runtime/commands/<name>.py`` with ``register(subparsers)`` (adds its
parser and sets ``handler``); this module only dispatches and turns errors into one clear line.
Importing a command module must stay cheap: heavy imports happen inside handlers, and options
that need imports to be described (the sinks' flags) are added with ``CommandParser.defer``, only
when that subcommand is parsed or its help is shown.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from edge_runtime import __version__
from edge_runtime.errors import EdgeRuntimeError

#: subcommand modules, in the order ``--help`` lists them
COMMAND_MODULES: tuple[str, ...] = (
    "edge_runtime.commands.run",
    "edge_runtime.commands.classify",
    "edge_runtime.commands.bench",
    "edge_runtime.commands.check_config",
)

EPILOG = """\
examples:
  edge-runtime run --model models/traffic-signs --source synthetic:traffic-signs --max-frames 300
  edge-runtime run --model bundle/ --source camera:0 --http 0.0.0.0:8080
  edge-runtime classify photo.jpg --model model.tflite --top-k 5 --json
  edge-runtime bench --model models/traffic-signs --frames 200
"""


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser whose ``defer``-red callables add their arguments the first time
    the subcommand is parsed or its help or usage is printed, so that building the whole command
    line (for ``--version``, ``--help`` or another subcommand) imports nothing heavy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[], None]] = []

    def defer(self, add_arguments: Callable[[], None]) -> None:
        """Call ``add_arguments`` before this parser is first used."""
        self._deferred.append(add_arguments)

    def _complete(self) -> None:
        while self._deferred:
            self._deferred.pop(0)()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._complete()
        return super().format_help()

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runtime",
        description="Classify camera frames in real time with a TFLite or ONNX model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=CommandParser
    )
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def run_parser(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    errors: tuple[type[BaseException], ...] = (EdgeRuntimeError,),
) -> int:
    """Parse ``argv`` and run the chosen subcommand's handler; shared by both command lines.

    Errors of the ``errors`` types become one line on stderr and exit code 1, Ctrl-C exit code
    130, a closed output pipe exit code 0; no subcommand prints the help and returns 2.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except errors as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 1 failure, 2 usage error)."""
    return run_parser(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
