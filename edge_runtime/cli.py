"""``edge-runtime``: the device command line.

Each subcommand lives in ``edge_runtime/commands/<name>.py`` with ``register(subparsers)`` (adds its
parser and sets ``handler``); this module only dispatches and turns errors into one clear line.
Importing a command module must stay cheap: heavy imports happen inside handlers, and options
that need imports to be described (the sinks' flags) are added with ``CommandParser.defer``, only
when that subcommand is parsed or its help is shown.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

from edge_runtime import __version__
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.redaction import redact
from edge_runtime.terminal import PrintableFormatter, printable

#: subcommand modules, in the order ``--help`` lists them
COMMAND_MODULES: tuple[str, ...] = (
    "edge_runtime.commands.run",
    "edge_runtime.commands.classify",
    "edge_runtime.commands.snap",
    "edge_runtime.commands.bench",
    "edge_runtime.commands.check_config",
    "edge_runtime.commands.daemon",
    "edge_runtime.commands.update",
    "edge_runtime.commands.doctor",
)

EPILOG = """\
examples:
  edge-runtime run --model models/traffic-signs --source synthetic:traffic-signs --max-frames 300
  edge-runtime run --model bundle/ --source camera:0 --http 0.0.0.0:8080
  edge-runtime classify photo.jpg --model model.tflite --top-k 5 --json
  edge-runtime snap --source camera:0 --model models/traffic-signs --out snap.jpg --show
  edge-runtime bench --model models/traffic-signs --frames 200
  edge-runtime daemon --config /etc/edge-runtime/config.toml
  edge-runtime update --config /etc/edge-runtime/config.toml
  edge-runtime models list --config /etc/edge-runtime/config.toml
  edge-runtime doctor --config /etc/edge-runtime/config.toml
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


class Terminated(BaseException):
    """SIGTERM arrived while no pipeline was running to stop gracefully (while a model loads,
    while ``classify`` works): raised so that every ``with`` and ``finally`` on the way out runs
    and nothing is left behind, such as the unpacked copy of a ``.tar`` bundle. A BaseException,
    so that no ``except Exception`` swallows it."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    # A second SIGTERM while the first unwinds ends the process at once, as it always did.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated


@contextlib.contextmanager
def _terminate_by_unwinding() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread while the block runs (a
    ``stop_on_signals`` inside it takes over for a pipeline run and hands back after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    130, SIGTERM exit code 143 once everything is cleaned up, a closed output pipe exit code 0;
    no subcommand prints the help and returns 2. Messages and log lines go through
    :func:`edge_runtime.terminal.printable` (they quote labels and file names, which may hold
    terminal escape sequences) and have the credentials of URIs redacted.
    """
    args, extras = parser.parse_known_args(argv)
    if extras:  # an unknown option: the subcommand's usage, not the top-level one
        subcommand_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    log_handler = logging.StreamHandler()
    if args.verbose:
        log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    else:  # said as the tool says its errors: no timestamps, no module names
        log_format = f"{parser.prog}: %(levelname)s: %(message)s"
    log_handler.setFormatter(PrintableFormatter(log_format))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, handlers=[log_handler]
    )
    if not args.verbose:
        from edge_runtime.nativelog import quiet_native_logs

        quiet_native_logs()
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        with _terminate_by_unwinding():
            code = int(handler(args) or 0)
    except errors as exc:
        print(f"{parser.prog}: error: {printable(redact(str(exc)))}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"{parser.prog}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed
        discard_closed_stdout()
        return 0
    discard_closed_stdout()
    return code


def subcommand_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The innermost (sub)command parser ``args`` went through (``edge-export dataset import``
    -> that parser), for its usage line."""
    current = parser
    while True:
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            return current
        chosen = getattr(args, actions[0].dest or "", None)
        child = actions[0].choices.get(chosen) if chosen else None
        if not isinstance(child, argparse.ArgumentParser):
            return current
        current = child


def discard_closed_stdout() -> None:
    """When standard output's reader has gone (``| head -1``), point it at /dev/null, so that
    the last flush of what is still buffered (the interpreter's, at exit) reports no broken pipe.
    """
    try:
        sys.stdout.flush()
        return
    except BrokenPipeError:
        pass
    except (OSError, ValueError):  # closed or unusable: nothing left to protect
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no file behind it (tests)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 1 failure, 2 usage error)."""
    return run_parser(build_parser(), argv)


def entry() -> None:
    """The ``edge-runtime`` program: :func:`main`, then the process ends with its exit code in a
    way that answers a Ctrl-C during the exit too (see ``service.signals.exit_process``)."""
    from edge_runtime.service.signals import INTERRUPTED_EXIT_CODE, exit_process

    try:
        code = main()
    except KeyboardInterrupt:  # a Ctrl-C after the command's own handling ended
        print("edge-runtime: interrupted", file=sys.stderr)
        code = INTERRUPTED_EXIT_CODE
    except SystemExit as exc:  # argparse's --help, --version and usage errors
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # sys.exit("message"), as Python itself reports it
            print(exc.code, file=sys.stderr)
            code = 1
    exit_process(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
