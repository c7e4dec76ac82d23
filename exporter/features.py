"""Bottleneck features of a frozen backbone, computed once and cached on disk.

Transfer learning with a frozen backbone spends nearly all its time pushing images through the
backbone. The pooled features of an image never change while the backbone is frozen, so they are
computed once, stored under the cache directory, and the new head trains on them in a fraction of
the time. An entry is keyed by the image's content hash, the augmented variant (0 = the image as
it is), and a directory per backbone identity: architecture, weights (file hash or Keras version),
input size, preprocessing, compute precision and augmentation policy.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from exporter.augment import AugmentPolicy, augment_image, variant_rng
from exporter.dataset import model_input
from exporter.progress import QUIET, Progress

CACHE_ENV = "EDGE_CLASSIFY_FEATURE_CACHE"


def default_cache_dir() -> Path:
    """``$EDGE_CLASSIFY_FEATURE_CACHE``, else ``~/.cache/edge-classify/features`` (honours
    ``XDG_CACHE_HOME``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-classify" / "features"


@dataclass
class FeatureCache:
    """Feature vectors on disk: ``<root>/<identity folder>/<hash[:2]>/<hash>.v<variant>.npy``.

    ``root=None`` keeps nothing (every lookup misses). Writes are atomic (temporary file and
    rename), so runs sharing a cache never read half a file.
    """

    root: Path | None
    identity: dict[str, Any]
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        text = json.dumps(self.identity, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:20]
        size = self.identity.get("input_size", ["?", "?"])
        self.folder = (
            self.root / f"{self.identity.get('arch', 'model')}-{size[0]}x{size[1]}-{digest}"
            if self.root is not None
            else None
        )

    def _path(self, digest: str, variant: int) -> Path:
        assert self.folder is not None
        return self.folder / digest[:2] / f"{digest}.v{variant}.npy"

    def get(self, digest: str, variant: int) -> np.ndarray | None:
        """The cached vector, or None (also for an unreadable entry, which is then recomputed)."""
        if self.folder is None or not digest:
            self.misses += 1
            return None
        try:
            vector = np.load(self._path(digest, variant), allow_pickle=False)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return vector

    def _write_identity(self) -> None:
        assert self.folder is not None
        target = self.folder / "identity.json"
        handle, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(json.dumps(self.identity, indent=1, sort_keys=True))
            try:
                # A hard link never replaces: of workers sharing the cache, one writes it.
                os.link(tmp, target)
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links
                os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put(self, digest: str, variant: int, vector: np.ndarray) -> None:
        if self.folder is None or not digest:
            return
        path = self._path(digest, variant)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "identity.json").exists():
            self._write_identity()
        handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.save(stream, np.asarray(vector, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class RowSharing(Protocol):
    """Splits the rows to compute between workers and shares the results
    (:class:`exporter.distribute.RowExchange`)."""

    def rows(self, count: int) -> np.ndarray:
        """The rows of ``0..count-1`` this worker computes."""
        ...

    def exchange(self, count: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Every row, given this worker's ``values`` of ``rows``."""
        ...


def compute_features(
    feature_model: Any,
    images: np.ndarray,
    digests: Sequence[str],
    variants: Sequence[int],
    cache: FeatureCache,
    *,
    policy: AugmentPolicy | None = None,
    batch_size: int = 64,
    progress: Progress = QUIET,
    desc: str = "features",
    sharing: RowSharing | None = None,
) -> np.ndarray:
    """Pooled backbone features of every image and variant: float32 ``(len(variants), N, D)``.

    Variant 0 is the image itself; variant ``k > 0`` is the augmented copy drawn with
    :func:`exporter.augment.variant_rng` from the image's content hash, so it is the same copy
    in every run. Only entries missing from the cache go through the backbone, and identical
    images (same content hash) only once. With ``sharing``, this worker computes (and caches)
    only its share and receives the others' from them, so no two workers write one cache file.
    """
    count = len(images)
    dim = int(feature_model.output_shape[-1])
    # One entry per distinct (image content, variant); images without a digest stay apart.
    entries: list[tuple[int, int]] = []
    where: dict[tuple[str, int], int] = {}
    slot = np.zeros((len(variants), count), dtype=np.int64)
    for v_index, variant in enumerate(variants):
        for i in range(count):
            key = (digests[i], variant)
            if digests[i] and key in where:
                slot[v_index, i] = where[key]
                continue
            where[key] = slot[v_index, i] = len(entries)
            entries.append((v_index, i))
    mine = sharing.rows(len(entries)) if sharing is not None else np.arange(len(entries))
    values = np.zeros((len(mine), dim), dtype=np.float32)
    todo: list[int] = []
    for row, entry in enumerate(mine):
        v_index, i = entries[int(entry)]
        vector = cache.get(digests[i], variants[v_index])
        if vector is not None and vector.shape == (dim,):
            values[row] = vector
        else:
            todo.append(row)
    policy = policy or AugmentPolicy()
    if todo:
        with progress.bar(len(todo), desc) as bar:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                batch = np.empty((len(chunk), *images.shape[1:]), dtype=np.uint8)
                for position, row in enumerate(chunk):
                    v_index, i = entries[int(mine[row])]
                    image = images[i]
                    if variants[v_index]:
                        image = augment_image(
                            image, variant_rng(digests[i], variants[v_index]), policy
                        )
                    batch[position] = image
                vectors = np.asarray(
                    feature_model.predict_on_batch(model_input(batch)), dtype=np.float32
                )
                for position, row in enumerate(chunk):
                    v_index, i = entries[int(mine[row])]
                    values[row] = vectors[position]
                    cache.put(digests[i], variants[v_index], vectors[position])
                bar.update(len(chunk))
    if sharing is not None:
        values = sharing.exchange(len(entries), mine, values)
    return values[slot]
