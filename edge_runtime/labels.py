"""Label files: one class name per line, in model output order."""

from __future__ import annotations

import os

from edge_runtime.errors import ModelError
from edge_runtime.inputfiles import describe, read_limited

#: the largest label file read: ImageNet-21k's 21,843 names take about 250 KiB
MAX_LABEL_FILE_BYTES = 1 << 20


def parse_labels(text: str) -> list[str]:
    """Parse a label file's text: one label per line, surrounding blanks stripped.

    Trailing empty lines are ignored; an empty line in the middle is kept as an empty label would be
    ambiguous, so it is an error.

    Raises:
        ModelError: no labels, or an empty line between labels.
    """
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ModelError("the label file holds no labels")
    if any(not line for line in lines):
        raise ModelError(f"the label file has an empty line at line {lines.index('') + 1}")
    return lines


def decode_labels(data: bytes, where: str) -> list[str]:
    """Parse the bytes of a label file (UTF-8).

    Raises:
        ModelError: not UTF-8, no labels, or an empty line between labels; names ``where``.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(
            f"{where} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None
    try:
        return parse_labels(text)
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from None


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Read a label file: a regular file (FIFOs and devices are refused unopened) of at most
    :data:`MAX_LABEL_FILE_BYTES`, in UTF-8.

    Raises:
        ModelError: the file cannot be read, is too large, is not UTF-8 or holds no labels.
    """
    try:
        data = read_limited(path, MAX_LABEL_FILE_BYTES)
    except OSError as exc:
        raise ModelError(f"cannot read labels from {path}: {describe(exc)}") from None
    return decode_labels(data, os.fspath(path))


def check_label_count(labels: list[str], output_size: int, where: str) -> None:
    """Raise unless there is exactly one label per model output.

    Raises:
        ModelError: the counts differ; the message gives both.
    """
    if len(labels) != output_size:
        raise ModelError(
            f"{where}: {len(labels)} labels but the model outputs {output_size} scores; "
            "the label file does not belong to this model"
        )
