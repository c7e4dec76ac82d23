"""What a bare model file says about itself: labels, name, version and input description.

Two carriers, one result (:class:`ModelMetadata`):

- **TFLite**: standard TFLite model metadata. A ``.tflite`` with metadata is also a zip archive
  whose members are the associated files (the labels); the metadata proper is a flatbuffer
  (schema ``metadata_schema.fbs``, identifier ``M001``) kept in the model's ``metadata`` list
  under the name ``TFLITE_METADATA``. The zip part needs only the standard library; the flatbuffer
  is read with the ``flatbuffers`` package when it is installed, and skipped (zip only) when not.
  Labels are the output tensor's associated file of type ``TENSOR_AXIS_LABELS``; without the
  flatbuffer, a zip member named ``labels.txt`` (what our exporter writes) or the one
  ``*label*.txt`` member. Our exporter also attaches ``edge_classify.json``, a JSON object with
  the same keys as the ONNX properties below (values as JSON types), which adds the resize mode
  and interpolation that the standard schema cannot express.
- **ONNX**: ``metadata_props`` key/value strings. Keys read here (our exporter writes them):
  ``labels`` (a JSON list of names, or names one per line), ``input_height``, ``input_width``,
  ``resize``, ``interpolation``, ``color``, ``model_name``, ``model_version``, ``description``.

Everything here is a reader: it never fails a model for its metadata. Unreadable metadata is logged
and treated as absent, so the model still runs with ``--labels``.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import ModelError
from edge_runtime.inputfiles import describe, open_regular_file
from edge_runtime.labels import parse_labels

log = logging.getLogger(__name__)

TFLITE_METADATA_NAME = "TFLITE_METADATA"
#: the file identifiers of a metadata flatbuffer and of a TFLite model flatbuffer
METADATA_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
#: the associated files our exporter writes into .tflite models
LABELS_FILE_NAME = "labels.txt"
FACTS_FILE_NAME = "edge_classify.json"
#: metadata_props keys of ONNX models
ONNX_KEYS = (
    "labels",
    "input_height",
    "input_width",
    "resize",
    "interpolation",
    "color",
    "model_name",
    "model_version",
    "description",
)

# --------------------------------------------------------------------------------------------
# The metadata schema: the one definition of its tables, read here and written by the exporter.
# Field slots are positions in the table declarations of metadata_schema.fbs (a union takes two
# slots: its type, then its value); enum values are the schema's.

MODEL_METADATA = {
    "name": 0,
    "description": 1,
    "version": 2,
    "subgraph_metadata": 3,
    "author": 4,
    "license": 5,
    "associated_files": 6,
    "min_parser_version": 7,
}
SUBGRAPH_METADATA = {
    "name": 0,
    "description": 1,
    "input_tensor_metadata": 2,
    "output_tensor_metadata": 3,
    "associated_files": 4,
}
TENSOR_METADATA = {
    "name": 0,
    "description": 1,
    "dimension_names": 2,
    "content": 3,
    "process_units": 4,
    "stats": 5,
    "associated_files": 6,
}
ASSOCIATED_FILE = {"name": 0, "description": 1, "type": 2, "locale": 3}
CONTENT = {"content_properties_type": 0, "content_properties": 1, "range": 2}
IMAGE_PROPERTIES = {"color_space": 0, "default_size": 1}
IMAGE_SIZE = {"width": 0, "height": 1}
PROCESS_UNIT = {"options_type": 0, "options": 1}
NORMALIZATION_OPTIONS = {"mean": 0, "std": 1}
STATS = {"max": 0, "min": 1}
#: AssociatedFileType
ASSOCIATED_FILE_TYPES = {
    0: "UNKNOWN",
    1: "DESCRIPTIONS",
    2: "TENSOR_AXIS_LABELS",
    3: "TENSOR_VALUE_LABELS",
    4: "TENSOR_AXIS_SCORE_CALIBRATION",
    5: "VOCABULARY",
    6: "SCANN_INDEX_FILE",
}
FILE_TYPE_VALUES = {name: value for value, name in ASSOCIATED_FILE_TYPES.items()}
#: ColorSpaceType
COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}
#: ContentProperties union members
FEATURE_PROPERTIES = 1
IMAGE_PROPERTIES_MEMBER = 2
#: ProcessUnitOptions union member
NORMALIZATION_OPTIONS_MEMBER = 1
# Slots of the TFLite model schema (tensorflow/lite/schema/schema.fbs) that lead to the metadata.
TFLITE_MODEL = {"buffers": 4, "metadata": 6}
TFLITE_METADATA_ENTRY = {"name": 0, "buffer": 1}
#: ``offset`` and ``size`` hold the data of models over 2 GB, kept after the flatbuffer
TFLITE_BUFFER = {"data": 0, "offset": 1, "size": 2}


@dataclass(frozen=True)
class AssociatedFile:
    """A file named by the TFLite metadata (``type`` is the schema's AssociatedFileType name)."""

    name: str
    type: str = "UNKNOWN"
    description: str = ""
    locale: str = ""


@dataclass(frozen=True)
class ModelMetadata:
    """What a model file says about itself; every field is optional.

    ``mean`` and ``std`` are the input normalization ``(pixel - mean) / std`` per channel (TFLite
    ``NormalizationOptions``); ``input_range`` the input's (min, max) from its stats. ``source``
    says where the facts came from: ``tflite-metadata``, ``zip`` (associated files only),
    ``onnx-metadata`` or ``none``.
    """

    source: str = "none"
    name: str = ""
    version: str = ""
    description: str = ""
    author: str = ""
    license: str = ""
    min_parser_version: str = ""
    labels: tuple[str, ...] | None = None
    labels_file: str = ""
    associated_files: tuple[AssociatedFile, ...] = ()
    input_name: str = ""
    input_description: str = ""
    input_height: int | None = None
    input_width: int | None = None
    resize: str | None = None
    interpolation: str | None = None
    color: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_range: tuple[float, float] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (labels shortened to their count)."""
        return {
            "source": self.source,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "labels": len(self.labels) if self.labels is not None else None,
            "labels_file": self.labels_file,
            "associated_files": [f.name for f in self.associated_files],
            "input": {
                "name": self.input_name,
                "description": self.input_description,
                "height": self.input_height,
                "width": self.input_width,
                "color": self.color,
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None,
            },
        }


# --------------------------------------------------------------------------------------------
# A minimal flatbuffer reader for the few tables needed (field numbers from the schemas).


class _Table:
    """One flatbuffer table; ``slot`` is the field number in the schema (unions take two)."""

    def __init__(self, table: Any) -> None:
        self._t = table

    def _offset(self, slot: int) -> int:
        return int(self._t.Offset(4 + 2 * slot))

    def _length(self, off: int, item_size: int) -> int:
        # A corrupt length must fail here, not allocate a list of billions of entries.
        count = int(self._t.VectorLen(off))
        if count * item_size > len(self._t.Bytes):
            raise ValueError("a metadata vector is longer than the file")
        return count

    def string(self, slot: int) -> str:
        off = self._offset(slot)
        if not off:
            return ""
        return bytes(self._t.String(off + self._t.Pos)).decode("utf-8", "replace")

    def scalar(self, slot: int, fmt: str, default: int = 0) -> int:
        off = self._offset(slot)
        if not off:
            return default
        return int(struct.unpack_from("<" + fmt, self._t.Bytes, self._t.Pos + off)[0])

    def table(self, slot: int) -> _Table | None:
        from flatbuffers.table import Table

        off = self._offset(slot)
        if not off:
            return None
        return _Table(Table(self._t.Bytes, self._t.Indirect(off + self._t.Pos)))

    def tables(self, slot: int) -> list[_Table]:
        from flatbuffers.table import Table

        off = self._offset(slot)
        if not off:
            return []
        count = self._length(off, 4)
        start = self._t.Vector(off)
        return [_Table(Table(self._t.Bytes, self._t.Indirect(start + 4 * i))) for i in range(count)]

    def vector(self, slot: int, fmt: str) -> tuple[Any, ...]:
        off = self._offset(slot)
        if not off:
            return ()
        count = self._length(off, struct.calcsize(fmt))
        return struct.unpack_from(f"<{count}{fmt}", self._t.Bytes, self._t.Vector(off))

    def byte_span(self, slot: int) -> tuple[int, int] | None:
        """``(start, length)`` of a ``[ubyte]`` field inside the buffer."""
        off = self._offset(slot)
        if not off:
            return None
        return self._t.Vector(off), self._length(off, 1)

    def union(self, type_slot: int) -> tuple[int, _Table | None]:
        """A union field's member type and table (the value lives in the next slot)."""
        kind = self.scalar(type_slot, "B")
        return kind, (self.table(type_slot + 1) if kind else None)


def _root(buffer: Any) -> _Table:
    from flatbuffers.table import Table

    return _Table(Table(buffer, struct.unpack_from("<I", buffer, 0)[0]))



def _associated_files(table: _Table, slot: int) -> list[tuple[AssociatedFile, int]]:
    found = []
    for item in table.tables(slot):
        kind = item.scalar(ASSOCIATED_FILE["type"], "b")
        found.append(
            (
                AssociatedFile(
                    name=item.string(ASSOCIATED_FILE["name"]),
                    type=ASSOCIATED_FILE_TYPES.get(kind, str(kind)),
                    description=item.string(ASSOCIATED_FILE["description"]),
                    locale=item.string(ASSOCIATED_FILE["locale"]),
                ),
                kind,
            )
        )
    return found


def parse_tflite_metadata_flatbuffer(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Read the fields of a ``TFLITE_METADATA`` flatbuffer (``ModelMetadata``) that matter here.

    Returns a dict with ``name``, ``version``, ``description``, ``author``, ``license``,
    ``min_parser_version``, ``associated_files`` (list of :class:`AssociatedFile`),
    ``labels_file`` (the output's ``TENSOR_AXIS_LABELS`` file, or ""), ``input_name``,
    ``input_description``, ``color``, ``input_height``, ``input_width``, ``mean``, ``std`` and,
    when the input has stats, ``input_range`` (min, max).

    Raises:
        ModuleNotFoundError: the ``flatbuffers`` package is missing.
        ValueError, struct.error, IndexError: the buffer is not a metadata flatbuffer.
    """
    root = _root(data)
    result: dict[str, Any] = {
        "name": root.string(MODEL_METADATA["name"]),
        "description": root.string(MODEL_METADATA["description"]),
        "version": root.string(MODEL_METADATA["version"]),
        "author": root.string(MODEL_METADATA["author"]),
        "license": root.string(MODEL_METADATA["license"]),
        "min_parser_version": root.string(MODEL_METADATA["min_parser_version"]),
        "input_name": "",
        "input_description": "",
        "color": None,
        "input_height": None,
        "input_width": None,
        "mean": None,
        "std": None,
        "labels_file": "",
    }
    files = _associated_files(root, MODEL_METADATA["associated_files"])
    labels_candidates: list[AssociatedFile] = []
    subgraphs = root.tables(MODEL_METADATA["subgraph_metadata"])
    if subgraphs:
        subgraph = subgraphs[0]
        files += _associated_files(subgraph, SUBGRAPH_METADATA["associated_files"])
        inputs = subgraph.tables(SUBGRAPH_METADATA["input_tensor_metadata"])
        if inputs:
            _read_input_tensor(inputs[0], result)
        for tensor in subgraph.tables(SUBGRAPH_METADATA["output_tensor_metadata"])[:1]:
            for item, kind in _associated_files(tensor, TENSOR_METADATA["associated_files"]):
                files.append((item, kind))
                if kind == FILE_TYPE_VALUES["TENSOR_AXIS_LABELS"]:
                    labels_candidates.append(item)
    # Prefer the label file without a locale (the canonical names), else the first one.
    if labels_candidates:
        plain = [f for f in labels_candidates if not f.locale]
        result["labels_file"] = (plain or labels_candidates)[0].name
    result["associated_files"] = [item for item, _ in files]
    return result


def _read_input_tensor(tensor: _Table, result: dict[str, Any]) -> None:
    result["input_name"] = tensor.string(TENSOR_METADATA["name"])
    result["input_description"] = tensor.string(TENSOR_METADATA["description"])
    content = tensor.table(TENSOR_METADATA["content"])
    if content is not None:
        kind, properties = content.union(CONTENT["content_properties_type"])
        if kind == IMAGE_PROPERTIES_MEMBER and properties is not None:
            color = properties.scalar(IMAGE_PROPERTIES["color_space"], "b")
            result["color"] = COLOR_SPACES.get(color) if color else None
            size = properties.table(IMAGE_PROPERTIES["default_size"])
            if size is not None:
                width = size.scalar(IMAGE_SIZE["width"], "I")
                height = size.scalar(IMAGE_SIZE["height"], "I")
                if width and height:
                    result["input_width"], result["input_height"] = width, height
    for unit in tensor.tables(TENSOR_METADATA["process_units"]):
        kind, options = unit.union(PROCESS_UNIT["options_type"])
        if kind == NORMALIZATION_OPTIONS_MEMBER and options is not None:
            mean = tuple(float(v) for v in options.vector(NORMALIZATION_OPTIONS["mean"], "f"))
            std = tuple(float(v) for v in options.vector(NORMALIZATION_OPTIONS["std"], "f"))
            if mean and std and all(s > 0 for s in std):
                result["mean"], result["std"] = mean, std
    stats = tensor.table(TENSOR_METADATA["stats"])
    if stats is not None:
        low = stats.vector(STATS["min"], "f")
        high = stats.vector(STATS["max"], "f")
        if low and high:
            result["input_range"] = (float(low[0]), float(high[0]))


def tflite_metadata_buffer(model: Any) -> bytes | None:
    """The raw ``TFLITE_METADATA`` buffer of a TFLite model flatbuffer (bytes or a buffer such as
    an mmap), or None when it has none.

    Raises:
        ModuleNotFoundError: the ``flatbuffers`` package is missing.
        ValueError, struct.error, IndexError: the data is not a well-formed model flatbuffer.
    """
    root = _root(model)
    buffers = root.tables(TFLITE_MODEL["buffers"])
    for entry in root.tables(TFLITE_MODEL["metadata"]):
        if entry.string(TFLITE_METADATA_ENTRY["name"]) != TFLITE_METADATA_NAME:
            continue
        index = entry.scalar(TFLITE_METADATA_ENTRY["buffer"], "I")
        if index >= len(buffers):
            raise ValueError("TFLITE_METADATA names a buffer that does not exist")
        buffer = buffers[index]
        span = buffer.byte_span(TFLITE_BUFFER["data"])
        if span is not None and span[1]:
            start, length = span
        else:
            start = buffer.scalar(TFLITE_BUFFER["offset"], "Q")
            length = buffer.scalar(TFLITE_BUFFER["size"], "Q")
        if start + length > len(model) or not length:
            raise ValueError("TFLITE_METADATA buffer lies outside the file")
        return bytes(model[start : start + length])
    return None


def _zip_members(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            return {
                info.filename: archive.read(info)
                for info in archive.infolist()
                # Label and vocabulary files are small; skip anything that is not.
                if not info.is_dir() and info.file_size <= 16 * 1024 * 1024
            }
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError):
        return {}


def _labels_from_zip(members: Mapping[str, bytes], preferred: str) -> tuple[list[str], str]:
    candidates = [preferred] if preferred else []
    candidates.append(LABELS_FILE_NAME)
    txt = [n for n in members if n.lower().endswith(".txt") and "label" in n.lower()]
    if len(txt) == 1:
        candidates.append(txt[0])
    for name in candidates:
        if name in members:
            try:
                return parse_labels(members[name].decode("utf-8")), name
            except (UnicodeDecodeError, ModelError) as exc:
                log.warning("ignoring label file %s inside the model: %s", name, exc)
    return [], ""


def read_tflite_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """Read the metadata a ``.tflite`` file carries (none is fine).

    Raises:
        ModelError: the file cannot be read at all.
    """
    source = Path(path)
    fields: dict[str, Any] = {}
    kind = "none"
    try:
        with open_regular_file(source) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size >= 8:
                with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as model:
                    fields, kind = _read_flatbuffer_fields(model, source)
    except OSError as exc:
        raise ModelError(f"cannot read model {source}: {describe(exc)}") from None

    members = _zip_members(source)
    labels, labels_file = _labels_from_zip(members, fields.pop("labels_file", ""))
    files = list(fields.pop("associated_files", []))
    known = {f.name for f in files}
    files += [AssociatedFile(name=n) for n in members if n not in known]
    if kind == "none" and members:
        kind = "zip"
    facts = _facts_from_zip(members, source)
    if labels_file == "" and facts.labels:
        labels, labels_file = list(facts.labels), FACTS_FILE_NAME
    for key in ("name", "version", "description"):
        if not fields.get(key) and getattr(facts, key):
            fields[key] = getattr(facts, key)
    for key in ("input_height", "input_width", "resize", "interpolation", "color"):
        if getattr(facts, key) is not None:
            fields[key] = getattr(facts, key)
    return ModelMetadata(
        source=kind,
        labels=tuple(labels) if labels else None,
        labels_file=labels_file,
        associated_files=tuple(files),
        **fields,
    )


def _facts_from_zip(members: Mapping[str, bytes], source: Path) -> ModelMetadata:
    data = members.get(FACTS_FILE_NAME)
    if data is None:
        return ModelMetadata()
    try:
        raw = json.loads(data.decode("utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        log.warning("ignoring %s inside %s: %s", FACTS_FILE_NAME, source, exc)
        return ModelMetadata()
    # The same facts as the ONNX properties, with JSON values instead of strings.
    props = {
        str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items() if v is not None
    }
    return parse_onnx_metadata(props)


def _read_flatbuffer_fields(model: Any, source: Path) -> tuple[dict[str, Any], str]:
    try:
        import flatbuffers  # noqa: F401  (only to learn whether it is installed)
    except ModuleNotFoundError:
        log.debug("flatbuffers is not installed: reading only the associated files of %s", source)
        return {}, "none"
    if bytes(model[4:8]) != TFLITE_IDENTIFIER:
        return {}, "none"
    try:
        buffer = tflite_metadata_buffer(model)
        if buffer is None:
            return {}, "none"
        return parse_tflite_metadata_flatbuffer(buffer), "tflite-metadata"
    except (ValueError, struct.error, IndexError, TypeError, OverflowError) as exc:
        log.warning("ignoring unreadable TFLite metadata in %s: %s", source, exc)
        return {}, "none"


def _positive_int(props: Mapping[str, str], key: str) -> int | None:
    text = props.get(key, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        log.warning("ignoring ONNX metadata %s=%r: not an integer", key, text)
        return None
    return value if value > 0 else None


def parse_onnx_labels(text: str) -> list[str]:
    """Labels from the ONNX ``labels`` property: a JSON list of strings, or one name per line.

    Raises:
        ModelError: the value is neither.
    """
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ModelError(
                f"the model's 'labels' metadata is not a valid JSON list: {exc}"
            ) from exc
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ModelError("the model's 'labels' metadata must be a JSON list of strings")
        labels = [v.strip() for v in value]
        if not labels or any(not v for v in labels):
            raise ModelError("the model's 'labels' metadata holds an empty label")
        return labels
    return parse_labels(stripped)


def parse_onnx_metadata(props: Mapping[str, str]) -> ModelMetadata:
    """Interpret ONNX ``metadata_props`` (see the module docstring for the keys).

    Unusable values are logged and ignored, so a model always loads.
    """
    labels: tuple[str, ...] | None = None
    if props.get("labels", "").strip():
        try:
            labels = tuple(parse_onnx_labels(props["labels"]))
        except ModelError as exc:
            log.warning("ignoring the model's labels metadata: %s", exc)

    def text(key: str) -> str | None:
        value = props.get(key, "").strip()
        return value or None

    return ModelMetadata(
        source="onnx-metadata" if props else "none",
        name=props.get("model_name", ""),
        version=props.get("model_version", ""),
        description=props.get("description", ""),
        labels=labels,
        labels_file="metadata_props:labels" if labels else "",
        input_height=_positive_int(props, "input_height"),
        input_width=_positive_int(props, "input_width"),
        resize=text("resize"),
        interpolation=text("interpolation"),
        color=text("color"),
        extra={k: v for k, v in props.items() if k not in ONNX_KEYS},
    )


__all__ = [
    "FACTS_FILE_NAME",
    "LABELS_FILE_NAME",
    "ONNX_KEYS",
    "TFLITE_METADATA_NAME",
    "AssociatedFile",
    "ModelMetadata",
    "parse_onnx_labels",
    "parse_onnx_metadata",
    "parse_tflite_metadata_flatbuffer",
    "read_tflite_metadata",
    "tflite_metadata_buffer",
]
