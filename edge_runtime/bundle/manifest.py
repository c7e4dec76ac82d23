"""The bundle manifest (schema 1): the one model of ``manifest.json`` both sides use.

The exporter writes it and the device reads it through these classes, so the contract has one
definition. Pure: parsing and validation of text, no file access (see :mod:`.directory`).
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_runtime.errors import BundleError
from edge_runtime.preprocess import PreprocessSpec, Roi
from edge_runtime.preprocess.ops import Interpolation, ResizeMode
from edge_runtime.types import ArtifactFormat, Precision
from edge_runtime.validation import describe_validation_error

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.txt"
SAMPLES_DIR = "samples"
#: the largest manifest.json read (a real one is a few KiB; its labels are most of it)
MAX_MANIFEST_BYTES = 1 << 20
#: the largest labels.txt in a bundle
MAX_LABELS_BYTES = 1 << 20
#: the largest sample image in a bundle (samples are a few small held-out images)
MAX_SAMPLE_BYTES = 16 << 20

_FILE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_SAFE_NAME = re.compile(rf"^{_FILE_NAME}$")
_SAFE_SAMPLE = re.compile(rf"^{SAMPLES_DIR}/{_FILE_NAME}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InputDescription(_Strict):
    """What the model's input is and how a frame is turned into it."""

    height: StrictInt = Field(gt=0, le=8192, description="Input height in pixels.")
    width: StrictInt = Field(gt=0, le=8192, description="Input width in pixels.")
    channels: Literal[3] = Field(3, description="Always 3: colour images.")
    color: Literal["RGB"] = Field("RGB", description="Channel order the model takes.")
    resize: ResizeMode = Field("squash", description="How a frame of another shape is fitted.")
    interpolation: Interpolation = Field("area", description="Resampling used when resizing.")
    fill: StrictInt = Field(0, ge=0, le=255, description="Gray level of letterbox padding.")

    def preprocess_spec(self, roi: Roi | None = None) -> PreprocessSpec:
        """The preprocessing that produces this input from an RGB frame."""
        return PreprocessSpec(
            height=self.height,
            width=self.width,
            resize=self.resize,
            interpolation=self.interpolation,
            roi=roi,
            channel_order=self.color,
            fill=self.fill,
        )


class Artifact(_Strict):
    """One model file in the bundle and what verification measured for it."""

    path: str = Field(pattern=_SAFE_NAME.pattern, description="File name inside the bundle.")
    format: ArtifactFormat
    precision: Precision
    input_dtype: Literal["uint8", "int8", "float32"] = Field(
        description="Tensor type of the model input; values are always raw pixels 0..255."
    )
    output_size: StrictInt = Field(gt=0, description="Number of scores the model outputs.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: StrictInt = Field(ge=0)
    opset: StrictInt | None = Field(None, description="ONNX opset, for ONNX artifacts.")
    accuracy: float | None = Field(None, ge=0, le=1, description="Top-1 on the held-out split.")
    agreement_with_float: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of held-out images where top-1 equals the float model's.",
    )
    latency_ms: float | None = Field(
        None, ge=0, description="Median inference time on the exporter."
    )


class Training(_Strict):
    """How the model was made."""

    architecture: str
    weights: str = Field(description="imagenet, none, or the name of a weights file.")
    dataset_fingerprint: str = ""
    epochs: StrictInt = Field(0, ge=0)
    validation_accuracy: float | None = Field(None, ge=0, le=1)
    details: dict[str, Any] = Field(default_factory=dict, description="Any further settings.")


class Thresholds(_Strict):
    """Minimum confidence for a result to count; below it the result is ``unknown``."""

    default: float = Field(0.0, ge=0, le=1)
    per_class: dict[str, float] = Field(default_factory=dict)


class Compatible(_Strict):
    """Where this bundle may run (checked by :func:`edge_runtime.selection.check_compatible`)."""

    runtime: str = Field(
        ">=0.1", description="Runtime version range (PEP 440), e.g. '>=0.1,<1'; empty = any."
    )
    profiles: list[str] = Field(default_factory=list, description="Device profiles; empty = any.")

    @field_validator("runtime")
    @classmethod
    def _verify_runtime_range(cls, value: str) -> str:
        try:
            SpecifierSet(value)
        except InvalidSpecifier:
            raise ValueError(
                f"compatible.runtime {value!r} is not a version range such as '>=0.1,<1'"
            ) from None
        return value

    def runtime_range(self) -> SpecifierSet:
        """The runtime versions this bundle accepts."""
        return SpecifierSet(self.runtime)


class Sample(_Strict):
    """A held-out image with its expected label, for the on-device smoke test."""

    path: str = Field(pattern=_SAFE_SAMPLE.pattern)
    label: str


