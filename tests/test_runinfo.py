"""run.json's schema: what training writes, what export reads, and run directories from before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.bundle import InputDescription
from exporter.errors import ExportError
from exporter.export.rundir import load_run_directory
from exporter.runinfo import RunInfo, parse_run_info

LABELS = ["red", "green", "blue"]

# What `edge-export train` wrote before run.json had a schema (schema 1): all 45 keys.
SCHEMA_1 = {
    "schema": 1, "arch": "tiny_cnn", "weights": "none", "weights_identity": "random",
    "input_size": [24, 32], "resize": "letterbox", "interpolation": "linear", "color": "RGB",
    "input_range": [0, 255], "labels": LABELS, "data": "/data/colours",
    "dataset_fingerprint": "ab" * 32, "training_mode": "end-to-end", "epochs": 3,
    "fine_tune_layers": 0, "fine_tune_epochs": 0, "batch_size": 32, "learning_rate": 0.001,
    "fine_tune_learning_rate": 1e-05, "dropout": 0.2, "patience": 5, "augment_variants": 0,
    "augmentation": {"version": 1, "rotation": 12.0, "flip": False}, "class_weights": True,
    "seed": 0, "split_fractions": [0.7, 0.15, 0.15], "given_splits": False,
    "group_pattern": None, "images": {"train": 21, "val": 3, "test": 6}, "corrupt_skipped": 0,
    "validation_accuracy": 0.666667, "test_accuracy": 0.5, "test_top5": 1.0,
    "mixed_precision": False, "strategy": "none", "replicas": 1, "feature_cache": None,
    "phases": [{"name": "end-to-end", "epochs_run": 3, "best_epoch": 2, "history": {}}],
    "created": "2024-05-01T10:00:00+00:00", "duration_s": 12.5,
    "versions": {"edge_classify": "0.1.0", "tensorflow": "2.21.0"},
}  # fmt: skip


def test_a_run_round_trips_through_its_schema() -> None:
    run = RunInfo(
        arch="tiny_cnn",
        weights="none",
        input=InputDescription(height=24, width=32, resize="center-crop"),
        labels=LABELS,
        data="/data/colours",
        dataset_fingerprint="0" * 64,
        epochs=4,
        created="2024-05-01T10:00:00+00:00",
    )
    data = run.to_json()
    assert data["schema"] == 2 and data["input"]["resize"] == "center-crop"
    assert parse_run_info(json.loads(json.dumps(data)), "run.json") == run
    spec = run.input.preprocess_spec()
    assert (spec.height, spec.width, spec.resize, spec.interpolation) == (
        24,
        32,
        "center-crop",
        "area",
    )


def test_a_schema_1_run_is_upgraded() -> None:
    run = parse_run_info(SCHEMA_1, "run.json")
    assert (run.input.height, run.input.width) == (24, 32)
    assert (run.input.resize, run.input.interpolation, run.input.color) == (
        "letterbox",
        "linear",
        "RGB",
    )
    assert (
        run.input_range == (0, 255) and run.duration_s == 12.5 and run.phases[0]["best_epoch"] == 2
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": 3}, "run schema 3, which this exporter does not know"),
        ({"surprise": 1}, "surprise: unknown key"),
        ({"resize": "stretch"}, "input.resize: Input should be 'squash', 'center-crop'"),
        ({"input_size": [24]}, "input.height"),
        ({"labels": ["only"]}, "labels: List should have at least 2 items"),
        ({"epochs": "many"}, "epochs: Input should be a valid integer"),
    ],
)
def test_a_bad_run_json_is_one_line_that_says_to_retrain(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ExportError) as caught:
        parse_run_info({**SCHEMA_1, **change}, "runs/x/run.json")
    text = str(caught.value)
    assert "\n" not in text and text.startswith("runs/x/run.json")
    assert message in text and "re-train" in text


def test_an_old_run_directory_still_opens(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"not read here")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (tmp_path / "run.json").write_text(json.dumps(SCHEMA_1))
    (tmp_path / "splits.json").write_text(
        json.dumps(
            {"root": str(tmp_path), "train": [["a.png", "red"]], "test": [["b.png", "blue"]]}
        )
    )
    run = load_run_directory(tmp_path)
    assert (run.height, run.width) == (24, 32)
    assert run.input.resize == "letterbox" and run.preprocess_spec().interpolation == "linear"
    assert run.held_out() == ("test", [(tmp_path / "b.png", "blue")])

    (tmp_path / "run.json").write_text(json.dumps({**SCHEMA_1, "labels": ["red", "green"]}))
    with pytest.raises(ExportError, match="does not match run.json's labels"):
        load_run_directory(tmp_path)
    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(ExportError, match="run.json must hold a JSON object"):
        load_run_directory(tmp_path)
