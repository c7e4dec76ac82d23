"""From a configuration to a pipeline: the source, the sinks and the serving model, wired.

:func:`build_pipeline` builds the source and the sinks first (bad URIs and options fail before a
slow model load), then loads the model and its postprocessor with
:func:`edge_runtime.serving.load_serving_model`, the part that a reload or a hot swap repeats on
its own. Nothing is opened here: ``Pipeline.run`` opens the source and the sinks.
"""

from __future__ import annotations

from typing import TextIO

from edge_runtime.config import RuntimeConfig
from edge_runtime.pipeline import Pipeline, PipelineOptions
from edge_runtime.serving import load_serving_model
from edge_runtime.sinks import Sink, open_sink
from edge_runtime.sources import Source, open_source
from edge_runtime.status import RuntimeStatus


def build_source(config: RuntimeConfig) -> Source:
    """The source ``[source]`` describes, not yet opened.

    Raises:
        UnknownComponentError, SourceError, ConfigError, MissingDependencyError: as
            :func:`edge_runtime.sources.open_source`.
    """
    return open_source(config.source.uri, **config.source.options)


def build_sinks(config: RuntimeConfig, stream: TextIO | None = None) -> list[Sink]:
    """The sinks a configuration's ``[outputs]`` section asks for, not yet opened. (``http``
    is no sink: the command serves it with ``edge_runtime.service.status_server``.)

    Raises:
        ConfigError, SinkError, MissingDependencyError: as :func:`edge_runtime.sinks.open_sink`.
    """
    outputs = config.outputs
    sinks: list[Sink] = []
    if outputs.console == "pretty":
        sinks.append(open_sink("pretty", stream=stream, interval_s=config.run.status_interval_s))
    elif outputs.console == "jsonl":
        sinks.append(open_sink("jsonl", stream=stream))
    if outputs.reject_label:
        sinks.append(open_sink("reject", label=outputs.reject_label, stream=stream))
    if outputs.jsonl_file:
        sinks.append(open_sink("jsonl", path=outputs.jsonl_file, max_bytes=outputs.jsonl_max_bytes))
    if outputs.mqtt:
        sinks.append(open_sink("mqtt", url=outputs.mqtt))
    if outputs.webhook:
        sinks.append(open_sink("webhook", url=outputs.webhook))
    if outputs.gpio is not None:
        gpio = outputs.gpio
        sinks.append(
            open_sink(
                "gpio",
                pin=gpio.pin,
                label=gpio.label,
                hold_s=gpio.hold_s,
                active_high=gpio.active_high,
            )
        )
    if outputs.preview or outputs.snapshot_dir:
        sinks.append(open_sink("preview", video=outputs.preview, snapshot_dir=outputs.snapshot_dir))
    return sinks


def build_pipeline(
    config: RuntimeConfig,
    *,
    stream: TextIO | None = None,
    status: RuntimeStatus | None = None,
) -> Pipeline:
    """Build source and sinks, load the model and its postprocessor, and wire them.

    ``stream`` is where console sinks write (default: standard output); ``status`` is the
    runtime status the pipeline reports to (default: a new one).

    Raises:
        EdgeRuntimeError: the source URI or a sink is invalid, the model cannot be loaded, or an
            optional package is missing (the message names the extra to install).
    """
    source = build_source(config)
    sinks = build_sinks(config, stream)
    serving = load_serving_model(config, stills=source.stills)
    return Pipeline(
        source,
        serving.model,
        serving.postprocessor,
        sinks,
        status=status,
        options=PipelineOptions(max_frames=config.run.max_frames, pipelined=config.run.pipelined),
    )
