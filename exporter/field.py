"""Field frames back into a dataset: what ``edge-runtime run --collect DIR`` saved, reviewed.

A device's collect folder holds ``<label>/<time>_<score>.jpg`` with a JSON sidecar each. People
review it by moving each picture (with its sidecar, or without: the picture is what counts)
into the folder of its true class, or deleting it; ``unknown/`` holds what nobody sorted yet and
is left out unless ``--label-map`` names it. :func:`import_field_frames` copies the reviewed
pictures into a class-folder dataset, never moving or overwriting anything:

- a dataset with ``train/``, ``val/`` and ``test/`` folders gets each capture group (frames of
  one scene a few seconds apart, named in the sidecar) into one split, chosen by a stable hash
  of the group, so a scene never straddles train and test;
- a plain class-folder dataset gets the files as ``field-<group>_<time>_<score>.jpg``; training
  with ``--group-pattern '^field-([^_]+)_'`` keeps each group on one side of the split.

The sidecars go to the dataset's hidden ``.field/`` folder (dataset scans skip it), so where each
picture came from, and what the model said of it, stays known.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from exporter.errors import DatasetError

#: what ``edge-export train --group-pattern`` needs to keep imported capture groups together
GROUP_PATTERN = r"^field-([^_]+)_"
SPLITS = ("train", "val", "test")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_field_frames` did."""

    imported: int
    groups: int
    by_class: dict[str, int]
    by_split: dict[str, int] = field(default_factory=dict)
    skipped_unsorted: int = 0
    skipped_existing: int = 0
    dropped_by_map: int = 0


def parse_label_map(text: str | None) -> dict[str, str]:
    """``--label-map 'unknown=empty,fake=counterfeit,blurry='``: collect folder -> dataset
    class; an empty target drops that folder's frames.

    Raises:
        DatasetError: an entry without ``=``.
    """
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        source, sep, target = part.partition("=")
        if not sep or not source.strip():
            raise DatasetError(
                f"--label-map entries are FOLDER=CLASS (or FOLDER= to drop it), got '{part}'"
            )
        mapping[source.strip()] = target.strip()
    return mapping


def _dataset_classes(dataset: Path) -> tuple[list[str], bool]:
    split = all((dataset / name).is_dir() for name in SPLITS)
    base = dataset / "train" if split else dataset
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    return classes, split


def _group_of(image: Path) -> str:
    """The capture group the sidecar names; a picture without one is a group of its own."""
    sidecar = image.with_suffix(".json")
    try:
        group = json.loads(sidecar.read_text(encoding="utf-8")).get("group")
    except (OSError, ValueError, AttributeError):
        group = None
    text = str(group) if group else f"single-{image.stem}"
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in text)


def _split_of(group: str, fractions: Sequence[float], seed: int) -> str:
    """A stable split for a group: the same group, seed and fractions, the same split."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions):
        edge += fraction
        if point < edge:
            return name
    return SPLITS[-1]


def import_field_frames(
    source: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    *,
    label_map: Mapping[str, str] | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> ImportSummary:
    """Copy reviewed field frames from ``source`` (a collect folder) into ``dataset``.

    Raises:
        DatasetError: ``source`` or ``dataset`` is not a folder, the dataset has no class
            folders, a frame's folder maps to no class of the dataset (the message lists them),
            or a file cannot be copied.
    """
    root, target = Path(source), Path(dataset)
    if not root.is_dir():
        raise DatasetError(f"no collect folder at {root}")
    if not target.is_dir():
        raise DatasetError(f"no dataset at {target}: import into an existing class-folder dataset")
    classes, split = _dataset_classes(target)
    if not classes:
        raise DatasetError(f"{target} has no class folders to import into")
    mapping = dict(label_map or {})
    chosen: list[tuple[Path, str]] = []
    unsorted = dropped = 0
    strangers: dict[str, int] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(
            p for p in folder.iterdir()
            if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if folder.name in mapping:
            label = mapping[folder.name]
            if not label:
                dropped += len(images)
                continue
        elif folder.name == "unknown":
            unsorted += len(images)
            continue
        else:
            label = folder.name
        if label not in classes:
            strangers[folder.name] = len(images)
            continue
        chosen.extend((image, label) for image in images)
    if strangers:
        names = ", ".join(f"{name} ({count})" for name, count in sorted(strangers.items()))
        raise DatasetError(
            f"frames in {names} belong to no class of {target} ({', '.join(classes)}): move them "
            "into a class's folder, map them with --label-map FOLDER=CLASS, or add the class"
        )
    by_class: dict[str, int] = {}
    by_split: dict[str, int] = {}
    groups: set[str] = set()
    existing = 0
    for image, label in chosen:
        group = _group_of(image)
        name = f"field-{group}_{image.stem}{image.suffix.lower()}"
        if split:
            part = _split_of(group, fractions, seed)
            folder = target / part / label
        else:
            part = ""
            folder = target / label
        destination = folder / name
        if destination.exists():
            existing += 1
            continue
        sidecar = image.with_suffix(".json")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = destination.with_name(f".{name}.partial")
            shutil.copyfile(image, partial)
            os.replace(partial, destination)
            if sidecar.is_file():
                notes = target / ".field" / (part or ".") / label
                notes.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(sidecar, notes / f"{Path(name).stem}.json")
        except OSError as exc:
            reason = exc.strerror or exc
            raise DatasetError(f"cannot copy {image} into {folder}: {reason}") from None
        groups.add(group)
        by_class[label] = by_class.get(label, 0) + 1
        if part:
            by_split[part] = by_split.get(part, 0) + 1
    return ImportSummary(
        imported=sum(by_class.values()),
        groups=len(groups),
        by_class=by_class,
        by_split=by_split,
        skipped_unsorted=unsorted,
        skipped_existing=existing,
        dropped_by_map=dropped,
    )
