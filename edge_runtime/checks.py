"""Every problem of a runtime config file, each with its key path: what ``check-config`` prints.

``run`` and ``daemon`` stop at the first problem (:func:`edge_runtime.wiring.check_runnable`);
a person fixing a file wants them all at once. :func:`check_config_file` validates the whole
schema (every error pydantic finds), then checks each section that validated on its own as far
as that is possible without the device: the model path and, for a bundle, its manifest, labels
and every artifact's sha256; the label file and the device profile; the source's URI, options
and what it can say without opening the device (``Source.preflight``); the outputs' settings;
the ``[update]`` section. What only the device can tell (a camera that opens, a free port) is
listed apart, as ``device_checks``: it is no problem here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from edge_runtime.config import (
    ModelConfig,
    RuntimeConfig,
    ServiceSection,
    SourceConfig,
    normalize_outputs,
    read_config_file,
    runtime_config_model,
)
from edge_runtime.errors import ConfigError, EdgeRuntimeError

#: pydantic's words for some errors, in the tool's
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required, but missing",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the key path (``model.path``, ``outputs.mqtt.qos``) and what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_config_file` found; ``config`` is the validated one, when valid."""

    problems: tuple[Problem, ...]
    device_checks: tuple[str, ...]
    config: RuntimeConfig | None

    @property
    def ok(self) -> bool:
        return not self.problems


def _validation_problems(error: ValidationError, prefix: str = "") -> list[Problem]:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        message = (_MESSAGES.get(item["type"]) or str(item["msg"])).removeprefix("Value error, ")
        head, sep, rest = message.partition(": ")
        if not where and sep and "." in head and head.replace(".", "").replace("_", "").isalnum():
            where, message = head, rest  # a whole-config check that names its key
        problems.append(Problem(where, message))
    return problems


def _section(raw: Mapping[str, Any], name: str, model: type[BaseModel]) -> Any:
    """The section validated on its own, or None when it is missing or invalid (the schema
    check has reported it already)."""
    value = raw.get(name)
    if not isinstance(value, Mapping):
        return None
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def check_config_file(path: str | os.PathLike[str], *, devices: str = "/dev") -> CheckReport:
    """Check a config file without starting anything (see the module docstring). ``devices``:
    where device nodes are looked for (tests pass a fake ``/dev``).

    Raises:
        ConfigError: the file cannot be read or is not TOML (nothing else can be checked).
    """
    raw = read_config_file(path)
    problems: list[Problem] = []
    device: list[str] = []
    if isinstance(raw.get("outputs"), Mapping):
        try:
            raw = {**raw, "outputs": normalize_outputs(raw["outputs"])}
        except ConfigError as exc:
            problems.append(Problem("outputs", str(exc)))
    config: RuntimeConfig | None = None
    try:
        config = runtime_config_model().model_validate(raw)
    except ValidationError as exc:
        problems.extend(_validation_problems(exc))

    def check(where: str, step: Callable[[], object]) -> None:
        try:
            step()
        except EdgeRuntimeError as exc:
            message = str(exc)
            # A message that starts with a key path of its own keeps it, alone.
            head, sep, rest = message.partition(": ")
            if sep and head.replace(".", "").replace("_", "").isalnum() and "." in head:
                problems.append(Problem(head, rest))
            else:
                problems.append(Problem(where, message))

    model = _section(raw, "model", ModelConfig)
    if model is not None:
        model_path = model.path
        if model_path is not None:  # else [update] serves the store's model (checked in config)
            check("model.path", lambda: _check_model(model_path))
        if model.labels is not None:
            check("model.labels", lambda: _read_labels(model.labels))
        if model.profile is not None:
            check("model.profile", lambda: _resolve_profile(model.profile))
    source = _section(raw, "source", SourceConfig)
    if source is not None:
        if source.roi:
            check("source.roi", lambda: _parse_roi(source.roi))
        built: list[Any] = []
        check("source.uri", lambda: built.append(_build_source(source)))
        if built:
            check("source.uri", lambda: device.extend(_preflight(built[0], devices)))
    if config is not None:
        from edge_runtime.wiring import build_sinks, verify_update_section

        check("outputs", lambda: build_sinks(config))
        check("", lambda: verify_update_section(config))
    service = _section(raw, "service", ServiceSection) if "service" in raw else ServiceSection()
    if service is not None:
        device.append(
            f"service.http: whether {service.http} is free is checked when the daemon starts "
            "(`edge-runtime doctor` checks it on the device)"
        )
    return CheckReport(tuple(_unique(problems)), tuple(device), config if not problems else None)


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _check_model(path: str) -> None:
    """The model path names a loadable kind of file; a bundle's manifest, labels, artifacts'
    sizes and sha256 and samples check out (a ``.tar`` is unpacked to a temporary folder)."""
    from edge_runtime.bundle import load_bundle
    from edge_runtime.model import model_kind

    if model_kind(path) == "bundle":
        with load_bundle(path):
            pass


def _read_labels(path: str) -> None:
    from edge_runtime.labels import read_labels

    read_labels(path)


def _resolve_profile(name: str) -> None:
    from edge_runtime.artifacts import resolve_profile

    resolve_profile(name)


def _parse_roi(text: str) -> None:
    from edge_runtime.preprocess import Roi

    Roi.parse(text)


def _build_source(section: SourceConfig) -> Any:
    """The source built, not opened (the URI's kind and the options checked)."""
    from edge_runtime.errors import UnknownComponentError
    from edge_runtime.sources import open_source

    try:
        return open_source(section.uri, **section.options)
    except UnknownComponentError:
        raise
    except ConfigError as exc:
        # The words `run` uses (edge_runtime.wiring.check_runnable).
        raise ConfigError(f"source.options: {exc}") from None


def _preflight(source: Any, devices: str) -> list[str]:
    return [f"source.uri: {note}" for note in source.preflight(devices)]
