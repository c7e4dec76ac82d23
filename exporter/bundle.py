"""Packing verified artifacts, labels and sample images into a model bundle (schema 1).

The bundle format and its atomic writer live in :mod:`edge_runtime.bundle` (the device reads what
the exporter writes, through one schema); this module decides what goes in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_runtime import __version__ as runtime_version
from edge_runtime.bundle import (
    MANIFEST_NAME,
    SAMPLES_DIR,
    Bundle,
    pack_bundle,
    write_bundle,
)
from edge_runtime.errors import BundleError, PreprocessError
from edge_runtime.imageio import read_image
from exporter.errors import ExportError
from exporter.quantize import stratified_sample

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
DEFAULT_SAMPLES_PER_CLASS = 2


@dataclass(frozen=True)
class BundledArtifact:
    """An exported file and what verification measured for it."""

    source: Path
    path: str
    format: str
    precision: str
    input_dtype: str
    output_size: int
    opset: int | None = None
    accuracy: float | None = None
    agreement_with_float: float | None = None
    latency_ms: float | None = None

    def manifest_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "path": self.path,
            "format": self.format,
            "precision": self.precision,
            "input_dtype": self.input_dtype,
            "output_size": self.output_size,
            "opset": self.opset,
            "accuracy": _rounded(self.accuracy),
            "agreement_with_float": _rounded(self.agreement_with_float),
            "latency_ms": _rounded(self.latency_ms, 4),
        }
        return entry


def _rounded(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def check_name(name: str) -> str:
    """Raises ExportError unless ``name`` is a valid bundle name."""
    if not NAME_PATTERN.match(name):
        raise ExportError(
            f"bundle name '{name}' is not allowed: use 1-64 lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def check_version(version: object) -> int:
    """The version as a positive integer.

    Raises:
        ExportError: it is not one (text such as '1.2', zero, negative numbers).
    """
    text = str(version).strip()
    if isinstance(version, bool) or not text.isdigit() or int(text) < 1:
        raise ExportError(
            f"version must be a positive whole number that grows with each release, got '{version}'"
        )
    return int(text)


def check_destination(dest: Path, force: bool, tar: bool) -> None:
    """Refuse early (before slow work) a destination that ``write_bundle`` would refuse.

    Raises:
        ExportError: ``dest`` holds a bundle and ``force`` is false, or is a file or a non-empty
            directory that is not a bundle, or its ``.tar`` exists and ``force`` is false.
    """
    if dest.exists():
        if not dest.is_dir() or dest.is_symlink():
            raise ExportError(f"{dest} exists and is not a directory; choose another --out")
        if (dest / MANIFEST_NAME).exists():
            if not force:
                raise ExportError(f"{dest} already holds a bundle; pass --force to replace it")
        elif any(dest.iterdir()):
            raise ExportError(
                f"{dest} is a non-empty directory that is not a bundle; choose another --out"
            )
    if tar and tar_path_for(dest).exists() and not force:
        raise ExportError(f"{tar_path_for(dest)} already exists; pass --force to replace it")


def tar_path_for(dest: Path) -> Path:
    """``BUNDLE_DIR.tar`` beside the bundle directory."""
    return dest.with_name(dest.name + ".tar")


def _slug(label: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-._")[:40]
    return slug or "class"


def choose_samples(
    items: Sequence[tuple[Path, str]],
    labels: Sequence[str],
    per_class: int = DEFAULT_SAMPLES_PER_CLASS,
    seed: int = 0,
    margins: Sequence[float] | np.ndarray | None = None,
) -> list[tuple[str, str, bytes]]:
    """``(member name, label, PNG bytes)`` for up to ``per_class`` held-out images per class.

    Without ``margins``: a stratified random choice. With ``margins`` (one per item: how clearly
    every artifact got it right; not positive when one got it wrong): the images of each class
    with the largest margins, never one that an artifact got wrong, since the samples are the
    device's smoke test and must pass on any CPU. A class without such an image has no sample.

    Images are decoded and re-encoded as PNG (the original pixels, not resized), so the device's
    smoke test feeds them through its own preprocessing.

    Raises:
        ExportError: a chosen image cannot be read.
    """
    if margins is None:
        chosen = stratified_sample(items, per_class * len(labels), seed)
    else:
        # Ties (many images at the largest margin) are broken by the seeded random order.
        order = stratified_sample(
            list(zip(range(len(items)), (lb for _, lb in items))), len(items), seed
        )
        rank = {index: position for position, index in enumerate(order)}
        chosen = []
        for label in labels:
            members = [
                i for i, (_, lb) in enumerate(items) if lb == label and float(margins[i]) > 0
            ]
            members.sort(key=lambda i: (-float(margins[i]), rank[i]))
            chosen += [items[i][0] for i in members[:per_class]]
    label_of = dict(items)
    counters: dict[str, int] = {}
    samples = []
    for path in sorted(chosen, key=lambda p: (labels.index(label_of[p]), str(p))):
        label = label_of[path]
        counters[label] = counters.get(label, 0) + 1
        if counters[label] > per_class:
            continue
        try:
            image = read_image(path)
        except PreprocessError as exc:
            raise ExportError(f"cannot read sample image: {exc}") from exc
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:  # pragma: no cover - PNG encoding of a valid image does not fail
            raise ExportError(f"cannot encode sample {path} as PNG")
        index = labels.index(label)
        name = f"{SAMPLES_DIR}/{index:03d}-{_slug(label)}-{counters[label]}.png"
        samples.append((name, label, encoded.tobytes()))
    return samples


def compatible_runtime() -> str:
    """The runtime range this exporter's bundles need: this minor version up to the next major."""
    major, minor = (int(p) for p in runtime_version.split(".")[:2])
    return f">={major}.{minor},<{major + 1}"


def build_manifest(
    *,
    name: str,
    version: int,
    labels: Sequence[str],
    input_description: dict[str, Any],
    artifacts: Sequence[BundledArtifact],
    training: dict[str, Any] | None,
    threshold: float,
    profiles: Sequence[str] = (),
    samples: Sequence[tuple[str, str, bytes]] = (),
    created: datetime | None = None,
) -> dict[str, Any]:
    """The manifest mapping (``sha256`` and ``bytes`` are filled in by ``write_bundle``)."""
    return {
        "schema": 1,
        "name": name,
        "version": version,
        "created": (created or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "task": "classification",
        "labels": list(labels),
        "input": input_description,
        "artifacts": [a.manifest_entry() for a in artifacts],
        "training": training,
        "thresholds": {"default": threshold, "per_class": {}},
        "compatible": {"runtime": compatible_runtime(), "profiles": list(profiles)},
        "samples": [{"path": member, "label": label} for member, label, _ in samples],
    }


def write_model_bundle(
    dest: Path,
    manifest: dict[str, Any],
    artifacts: Sequence[BundledArtifact],
    samples: Sequence[tuple[str, str, bytes]],
    *,
    force: bool = False,
    tar: bool = False,
) -> tuple[Bundle, Path | None]:
    """Write the bundle directory atomically (and ``BUNDLE_DIR.tar`` when ``tar``).

    Raises:
        ExportError: the bundle cannot be written (the message says why).
    """
    files: dict[str, Path | bytes] = {a.path: a.source for a in artifacts}
    files.update({member: data for member, _, data in samples})
    try:
        bundle = write_bundle(dest, manifest, files, force=force)
        tar_path = pack_bundle(dest, tar_path_for(dest), force=force) if tar else None
    except BundleError as exc:
        raise ExportError(str(exc)) from exc
    return bundle, tar_path
