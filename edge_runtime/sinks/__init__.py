"""Result sinks: where predictions go (console, JSON lines, MQTT, webhook, GPIO, preview).

``open_sink(name, **options)`` imports only the chosen sink's module, so a device without paho-mqtt
or gpiozero still prints to its console.
"""

from __future__ import annotations

import inspect
from typing import Any

from edge_runtime import registry
from edge_runtime.errors import ConfigError
from edge_runtime.sinks.base import Sink, StatusProvider, selected

__all__ = ["Sink", "StatusProvider", "open_sink", "selected"]


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
