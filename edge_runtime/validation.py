"""One line from a pydantic ValidationError, for the manifest, runtime config and recipes."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

#: pydantic's messages said in the tool's own words (``plain=True``)
PLAIN_MESSAGES: Mapping[str, str] = {
    "greater_than_equal": "must be {ge} or more, got {input}",
    "greater_than": "must be more than {gt}, got {input}",
    "less_than_equal": "must be {le} or less, got {input}",
    "less_than": "must be less than {lt}, got {input}",
    "missing": "is missing (it is required)",
    "int_parsing": "must be a whole number, got {input}",
    "int_type": "must be a whole number, got {input}",
    "int_from_float": "must be a whole number, got {input}",
    "float_parsing": "must be a number, got {input}",
    "float_type": "must be a number, got {input}",
    "bool_parsing": "must be true or false, got {input}",
    "bool_type": "must be true or false, got {input}",
    "string_type": "must be text, got {input}",
    "literal_error": "must be {expected}, got {input}",
    "dict_type": "must be a table, got {input}",
    "list_type": "must be a list, got {input}",
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def known_keys(model: type[BaseModel], location: tuple[Any, ...]) -> list[str]:
    """The keys the table at ``location`` (a path of field names) of ``model`` takes."""
    current: list[type[BaseModel]] = [model]
    for part in location:
        following: list[type[BaseModel]] = []
        for candidate in current:
            info = candidate.model_fields.get(str(part))
            if info is not None:
                following.extend(_models_in(info.annotation))
        if not following:
            return []
        current = following
    return sorted({name for candidate in current for name in candidate.model_fields})


def _plain(item: Any, model: type[BaseModel] | None) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        *where, key = item["loc"] or ("",)
        keys = known_keys(model, tuple(where)) if model is not None else []
        close = difflib.get_close_matches(str(key), keys, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        known = f" (known: {', '.join(keys)})" if keys and not close else ""
        return f"unknown setting{hint}{known}"
    template = PLAIN_MESSAGES.get(kind)
    if template is None:
        return str(item["msg"])
    context = {**(item.get("ctx") or {}), "input": repr(item.get("input"))}
    try:
        return template.format(**context)
    except (KeyError, IndexError, ValueError):
        return str(item["msg"])


def describe_validation_error(
    error: ValidationError,
    *,
    section: str = "",
    fallback: str = "value",
    messages: Mapping[str, str] | None = None,
    limit: int = 3,
    plain: bool = False,
    model: type[BaseModel] | None = None,
) -> str:
    """``where: what`` for the first ``limit`` problems, joined, with a count of the rest.

    ``section`` prefixes every location; ``messages`` replaces pydantic's message for some error
    types (e.g. ``{"extra_forbidden": "unknown setting"}``). ``plain`` says each problem in the
    tool's words (:data:`PLAIN_MESSAGES`; an unknown key with the closest known one, "did you
    mean", looked up in ``model``).
    """
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(p) for p in (section, *item["loc"]) if p != "") or fallback
        message = (messages or {}).get(item["type"]) or (
            _plain(item, model) if plain else str(item["msg"])
        )
        parts.append(f"{where}: {message.removeprefix('Value error, ')}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
