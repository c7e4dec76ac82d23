"""Result sinks: where predictions go (console, JSON lines, MQTT, webhook, GPIO, preview).

``open_sink(name, **options)`` imports only the chosen sink's module, so a device without paho-mqtt
or gpiozero still prints to its console. ``output_configs()`` collects the sinks' config classes
(each sink module declares its ``[outputs]`` key, settings and flags; see ``sinks.base``): the
sink modules are light, their third-party packages are imported only when a sink opens.
"""

from __future__ import annotations

import inspect
from typing import Any

from edge_runtime import registry
from edge_runtime.errors import ConfigError
from edge_runtime.sinks.base import Flag, Sink, SinkConfig, SinkContext, StatusProvider, selected

__all__ = [
    "Flag",
    "Sink",
    "SinkConfig",
    "SinkContext",
    "StatusProvider",
    "open_sink",
    "output_configs",
    "selected",
]


def output_configs() -> dict[str, type[SinkConfig]]:
    """The config class of every registered sink that has one, by its ``[outputs]`` key, in
    registry order (the order sinks are built and receive predictions).

    Raises:
        ConfigError: two sinks declare the same key.
        MissingDependencyError: a sink module imports a package that is not installed at module
            level (a bug of that module: see ``sinks.base``).
    """
    found: dict[str, type[SinkConfig]] = {}
    for name in registry.names("sink", sort=False):
        cls = registry.load("sink", name)
        config = getattr(cls, "Config", None)
        if config is None:
            continue
        owner = found.get(config.key)
        if owner is not None and owner is not config:
            raise ConfigError(f"two sinks declare the [outputs] key '{config.key}'")
        found[config.key] = config
    return found


def open_sink(name: str, **options: Any) -> Sink:
    """The sink registered as ``name``, built with ``options`` and not yet opened (the pipeline
    calls ``open(status)``). Each sink documents its options.

    Raises:
        UnknownComponentError: no sink has that name; the message lists the known ones.
        ConfigError: an option the sink does not take, a required one missing, or a bad value.
        MissingDependencyError: the sink needs a package that is not installed.
    """
    cls = registry.load("sink", name)
    assert isinstance(cls, type) and issubclass(cls, Sink)
    parameters = inspect.signature(cls).parameters
    known = sorted(parameters)
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ConfigError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for the "
            f"{name} sink (known: {', '.join(known)})"
        )
    missing = [
        p.name for p in parameters.values() if p.default is p.empty and p.name not in options
    ]
    if missing:
        raise ConfigError(f"the {name} sink needs {', '.join(missing)}")
    factory: Any = cls
    sink: Sink = factory(**options)
    return sink
