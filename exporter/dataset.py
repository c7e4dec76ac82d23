"""Class-per-folder image datasets: scanning, grouped stratified splits, reports, synthesis.

A dataset is a folder with one sub-folder per class (``DATA/<class>/*.png``), or with given split
folders (``DATA/train/<class>/``, ``DATA/val/<class>/``, ``DATA/test/<class>/``). Class names are
the folder names, in sorted order. Every image is decoded and resized by
``edge_runtime.preprocess``, the code the device runs, so training sees exactly the pixels the
device will see: :func:`load_images` is the single data path of the exporter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.preprocess import PreprocessSpec, decode_image, prepare
from exporter.errors import DatasetError
from exporter.progress import QUIET, Progress

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"})
SPLIT_NAMES = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
DEFAULT_MIN_PER_CLASS = 10
SUFFIX_LIST = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))


@dataclass(frozen=True, order=True)
class Sample:
    """One labelled image: its path relative to the dataset root (POSIX separators) and class."""

    path: str
    label: str


@dataclass(frozen=True)
class ScannedDataset:
    """What a dataset folder holds, before any image is decoded.

    ``given`` maps split names to their samples when the folder has given split folders; it is
    None for a plain class-per-folder tree. ``ignored`` lists files that are not images of a
    class (notes, CSV files, images outside class folders).
    """

    root: Path
    labels: tuple[str, ...]
    samples: tuple[Sample, ...]
    given: dict[str, tuple[Sample, ...]] | None = None
    ignored: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------
# Scanning


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _walk_images(folder: Path, root: Path) -> tuple[list[str], list[str]]:
    """Image files under ``folder`` (recursively) and other files, as sorted POSIX paths from
    ``root``."""
    images: list[str] = []
    others: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            if _is_hidden(name):
                continue
            rel = Path(dirpath, name).relative_to(root).as_posix()
            (images if Path(name).suffix.lower() in IMAGE_SUFFIXES else others).append(rel)
    return images, others


def _scan_classes(base: Path, root: Path) -> tuple[dict[str, list[str]], list[str]]:
    """Class folders directly under ``base``: ``{label: [relative image paths]}`` and ignored
    files.

    Raises:
        DatasetError: a class folder holds no images.
    """
    classes: dict[str, list[str]] = {}
    ignored: list[str] = []
    for entry in sorted(base.iterdir(), key=lambda p: p.name):
        if _is_hidden(entry.name):
            continue
        if entry.is_dir():
            images, others = _walk_images(entry, root)
            if not images:
                where = entry.relative_to(root).as_posix()
                raise DatasetError(
                    f"class folder '{where}' in {root} holds no images ({SUFFIX_LIST}): "
                    "add images to it or remove it"
                )
            classes[entry.name] = images
            ignored.extend(others)
        else:
            ignored.append(entry.relative_to(root).as_posix())
    return classes, ignored


def _has_split_folders(root: Path) -> bool:
    train = root / "train"
    if not train.is_dir() or not any((root / name).is_dir() for name in ("val", "test")):
        return False
    return any(entry.is_dir() and not _is_hidden(entry.name) for entry in train.iterdir())


def scan_dataset(root: str | os.PathLike[str]) -> ScannedDataset:
    """List the classes and images of a dataset folder without decoding anything.

    Raises:
        DatasetError: the folder is missing, holds no images or class folders, a class folder is
            empty, or there is only one class.
    """
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise DatasetError(f"dataset folder {root_path} does not exist")
    if not root_path.is_dir():
        raise DatasetError(f"dataset path {root_path} is not a folder")
    root_path = root_path.resolve()
    try:
        return _scan(root_path)
    except OSError as exc:
        raise DatasetError(f"cannot read dataset folder {root_path}: {exc}") from exc


def _scan(root_path: Path) -> ScannedDataset:
    if _has_split_folders(root_path):
        return _scan_given_splits(root_path)

    classes, ignored = _scan_classes(root_path, root_path)
    if not classes:
        raise DatasetError(
            f"no images found in {root_path}: expected one folder per class "
            f"({root_path}/<class>/<image>.png) or split folders ({root_path}/train/<class>/...)"
        )
    _check_class_count(root_path, list(classes))
    samples = tuple(Sample(path, label) for label, paths in classes.items() for path in paths)
    return ScannedDataset(
        root=root_path,
        labels=tuple(sorted(classes)),
        samples=tuple(sorted(samples)),
        ignored=tuple(ignored),
    )


def _check_class_count(root: Path, labels: Sequence[str]) -> None:
    if len(labels) < 2:
        raise DatasetError(
            f"only one class ('{labels[0]}') in {root}: a classifier needs at least two class "
            "folders"
        )


def _scan_given_splits(root: Path) -> ScannedDataset:
    given: dict[str, tuple[Sample, ...]] = {}
    ignored: list[str] = []
    stray = [
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and not _is_hidden(entry.name) and entry.name not in SPLIT_NAMES
    ]
    if stray:
        raise DatasetError(
            f"{root} mixes split folders (train/, val/, test/) with other folders "
            f"({', '.join(sorted(stray))}): use either split folders or class folders"
        )
    labels: list[str] = []
    for split in SPLIT_NAMES:
        base = root / split
        if not base.is_dir():
            continue
        classes, others = _scan_classes(base, root)
        ignored.extend(others)
        if split == "train":
            if not classes:
                raise DatasetError(f"{base} holds no class folders")
            _check_class_count(base, list(classes))
            labels = sorted(classes)
        unknown = sorted(set(classes) - set(labels))
        if unknown:
            raise DatasetError(
                f"class '{unknown[0]}' in {base} has no folder in {root / 'train'}: every class "
                "needs training images"
            )
        given[split] = tuple(
            sorted(Sample(path, label) for label, paths in classes.items() for path in paths)
        )
    for entry in root.iterdir():
        if entry.is_file() and not _is_hidden(entry.name):
            ignored.append(entry.name)
    samples = tuple(sorted(s for split_samples in given.values() for s in split_samples))
    return ScannedDataset(
        root=root, labels=tuple(labels), samples=samples, given=given, ignored=tuple(ignored)
    )


# --------------------------------------------------------------------------------------------------
# Splitting


def compile_group_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """Compile a ``--group-pattern``.

    Raises:
        DatasetError: the pattern is not a valid regular expression.
    """
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise DatasetError(
            f"--group-pattern '{pattern}' is not a valid regular expression: {exc}"
        ) from None


def group_key(pattern: re.Pattern[str] | None, path: str) -> str | None:
    """The group of an image: the pattern's first group (or whole match) in its file name.

    None when there is no pattern or it does not match: the image is then a group of its own.
    """
    if pattern is None:
        return None
    match = pattern.search(path.rsplit("/", 1)[-1])
    if match is None:
        return None
    return match.group(1) if pattern.groups else match.group(0)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/val/test fractions.

    Raises:
        DatasetError: not three non-negative numbers summing to 1, or no training share.
    """
    if len(fractions) != 3 or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise DatasetError(
            f"split fractions must be three numbers in 0..1 (train,val,test), got {list(fractions)}"
        )
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise DatasetError(f"split fractions must add up to 1, got {list(fractions)}")
    if fractions[0] <= 0:
        raise DatasetError("the train fraction must be positive")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def split_samples(
    samples: Iterable[Sample],
    labels: Sequence[str],
    fractions: Sequence[float],
    seed: int,
    pattern: re.Pattern[str] | None = None,
) -> dict[str, list[Sample]]:
    """Stratified, seeded train/val/test split that keeps every group on one side.

    Groups (images sharing a :func:`group_key`, e.g. frames of one physical object) are shuffled
    with ``seed``, then placed biggest first into the split that most lacks images of the group's
    classes relative to its target share. Without a pattern each image is its own group, which
    gives an exact-as-possible stratified split. The result depends only on the file list, the
    fractions and the seed.
    """
    fractions = check_fractions(fractions)
    label_index = {label: i for i, label in enumerate(labels)}
    groups: dict[str, list[Sample]] = {}
    for sample in sorted(samples):
        key = group_key(pattern, sample.path)
        groups.setdefault(f"g:{key}" if key is not None else f"f:{sample.path}", []).append(sample)

    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    keys = [keys[i] for i in order]
    keys.sort(key=lambda k: -len(groups[k]))  # stable: random order among equal sizes

    totals = np.zeros(len(labels))
    for members in groups.values():
        for sample in members:
            totals[label_index[sample.label]] += 1
    target = np.outer(np.asarray(fractions), totals)
    current = np.zeros_like(target)
    closed = np.asarray(fractions) <= 0
    result: dict[str, list[Sample]] = {name: [] for name in SPLIT_NAMES}
    for key in keys:
        counts = Counter(label_index[s.label] for s in groups[key])
        classes = np.fromiter(counts.keys(), dtype=int)
        weights = np.fromiter(counts.values(), dtype=float)
        deficit = ((target[:, classes] - current[:, classes]) * weights).sum(axis=1)
        deficit[closed] = -np.inf
        chosen = int(np.argmax(deficit))
        current[chosen, classes] += weights
        result[SPLIT_NAMES[chosen]].extend(groups[key])
    for name in SPLIT_NAMES:
        result[name].sort()
    return result