class BundleManifest(_Strict):
    """``manifest.json`` of a schema-1 bundle."""

    schema_version: Literal[1] = Field(1, alias="schema")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    version: StrictInt = Field(
        gt=0, le=2**63 - 1, description="Grows with every release of this model (int64)."
    )
    created: datetime
    task: Literal["classification"] = "classification"
    labels: list[str] = Field(min_length=2)
    input: InputDescription
    artifacts: list[Artifact] = Field(min_length=1)
    training: Training | None = None
    thresholds: Thresholds = Field(default_factory=lambda: Thresholds())
    compatible: Compatible = Field(default_factory=lambda: Compatible())
    samples: list[Sample] = Field(default_factory=list)

    @model_validator(mode="after")
    def _verify_consistency(self) -> BundleManifest:
        verify_labels(self.labels)
        verify_artifacts(self.artifacts, len(self.labels))
        unknown = sorted(set(self.thresholds.per_class) - set(self.labels))
        if unknown:
            raise ValueError(f"thresholds name classes that are not labels: {', '.join(unknown)}")
        bad = [v for v in self.thresholds.per_class.values() if not 0 <= v <= 1]
        if bad:
            raise ValueError(f"per-class thresholds must be in 0..1, got {bad[0]}")
        for sample in self.samples:
            if sample.label not in self.labels:
                raise ValueError(f"sample {sample.path} has label '{sample.label}', not a class")
        return self

    def artifact(self, path: str) -> Artifact:
        """The artifact stored as ``path``.

        Raises:
            BundleError: there is none.
        """
        for item in self.artifacts:
            if item.path == path:
                return item
        raise BundleError(f"bundle {self.name} has no artifact '{path}'")

    def member_names(self) -> set[str]:
        """Every file name a valid bundle directory holds."""
        names = {MANIFEST_NAME, LABELS_NAME}
        names.update(a.path for a in self.artifacts)
        names.update(s.path for s in self.samples)
        return names

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2) + "\n"


def verify_labels(labels: list[str]) -> None:
    """Labels must be non-empty single lines without surrounding blanks, each used once."""
    for label in labels:
        if not label or label != label.strip() or "\n" in label or "\r" in label:
            raise ValueError(f"label {label!r} must be a non-empty single line without padding")
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ValueError(f"label '{label}' appears twice")
        seen.add(label)


def verify_artifacts(artifacts: list[Artifact], label_count: int) -> None:
    """Artifact names are unique and every artifact outputs one score per label."""
    paths = [a.path for a in artifacts]
    if len(set(paths)) != len(paths):
        raise ValueError("two artifacts share a file name")
    for item in artifacts:
        if item.output_size != label_count:
            raise ValueError(
                f"{label_count} labels but artifact {item.path} outputs {item.output_size} "
                "scores: the labels do not belong to this model"
            )
        expected_suffix = "." + item.format
        if not item.path.endswith(expected_suffix):
            raise ValueError(
                f"artifact {item.path} is {item.format} but is not named *{expected_suffix}"
            )


def parse_manifest(data: bytes | str, where: str = MANIFEST_NAME) -> BundleManifest:
    """Parse and validate manifest JSON of at most :data:`MAX_MANIFEST_BYTES`.

    Raises:
        BundleError: too large, not JSON, JSON that Python cannot hold (nested thousands of
            levels deep, integers of thousands of digits), an unknown schema, or a field that
            breaks the schema.
    """
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where} is larger than {MAX_MANIFEST_BYTES >> 20} MiB, the limit")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BundleError(f"{where} nests arrays or objects too deeply to read") from None
    except ValueError:  # an integer of more digits than int() converts
        raise BundleError(
            f"{where} holds a number of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(raw, dict):
        raise BundleError(f"{where} must hold a JSON object")
    schema = raw.get("schema")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise BundleError(
            f"{where}: unsupported bundle schema {schema!r} "
            f"(this runtime reads schema {SCHEMA_VERSION})"
        )
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(
            f"{where}: {describe_validation_error(exc, fallback='manifest')}"
        ) from exc
    except RecursionError:
        raise BundleError(f"{where} nests arrays or objects too deeply to read") from None


__all__ = [
    "LABELS_NAME",
    "MANIFEST_NAME",
    "MAX_LABELS_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_SAMPLE_BYTES",
    "SAMPLES_DIR",
    "SCHEMA_VERSION",
    "Artifact",
    "BundleManifest",
    "Compatible",
    "InputDescription",
    "Sample",
    "Thresholds",
    "Training",
    "parse_manifest",
    "verify_artifacts",
    "verify_labels",
]
