"""Frame sources: turn a source URI into a ``Source``.

URIs (see DESIGN.md): ``synthetic:traffic-signs``, ``camera:0``, ``v4l2:///dev/video0``,
``csi://0``, ``gst:<pipeline>``, ``rtsp://...``, ``http(s)://...`` (MJPEG), ``picamera2:0``, or a
plain path: an image, a folder of images, a glob pattern, or a video file. The module of the chosen
kind is imported only then, so a device without picamera2 still reads its USB camera. Each source
module declares the options it takes (a ``SourceOptions`` subclass), which ``open_source`` and the
runtime config's ``[source] options`` are validated with, so adding a source is one new module
and its line in :mod:`edge_runtime.registry`.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from pydantic import ValidationError

from edge_runtime import registry
from edge_runtime.errors import ConfigError, SourceError, UnknownComponentError
from edge_runtime.imageio import is_image_path
from edge_runtime.sources.base import Source, SourceOptions, SourceStats
from edge_runtime.sources.video import is_video_path
from edge_runtime.validation import describe_validation_error

__all__ = [
    "Source",
    "SourceOptions",
    "SourceStats",
    "check_options",
    "open_source",
    "options_model",
    "parse_source_uri",
    "scheme_kind",
    "source_kind",
]

# Schemes whose own syntax includes "?" (URLs, pipelines) keep it; the others read their options
# from a query string: synthetic:traffic-signs?seed=3&fps=30.
_QUERY_SCHEMES = frozenset({"synthetic", "camera", "v4l2", "csi", "picamera2"})
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):")


def _coerce(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def source_kind(uri: str) -> str:
    """The registry key that reads ``uri``: its scheme, or ``images``/``video`` for a path.

    Raises:
        UnknownComponentError: the URI has a scheme the runtime does not know.
        SourceError: the path does not exist or is neither an image, a folder, a glob nor a video.
    """
    known = registry.names("source")
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else None
    if scheme in known and scheme not in ("images", "video"):
        return scheme
    path = Path(uri).expanduser()
    if path.is_dir():
        return "images"
    if path.is_file():
        if is_image_path(path):
            return "images"
        if is_video_path(path):
            return "video"
        raise SourceError(
            f"cannot tell how to read {uri}: expected an image "
            "(.jpg, .png, ...), a video (.mp4, .avi, .mkv, ...), a folder or a glob"
        )
    if any(char in uri for char in "*?["):
        return "images"
    if scheme is not None:
        schemes = ", ".join(f"{name}:" for name in known if name not in ("images", "video"))
        raise UnknownComponentError(
            f"unknown source '{scheme}:' in '{uri}' (known: {schemes} "
            "or a path to an image, folder, glob or video)"
        )
    raise SourceError(f"no such file or folder: {uri}")


def parse_source_uri(uri: str) -> tuple[str, str, dict[str, Any]]:
    """Split ``uri`` into (registry key, URI without its option query, options from the query).

    Raises:
        UnknownComponentError, SourceError: as ``source_kind``.
    """
    uri = uri.strip()
    kind = source_kind(uri)
    options: dict[str, Any] = {}
    if kind in _QUERY_SCHEMES and "?" in uri:
        uri, _, query = uri.partition("?")
        options = {key: _coerce(value) for key, value in parse_qsl(query, keep_blank_values=True)}
    elif kind in _URL_SCHEMES and "?" in uri:
        uri, options = _split_url_options(kind, uri)
    return kind, uri, options


# URLs whose query string belongs to the camera (rtsp://cam/live?channel=1): our options are
# taken out of it by name, the camera's own parameters stay.
_URL_SCHEMES = frozenset({"rtsp", "http", "https"})


def _split_url_options(kind: str, uri: str) -> tuple[str, dict[str, Any]]:
    """``rtsp://cam/live?channel=1&open_timeout_s=2`` -> (``rtsp://cam/live?channel=1``,
    ``{"open_timeout_s": 2}``).

    Raises:
        ConfigError: a parameter that looks like a misspelt option of ours (``open_timout_s``).
    """
    base, _, rest = uri.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    declared = options_model(kind).model_fields
    kept: list[str] = []
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in declared:
            options[key] = _coerce(value)
            continue
        close = difflib.get_close_matches(key, declared, n=1, cutoff=0.8)
        if close or key.endswith("_s"):
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(
                f"unknown option {key} for a {kind} source{hint} "
                f"(known: {', '.join(sorted(declared))})"
            )
        kept.append(urlencode({key: value}))
    clean = base + ("?" + "&".join(kept) if kept else "") + (hash_mark + fragment)
    return clean, options


def scheme_kind(uri: str) -> str | None:
    """The registry key a URI names by its scheme (``camera:0`` -> ``camera``), without touching
    the file system; None for a path, whose kind depends on what is there (``source_kind``)."""
    match = _SCHEME.match(uri.strip())
    scheme = match.group(1).lower() if match else None
    if scheme in registry.names("source") and scheme not in ("images", "video"):
        return scheme
    return None


def options_model(kind: str) -> type[SourceOptions]:
    """The options the ``kind`` source declares (imports that source's module only).

    Raises:
        UnknownComponentError: no source has that key.
        MissingDependencyError: the source module needs a package that is not installed.
    """
    cls = registry.load("source", kind)
    assert isinstance(cls, type) and issubclass(cls, Source)
    return cls.Options


def _constructor_keywords(cls: type) -> set[str]:
    """Keyword arguments the constructors along ``cls``'s MRO accept (options and the values a
    program passes in, such as clocks and fake devices)."""
    accepted: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        accepted.update(
            p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in ("self", "uri")
        )
        # A constructor without **kwargs is the last to accept keywords.
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return accepted


def check_options(kind: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` for a ``kind`` source validated against its declared options: the values
    converted (``"30"`` -> 30.0), unknown names and bad values refused. Arguments that are no
    options but that the constructor takes (``clock``, ``capture_factory``) pass through.

    Raises:
        ConfigError: an unknown option (the message lists the known ones) or a bad value.
        UnknownComponentError, MissingDependencyError: as :func:`options_model`.
    """
    cls = registry.load("source", kind)
    assert isinstance(cls, type) and issubclass(cls, Source)
    declared = cls.Options.model_fields
    unknown = sorted(set(options) - set(declared) - _constructor_keywords(cls))
    if unknown:
        raise ConfigError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for a "
            f"{kind} source (known: {', '.join(sorted(declared))})"
        )
    try:
        validated = cls.Options.model_validate({k: v for k, v in options.items() if k in declared})
    except ValidationError as exc:
        raise ConfigError(
            f"bad option for a {kind} source: "
            f"{describe_validation_error(exc, plain=True, model=cls.Options)}"
        ) from None
    passed = {k: v for k, v in options.items() if k not in declared}
    return {**passed, **validated.model_dump(exclude_unset=True)}


def open_source(uri: str, **options: Any) -> Source:
    """The source that reads ``uri``, not yet opened (``open()``, ``with`` or the first ``read()``
    opens it).

    ``options`` go to the source's constructor and override options given in the URI's query
    string (e.g. ``synthetic:banknotes?seed=3&fps=30``). Each source documents its options.

    Raises:
        UnknownComponentError: unknown scheme; the message lists the known ones.
        SourceError: a path that does not exist or is not an image, folder, glob or video.
        ConfigError: an option the source does not take, or a bad value.
        MissingDependencyError: the source needs a package that is not installed.
    """
    if not isinstance(uri, (str, os.PathLike)):
        raise ConfigError(f"a source is a URI or a path, got {type(uri).__name__}")
    kind, clean_uri, query_options = parse_source_uri(os.fspath(uri))
    merged = check_options(kind, {**query_options, **options})
    factory: Any = registry.load("source", kind)
    try:
        source: Source = factory(clean_uri, **merged)
        return source
    except TypeError as exc:  # a value of the wrong type for an option
        raise ConfigError(f"bad option for the {kind} source '{clean_uri}': {exc}") from exc
