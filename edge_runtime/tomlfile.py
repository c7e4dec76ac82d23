"""Reading TOML files (runtime configs, device profiles) without trusting their size or shape.

Python's TOML parser recurses once per nested array or inline table (100,000 levels raise
``RecursionError``) and its memory grows with the square of a dotted key's length (an 80 KB file
holding one key of 40,000 parts takes gigabytes). So a file is capped in size
(:data:`MAX_TOML_BYTES`), must be UTF-8, and is scanned in linear time for nesting deeper than
:data:`MAX_TOML_NESTING` and keys longer than :data:`MAX_TOML_KEY_PARTS` parts before it is
parsed. Real configs stay far below both limits (the runtime's deepest key is three parts).
"""

from __future__ import annotations

import codecs
import os
import re
import sys
from typing import Any

from edge_runtime.errors import ConfigError
from edge_runtime.inputfiles import describe, format_size, read_limited

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: the largest TOML file read (a runtime config is a few KiB)
MAX_TOML_BYTES = 1 << 20
#: arrays and inline tables inside each other, table headers' brackets included
MAX_TOML_NESTING = 32
#: parts of one dotted key or table header (``a.b.c`` has 3)
MAX_TOML_KEY_PARTS = 32
#: keys, key parts, tables and arrays in one file: the parser keeps about 1 KiB of bookkeeping
#: per table it creates, so this, not the size, bounds its memory (a 1 MiB file of short
#: table headers would otherwise take 470 MB). 1000 per-class thresholds use 1000.
MAX_TOML_ITEMS = 50_000

# The tokens that matter for the shape of a TOML document: strings and comments (skipped whole,
# so brackets and dots inside them do not count) and the structural characters. Multi-line
# strings may end in up to two extra quotes.
_TOKENS = re.compile(
    r'"""(?:[^\\]|\\.)*?"""(?:"{1,2})?'
    r"|'''.*?'''(?:'{1,2})?"
    r'|"(?:[^"\\\n]|\\.)*"'
    r"|'[^'\n]*'"
    r"|#[^\n]*"
    r"|[\[\]{}.=,]",
    re.DOTALL,
)
_UTF16_32_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _line_of(text: str | bytes, position: int) -> int:
    newline = "\n" if isinstance(text, str) else b"\n"
    return text.count(newline, 0, position) + 1  # type: ignore[arg-type]


def check_shape(
    text: str,
    *,
    max_nesting: int = MAX_TOML_NESTING,
    max_key_parts: int = MAX_TOML_KEY_PARTS,
    max_items: int = MAX_TOML_ITEMS,
) -> None:
    """Refuse TOML text that nests deeper than ``max_nesting``, has a key of more than
    ``max_key_parts`` parts, or more than ``max_items`` keys, key parts, tables and arrays, in
    one linear pass and before any parsing. Valid or not otherwise: the parser judges the rest.

    A key's parts are counted from the last ``=``, ``,`` or bracket, so a float value on the
    line before (``x = 1.5``) adds one: the limit is that much looser, never stricter.

    Raises:
        ValueError: the message says which limit, and the line.
    """
    depth = 0
    dots = 0
    items = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if len(token) != 1 or token in "\"'#":
            continue  # a string or a comment
        if token in "[{.=":
            items += 1
            if items > max_items:
                raise ValueError(
                    f"more than {max_items} keys, tables and arrays "
                    f"(line {_line_of(text, match.start())})"
                )
        if token in "[{":
            depth += 1
            dots = 0
            if depth > max_nesting:
                raise ValueError(
                    f"arrays, tables or inline tables nest deeper than {max_nesting} levels "
                    f"(line {_line_of(text, match.start())})"
                )
        elif token in "]}":
            depth = max(0, depth - 1)
            dots = 0
        elif token == ".":
            dots += 1
            if dots > max_key_parts:
                raise ValueError(
                    f"a dotted key has more than {max_key_parts} parts "
                    f"(line {_line_of(text, match.start())})"
                )
        else:  # "=" or ","
            dots = 0


def decode_text(data: bytes, where: str) -> str:
    """``data`` as UTF-8 text (a UTF-8 byte order mark is dropped).

    Raises:
        ConfigError: another encoding, or bytes that are not UTF-8; the message says where.
    """
    for bom, name in _UTF16_32_BOMS:
        if data.startswith(bom):
            raise ConfigError(f"{where} is {name} text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = _line_of(data, exc.start)
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{where} is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, "
            f"column {column} ({exc.reason}); save it as UTF-8"
        ) from None


def checked_text(data: bytes | str, where: str) -> str:
    """``data`` as TOML text that is safe to hand to a TOML parser: at most
    :data:`MAX_TOML_BYTES`, UTF-8, and within the nesting and size limits of this module.

    Raises:
        ConfigError: one line naming ``where`` and the limit broken.
    """
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > MAX_TOML_BYTES:
        raise ConfigError(f"{where} is larger than {format_size(MAX_TOML_BYTES)}, the limit")
    text = data if isinstance(data, str) else decode_text(data, where)
    try:
        check_shape(text)
    except ValueError as exc:
        raise ConfigError(f"{where} is not a usable TOML file: {exc}") from None
    return text


def parse_toml(data: bytes | str, where: str) -> dict[str, Any]:
    """Parse TOML from bytes (must be UTF-8) or text, within the limits of this module.

    Raises:
        ConfigError: over :data:`MAX_TOML_BYTES`, not UTF-8, too deep, or not valid TOML;
            one line naming ``where``.
    """
    return _loads(checked_text(data, where), where)


def _loads(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    except ValueError as exc:
        if "digits" in str(exc):  # int() refuses more than sys.get_int_max_str_digits()
            raise ConfigError(
                f"{where} holds a number of more than {sys.get_int_max_str_digits()} digits"
            ) from None
        raise ConfigError(f"{where} is not a usable TOML file: {exc}") from None
    except (RecursionError, MemoryError) as exc:
        # Shapes the scan above should already have refused.
        raise ConfigError(f"{where} is not a usable TOML file: {type(exc).__name__}") from None


def read_toml_text(path: str | os.PathLike[str], what: str = "config") -> str:
    """The text of the TOML file ``path``, a ``what`` (for messages: "config", "device
    profile"), checked by :func:`checked_text`. FIFOs, devices and files over
    :data:`MAX_TOML_BYTES` are refused unread.

    Raises:
        ConfigError: the file cannot be read, is not a regular file, is too large, or its
            content breaks a limit.
    """
    try:
        data = read_limited(path, MAX_TOML_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {os.fspath(path)}: {describe(exc)}") from None
    return checked_text(data, os.fspath(path))


def read_toml(path: str | os.PathLike[str], what: str = "config") -> dict[str, Any]:
    """Read and parse the TOML file ``path`` (see :func:`read_toml_text`).

    Raises:
        ConfigError: the file cannot be read, or its content is refused by :func:`parse_toml`.
    """
    return _loads(read_toml_text(path, what), os.fspath(path))


__all__ = [
    "MAX_TOML_BYTES",
    "MAX_TOML_ITEMS",
    "MAX_TOML_KEY_PARTS",
    "MAX_TOML_NESTING",
    "check_shape",
    "checked_text",
    "decode_text",
    "parse_toml",
    "read_toml",
    "read_toml_text",
]
