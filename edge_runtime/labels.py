"""Label files: one class name per line, in model output order."""

from __future__ import annotations

import os
from pathlib import Path

from edge_runtime.errors import ModelError


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


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Read a label file.

    Raises:
        ModelError: the file cannot be read or holds no labels.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read labels from {path}: {exc}") from exc
    try:
        return parse_labels(text)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


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
