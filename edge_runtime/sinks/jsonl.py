"""JSON lines: one ``Prediction.to_dict()`` object per line, to standard output or a file.

A file can rotate by size, like logging's RotatingFileHandler: ``out.jsonl`` is the file being
written, ``out.jsonl.1`` the one before it, up to ``out.jsonl.<keep>``; older ones are deleted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

from pydantic import Field

from edge_runtime.errors import OutputClosedError, SinkError
from edge_runtime.sinks.base import (
    Flag,
    LineWriter,
    Sink,
    SinkConfig,
    SinkContext,
    StatusProvider,
    selected,
)
from edge_runtime.types import Frame, Prediction


def rotated_name(path: Path, number: int) -> Path:
    """The name of the ``number``-th older file (``number`` 0 is ``path`` itself)."""
    return path if number == 0 else path.with_name(f"{path.name}.{number}")


def rotation_plan(path: Path, keep: int) -> tuple[Path | None, list[tuple[Path, Path]]]:
    """What rotating ``path`` does: the file to delete (the oldest, or ``path`` itself when
    ``keep`` is 0) and the renames (oldest first, so nothing is overwritten)."""
    if keep <= 0:
        return path, []
    renames = [(rotated_name(path, n - 1), rotated_name(path, n)) for n in range(keep, 0, -1)]
    return rotated_name(path, keep), renames


def needs_rotation(current_bytes: int, incoming_bytes: int, max_bytes: int) -> bool:
    """True when writing ``incoming_bytes`` more would pass ``max_bytes`` (0 = never rotate).

    An empty file never rotates, so a line longer than ``max_bytes`` is still written whole.
    """
    return max_bytes > 0 and current_bytes > 0 and current_bytes + incoming_bytes > max_bytes


class JsonLinesFileConfig(SinkConfig):
    """``[outputs] jsonl``: also write the predictions as JSON lines to a file (JSON lines on
    the terminal are ``console = "jsonl"``). ``jsonl = "out.jsonl"`` is short for
    ``jsonl = { path = "out.jsonl" }``; older files' ``jsonl_file`` and ``jsonl_max_bytes`` mean
    ``path`` and ``max_bytes``."""

    key = "jsonl"
    shorthand = "path"
    legacy = {"jsonl_file": "path", "jsonl_max_bytes": "max_bytes"}
    flags = (Flag(("--jsonl-file",), "path", "also write JSON lines to a file", "PATH"),)

    path: str = Field(description="The file; appended to, its folder created when missing.")
    max_bytes: int = Field(0, ge=0, description="Rotate the file at this size; 0 = never.")
    keep: int = Field(5, ge=0, description="Rotated files kept besides the current one.")
    every_frame: bool = Field(True, description="False: only label changes (events).")

    def build(self, context: SinkContext) -> list[Sink]:
        return [
            JsonLinesSink(
                self.path, max_bytes=self.max_bytes, keep=self.keep, every_frame=self.every_frame
            )
        ]


class JsonLinesSink(Sink):
    """One JSON object per prediction per line.

    Options: ``path`` (None or ``-``: standard output), ``stream`` (write here instead, e.g. for
    tests), ``max_bytes`` (rotate the file before it grows past this; 0 = never), ``keep``
    (rotated files kept besides the current one), ``every_frame`` (False: only events).

    Raises (from ``open``):
        SinkError: the file cannot be opened for appending.
    """

    name = "jsonl"
    Config = JsonLinesFileConfig

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        stream: TextIO | None = None,
        max_bytes: int = 0,
        keep: int = 5,
        every_frame: bool = True,
    ) -> None:
        if max_bytes < 0 or keep < 0:
            raise SinkError("max_bytes and keep must not be negative")
        self.path = None if path is None or os.fspath(path) == "-" else Path(path)
        self._out = LineWriter(stream)
        self.max_bytes = max_bytes
        self.keep = keep
        self.every_frame = every_frame
        self._file: TextIO | None = None
        self._size = 0
        self.lines = 0
        self.rotations = 0

    def open(self, status: StatusProvider | None = None) -> None:
        if self.path is not None and self._file is None:
            self._file = self._open_file()

    def _open_file(self) -> TextIO:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a", encoding="utf-8")  # kept open until close()
        except OSError as exc:
            raise SinkError(f"cannot write predictions to {self.path}: {exc.strerror}") from exc
        self._size = handle.tell()
        return handle

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        if not selected(prediction, self.every_frame):
            return
        line = json.dumps(prediction.to_dict(), separators=(",", ":")) + "\n"
        if self.path is None:
            self._out.write(line)
        else:
            if self._file is None:
                self.open()
            encoded = len(line.encode("utf-8"))
            if needs_rotation(self._size, encoded, self.max_bytes):
                self._rotate()
            assert self._file is not None
            try:
                self._file.write(line)
                self._file.flush()
            except BrokenPipeError:  # a FIFO whose reader has gone
                raise OutputClosedError(f"nobody reads {self.path} any more") from None
            self._size += encoded
        self.lines += 1

    def _rotate(self) -> None:
        assert self.path is not None and self._file is not None
        self._file.close()
        delete, renames = rotation_plan(self.path, self.keep)
        if delete is not None:
            delete.unlink(missing_ok=True)
        for older, newer in renames:
            if older.exists():
                older.replace(newer)
        self._file = self._open_file()
        self.rotations += 1

    def close(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            try:
                handle.close()
            except BrokenPipeError:  # the last flush, into a FIFO nobody reads: nothing is lost
                pass
