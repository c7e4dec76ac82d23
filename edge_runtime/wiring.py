"""From a configuration to a pipeline: the source, the sinks and the serving model, wired.

:func:`build_pipeline` checks the configuration with :func:`check_runnable` (which is all
``check-config`` does) and builds the source and the sinks first (bad paths, URIs and options fail
before a slow model load), then loads the model and its postprocessor with
:func:`edge_runtime.serving.load_serving_model`, the part that a reload or a hot swap repeats on
its own. Nothing is opened here: ``Pipeline.run`` opens the source and the sinks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from edge_runtime.artifacts import resolve_profile
from edge_runtime.config import RuntimeConfig
from edge_runtime.errors import ConfigError, UnknownComponentError
from edge_runtime.inputfiles import describe
from edge_runtime.labels import read_labels
from edge_runtime.model import model_kind
from edge_runtime.pipeline import Pipeline, PipelineOptions
from edge_runtime.preprocess import Roi
from edge_runtime.serving import load_serving_model
from edge_runtime.sinks import Sink, SinkContext
from edge_runtime.sources import Source, open_source
from edge_runtime.status import RuntimeStatus

#: python-tuf's own cap on a root metadata file (UpdaterConfig.root_max_length)
MAX_ROOT_BYTES = 512_000


def build_source(config: RuntimeConfig) -> Source:
    """The source ``[source]`` describes, not yet opened.

    Raises:
        UnknownComponentError, SourceError, ConfigError, MissingDependencyError: as
            :func:`edge_runtime.sources.open_source`.
    """
    return open_source(config.source.uri, **config.source.options)


def build_sinks(config: RuntimeConfig, stream: TextIO | None = None) -> list[Sink]:
    """The sinks a configuration's ``[outputs]`` section turns on, not yet opened, in registry
    order; each output's settings build its own sinks. (``http`` is no sink: the command serves
    it with ``edge_runtime.service.status_server``.) ``stream`` is where console sinks write.

    Raises:
        ConfigError, SinkError: a setting a sink refuses.
    """
    context = SinkContext(stream=stream, status_interval_s=config.run.status_interval_s)
    return [sink for output in config.outputs.configured() for sink in output.build(context)]


def verify_update_section(config: RuntimeConfig) -> None:
    """What can be checked of ``[update]`` without the network: the pinned root is a readable
    TUF root metadata file. (Whether it verifies, and the repository, are the client's part.)

    Raises:
        ConfigError: ``update.root`` is missing, unreadable or not a root metadata file.
    """
    section = config.update
    if section is None:
        return
    root = Path(section.root)
    where = f"update.root: {root}"
    try:
        with open(root, "rb") as handle:
            data = handle.read(MAX_ROOT_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"{where} does not exist: copy the repository's root.json there when the device is "
            "provisioned (edge-export repo init prints its path)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {describe(exc)}") from None
    if len(data) > MAX_ROOT_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_ROOT_BYTES} bytes: not a root.json")
    try:
        signed = json.loads(data)["signed"]
        kind = signed["_type"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{where} is not TUF metadata (no signed._type)") from None
    if kind != "root":
        raise ConfigError(f"{where} is {kind!r} metadata, not the repository's root.json")


def check_runnable(config: RuntimeConfig) -> Source:
    """Make every check ``run`` makes before the slow work, without loading a model or opening
    a source, a sink or a port: the model path names something a model can be loaded from
    (:func:`edge_runtime.model.model_kind`: no FIFO, no device, no compressed ``.tar``), the
    label file and the device profile can be read, the region of interest parses, and the
    source and the sinks accept their settings. ``run`` starts with it and ``check-config`` is
    it, so the two refuse the same things. Returns the source, built but not opened.

    Raises:
        EdgeRuntimeError: the first problem found (ModelError, ConfigError, SourceError, ...).
    """
    verify_update_section(config)
    if config.model.path is not None:  # else: the update store's active model (ota.store)
        model_kind(config.model.path)
    if config.model.labels is not None:
        read_labels(config.model.labels)
    if config.model.profile is not None:
        resolve_profile(config.model.profile)
    if config.source.roi:
        Roi.parse(config.source.roi)
    try:
        source = build_source(config)
    except UnknownComponentError:
        raise
    except ConfigError as exc:
        raise ConfigError(f"source.options: {exc}") from None
    build_sinks(config)
    return source


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
    source = check_runnable(config)
    sinks = build_sinks(config, stream)
    serving = load_serving_model(config, stills=source.stills)
    try:
        return Pipeline(
            source,
            serving.model,
            serving.postprocessor,
            sinks,
            status=status,
            options=PipelineOptions(
                max_frames=config.run.max_frames, pipelined=config.run.pipelined
            ),
        )
    except BaseException:  # a signal (see cli.Terminated) must not leak the loaded model
        serving.close()
        raise
