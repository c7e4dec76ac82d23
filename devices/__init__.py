"""Device profiles and hardware detection (standard library only).

A profile says what a kind of device should use by default: which camera, which inference backends
in
which order, how many threads, and which artifact precision suits its processor. Detection reads the
device tree and the Jetson release file; it runs only when called and caches its answer.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "DeviceProfile",
    "ProfileError",
    "detect",
    "list_profiles",
    "load_profile",
    "profile_for_this_device",
]

_BACKENDS = ("litert", "onnxruntime")
_PRECISIONS = ("int8", "fp16", "dynamic", "fp32")
_FORMATS = ("tflite", "onnx")


class ProfileError(ValueError):
    """A device profile is unknown or malformed."""


@dataclass(frozen=True)
class DeviceProfile:
    """Defaults for one kind of device."""

    name: str
    description: str
    camera: str
    backends: tuple[str, ...]
    threads: int
    precision: tuple[str, ...]
    formats: tuple[str, ...] = ("tflite", "onnx")
    onnx_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    delegates: tuple[str, ...] = ()
    notes: str = ""
    match: dict[str, Any] = field(default_factory=dict, compare=False)


def _profile_files() -> dict[str, Any]:
    folder = resources.files(__name__) / "profiles"
    return {
        entry.name[: -len(".toml")]: entry
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    }


def list_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(_profile_files())


def _tuple_of(
    data: dict[str, Any], key: str, allowed: tuple[str, ...] | None, where: str
) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{where}: '{key}' must be a list of strings")
    if allowed is not None:
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ProfileError(
                f"{where}: '{key}' has unknown value '{bad[0]}' (known: {', '.join(allowed)})"
            )
    return tuple(value)


def parse_profile(name: str, text: str) -> DeviceProfile:
    """Build a profile from TOML text.

    Raises:
        ProfileError: invalid TOML, unknown keys, or values of the wrong kind.
    """
    where = f"device profile '{name}'"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{where}: invalid TOML: {exc}") from exc
    known = {
        "description",
        "camera",
        "backends",
        "threads",
        "precision",
        "formats",
        "onnx_providers",
        "delegates",
        "notes",
        "match",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"{where}: unknown key '{unknown[0]}'")
    threads = data.get("threads", 0)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ProfileError(f"{where}: 'threads' must be a non-negative integer (0 = all cores)")
    for key in ("description", "camera", "notes"):
        if not isinstance(data.get(key, ""), str):
            raise ProfileError(f"{where}: '{key}' must be text")
    if not data.get("camera"):
        raise ProfileError(f"{where}: 'camera' (the default source URI) is required")
    backends = _tuple_of(data, "backends", _BACKENDS, where)
    if not backends:
        raise ProfileError(f"{where}: 'backends' must name at least one backend")
    return DeviceProfile(
        name=name,
        description=data.get("description", ""),
        camera=data["camera"],
        backends=backends,
        threads=threads,
        precision=_tuple_of(data, "precision", _PRECISIONS, where) or _PRECISIONS,
        formats=_tuple_of(data, "formats", _FORMATS, where) or _FORMATS,
        onnx_providers=_tuple_of(data, "onnx_providers", None, where) or ("CPUExecutionProvider",),
        delegates=_tuple_of(data, "delegates", None, where),
        notes=data.get("notes", ""),
        match=dict(data.get("match", {})),
    )


@functools.cache
def load_profile(name: str) -> DeviceProfile:
    """Load a shipped profile by name (e.g. ``raspberry-pi-5``) or from a ``.toml`` path.

    Raises:
        ProfileError: no such profile, or it is malformed.
    """
    if name.endswith(".toml") or os.sep in name:
        path = Path(name)
        try:
            return parse_profile(path.stem, path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ProfileError(f"cannot read device profile {path}: {exc.strerror or exc}") from exc
    files = _profile_files()
    if name not in files:
        raise ProfileError(f"unknown device profile '{name}' (known: {', '.join(sorted(files))})")
    return parse_profile(name, files[name].read_text(encoding="utf-8"))


def _read_text(path: Path) -> str:
    try:
        # The device tree strings end in NUL bytes.
        return path.read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return ""


@functools.cache
def detect(root: str = "/", machine: str | None = None) -> str:
    """Name of the profile that fits the device this runs on.

    Reads ``/proc/device-tree/model`` and ``/etc/nv_tegra_release`` below ``root`` (tests pass a
    fake
    root) and falls back on the processor architecture. Cached: it reads the files once.
    """
    base = Path(root)
    model = _read_text(base / "proc/device-tree/model")
    tegra = (base / "etc/nv_tegra_release").exists()
    arch = (machine or platform.machine()).lower()
    for name in list_profiles():
        rules = load_profile(name).match
        needles = rules.get("model_contains", [])
        if model and any(needle.lower() in model.lower() for needle in needles):
            return name
    if tegra:
        return "jetson-orin-nano" if "orin" in model.lower() else "jetson-nano"
    if arch in ("x86_64", "amd64"):
        return "generic-x86_64"
    if arch in ("aarch64", "arm64"):
        return "generic-aarch64"
    return "generic-x86_64"


def profile_for_this_device() -> DeviceProfile:
    """The profile :func:`detect` chooses, loaded."""
    return load_profile(detect())
