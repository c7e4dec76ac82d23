"""RuntimeConfig: everything the runtime needs to run, in one validated file.

A TOML file with the sections below; unknown keys are refused so a typo never goes unnoticed.
``edge-runtime check-config FILE`` validates one without starting anything. Command-line options
override the file.

```toml
[model]
path = "models/traffic-signs"
backend = "auto"            # auto | litert | onnxruntime

[source]
uri = "camera:0"
options = { width = 640, height = 480 }

[postprocess]
threshold = 0.6
smoothing = "ema"
window = 5
debounce = 3

[outputs]
console = "pretty"          # pretty | jsonl | none
http = "0.0.0.0:8080"
gpio = { pin = 17, label = "counterfeit", hold_s = 1.5 }
```
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_runtime.address import parse_address
from edge_runtime.errors import ConfigError
from edge_runtime.postprocess import (
    STILLS_DEBOUNCE,
    STREAM_DEBOUNCE,
    PostprocessConfig,
    Smoothing,
    default_debounce,
)
from edge_runtime.validation import describe_validation_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    """Which model to run and how."""

    path: str = Field(description="A bundle directory or .tar, a .tflite or an .onnx file.")
    labels: str | None = Field(None, description="Label file for a bare model without labels.")
    backend: Literal["auto", "litert", "onnxruntime"] = Field(
        "auto", description="Inference backend; auto picks by file format and device profile."
    )
    artifact: str | None = Field(None, description="Artifact file name inside a bundle.")
    precision: Literal["int8", "fp16", "dynamic", "fp32"] | None = Field(
        None, description="Pick the bundle artifact of this precision."
    )
    threads: int | None = Field(None, ge=0, description="Inference threads; 0 = all cores.")
    profile: str | None = Field(None, description="Device profile name or .toml; default detected.")


class SourceConfig(_Section):
    """Where frames come from."""

    uri: str = Field(description="Source URI, e.g. camera:0, csi://0, rtsp://..., a folder.")
    roi: str | None = Field(
        None, description="Region of interest 'x,y,width,height' as fractions of the frame."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Source options (width, height, fps, loop, ...)."
    )


_POSTPROCESS = PostprocessConfig()


class PostprocessSection(_Section):
    """How scores become decisions. Unset fields keep the defaults of
    :class:`edge_runtime.postprocess.PostprocessConfig` (and the bundle's thresholds)."""

    top_k: int = Field(_POSTPROCESS.top_k, ge=1, description="Classes reported per frame.")
    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Minimum confidence; below it the label is 'unknown'. "
        "Default: the bundle's threshold.",
    )
    per_class_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Per-class minimum confidence. Default: the bundle's per-class thresholds.",
    )
    smoothing: Smoothing = Field(
        _POSTPROCESS.smoothing, description="Temporal smoothing over 'window' frames."
    )
    window: int = Field(
        _POSTPROCESS.window, ge=1, description="Frames the smoothing looks back over."
    )
    debounce: int | None = Field(
        None,
        ge=1,
        description=f"Frames a new label must hold before its event. Default: {STREAM_DEBOUNCE} "
        "on a stream (camera, video, synthetic scenes), so a one-frame flicker is not announced; "
        f"{STILLS_DEBOUNCE} on image files, each its own decision.",
    )
    allow: list[str] = Field(default_factory=list, description="Only these classes are reported.")
    deny: list[str] = Field(default_factory=list, description="These classes are never reported.")

    def to_postprocess_config(
        self, base: PostprocessConfig, *, stills: bool = False
    ) -> PostprocessConfig:
        """These settings laid over ``base``, a model's defaults (its bundle's thresholds):
        what is set here wins, what is not keeps ``base``'s value. ``stills`` says the frames
        are unrelated still images, which decides the debounce when it is not set.

        Raises:
            ConfigError: the combination is invalid (see PostprocessConfig).
        """
        return dataclasses.replace(
            base,
            top_k=self.top_k,
            threshold=base.threshold if self.threshold is None else self.threshold,
            per_class_thresholds=dict(self.per_class_thresholds or base.per_class_thresholds),
            smoothing=self.smoothing,
            window=self.window,
            debounce=default_debounce(stills) if self.debounce is None else self.debounce,
            allow=tuple(self.allow),
            deny=tuple(self.deny),
        )


