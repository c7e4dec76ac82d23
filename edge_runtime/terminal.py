"""Text for a terminal: labels, file names and messages made safe to print.

Labels come from bundles and model files, file names and truth labels from folders, messages
quote all of them; any may hold control characters. Printed raw, an escape sequence moves the
cursor, clears the screen, retitles the window or hides the text after it, and a right-to-left
override reverses what follows. Everything the runtime prints for people goes through
:func:`printable`, which shows such characters as escapes (``\\x1b``, ``\\u202e``) instead;
machine output (JSON) keeps the raw text, escaped by JSON (:func:`json_text`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from edge_runtime.redaction import RedactingFormatter

# C0 controls, DEL and C1 controls (U+009B is a one-character escape introducer on some
# terminals); the bidirectional embeddings, overrides and isolates; the line and paragraph
# separators, which some terminals and log viewers break lines at; lone surrogates (JSON can
# hold them), which no terminal encoding can write.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``str(text)`` with every control, bidirectional-override or line-separator character
    replaced by its escape (``"a\\x1b[2Jb"`` prints as ``a\\x1b[2Jb``); other text, accented
    letters and CJK included, is unchanged."""
    return _UNSAFE.sub(_escape, str(text))


def printable_lines(text: object) -> str:
    """Like :func:`printable`, but keeps line breaks (for multi-line output such as tables)."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def json_text(value: Any, **options: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, ...)`` with the characters :func:`printable`
    escapes written as ``\\uXXXX`` too: the same JSON value, readable non-ASCII text, and safe
    to print. (JSON already escapes C0 controls; this adds DEL, C1 and the bidi controls.)"""
    text = json.dumps(value, ensure_ascii=False, **options)
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class PrintableFormatter(RedactingFormatter):
    """A log formatter whose messages go through :func:`printable` (tracebacks stay as they
    are: their line breaks are real), with the credentials of URIs redacted from the whole line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


__all__ = ["PrintableFormatter", "json_text", "printable", "printable_lines"]
