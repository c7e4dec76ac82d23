"""Bundle directories: loading and validating them, writing them atomically, packing them.

:func:`load_bundle` validates everything a device relies on before a model is trusted (manifest,
labels, artifact sizes and sha256, samples); :func:`write_bundle` writes a bundle so that a failure
leaves nothing behind and an existing bundle is replaced in one atomic step (see
:func:`edge_runtime.fsutil.replace_directory`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edge_runtime.bundle.archive import extract_bundle_tar, is_plain_tar, write_bundle_tar
from edge_runtime.bundle.manifest import (
    LABELS_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Artifact,
    BundleManifest,
    parse_manifest,
)
from edge_runtime.errors import BundleError
from edge_runtime.fsutil import fsync_tree, replace_directory, write_file
from edge_runtime.labels import parse_labels
from edge_runtime.selection import select_artifact


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A validated bundle on disk. Use as a context manager when it came from a ``.tar``."""

    root: Path
    manifest: BundleManifest
    source: Path
    _tempdir: Path | None = field(default=None, repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    def path_of(self, name: str) -> Path:
        """Absolute path of a member file."""
        return self.root / name

    def select_artifact(
        self,
        formats: Iterable[str] | None = None,
        precisions: Iterable[str] | None = None,
    ) -> Artifact:
        """The first artifact in preference order: by format, then by precision.

        Raises:
            BundleError: no artifact matches.
        """
        return select_artifact(self.manifest, formats, precisions)

    def close(self) -> None:
        """Remove the unpacked copy of a ``.tar`` bundle (nothing to do for a directory)."""
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_bundle(
    path: str | os.PathLike[str],
    *,
    verify_hashes: bool = True,
    extract_to: str | os.PathLike[str] | None = None,
) -> Bundle:
    """Load and validate a bundle directory or ``.tar``.

    A ``.tar`` is unpacked with an allow-list extractor into ``extract_to`` (a new or empty
    directory) or a fresh temporary directory that :meth:`Bundle.close` removes.

    Raises:
        BundleError: the path is not a bundle, or the bundle is invalid, incomplete, tampered with
            (sha256 mismatch), or unsafe to unpack. Nothing is left behind on failure.
    """
    source = Path(path)
    if source.is_dir():
        return Bundle(
            root=source, manifest=validate_directory(source, verify_hashes), source=source
        )
    if not source.exists():
        raise BundleError(f"no bundle at {source}: no such file or directory")
    if not is_plain_tar(source):
        raise BundleError(f"{source} is neither a bundle directory nor an uncompressed .tar bundle")

    made_here = extract_to is None
    if extract_to is None:
        target = Path(tempfile.mkdtemp(prefix="edge-bundle-"))
    else:
        # Checked before anything is written: on failure this directory is emptied again, which
        # must never touch files that were there before.
        target = Path(extract_to)
        target.mkdir(parents=True, exist_ok=True)
        if any(target.iterdir()):
            raise BundleError(f"cannot unpack into {target}: the directory is not empty")
    try:
        extract_bundle_tar(source, target)
        manifest = validate_directory(target, verify_hashes)
    except BaseException:
        if made_here:
            shutil.rmtree(target, ignore_errors=True)
        else:
            _empty_directory(target)
        raise
    return Bundle(
        root=target, manifest=manifest, source=source, _tempdir=target if made_here else None
    )


def _empty_directory(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def validate_directory(root: Path, verify_hashes: bool = True) -> BundleManifest:
    """The manifest of the bundle directory ``root`` once every file it names checks out.

    Raises:
        BundleError: no manifest, an invalid one, labels that differ from it, or a missing,
            resized or (with ``verify_hashes``) changed artifact, or a missing sample.
    """
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a bundle: it has no {MANIFEST_NAME}")
    manifest = parse_manifest(manifest_path.read_bytes(), where=str(manifest_path))

    labels_path = root / LABELS_NAME
    if not labels_path.is_file():
        raise BundleError(f"bundle {root} is missing {LABELS_NAME}")
    try:
        file_labels = parse_labels(labels_path.read_text(encoding="utf-8"))
    except Exception as exc:
        raise BundleError(f"{labels_path}: {exc}") from exc
    if file_labels != manifest.labels:
        raise BundleError(
            f"{labels_path} ({len(file_labels)} labels) does not match the manifest's "
            f"{len(manifest.labels)} labels"
        )

    for item in manifest.artifacts:
        artifact_path = root / item.path
        if not artifact_path.is_file():
            raise BundleError(f"bundle {root} is missing artifact {item.path}")
        size = artifact_path.stat().st_size
        if size != item.bytes:
            raise BundleError(
                f"artifact {item.path} is {size} bytes, the manifest says {item.bytes}: "
                "the file was changed or truncated"
            )
        if verify_hashes and sha256_file(artifact_path) != item.sha256:
            raise BundleError(
                f"artifact {item.path} does not match its sha256 in the manifest: "
                "the file was changed or corrupted"
            )
    for sample in manifest.samples:
        if not (root / sample.path).is_file():
            raise BundleError(f"bundle {root} is missing sample {sample.path}")
    return manifest


def write_bundle(
    dest: str | os.PathLike[str],
    manifest: Mapping[str, Any] | BundleManifest,
    files: Mapping[str, Path | bytes],
    *,
    force: bool = False,
) -> Bundle:
    """Write a bundle directory atomically and return it loaded.

    ``manifest`` is the manifest as a mapping (``sha256`` and ``bytes`` of artifacts may be left
    out: they are computed here) or a model. ``files`` maps every artifact and sample name to a
    source path or bytes; ``labels.txt`` and ``manifest.json`` are written from the manifest.
    Everything goes to a temporary directory beside ``dest``: each file is written and fsynced,
    then the directories, and the result is swapped with ``dest`` in one atomic step
    (``renameat2(RENAME_EXCHANGE)``, see :mod:`edge_runtime.fsutil`) before the parent directory
    is synced and the old bundle deleted. A failure or a crash at any point leaves ``dest``
    holding the old bundle or the new one, complete; never a half-written or a missing one.

    Raises:
        BundleError: ``dest`` holds a bundle and ``force`` is false, ``dest`` is something else
            than a bundle, the manifest is invalid, a file is missing or extra, or writing failed.
    """
    target = Path(dest)
    if target.exists():
        if not target.is_dir() or target.is_symlink():
            raise BundleError(f"{target} exists and is not a bundle directory")
        if (target / MANIFEST_NAME).exists():
            if not force:
                raise BundleError(f"{target} already holds a bundle; pass --force to replace it")
        elif any(target.iterdir()):
            raise BundleError(
                f"{target} is a non-empty directory that is not a bundle; choose another"
            )

    raw = (
        manifest.model_dump(mode="json", by_alias=True)
        if isinstance(manifest, BaseModel)
        else dict(manifest)
    )
    raw = json.loads(json.dumps(raw, default=str))  # deep copy, datetimes as text
    raw.setdefault("schema", SCHEMA_VERSION)
    raw.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    artifacts = raw.get("artifacts") or []
    samples = raw.get("samples") or []
    expected = {a.get("path") for a in artifacts if isinstance(a, dict)}
    expected |= {s.get("path") for s in samples if isinstance(s, dict)}
    missing = sorted(str(n) for n in expected - set(files))
    if missing:
        raise BundleError(f"no file given for bundle member {missing[0]}")
    extra = sorted(set(files) - expected)
    if extra:
        raise BundleError(f"file {extra[0]} is not named in the manifest")
    for name, source in files.items():
        if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
            raise BundleError(f"file for bundle member {name} does not exist: {source}")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    )
    try:
        for name, source in files.items():
            write_file(staging / name, source)
        for item in artifacts:
            written = staging / item["path"]
            item["sha256"] = sha256_file(written)
            item["bytes"] = written.stat().st_size
        model = parse_manifest(json.dumps(raw), where=f"manifest for {target}")
        write_file(staging / LABELS_NAME, ("\n".join(model.labels) + "\n").encode("utf-8"))
        write_file(staging / MANIFEST_NAME, model.to_json().encode("utf-8"))
        validate_directory(staging, verify_hashes=True)
        # Every file is synced; now their names, then the one step that publishes them all.
        fsync_tree(staging)
        retired = replace_directory(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise BundleError(f"cannot write bundle {target}: {exc}") from exc
        raise
    if retired is not None:
        # The old bundle, now under a hidden name; the new one is in place and durable already.
        shutil.rmtree(retired, ignore_errors=True)
    return load_bundle(target, verify_hashes=False)


def pack_bundle(
    bundle_dir: str | os.PathLike[str], tar_path: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Pack a valid bundle directory into a reproducible uncompressed ``.tar``, atomically.

    Members are sorted, owned by root and dated by the manifest's ``created``, so the same bundle
    packs to the same bytes.

    Raises:
        BundleError: the directory is not a valid bundle, or ``tar_path`` exists and ``force`` is
            false.
    """
    with load_bundle(bundle_dir) as bundle:
        return write_bundle_tar(bundle.root, bundle.manifest, tar_path, force=force)


__all__ = [
    "Bundle",
    "load_bundle",
    "pack_bundle",
    "sha256_file",
    "validate_directory",
    "write_bundle",
]