@dataclass(frozen=True)
class Splits:
    """The train/val/test samples of a dataset, as written to ``splits.json`` in a run directory."""

    root: Path
    labels: tuple[str, ...]
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]

    def get(self, name: str) -> tuple[Sample, ...]:
        """The samples of split ``name`` (train, val or test)."""
        if name not in SPLIT_NAMES:
            raise DatasetError(f"unknown split '{name}' (choose {', '.join(SPLIT_NAMES)})")
        return tuple(getattr(self, name))

    def paths(self, name: str) -> list[Path]:
        """Absolute image paths of split ``name``."""
        return [self.root / sample.path for sample in self.get(name)]

    def targets(self, name: str) -> np.ndarray:
        """Class indices (into ``labels``) of split ``name``, as int64."""
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[s.label] for s in self.get(name)], dtype=np.int64)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"root": str(self.root), "labels": list(self.labels)}
        for name in SPLIT_NAMES:
            data[name] = [[s.path, s.label] for s in self.get(name)]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Splits:
        """Read the ``splits.json`` structure.

        Raises:
            DatasetError: keys are missing or malformed.
        """
        try:
            parsed = {
                name: tuple(Sample(str(p), str(lbl)) for p, lbl in data.get(name, []))
                for name in SPLIT_NAMES
            }
            root = Path(data["root"])
            labels = data.get("labels") or sorted({s.label for v in parsed.values() for s in v})
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"malformed splits description: {exc}") from exc
        return cls(root=root, labels=tuple(labels), **parsed)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Splits:
        """Read a ``splits.json`` file.

        Raises:
            DatasetError: the file is missing or not a splits description.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read splits from {path}: {exc}") from exc
        return cls.from_json(data)


def make_splits(
    scanned: ScannedDataset,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    group_pattern: str | None = None,
    exclude: Iterable[str] = (),
) -> Splits:
    """Split a scanned dataset (or take its given split folders), leaving out ``exclude`` paths.

    With given split folders, a missing val/ or test/ folder is carved from train/ with the
    matching fraction. Group patterns apply in both cases.

    Raises:
        DatasetError: bad fractions or pattern, a pattern that matches no file name, or too few
            images to fill the validation and test splits.
    """
    fractions = check_fractions(fractions)
    pattern = compile_group_pattern(group_pattern)
    skip = set(exclude)
    if pattern is not None and scanned.samples:
        matched = sum(group_key(pattern, s.path) is not None for s in scanned.samples)
        if matched == 0:
            example = scanned.samples[0].path.rsplit("/", 1)[-1]
            raise DatasetError(
                f"--group-pattern '{group_pattern}' matches none of the "
                f"{len(scanned.samples)} file names (e.g. '{example}')"
            )

    if scanned.given is None:
        parts = split_samples(
            (s for s in scanned.samples if s.path not in skip),
            scanned.labels,
            fractions,
            seed,
            pattern,
        )
    else:
        parts = {
            name: [s for s in scanned.given.get(name, ()) if s.path not in skip]
            for name in SPLIT_NAMES
        }
        missing = [name for name in ("val", "test") if name not in scanned.given]
        if missing:
            train_share = fractions[0]
            carve = {name: fractions[SPLIT_NAMES.index(name)] for name in missing}
            total = train_share + sum(carve.values())
            sub = (
                train_share / total,
                carve.get("val", 0.0) / total,
                carve.get("test", 0.0) / total,
            )
            carved = split_samples(parts["train"], scanned.labels, sub, seed, pattern)
            parts["train"] = carved["train"]
            for name in missing:
                parts[name] = carved[name]

    for name in ("train", "val", "test"):
        if not parts[name]:
            raise DatasetError(
                f"the {name} split is empty: {scanned.root} has too few images "
                f"({sum(len(v) for v in parts.values())}) for the split fractions "
                f"{list(fractions)}; add images or change --split"
            )
    return Splits(
        root=scanned.root,
        labels=scanned.labels,
        train=tuple(parts["train"]),
        val=tuple(parts["val"]),
        test=tuple(parts["test"]),
    )


# --------------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedImages:
    """The result of :func:`read_images`: one row per requested path.

    ``images`` is uint8 N x H x W x 3 (rows of unreadable files are zero; None when only checking);
    ``errors`` maps row index to the reason the file was skipped; ``digests`` are the SHA-256 of
    each file's bytes ("" when unreadable) and ``sizes`` its byte count.
    """

    images: np.ndarray | None
    errors: dict[int, str]
    digests: list[str]
    sizes: list[int]

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the rows that were read."""
        mask = np.ones(len(self.digests), dtype=bool)
        mask[list(self.errors)] = False
        return mask


