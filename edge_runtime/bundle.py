"""The model bundle (schema 1): the contract between the exporter and the device.

A bundle is a directory, or an uncompressed ``.tar`` of one, holding ``manifest.json``, the model
artifacts, ``labels.txt`` and ``samples/``. :func:`load_bundle` validates everything a device
relies on
before a model is trusted; :func:`write_bundle` writes a bundle atomically so that a failure leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from edge_runtime.errors import BundleError
from edge_runtime.labels import parse_labels
from edge_runtime.preprocess import PreprocessSpec, Roi
from edge_runtime.preprocess.ops import Interpolation, ResizeMode
from edge_runtime.selection import select_artifact
from edge_runtime.types import ArtifactFormat, Precision
from edge_runtime.validation import describe_validation_error

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.txt"
SAMPLES_DIR = "samples"
# Limits for unpacking a .tar from the network: generous for real models, fatal for tar bombs.
MAX_TAR_BYTES = 2 * 1024**3
MAX_TAR_MEMBERS = 2000

_FILE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_SAFE_NAME = re.compile(rf"^{_FILE_NAME}$")
_SAFE_SAMPLE = re.compile(rf"^{SAMPLES_DIR}/{_FILE_NAME}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InputDescription(_Strict):
    """What the model's input is and how a frame is turned into it."""

    height: StrictInt = Field(gt=0, le=8192, description="Input height in pixels.")
    width: StrictInt = Field(gt=0, le=8192, description="Input width in pixels.")
    channels: Literal[3] = Field(3, description="Always 3: colour images.")
    color: Literal["RGB"] = Field("RGB", description="Channel order the model takes.")
    resize: ResizeMode = Field("squash", description="How a frame of another shape is fitted.")
    interpolation: Interpolation = Field("area", description="Resampling used when resizing.")
    fill: StrictInt = Field(0, ge=0, le=255, description="Gray level of letterbox padding.")

    def preprocess_spec(self, roi: Roi | None = None) -> PreprocessSpec:
        """The preprocessing that produces this input from an RGB frame."""
        return PreprocessSpec(
            height=self.height,
            width=self.width,
            resize=self.resize,
            interpolation=self.interpolation,
            roi=roi,
            channel_order=self.color,
            fill=self.fill,
        )


class Artifact(_Strict):
    """One model file in the bundle and what verification measured for it."""

    path: str = Field(pattern=_SAFE_NAME.pattern, description="File name inside the bundle.")
    format: ArtifactFormat
    precision: Precision
    input_dtype: Literal["uint8", "int8", "float32"] = Field(
        description="Tensor type of the model input; values are always raw pixels 0..255."
    )
    output_size: StrictInt = Field(gt=0, description="Number of scores the model outputs.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: StrictInt = Field(ge=0)
    opset: StrictInt | None = Field(None, description="ONNX opset, for ONNX artifacts.")
    accuracy: float | None = Field(None, ge=0, le=1, description="Top-1 on the held-out split.")
    agreement_with_float: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of held-out images where top-1 equals the float model's.",
    )
    latency_ms: float | None = Field(
        None, ge=0, description="Median inference time on the exporter."
    )


class Training(_Strict):
    """How the model was made."""

    architecture: str
    weights: str = Field(description="imagenet, none, or the name of a weights file.")
    dataset_fingerprint: str = ""
    epochs: StrictInt = Field(0, ge=0)
    validation_accuracy: float | None = Field(None, ge=0, le=1)
    details: dict[str, Any] = Field(default_factory=dict, description="Any further settings.")


class Thresholds(_Strict):
    """Minimum confidence for a result to count; below it the result is ``unknown``."""

    default: float = Field(0.0, ge=0, le=1)
    per_class: dict[str, float] = Field(default_factory=dict)


class Compatible(_Strict):
    """Where this bundle may run."""

    runtime: str = Field(">=0.1", description="Runtime version range, e.g. '>=0.1,<1'.")
    profiles: list[str] = Field(default_factory=list, description="Device profiles; empty = any.")


class Sample(_Strict):
    """A held-out image with its expected label, for the on-device smoke test."""

    path: str = Field(pattern=_SAFE_SAMPLE.pattern)
    label: str


