"""The daemon's log: one line per event on stderr, with journald's priority prefixes under systemd.

journald reads a service's stderr line by line; a line starting with ``<N>`` (syslog priority
``N``) is stored at that priority, so ``journalctl -p warning`` finds the warnings. The prefixes
are only written when stderr is the journal (``JOURNAL_STREAM`` names stderr's device and inode,
as ``systemd.exec(5)`` describes) or when asked; a terminal gets plain lines with a time.

A traceback would spread one event over many lines (journald makes each its own entry), so an
exception is folded into its line as ``: Type: message``; with ``debug`` the traceback follows,
its lines joined with `` | ``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

from edge_runtime.redaction import redact
from edge_runtime.terminal import PrintableFormatter, printable

LogFormat = Literal["auto", "journal", "plain"]

#: Python level -> syslog priority (sd-daemon(3)): err 3, warning 4, notice 5, info 6, debug 7
PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def priority(levelno: int) -> int:
    """The syslog priority of a Python log level."""
    for level, value in PRIORITIES:
        if levelno >= level:
            return value
    return 7


def stderr_is_journal(environ: Mapping[str, str], stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is the journal stream ``JOURNAL_STREAM`` names
    (``DEVICE:INODE``)."""
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return info.st_dev == int(device) and info.st_ino == int(inode)


class OneLineFormatter(PrintableFormatter):
    """``<P>logger: message`` (journal) or ``time LEVEL logger: message`` (plain); an exception
    folded into the same line (see the module docstring)."""

    def __init__(self, journal: bool, tracebacks: bool = False) -> None:
        fmt = "%(name)s: %(message)s"
        if not journal:
            fmt = "%(asctime)s %(levelname)s " + fmt
        super().__init__(fmt)
        self.journal = journal
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        exc_info, record.exc_info = record.exc_info, None
        exc_text, record.exc_text = record.exc_text, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = exc_info, exc_text
        if exc_info and exc_info[1] is not None:
            line += f": {type(exc_info[1]).__name__}: {exc_info[1]}"
            if self.tracebacks:
                line += " | " + self.formatException(exc_info).replace("\n", " | ")
        line = printable(redact(" ".join(line.splitlines())))
        return f"<{priority(record.levelno)}>{line}" if self.journal else line


def configure(
    level: str = "info",
    log_format: LogFormat = "auto",
    *,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send the root logger's records at ``level`` and above to ``stream`` (default stderr), one
    line each, replacing the handlers the command line set up. Returns the handler.

    Raises:
        ValueError: an unknown level.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level '{level}' (known: {', '.join(LEVELS)})")
    env = os.environ if environ is None else environ
    journal = log_format == "journal" or (log_format == "auto" and stderr_is_journal(env, stream))
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(OneLineFormatter(journal, tracebacks=level == "debug"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    return handler


def set_level(level: str) -> None:
    """Change the root logger's level (a reload).

    Raises:
        ValueError: an unknown level.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level '{level}'")
    root = logging.getLogger()
    root.setLevel(LEVELS[level])
    for handler in root.handlers:
        formatter = handler.formatter
        if isinstance(formatter, OneLineFormatter):
            formatter.tracebacks = level == "debug"


class LastProblem(logging.Handler):
    """Hands each warning or error record, as one line, to ``publish`` (the daemon shows the last
    one in /status)."""

    def __init__(self, publish: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(logging.WARNING)
        self._publish = publish
        self.setFormatter(OneLineFormatter(journal=False))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f": {record.exc_info[1]}"
            self._publish(
                {
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "message": printable(redact(" ".join(message.split()))),
                    "time": record.created,
                }
            )
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