def default_workers() -> int:
    """Threads for decoding: OpenCV releases the GIL while decoding and resizing."""
    return min(16, (os.cpu_count() or 1) * 4)


def read_images(
    paths: Sequence[str | os.PathLike[str]],
    spec: PreprocessSpec | None,
    *,
    workers: int | None = None,
    progress: Progress = QUIET,
    desc: str = "reading images",
) -> LoadedImages:
    """Decode (and, with a ``spec``, prepare) many images with a thread pool; never fails on a bad
    file.

    Every image goes through ``edge_runtime.preprocess``: the file's bytes are decoded with
    ``decode_image`` and resized with ``prepare``, exactly as ``prepare_file`` does on the device.
    Unreadable or corrupt files are reported in ``errors``. With ``spec=None`` the files are only
    decoded (a check), and no pixels are kept.
    """
    count = len(paths)
    images = np.zeros((count, *spec.shape), dtype=np.uint8) if spec is not None else None
    errors: dict[int, str] = {}
    digests = [""] * count
    sizes = [0] * count

    def work(start: int, stop: int) -> int:
        for i in range(start, stop):
            try:
                data = Path(paths[i]).read_bytes()
            except OSError as exc:
                errors[i] = f"cannot read: {exc.strerror or exc}"
                continue
            sizes[i] = len(data)
            digests[i] = hashlib.sha256(data).hexdigest()
            try:
                pixels = decode_image(data)
                if images is not None and spec is not None:
                    prepare(pixels, spec, out=images[i])
            except EdgeRuntimeError as exc:
                errors[i] = str(exc)
        return stop - start

    chunk = 32
    ranges = [(i, min(i + chunk, count)) for i in range(0, count, chunk)]
    with progress.bar(count, desc) as bar, ThreadPoolExecutor(workers or default_workers()) as pool:
        for future in as_completed([pool.submit(work, a, b) for a, b in ranges]):
            bar.update(future.result())
    return LoadedImages(images=images, errors=errors, digests=digests, sizes=sizes)