class GpioConfig(_Section):
    """Drive a pin while a label is the current result (e.g. a reject gate)."""

    pin: int | str = Field(description="BCM pin number or gpiozero pin name.")
    label: str = Field(description="The label that switches the pin on.")
    hold_s: float = Field(1.0, ge=0, description="Seconds the pin stays on after the label ends.")
    active_high: bool = Field(True, description="False for relays that switch on a low level.")


class OutputsConfig(_Section):
    """Where results go."""

    console: Literal["pretty", "jsonl", "none"] = Field("pretty", description="Console output.")
    jsonl_file: str | None = Field(None, description="Also write JSON lines to this file.")
    jsonl_max_bytes: int = Field(0, ge=0, description="Rotate the JSON lines file at this size.")
    http: str | None = Field(
        None,
        description="Serve /healthz /status /latest /metrics at this HOST:PORT (the service's "
        "status server, not a sink: it stays up across model reloads).",
    )
    mqtt: str | None = Field(None, description="Publish events to this broker URL.")
    webhook: str | None = Field(None, description="POST events to this URL.")
    gpio: GpioConfig | None = Field(None, description="Drive a GPIO pin on a label.")
    reject_label: str | None = Field(
        None, description="Announce a REJECT action on the console when this label is decided."
    )
    preview: str | None = Field(None, description="Write annotated frames to this video file.")
    snapshot_dir: str | None = Field(
        None, description="Save an annotated frame per label change in this folder."
    )


    @field_validator("http")
    @classmethod
    def _verify_http(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_address(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


class RunConfig(_Section):
    """How long and how the pipeline runs."""

    max_frames: int | None = Field(None, ge=1, description="Stop after this many frames.")
    pipelined: bool = Field(True, description="Prepare the next frame during inference.")
    status_interval_s: float = Field(5.0, gt=0, description="Seconds between console summaries.")


class RuntimeConfig(_Section):
    """The whole runtime configuration."""

    model: ModelConfig
    source: SourceConfig
    postprocess: PostprocessSection = Field(default_factory=lambda: PostprocessSection())
    outputs: OutputsConfig = Field(default_factory=lambda: OutputsConfig())
    run: RunConfig = Field(default_factory=lambda: RunConfig())

    @model_validator(mode="after")
    def _verify(self) -> RuntimeConfig:
        verify_filters(self.postprocess)
        return self


def verify_filters(section: PostprocessSection) -> None:
    """A class cannot be both allowed and denied."""
    both = sorted(set(section.allow) & set(section.deny))
    if both:
        raise ValueError(f"classes both allowed and denied: {', '.join(both)}")


def parse_config(data: dict[str, Any], where: str = "config") -> RuntimeConfig:
    """Validate a configuration mapping.

    Raises:
        ConfigError: unknown keys, missing sections or invalid values; the message names them.
    """
    try:
        return RuntimeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {describe_validation_error(exc, fallback='config')}") from exc


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw mapping of a TOML configuration file.

    Raises:
        ConfigError: the file cannot be read or is not valid TOML.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def load_config(path: str | os.PathLike[str]) -> RuntimeConfig:
    """Read and validate a TOML configuration file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or does not validate.
    """
    return parse_config(read_config_file(path), where=str(path))


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it, section by section (None values are ignored)."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in overrides.items():
        if isinstance(value, dict):
            section = merged.setdefault(key, {})
            for inner_key, inner_value in value.items():
                if inner_value is not None:
                    section[inner_key] = inner_value
        elif value is not None:
            merged[key] = value
    return merged
