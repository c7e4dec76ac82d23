"""Credentials out of everything the runtime prints, logs or serves.

A stream URI often carries a password (``rtsp://admin:s3cret@10.0.0.5/stream``), a broker URL a
login, a GStreamer pipeline an ``rtspsrc ... user-pw=s3cret`` and an HTTP camera a
``?password=`` query. :func:`redact` removes them from any text that may hold such URIs (a bare
URI, an error message, a log line, a pipeline description), so the one function serves the
start-up banner, ``check-config``, errors, log lines, ``/status``, ``/latest``, the metrics and
each frame's ``source``. Only what is shown is redacted: a source keeps the real URI to open it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

#: what a secret is replaced with
MASK = "***"

# scheme://user:password@host: the password runs to the last "@" before the path (people write
# unescaped "@" and "#" in camera passwords, and URL parsers split there too).
_USERINFO = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/?#@\"'<>]*):(?P<secret>[^\s/\"'<>]*)@"
)
# name=value where the name says it is a secret: URI queries (?password=..&token=..) and
# element properties of GStreamer pipelines (rtspsrc user-pw=.., souphttpsrc proxy-pw=..).
_SECRET_PARAMETER = re.compile(
    r"(?P<head>(?:^|[?&;\s,(])(?:[a-zA-Z0-9_.-]*[_.-])?"
    r"(?:password|passwd|passphrase|pwd|pass|pw|secret|token|api[_-]?key|key|auth|"
    r"authorization|signature|sig|credentials?)=)"
    r"(?P<secret>\"[^\"]*\"|'[^']*'|[^&;\s\"'<>,)]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the passwords of the URIs in it, and the values of secret-named parameters
    (``password=``, ``token=``, ``user-pw=``, ...), replaced by ``***``. Text without any comes
    back unchanged. Works on a bare URI or on any text that mentions URIs (messages, logs)."""
    if "=" not in text and "@" not in text:
        return text  # the common case: nothing that could hold a credential
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _SECRET_PARAMETER.sub(lambda m: f"{m['head']}{MASK}", text)


def redact_data(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, strings, numbers) with :func:`redact`
    applied to every string in it, keys included (for the status page and JSON dumps)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(key)): redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]
    return value


class RedactingFormatter(logging.Formatter):
    """A logging formatter whose lines (message, arguments and traceback) pass :func:`redact`:
    the last guard for log lines that mention a URI with its password."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