def load_images(
    paths: Sequence[str | os.PathLike[str]],
    spec: PreprocessSpec,
    *,
    workers: int | None = None,
    progress: Progress = QUIET,
    desc: str = "loading images",
) -> np.ndarray:
    """Prepare images as the model's uint8 N x H x W x 3 input, exactly as the device would.

    This is the exporter's single data path for training, validation, test and calibration images.

    Raises:
        DatasetError: a file cannot be read or decoded (the message names the first one).
    """
    loaded = read_images(paths, spec, workers=workers, progress=progress, desc=desc)
    if loaded.errors:
        first = min(loaded.errors)
        raise DatasetError(
            f"{len(loaded.errors)} of {len(paths)} images cannot be read, e.g. {paths[first]}: "
            f"{loaded.errors[first]}"
        )
    assert loaded.images is not None
    return loaded.images


def model_input(images: np.ndarray) -> np.ndarray:
    """What a model is fed for prepared uint8 images: the same pixels as float32 0..255.

    Every model we train carries its normalization inside, so this cast is the whole step.
    """
    return images.astype(np.float32)


def dataset_fingerprint(entries: Iterable[tuple[str, int, str]]) -> str:
    """SHA-256 over sorted ``(relative path, size, content sha256)`` of a dataset's files."""
    digest = hashlib.sha256()
    for path, size, content in sorted(entries):
        digest.update(f"{path}\0{size}\0{content}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Report


@dataclass
class DatasetReport:
    """Class counts, imbalance, split sizes, unreadable files and grouping of a dataset."""

    root: str
    labels: list[str]
    counts: dict[str, int]
    split_counts: dict[str, dict[str, int]]
    min_per_class: int
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    given_splits: bool = False
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    seed: int = 0
    group_pattern: str | None = None
    groups: int | None = None
    ungrouped: int = 0
    leaking_groups: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def imbalance_ratio(self) -> float:
        """Largest class count over smallest (inf when a class has no readable image)."""
        values = list(self.counts.values())
        low = min(values)
        return float("inf") if low == 0 else max(values) / low

    @property
    def below_minimum(self) -> list[str]:
        return [label for label in self.labels if self.counts[label] < self.min_per_class]

    def to_json(self) -> dict[str, Any]:
        ratio = self.imbalance_ratio
        return {
            "root": self.root,
            "labels": self.labels,
            "images": self.total,
            "counts": self.counts,
            "split_counts": self.split_counts,
            "split_totals": {k: sum(v.values()) for k, v in self.split_counts.items()},
            "imbalance_ratio": None if ratio == float("inf") else round(ratio, 4),
            "min_per_class": self.min_per_class,
            "below_minimum": self.below_minimum,
            "corrupt": [{"path": p, "reason": r} for p, r in self.corrupt],
            "ignored_files": len(self.ignored),
            "given_splits": self.given_splits,
            "fractions": list(self.fractions),
            "seed": self.seed,
            "group_pattern": self.group_pattern,
            "groups": self.groups,
            "ungrouped_files": self.ungrouped,
            "leaking_groups": self.leaking_groups,
        }

    def to_text(self) -> str:
        """A human-readable table of the report."""
        width = max(len(label) for label in self.labels)
        lines = [
            f"dataset {self.root}: {self.total} images in {len(self.labels)} classes"
            + (" (given split folders)" if self.given_splits else ""),
            f"  {'class'.ljust(width)}  {'images':>6}  {'train':>6}  {'val':>6}  {'test':>6}",
        ]
        for label in self.labels:
            marks = "  < minimum" if label in self.below_minimum else ""
            cells = "  ".join(f"{self.split_counts[s].get(label, 0):>6}" for s in SPLIT_NAMES)
            lines.append(f"  {label.ljust(width)}  {self.counts[label]:>6}  {cells}{marks}")
        totals = "  ".join(f"{sum(self.split_counts[s].values()):>6}" for s in SPLIT_NAMES)
        lines.append(f"  {'total'.ljust(width)}  {self.total:>6}  {totals}")
        ratio = self.imbalance_ratio
        lines.append(
            f"imbalance (largest/smallest class): "
            f"{'inf' if ratio == float('inf') else f'{ratio:.2f}'}"
        )
        if self.below_minimum:
            lines.append(
                f"classes below {self.min_per_class} images: {', '.join(self.below_minimum)}"
            )
        if not self.given_splits:
            split = "/".join(f"{f:g}" for f in self.fractions)
            lines.append(f"split: {split} (train/val/test), seed {self.seed}")
        if self.group_pattern:
            lines.append(
                f"groups: {self.groups} by pattern '{self.group_pattern}' "
                f"({self.ungrouped} files match no group and stand alone)"
            )
        if self.leaking_groups:
            lines.append(
                f"warning: {len(self.leaking_groups)} groups appear in more than one split "
                f"folder, e.g. '{self.leaking_groups[0]}'"
            )
        if self.corrupt:
            lines.append(f"unreadable files skipped: {len(self.corrupt)}")
            lines.extend(f"  {path}: {reason}" for path, reason in self.corrupt)
        if self.ignored:
            lines.append(f"files that are not class images (ignored): {len(self.ignored)}")
        return "\n".join(lines)


def build_report(
    scanned: ScannedDataset,
    splits: Splits,
    corrupt: Sequence[tuple[str, str]] = (),
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    group_pattern: str | None = None,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
) -> DatasetReport:
    """Summarize a dataset and its splits (pure: no file access)."""
    bad = {path for path, _ in corrupt}
    counts = Counter(s.label for s in scanned.samples if s.path not in bad)
    pattern = compile_group_pattern(group_pattern)
    report = DatasetReport(
        root=str(scanned.root),
        labels=list(scanned.labels),
        counts={label: counts.get(label, 0) for label in scanned.labels},
        split_counts={
            name: dict(Counter(s.label for s in splits.get(name))) for name in SPLIT_NAMES
        },
        min_per_class=min_per_class,
        corrupt=list(corrupt),
        ignored=list(scanned.ignored),
        given_splits=scanned.given is not None,
        fractions=check_fractions(fractions),
        seed=seed,
        group_pattern=group_pattern or None,
    )
    if pattern is not None:
        keys = [group_key(pattern, s.path) for s in scanned.samples if s.path not in bad]
        report.groups = len({k for k in keys if k is not None})
        report.ungrouped = sum(k is None for k in keys)
        sides: dict[str, set[str]] = {}
        for name in SPLIT_NAMES:
            for sample in splits.get(name):
                key = group_key(pattern, sample.path)
                if key is not None:
                    sides.setdefault(key, set()).add(name)
        report.leaking_groups = sorted(k for k, v in sides.items() if len(v) > 1)
    return report


@dataclass
class PreparedDataset:
    """A scanned, checked and split dataset, with its images prepared at one input size."""

    splits: Splits
    report: DatasetReport
    fingerprint: str
    images: dict[str, np.ndarray]
    digests: dict[str, list[str]]


def prepare_dataset(
    root: str | os.PathLike[str],
    spec: PreprocessSpec | None,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    group_pattern: str | None = None,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    workers: int | None = None,
    progress: Progress = QUIET,
) -> PreparedDataset:
    """Scan, decode every image once (skipping unreadable ones), split and report a dataset.

    With ``spec`` the images are kept, prepared at the model input size, per split; without it
    they are only checked (``images`` is empty).

    Raises:
        DatasetError: as :func:`scan_dataset` and :func:`make_splits`, or no image is readable.
    """
    fractions = check_fractions(fractions)
    compile_group_pattern(group_pattern)  # a bad pattern fails before the slow part
    scanned = scan_dataset(root)
    paths = [scanned.root / s.path for s in scanned.samples]
    loaded = read_images(paths, spec, workers=workers, progress=progress, desc="reading images")
    corrupt = [(scanned.samples[i].path, reason) for i, reason in sorted(loaded.errors.items())]
    if len(corrupt) == len(paths):
        raise DatasetError(f"none of the {len(paths)} images in {scanned.root} can be read")
    splits = make_splits(
        scanned, fractions, seed, group_pattern, exclude=(path for path, _ in corrupt)
    )
    report = build_report(
        scanned,
        splits,
        corrupt,
        fractions=fractions,
        seed=seed,
        group_pattern=group_pattern,
        min_per_class=min_per_class,
    )
    unreadable = [label for label, n in report.counts.items() if n == 0]
    if unreadable:
        raise DatasetError(f"class '{unreadable[0]}' has no readable image in {scanned.root}")
    row = {s.path: i for i, s in enumerate(scanned.samples)}
    fingerprint = dataset_fingerprint(
        (s.path, loaded.sizes[i], loaded.digests[i] or "unreadable")
        for i, s in enumerate(scanned.samples)
    )
    images: dict[str, np.ndarray] = {}
    digests: dict[str, list[str]] = {}
    for name in SPLIT_NAMES:
        rows = [row[s.path] for s in splits.get(name)]
        digests[name] = [loaded.digests[i] for i in rows]
        if loaded.images is not None:
            images[name] = loaded.images[rows]
    return PreparedDataset(
        splits=splits, report=report, fingerprint=fingerprint, images=images, digests=digests
    )


# --------------------------------------------------------------------------------------------------
# Synthetic scenario datasets


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesize_dataset` wrote."""

    out: Path
    scenario: str
    labels: tuple[str, ...]
    images: int


def _scenes_module() -> Any:
    import importlib

    try:
        return importlib.import_module("edge_runtime.scenes")
    except ImportError as exc:
        raise DatasetError(
            f"synthetic scenes are not available in this installation: {exc}"
        ) from exc


def synthesize_dataset(
    scenario: str,
    out: str | os.PathLike[str],
    *,
    per_class: int,
    size: int,
    seed: int = 0,
    jpeg_quality: int | None = None,
    force: bool = False,
    workers: int | None = None,
    progress: Progress = QUIET,
    scenes: Any = None,
) -> SynthSummary:
    """Render a labelled class-per-folder dataset with the runtime's synthetic scene renderer.

    Image ``j`` of class ``i`` is drawn with ``numpy.random.default_rng([seed, i, j])``, so the
    files are identical for a seed whatever the thread count or order. Images are PNG, or JPEG at
    ``jpeg_quality`` (1..100) when given, to mimic a camera's compression.
    ``scenes`` is the renderer module (``edge_runtime.scenes`` by default).

    Raises:
        DatasetError: unknown scenario, bad counts or sizes, or ``out`` is not empty and ``force``
            is not set.
    """
    import cv2

    scenes = scenes if scenes is not None else _scenes_module()
    known = tuple(scenes.SCENARIOS)
    if scenario not in known:
        raise DatasetError(f"unknown scenario '{scenario}' (choose {', '.join(known)})")
    if per_class < 1:
        raise DatasetError(f"--per-class must be at least 1, got {per_class}")
    if size < 16:
        raise DatasetError(f"--size must be at least 16 pixels, got {size}")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise DatasetError(f"--jpeg-quality must be 1..100, got {jpeg_quality}")
    out_path = Path(out).expanduser()
    if out_path.exists() and not out_path.is_dir():
        raise DatasetError(f"{out_path} exists and is not a folder")
    if out_path.is_dir() and any(out_path.iterdir()) and not force:
        raise DatasetError(f"{out_path} is not empty: choose an empty folder or pass --force")

    labels = tuple(scenes.class_names(scenario))
    for label in labels:
        if not label or "/" in label or label in (".", "..") or _is_hidden(label):
            raise DatasetError(f"scenario class name '{label}' cannot be a folder name")
    suffix = ".jpg" if jpeg_quality is not None else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if jpeg_quality is not None else []
    name_pattern = re.compile(r"^.+_\d{5}\.(png|jpg)$")
    for label in labels:
        folder = out_path / label
        folder.mkdir(parents=True, exist_ok=True)
        # --force: drop earlier renders, so a smaller --per-class does not leave stale images.
        for old in folder.iterdir():
            if old.is_file() and name_pattern.match(old.name):
                old.unlink()

    def render(index: int) -> None:
        class_index, image_index = divmod(index, per_class)
        rng = np.random.default_rng([seed, class_index, image_index])
        image = scenes.render_sample(scenario, labels[class_index], rng, size)
        ok, encoded = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
        if not ok:  # pragma: no cover - cv2 encodes any uint8 RGB image
            raise DatasetError(f"cannot encode a {suffix} image")
        label = labels[class_index]
        (out_path / label / f"{label}_{image_index:05d}{suffix}").write_bytes(encoded.tobytes())

    total = per_class * len(labels)
    with (
        progress.bar(total, f"rendering {scenario}") as bar,
        ThreadPoolExecutor(workers or default_workers()) as pool,
    ):
        for future in as_completed([pool.submit(render, i) for i in range(total)]):
            future.result()
            bar.update(1)
    return SynthSummary(out=out_path.resolve(), scenario=scenario, labels=labels, images=total)
