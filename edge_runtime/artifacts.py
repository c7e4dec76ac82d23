"""Open a model file or a bundle's artifact in an installed backend; device profiles by name.

What :mod:`edge_runtime.model` and :mod:`edge_runtime.autoselect` (whose timing child opens
artifacts on its own) both need, below both of them: which backends may run a format comes from
:mod:`edge_runtime.selection`, and this module only opens the first one installed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from devices import DeviceProfile, ProfileError, load_profile, parse_profile
from edge_runtime.backends import Backend, BackendOptions, open_backend
from edge_runtime.bundle import Artifact, Bundle
from edge_runtime.errors import ConfigError, MissingDependencyError
from edge_runtime.selection import backend_candidates
from edge_runtime.tomlfile import read_toml_text

log = logging.getLogger(__name__)


def resolve_profile(profile: DeviceProfile | str | None) -> DeviceProfile | None:
    """A profile object from a name, a ``.toml`` path, a profile, or None.

    A path is read like a config file (:mod:`edge_runtime.tomlfile`: a regular file, size and
    nesting capped).

    Raises:
        ConfigError: no such profile, or it is malformed.
    """
    if profile is None or isinstance(profile, DeviceProfile):
        return profile
    try:
        if profile.endswith(".toml") or os.sep in profile:
            text = read_toml_text(profile, "device profile")
            try:
                return parse_profile(Path(profile).stem, text)
            except ProfileError:
                raise
            except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits
                raise ConfigError(f"device profile {profile}: {exc}") from None
        return load_profile(profile)
    except ProfileError as exc:
        raise ConfigError(str(exc)) from exc


def open_first(path: Path, fmt: str, candidates: list[str], options: BackendOptions) -> Backend:
    """Open the model at ``path`` in the first of ``candidates`` whose package is installed.

    Raises:
        MissingDependencyError: none of them is installed (the first one's install line).
        BackendError: the backend cannot load the file.
        ConfigError: no backend can run ``fmt``.
    """
    missing: MissingDependencyError | None = None
    for name in candidates:
        try:
            return open_backend(name, path, options)
        except MissingDependencyError as exc:
            log.info("backend %s is not installed: %s", name, exc)
            missing = missing or exc
    if missing is not None:
        raise missing
    raise ConfigError(f"no backend can run {fmt} models")  # pragma: no cover - registry edits


def open_artifact(
    bundle: Bundle,
    item: Artifact,
    backend: str,
    options: BackendOptions,
    profile: DeviceProfile | None,
) -> Backend:
    """Load one artifact of ``bundle`` in the first installed backend that can run it.

    Raises:
        MissingDependencyError: no backend for its format is installed (names the extra).
        BackendError: the backend cannot load the file.
        ConfigError: the named backend cannot run its format.
    """
    return open_first(
        bundle.path_of(item.path),
        item.format,
        backend_candidates(item.format, backend, profile),
        options,
    )


__all__ = ["open_artifact", "open_first", "resolve_profile"]