class BundleManifest(_Strict):
    """``manifest.json`` of a schema-1 bundle."""

    schema_version: Literal[1] = Field(1, alias="schema")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    version: StrictInt = Field(gt=0, description="Grows with every release of this model.")
    created: datetime
    task: Literal["classification"] = "classification"
    labels: list[str] = Field(min_length=2)
    input: InputDescription
    artifacts: list[Artifact] = Field(min_length=1)
    training: Training | None = None
    thresholds: Thresholds = Field(default_factory=lambda: Thresholds())
    compatible: Compatible = Field(default_factory=lambda: Compatible())
    samples: list[Sample] = Field(default_factory=list)

    @model_validator(mode="after")
    def _verify_consistency(self) -> BundleManifest:
        verify_labels(self.labels)
        verify_artifacts(self.artifacts, len(self.labels))
        unknown = sorted(set(self.thresholds.per_class) - set(self.labels))
        if unknown:
            raise ValueError(f"thresholds name classes that are not labels: {', '.join(unknown)}")
        bad = [v for v in self.thresholds.per_class.values() if not 0 <= v <= 1]
        if bad:
            raise ValueError(f"per-class thresholds must be in 0..1, got {bad[0]}")
        for sample in self.samples:
            if sample.label not in self.labels:
                raise ValueError(f"sample {sample.path} has label '{sample.label}', not a class")
        return self

    def artifact(self, path: str) -> Artifact:
        """The artifact stored as ``path``.

        Raises:
            BundleError: there is none.
        """
        for item in self.artifacts:
            if item.path == path:
                return item
        raise BundleError(f"bundle {self.name} has no artifact '{path}'")

    def member_names(self) -> set[str]:
        """Every file name a valid bundle directory holds."""
        names = {MANIFEST_NAME, LABELS_NAME}
        names.update(a.path for a in self.artifacts)
        names.update(s.path for s in self.samples)
        return names

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2) + "\n"


def verify_labels(labels: list[str]) -> None:
    """Labels must be non-empty single lines without surrounding blanks, each used once."""
    for label in labels:
        if not label or label != label.strip() or "\n" in label or "\r" in label:
            raise ValueError(f"label {label!r} must be a non-empty single line without padding")
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ValueError(f"label '{label}' appears twice")
        seen.add(label)


def verify_artifacts(artifacts: list[Artifact], label_count: int) -> None:
    """Artifact names are unique and every artifact outputs one score per label."""
    paths = [a.path for a in artifacts]
    if len(set(paths)) != len(paths):
        raise ValueError("two artifacts share a file name")
    for item in artifacts:
        if item.output_size != label_count:
            raise ValueError(
                f"{label_count} labels but artifact {item.path} outputs {item.output_size} "
                "scores: the labels do not belong to this model"
            )
        expected_suffix = "." + item.format
        if not item.path.endswith(expected_suffix):
            raise ValueError(
                f"artifact {item.path} is {item.format} but is not named *{expected_suffix}"
            )


def parse_manifest(data: bytes | str, where: str = MANIFEST_NAME) -> BundleManifest:
    """Parse and validate manifest JSON.

    Raises:
        BundleError: not JSON, an unknown schema, or a field that breaks the schema.
    """
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{where} must hold a JSON object")
    schema = raw.get("schema")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise BundleError(
            f"{where}: unsupported bundle schema {schema!r} "
            f"(this runtime reads schema {SCHEMA_VERSION})"
        )
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(
            f"{where}: {describe_validation_error(exc, fallback='manifest')}"
        ) from exc


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
            root=source, manifest=_validate_directory(source, verify_hashes), source=source
        )
    if not source.exists():
        raise BundleError(f"no bundle at {source}: no such file or directory")
    if not _is_plain_tar(source):
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
        manifest = _validate_directory(target, verify_hashes)
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


