"""One line from a pydantic ValidationError, for the manifest, runtime config and recipes."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError


def describe_validation_error(
    error: ValidationError,
    *,
    section: str = "",
    fallback: str = "value",
    messages: Mapping[str, str] | None = None,
    limit: int = 3,
) -> str:
    """``where: what`` for the first ``limit`` problems, joined, with a count of the rest.

    ``section`` prefixes every location; ``messages`` replaces pydantic's message for some error
    types (e.g. ``{"extra_forbidden": "unknown setting"}``).
    """
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(p) for p in (section, *item["loc"]) if p != "") or fallback
        message = (messages or {}).get(item["type"]) or str(item["msg"])
        parts.append(f"{where}: {message.removeprefix('Value error, ')}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
