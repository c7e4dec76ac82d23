"""Reading a training run directory: ``model.keras``, ``labels.txt``, ``run.json``, ``splits.json``.

The training stage writes it; export reads it. Every precondition is checked here, before any slow
work, with one clear message per problem. ``run.json`` is read through its schema
(:mod:`exporter.runinfo`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.bundle import InputDescription
from edge_runtime.errors import ModelError
from edge_runtime.labels import read_labels
from edge_runtime.preprocess import PreprocessSpec
from exporter.errors import ExportError
from exporter.runinfo import RunInfo, parse_run_info

MODEL_NAME = "model.keras"
RUN_NAME = "run.json"
SPLITS_NAME = "splits.json"
LABELS_NAME = "labels.txt"


@dataclass(frozen=True)
class RunDirectory:
    """A validated run directory."""

    path: Path
    labels: tuple[str, ...]
    run: RunInfo
    splits: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_NAME

    @property
    def input(self) -> InputDescription:
        """The model input as the bundle manifest describes it."""
        return self.run.input

    @property
    def height(self) -> int:
        return self.run.input.height

    @property
    def width(self) -> int:
        return self.run.input.width

    def preprocess_spec(self) -> PreprocessSpec:
        """The device's preprocessing for this model's input."""
        return self.run.input.preprocess_spec()

    @property
    def data_root(self) -> Path:
        return Path(self.splits.get("root") or self.run.data or "")

    def split(self, name: str) -> list[tuple[Path, str]]:
        """The ``(absolute image path, label)`` pairs of split ``train``, ``val`` or ``test``."""
        root = self.data_root
        return [(root / rel, label) for rel, label in self.splits.get(name) or []]

    def held_out(self) -> tuple[str, list[tuple[Path, str]]]:
        """The split used for verification: ``test``, or ``val`` when the run has no test split.

        Raises:
            ExportError: both are empty.
        """
        for name in ("test", "val"):
            items = self.split(name)
            if items:
                return name, items
        raise ExportError(
            f"{self.path / SPLITS_NAME} has no test or val images: nothing to verify the export on"
        )


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path.parent} has no {path.name}: {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc


def load_run_directory(path: str | Path) -> RunDirectory:
    """Open and check a run directory written by ``edge-export train``.

    Raises:
        ExportError: the directory, the model, the labels, ``run.json`` or ``splits.json`` is
            missing or inconsistent; the message names the file.
    """
    root = Path(path)
    if not root.is_dir():
        raise ExportError(f"run directory {root} does not exist (train a model into it first)")
    if not (root / MODEL_NAME).is_file():
        raise ExportError(
            f"{root} has no {MODEL_NAME}: it is not a finished training run "
            "(run `edge-export train --out DIR` first)"
        )
    try:
        labels = read_labels(root / LABELS_NAME)
    except ModelError as exc:
        raise ExportError(f"run directory {root}: {exc}") from exc
    run = parse_run_info(
        _read_json(root / RUN_NAME, "it records the input size and preprocessing"),
        str(root / RUN_NAME),
    )
    splits = _read_json(root / SPLITS_NAME, "it names the held-out images to verify on")
    if not isinstance(splits, dict):
        raise ExportError(f"{root / SPLITS_NAME} must hold a JSON object")
    if list(run.labels) != labels:
        raise ExportError(
            f"{root}: labels.txt ({len(labels)} labels) does not match run.json's labels "
            f"({len(run.labels)}); the run directory is inconsistent"
        )
    for name in ("train", "val", "test"):
        items = splits.get(name, [])
        if not isinstance(items, list) or not all(
            isinstance(i, list) and len(i) == 2 and i[1] in labels for i in items
        ):
            raise ExportError(
                f"{root / SPLITS_NAME}: '{name}' must be a list of [relative path, label] pairs "
                "with known labels"
            )
    return RunDirectory(path=root, labels=tuple(labels), run=run, splits=splits)