def _is_plain_tar(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:"):
            return True
    except (tarfile.TarError, OSError):
        return False


def _validate_directory(root: Path, verify_hashes: bool) -> BundleManifest:
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


def _member_name(raw: str) -> str:
    """Validate a tar member name and return it normalised, or raise BundleError."""
    if not raw or raw.startswith(("/", "\\")) or "\\" in raw or "\x00" in raw:
        raise BundleError(f"bundle archive has an unsafe member name {raw!r}")
    if re.match(r"^[A-Za-z]:", raw):
        raise BundleError(f"bundle archive has an unsafe member name {raw!r}")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise BundleError(f"bundle archive has an unsafe member name {raw!r}")
    return "/".join(parts)


def extract_bundle_tar(tar_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[str]:
    """Unpack a bundle ``.tar`` into the empty directory ``dest`` with an allow-list.

    Only regular files whose names the bundle's own manifest expects are written (optionally all
    under
    one top-level folder, which is dropped). Links, devices, absolute or ``..`` names, duplicates,
    unexpected members and archives over :data:`MAX_TAR_BYTES` are refused before anything is
    written.

    Returns the names written. Raises BundleError.
    """
    destination = Path(dest)
    try:
        archive = tarfile.open(tar_path, "r:")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"cannot open bundle archive {tar_path}: {exc}") from exc
    with archive:
        members = _safe_members(archive)
        manifest_member = members.get(MANIFEST_NAME)
        if manifest_member is None:
            raise BundleError(f"bundle archive {tar_path} has no {MANIFEST_NAME}")
        manifest = parse_manifest(
            _read_member(archive, manifest_member), where=f"{tar_path}:{MANIFEST_NAME}"
        )
        allowed = manifest.member_names()
        unexpected = sorted(set(members) - allowed)
        if unexpected:
            raise BundleError(f"bundle archive {tar_path} has unexpected member {unexpected[0]!r}")

        root = destination.resolve()
        for name, member in sorted(members.items()):
            target = (root / name).resolve()
            if root not in target.parents:  # pragma: no cover - names were validated above
                raise BundleError(f"bundle archive member {name!r} points outside the bundle")
            target.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(target, flags, 0o644)
            with os.fdopen(fd, "wb") as out:
                out.write(_read_member(archive, member))
        return sorted(members)


def _safe_members(archive: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    files: dict[str, tarfile.TarInfo] = {}
    total = 0
    count = 0
    for member in archive:
        count += 1
        if count > MAX_TAR_MEMBERS:
            raise BundleError(f"bundle archive has more than {MAX_TAR_MEMBERS} members")
        name = _member_name(member.name)
        if member.isdir():
            continue
        if not member.isreg():
            kind = "link" if (member.issym() or member.islnk()) else "special file"
            raise BundleError(
                f"bundle archive member {member.name!r} is a {kind}; only files are allowed"
            )
        if name in files:
            raise BundleError(f"bundle archive has member {name!r} twice")
        total += member.size
        if total > MAX_TAR_BYTES:
            raise BundleError(f"bundle archive unpacks to more than {MAX_TAR_BYTES} bytes")
        files[name] = member

    # A bundle packed as one top-level folder ("traffic-signs/manifest.json") loses that folder.
    if MANIFEST_NAME not in files:
        tops = {name.split("/", 1)[0] for name in files}
        if len(tops) == 1 and all("/" in name for name in files):
            top = tops.pop()
            files = {name[len(top) + 1 :]: member for name, member in files.items()}
    return files


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:  # pragma: no cover - regular files always have data
        raise BundleError(f"cannot read bundle archive member {member.name!r}")
    data = handle.read(member.size + 1)
    if len(data) != member.size:
        raise BundleError(f"bundle archive member {member.name!r} is truncated")
    return data


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, source: Path | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        if isinstance(source, (bytes, bytearray)):
            out.write(source)
        else:
            with open(source, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


def write_bundle(
    dest: str | os.PathLike[str],
    manifest: Mapping[str, Any] | BundleManifest,
    files: Mapping[str, Path | bytes],
    *,
    force: bool = False,
) -> Bundle:
    """Write a bundle directory atomically and return it loaded.

    ``manifest`` is the manifest as a mapping (``sha256`` and ``bytes`` of artifacts may be left
    out:
    they are computed here) or a model. ``files`` maps every artifact and sample name to a source
    path
    or bytes; ``labels.txt`` and ``manifest.json`` are written from the manifest. Everything goes
    to a
    temporary directory beside ``dest`` which is renamed into place at the end, so a failure leaves
    neither a half-written bundle nor a damaged old one.

    Raises:
        BundleError: ``dest`` holds a bundle and ``force`` is false, ``dest`` is something else
        than a
            bundle, the manifest is invalid, or a file is missing or extra.
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
            _write_file(staging / name, source)
        for item in artifacts:
            written = staging / item["path"]
            item["sha256"] = sha256_file(written)
            item["bytes"] = written.stat().st_size
        model = parse_manifest(json.dumps(raw), where=f"manifest for {target}")
        _write_file(staging / LABELS_NAME, ("\n".join(model.labels) + "\n").encode("utf-8"))
        _write_file(staging / MANIFEST_NAME, model.to_json().encode("utf-8"))
        _validate_directory(staging, verify_hashes=True)
        _fsync_directory(staging)
        _swap_into_place(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise BundleError(f"cannot write bundle {target}: {exc}") from exc
        raise
    return load_bundle(target, verify_hashes=False)


def _swap_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
    else:
        # Directories cannot be renamed over non-empty ones: move the old one aside first.
        retired = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
        )
        retired.rmdir()
        os.rename(target, retired)
        try:
            os.rename(staging, target)
        except OSError:
            os.rename(retired, target)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    _fsync_directory(target.parent)


def pack_bundle(
    bundle_dir: str | os.PathLike[str], tar_path: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Pack a valid bundle directory into a reproducible uncompressed ``.tar``, atomically.

    Members are sorted, owned by root and dated by the manifest's ``created``, so the same bundle
    packs
    to the same bytes.

    Raises:
        BundleError: the directory is not a valid bundle, or ``tar_path`` exists and ``force`` is
        false.
    """
    bundle = load_bundle(bundle_dir)
    out = Path(tar_path)
    if out.exists() and not force:
        raise BundleError(f"{out} already exists; pass --force to replace it")
    mtime = int(bundle.manifest.created.timestamp())
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(handle)
    try:
        with tarfile.open(temp_name, "w", format=tarfile.PAX_FORMAT) as archive:
            for name in sorted(bundle.manifest.member_names()):
                data = (bundle.root / name).read_bytes()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = mtime
                info.mode = stat.S_IFREG | 0o644
                archive.addfile(info, io.BytesIO(data))
        os.replace(temp_name, out)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return out


__all__ = [
    "Artifact",
    "Bundle",
    "BundleManifest",
    "Compatible",
    "InputDescription",
    "LABELS_NAME",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Sample",
    "Thresholds",
    "Training",
    "extract_bundle_tar",
    "load_bundle",
    "pack_bundle",
    "parse_manifest",
    "sha256_file",
    "write_bundle",
]
