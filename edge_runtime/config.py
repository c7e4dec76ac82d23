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
mqtt = { url = "mqtt://broker.local", topic = "kiosk/3" }   # or just mqtt = "mqtt://..."
```

The ``[outputs]`` keys and the ``[source] options`` are declared by the sinks and sources
themselves (see ``edge_runtime.sinks.base.SinkConfig`` and ``edge_runtime.sources.base``);
:func:`parse_config` validates with the schema assembled from them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Mapping
from typing import Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
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
from edge_runtime.sinks import SinkConfig, output_configs
from edge_runtime.sinks.base import expand_shorthand
from edge_runtime.sources import check_options, options_model, parse_source_uri, scheme_kind
from edge_runtime.tomlfile import read_toml
from edge_runtime.validation import describe_validation_error

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    """Which model to run and how."""

    path: str | None = Field(
        None,
        description="A bundle directory or .tar, a .tflite or an .onnx file. May be left out "
        "when [update] is set: the store's active model serves (with [update] and a path, "
        "the path is the factory model that serves until the first update is installed).",
    )
    labels: str | None = Field(None, description="Label file for a bare model without labels.")
    backend: Literal["auto", "litert", "onnxruntime"] = Field(
        "auto", description="Inference backend; auto picks by file format and device profile."
    )
    artifact: str | None = Field(None, description="Artifact file name inside a bundle.")
    precision: Literal["auto", "int8", "fp16", "dynamic", "fp32"] | None = Field(
        "auto",
        description="Pick the bundle artifact of this precision; auto times the artifacts on "
        "this device once and runs the fastest that passed the accuracy gate (cached).",
    )
    cache_dir: str | None = Field(
        None,
        description="Where auto precision caches its measured choice "
        "(default $XDG_CACHE_HOME/edge-runtime).",
    )
    threads: int | None = Field(None, description="Inference threads; 0 = all cores.")
    profile: str | None = Field(None, description="Device profile name or .toml; default detected.")


    @field_validator("threads")
    @classmethod
    def _verify_threads(cls, value: int | None) -> int | None:
        if value is not None and value < 0:  # as the command line's --threads says it
            raise ValueError(f"threads must be 0 (all cores) or more, got {value}")
        return value


class SourceConfig(_Section):
    """Where frames come from."""

    uri: str = Field(description="Source URI, e.g. camera:0, csi://0, rtsp://..., a folder.")
    roi: str | None = Field(
        None, description="Region of interest 'x,y,width,height' as fractions of the frame."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the source the URI names, over those in its query string; each "
        "source declares its own (width, height, fps, loop, ...).",
    )

    @field_validator("options")
    @classmethod
    def _verify_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = scheme_kind(info.data["uri"]) if "uri" in info.data else None
        if kind is None:
            return value  # a path: what it is, and so its options, is known when it opens
        return options_model(kind).model_validate(value).model_dump(exclude_unset=True)

    @model_validator(mode="after")
    def _verify_query_options(self) -> SourceConfig:
        kind = scheme_kind(self.uri)
        if kind is not None and "?" in self.uri:
            _, _, query = parse_source_uri(self.uri)
            try:
                check_options(kind, {**query, **self.options})
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self


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
            # Unrelated pictures, decided as they are: each its own decision and announcement.
            independent=stills and self.debounce is None and self.smoothing == "none",
        )


class OutputsConfig(_Section):
    """Where results go. Each key but ``http`` belongs to a sink, which declares it with its
    settings (``edge_runtime.sinks.base.SinkConfig``), e.g. ``console``, ``jsonl``, ``mqtt``,
    ``gpio``; ``edge-runtime check-config FILE --json`` lists them all. A bare value sets a
    sink's main setting (``mqtt = "mqtt://broker:1883"``); a table sets any
    (``mqtt = { url = "...", qos = 0 }``). Older files' flat keys (``jsonl_file``,
    ``jsonl_max_bytes``, ``reject_label``, ``snapshot_dir``) still mean what they meant.

    This base class holds only ``http``; :func:`runtime_config_model` adds the sinks' keys.
    """

    http: str | None = Field(
        None,
        description="Serve /healthz /status /latest /metrics at this HOST:PORT (the service's "
        "status server, not a sink: it stays up across model reloads).",
    )

    @model_validator(mode="before")
    @classmethod
    def _current_shape(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        try:
            return normalize_outputs(data)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("http")
    @classmethod
    def _verify_http(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_address(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    def configured(self) -> list[SinkConfig]:
        """The outputs this section turns on, in the order their sinks are built."""
        found = (getattr(self, name) for name in type(self).model_fields)
        return [value for value in found if isinstance(value, SinkConfig)]

    def get(self, key: str) -> SinkConfig | None:
        """The settings of the output named ``key``, or None when it is off."""
        value = getattr(self, key, None)
        return value if isinstance(value, SinkConfig) else None


class RunConfig(_Section):
    """How long and how the pipeline runs."""

    max_frames: int | None = Field(None, ge=1, description="Stop after this many frames.")
    pipelined: bool = Field(True, description="Prepare the next frame during inference.")
    status_interval_s: float = Field(5.0, gt=0, description="Seconds between console summaries.")


DEFAULT_HTTP = "127.0.0.1:8080"


class ServiceSection(_Section):
    """How ``edge-runtime daemon`` runs as a service (``run`` ignores this section but its
    ``http``, which it also reads when ``[outputs] http`` is unset)."""

    http: str = Field(
        DEFAULT_HTTP,
        description="HOST:PORT of the status server (/healthz /status /metrics and the live "
        "view), which the daemon always runs; 0.0.0.0:8080 serves the network.",
    )
    stale_after_s: float = Field(
        5.0,
        gt=0,
        description="Seconds without a fresh decision after which /healthz fails and the "
        "actuating outputs enter their fail-safe state.",
    )
    watchdog: bool = Field(
        True,
        description="Ping the systemd watchdog (WatchdogSec= in the unit) while frames flow or "
        "the camera is being reconnected on schedule.",
    )
    reconnect_grace_s: float = Field(
        5.0,
        gt=0,
        description="How far past its scheduled time a camera reconnect attempt may be before "
        "the watchdog pings stop (a reconnect that hangs in the driver).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log records written to stderr."
    )
    log_format: Literal["auto", "journal", "plain"] = Field(
        "auto",
        description="journal: lines start with journald priorities (<3> error ... <7> debug); "
        "auto: so when stderr is the journal (JOURNAL_STREAM), plain otherwise.",
    )
    live_view: bool = Field(
        True, description="Serve the live view: / (a page), /latest.jpg and /stream.mjpg."
    )
    live_view_fps: float = Field(
        5.0,
        gt=0,
        le=30,
        description="Most annotated frames a second encoded for the live view, only while "
        "someone watches.",
    )
    live_view_max_streams: int = Field(
        2, ge=0, le=8, description="MJPEG viewers (/stream.mjpg) served at once."
    )
    status_interval_s: float = Field(
        10.0, gt=0, description="Seconds between STATUS= updates to systemd (model, FPS)."
    )
    model_load_timeout_s: float = Field(
        90.0,
        gt=0,
        description="How long a model load may take: the daemon asks systemd for this much "
        "more time (EXTEND_TIMEOUT_USEC) while it loads.",
    )

    @field_validator("http")
    @classmethod
    def _verify_http(cls, value: str) -> str:
        try:
            parse_address(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

#: URL schemes an update repository may be reached with
UPDATE_SCHEMES = ("http", "https", "file")


class UpdateConfig(_Section):
    """Over-the-air model updates: where the signed repository is, which model and channel this
    device follows, and how a new model proves itself (``edge-runtime update``, the daemon)."""

    url: str = Field(
        description="The TUF repository: http(s)://host/repo/ or file:///media/usb/repo for an "
        "air-gapped device (its metadata/ and targets/ folders are below it)."
    )
    root: str = Field(
        description="The repository's root.json, pinned at provisioning (edge-export repo init "
        "prints its path). Only metadata that chains to it is trusted."
    )
    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="The model (bundle name) to follow."
    )
    channel: str = Field(
        "stable", pattern=r"^[a-z0-9][a-z0-9._-]{0,31}$", description="The channel to follow."
    )
    store: str = Field(
        "/var/lib/edge-runtime/models",
        description="The model store: the active and previous slots, state.json and the "
        "repository metadata cache. Must be on the device's persistent storage.",
    )
    interval_s: float = Field(
        900.0, ge=1.0, description="Seconds between update checks in the daemon (with jitter)."
    )
    jitter: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Each wait is interval_s times a random factor in [1 - jitter, 1 + jitter], "
        "so a fleet started together does not ask the server at the same moment.",
    )
    device_id: str = Field(
        "auto",
        min_length=1,
        description="Stable id for staged rollout; auto: /etc/machine-id, else an id made once "
        "and kept in the store.",
    )
    probation_frames: int = Field(
        300, ge=1, description="Frames a new model serves on probation before it is trusted."
    )
    max_errors: int = Field(
        2, ge=0, description="Inference errors tolerated during probation; one more rolls back."
    )
    shadow: bool = Field(
        False,
        description="During probation also run the previous model on live frames and roll "
        "back when the two agree too rarely (min_agreement). Costs a second model in memory.",
    )
    min_agreement: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Shadow probation: the share of frames both models must give the same "
        "top-1 label (judged with a 99% confidence bound over at least 300 comparisons).",
    )
    shadow_interval_s: float = Field(
        0.5,
        gt=0.0,
        description="Shadow probation: seconds between two comparisons (neighbouring video "
        "frames are not independent evidence).",
    )
    smoke_timeout_s: float = Field(
        120.0,
        gt=0.0,
        description="How long the smoke test of a new model (in a child process) may take.",
    )
    download_timeout_s: float = Field(
        30.0, gt=0.0, description="Seconds a download may wait for the next bytes."
    )
    max_download_s: float = Field(
        1800.0, gt=0.0, description="Seconds one file's download may take in all."
    )
    max_bundle_bytes: int = Field(
        2 * 1024**3,
        gt=0,
        description="Largest bundle this device downloads, whatever the repository signs.",
    )

    @field_validator("url")
    @classmethod
    def _verify_url(cls, value: str) -> str:
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if scheme not in UPDATE_SCHEMES:
            raise ValueError(
                f"url {value!r} must start with http://, https:// or file:// (a USB stick: "
                "file:///media/usb/repo)"
            )
        return value


class RuntimeConfig(_Section):
    """The whole runtime configuration.

    Its ``outputs`` here know only ``http``: validate with :func:`parse_config` (or
    ``RuntimeConfig.model_validate``, which hands over to :func:`runtime_config_model`), whose
    schema adds every sink's key. The result is an instance of a subclass of this class.
    """

    model: ModelConfig = Field(default_factory=lambda: ModelConfig())
    source: SourceConfig
    postprocess: PostprocessSection = Field(default_factory=lambda: PostprocessSection())
    outputs: OutputsConfig = Field(default_factory=lambda: OutputsConfig())
    run: RunConfig = Field(default_factory=lambda: RunConfig())
    service: ServiceSection = Field(default_factory=lambda: ServiceSection())
    update: UpdateConfig | None = Field(
        None, description="Over-the-air model updates from a TUF repository (see UpdateConfig)."
    )

    @model_validator(mode="before")
    @classmethod
    def _collect_section(cls, data: Any) -> Any:
        # `[collect]` is the field-data sink's table written as its own section; a command
        # line's --collect (in [outputs]) wins over the file's.
        if not isinstance(data, Mapping) or "collect" not in data:
            return data
        data = dict(data)
        section = data.pop("collect")
        outputs = dict(data.get("outputs") or {})
        config = output_configs()["collect"]
        given = expand_shorthand(config, outputs.get("collect", {}))
        section = expand_shorthand(config, section)
        if isinstance(section, Mapping) and isinstance(given, Mapping):
            outputs["collect"] = {**section, **given}
        else:
            outputs["collect"] = section if not given else given
        data["outputs"] = outputs
        return data

    @model_validator(mode="after")
    def _verify(self) -> RuntimeConfig:
        verify_filters(self.postprocess)
        if self.model.path is None and self.update is None:
            raise ValueError(
                "model.path: a model is needed: set [model] path, or [update] to serve the "
                "models installed over the air"
            )
        return self

    @property
    def http(self) -> str:
        """Where the daemon serves its status: ``[service] http`` when set, else ``[outputs]
        http``, else the default (127.0.0.1:8080)."""
        if "http" in self.service.model_fields_set or not self.outputs.http:
            return self.service.http
        return self.outputs.http

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> Self:
        if cls is RuntimeConfig:
            return cast(Self, runtime_config_model().model_validate(obj, **options))
        return super().model_validate(obj, **options)


def verify_filters(section: PostprocessSection) -> None:
    """A class cannot be both allowed and denied."""
    both = sorted(set(section.allow) & set(section.deny))
    if both:
        raise ValueError(f"classes both allowed and denied: {', '.join(both)}")


def normalize_outputs(data: Mapping[str, Any]) -> dict[str, Any]:
    """An ``[outputs]`` mapping in its current shape: older flat keys folded into their sink's
    table (``jsonl_file`` -> ``jsonl.path``) and bare values expanded into tables
    (``mqtt = "mqtt://b"`` -> ``mqtt = { url = "mqtt://b" }``). Unknown keys are left for the
    schema to refuse. An older key that only refined an output the file does not turn on (a
    ``jsonl_max_bytes`` without ``jsonl_file``) changes nothing, as it always did.

    Raises:
        ConfigError: an older key and the current table both set the same setting.
    """
    result = dict(data)
    for key, config in output_configs().items():
        given = result.get(key)
        folded: dict[str, Any] = {}
        for old, field_name in config.legacy.items():
            if old in result and old != key:
                folded[field_name] = result.pop(old)
        if given is None and not folded:
            continue
        table = expand_shorthand(config, given) if given is not None else {}
        if folded:
            if not isinstance(table, Mapping):
                continue  # a malformed value: the schema reports it
            clash = sorted(set(folded) & set(table))
            if clash:
                old_keys = [old for old, name in config.legacy.items() if name in clash]
                raise ConfigError(f"{old_keys[0]} and {key}.{clash[0]} both set; keep one")
            table = {**table, **folded}
            missing = [
                name
                for name, info in config.model_fields.items()
                if info.is_required() and name not in table
            ]
            if given is None and missing:
                continue
        result[key] = table
    return result


@functools.cache
def _models(
    outputs: tuple[tuple[str, type[SinkConfig]], ...],
) -> tuple[type[OutputsConfig], type[RuntimeConfig]]:
    fields: dict[str, Any] = {}
    for key, config in outputs:
        if key in OutputsConfig.model_fields:
            raise ConfigError(f"a sink declares the reserved [outputs] key '{key}'")
        summary = " ".join((config.__doc__ or "").split())
        if config.enabled_by_default:
            fields[key] = (config | None, Field(default_factory=config, description=summary))
        else:
            fields[key] = (config | None, Field(None, description=summary))
    outputs_model = create_model(
        "OutputsConfig", __base__=OutputsConfig, __module__=__name__, **fields
    )
    outputs_model.__doc__ = OutputsConfig.__doc__
    runtime_model = create_model(
        "RuntimeConfig",
        __base__=RuntimeConfig,
        __module__=__name__,
        outputs=(outputs_model, Field(default_factory=outputs_model)),
    )
    runtime_model.__doc__ = RuntimeConfig.__doc__
    return outputs_model, runtime_model


def runtime_config_model() -> type[RuntimeConfig]:
    """:class:`RuntimeConfig` with the ``[outputs]`` keys of every registered sink: the schema
    :func:`parse_config` validates with (and ``model_json_schema()`` documents). Imports the
    sink modules, which are light (see ``edge_runtime.sinks.base``).

    Raises:
        ConfigError: two sinks declare the same key, or one takes ``http``.
    """
    return _models(tuple(output_configs().items()))[1]


def parse_config(data: dict[str, Any], where: str = "config") -> RuntimeConfig:
    """Validate a configuration mapping.

    Raises:
        ConfigError: unknown keys, missing sections or invalid values; the message names them.
    """
    model = runtime_config_model()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        said = describe_validation_error(exc, fallback="config", plain=True, model=model)
        raise ConfigError(f"{where}: {said}") from exc


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw mapping of a TOML configuration file.

    The file must be a regular file (a FIFO or a device is refused unopened) of at most
    :data:`edge_runtime.tomlfile.MAX_TOML_BYTES`, in UTF-8, within the nesting limits of
    :mod:`edge_runtime.tomlfile`.

    Raises:
        ConfigError: the file cannot be read or is not valid TOML (one line naming the file).
    """
    return read_toml(path, "config")


def load_config(path: str | os.PathLike[str]) -> RuntimeConfig:
    """Read and validate a TOML configuration file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or does not validate.
    """
    return parse_config(read_config_file(path), where=str(path))


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it: tables merge key by key at every depth, other
    values replace; None values in ``overrides`` are ignored (an option not given)."""
    merged: dict[str, Any] = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        elif isinstance(value, Mapping):
            merged[key] = merge({}, value)
        else:
            merged[key] = value
    return merged
