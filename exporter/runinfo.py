"""``run.json``: what a training run records about itself, as one schema.

Training writes it and export reads it back (``exporter.export.rundir``), so both sides use this
model: unknown keys are refused, every field is typed, and the model input is the bundle
manifest's own :class:`~edge_runtime.bundle.InputDescription` (size, resize mode, interpolation),
so the preprocessing a model was trained with reaches the device unchanged.

Schema 2 is written today. A schema 1 file (written before the input description moved into
``input``) is read too: its ``input_size``, ``resize``, ``interpolation`` and ``color`` become
``input``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_runtime.bundle import InputDescription
from exporter.errors import ExportError

RUN_SCHEMA: Literal[2] = 2


class RunInfo(BaseModel):
    """Everything ``run.json`` holds (see docs/training.md for what each setting does)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: Literal[2] = Field(RUN_SCHEMA, alias="schema")
    arch: str = Field(description="Backbone name (exporter.backbones).")
    weights: str = Field(description="imagenet, none, or the weights file's name.")
    weights_identity: str = Field("", description="Changes whenever the weights may change.")
    input: InputDescription = Field(description="The model input and its preprocessing.")
    input_range: tuple[int, int] = Field((0, 255), description="Pixel range the model takes.")
    labels: list[str] = Field(min_length=2, description="Class names in output order.")
    data: str = Field(description="The dataset folder trained on.")
    dataset_fingerprint: str = Field(description="sha256 over the dataset's files and labels.")
    training_mode: str = Field("", description="frozen-features[+fine-tune] or end-to-end.")
    epochs: int = Field(ge=0, description="Epochs of head or from-scratch training asked for.")
    fine_tune_layers: int = Field(0, ge=0)
    fine_tune_epochs: int = Field(0, ge=0)
    batch_size: int = Field(32, gt=0, description="Batch size per replica (device).")
    global_batch_size: int | None = Field(
        None, gt=0, description="Examples per training step over all replicas."
    )
    learning_rate: float = Field(1e-3, gt=0, description="As given, before scaling.")
    fine_tune_learning_rate: float = Field(1e-5, gt=0, description="As given, before scaling.")
    learning_rate_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="How the learning rates followed the replicas (sqrt, linear, none)."
    )
    learning_rate_factor: float = Field(
        1.0, gt=0, description="What the learning rates were multiplied by for the replicas."
    )
    dropout: float = Field(0.0, ge=0, lt=1)
    patience: int = Field(0, ge=0)
    augment_variants: int = Field(0, ge=0)
    augmentation: dict[str, Any] = Field(default_factory=dict, description="AugmentPolicy.")
    class_weights: bool = True
    seed: int = 0
    split_fractions: list[float] = Field(default_factory=list)
    given_splits: bool = False
    group_pattern: str | None = None
    images: dict[str, int] = Field(default_factory=dict, description="Images per split.")
    corrupt_skipped: int = Field(0, ge=0)
    validation_accuracy: float | None = Field(None, ge=0, le=1)
    test_accuracy: float | None = Field(None, ge=0, le=1)
    test_top5: float | None = Field(None, ge=0, le=1)
    mixed_precision: bool = False
    strategy: str = "none"
    workers: int = Field(1, gt=0, description="Training processes (multi-worker: the cluster).")
    replicas: int = Field(1, gt=0, description="Replicas over all workers.")
    feature_cache: dict[str, Any] | None = None
    phases: list[dict[str, Any]] = Field(default_factory=list, description="Per-phase history.")
    created: str = Field(description="When training finished (ISO 8601, UTC).")
    duration_s: float = Field(0.0, ge=0)
    versions: dict[str, str] = Field(default_factory=dict, description="Library versions.")

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``run.json``."""
        return self.model_dump(mode="json", by_alias=True)

    def write(self, path: Path) -> None:
        path.write_text(
            json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8"
        )


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A schema 1 object in the shape of schema 2."""
    old = dict(data)
    old.pop("schema", None)
    size = old.pop("input_size", None)
    described: dict[str, Any] = {}
    if isinstance(size, list) and len(size) == 2:
        described = {"height": size[0], "width": size[1]}
    elif size is not None:
        described = {"height": size, "width": None}  # fails validation with the field named
    for key in ("resize", "interpolation", "color"):
        if key in old:
            described[key] = old.pop(key)
    return {"schema": RUN_SCHEMA, **old, "input": described}


def parse_run_info(data: Any, where: str) -> RunInfo:
    """Validate a ``run.json`` object (schema 2, or schema 1 upgraded).

    Raises:
        ExportError: it is not a run description; the message names ``where`` and the first
            problem, and says to re-train when the schema is unknown.
    """
    if not isinstance(data, dict):
        raise ExportError(f"{where} must hold a JSON object")
    schema = data.get("schema", 1)
    if schema == 1:
        data = _upgrade(data)
    elif schema != RUN_SCHEMA:
        raise ExportError(
            f"{where} has run schema {schema!r}, which this exporter does not know (it reads 1 "
            f"and {RUN_SCHEMA}): re-train the model with this version"
        )
    try:
        return RunInfo.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        problem = first["msg"]
        if first["type"] == "extra_forbidden":
            problem = "unknown key"
        raise ExportError(
            f"{where}: {field}: {problem} (this run.json was not written by edge-export train; "
            "re-train the model)"
        ) from None
