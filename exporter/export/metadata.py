"""Self-describing model files: TFLite metadata and ONNX ``metadata_props``.

A ``.tflite`` file we export carries the standard TFLite metadata, as the tflite-support
``MetadataPopulator`` writes it, so MediaPipe, Coral and Android tools read our files:

* a ``ModelMetadata`` flatbuffer (schema ``metadata_schema.fbs``, file identifier ``M001``) stored
  in a model buffer that the model's ``metadata`` entry named ``TFLITE_METADATA`` points to;
* the associated files (``labels.txt`` as ``TENSOR_AXIS_LABELS`` of the output, and
  ``edge_classify.json`` with the preprocessing facts) appended to the model as an uncompressed zip
  archive, so the file is at once a valid flatbuffer and a valid zip.

The official writer (tflite-support) cannot share an environment with TensorFlow (protobuf pins),
so the metadata flatbuffer is built here with the ``flatbuffers`` package, field by field, following
the schema's field order (a field's slot is its position in the table). Only the tables we need are
written; :func:`read_tflite_metadata` reads them back without TensorFlow, and the tests check the
result with the runtime's reader too.

ONNX files carry the same facts as ``metadata_props`` (see :func:`onnx_metadata_props`).
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np
from flatbuffers.table import Table

from exporter.errors import ExportError

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
# Everything we write exists since metadata schema 1.0.0 (see metadata_version.cc upstream).
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
FACTS_FILE = "edge_classify.json"

# Enum values from metadata_schema.fbs.
ASSOCIATED_FILE_TYPES = {
    0: "UNKNOWN",
    1: "DESCRIPTIONS",
    2: "TENSOR_AXIS_LABELS",
    3: "TENSOR_VALUE_LABELS",
    4: "TENSOR_AXIS_SCORE_CALIBRATION",
    5: "VOCABULARY",
}
_FILE_TYPE = {name: value for value, name in ASSOCIATED_FILE_TYPES.items()}
COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}
_CONTENT_FEATURE = 1  # ContentProperties.FeatureProperties
_CONTENT_IMAGE = 2  # ContentProperties.ImageProperties
_UNIT_NORMALIZATION = 1  # ProcessUnitOptions.NormalizationOptions

# Field slots (position in the table declaration) of the metadata schema tables we use.
_MODEL = {
    "name": 0,
    "description": 1,
    "version": 2,
    "subgraph_metadata": 3,
    "author": 4,
    "license": 5,
    "associated_files": 6,
    "min_parser_version": 7,
}
_SUBGRAPH = {"name": 0, "description": 1, "input_tensor_metadata": 2, "output_tensor_metadata": 3}
_TENSOR = {
    "name": 0,
    "description": 1,
    "dimension_names": 2,
    "content": 3,
    "process_units": 4,
    "stats": 5,
    "associated_files": 6,
}
_FILE = {"name": 0, "description": 1, "type": 2, "locale": 3}
_CONTENT = {"properties_type": 0, "properties": 1, "range": 2}
_IMAGE = {"color_space": 0, "default_size": 1}
_SIZE = {"width": 0, "height": 1}
_UNIT = {"options_type": 0, "options": 1}
_NORMALIZATION = {"mean": 0, "std": 1}
_STATS = {"max": 0, "min": 1}
# Slots of the TFLite model schema (tensorflow/lite/schema/schema.fbs) that the reader needs.
_TFL_MODEL_BUFFERS = 4
_TFL_MODEL_METADATA = 6
_TFL_BUFFER_DATA = 0
_TFL_METADATA_NAME = 0
_TFL_METADATA_BUFFER = 1


@dataclass(frozen=True)
class ModelFacts:
    """What a model file says about itself: identity, labels and how to prepare its input."""

    name: str
    version: int
    labels: tuple[str, ...]
    height: int
    width: int
    resize: str
    interpolation: str
    color: str = "RGB"
    description: str = ""
    author: str = "edge-classify"

    def preprocessing(self) -> dict[str, Any]:
        """The facts as a JSON-ready mapping (what ``edge_classify.json`` holds)."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "labels": list(self.labels),
            "input_height": self.height,
            "input_width": self.width,
            "resize": self.resize,
            "interpolation": self.interpolation,
            "color": self.color,
            "pixel_range": [0, 255],
        }


# --------------------------------------------------------------------------- writing (TFLite)


class _Writer:
    """Thin helpers over ``flatbuffers.Builder``: children are built before their parent table."""

    def __init__(self) -> None:
        self.b = flatbuffers.Builder(1024)

    def string(self, text: str | None) -> int | None:
        return None if text is None else self.b.CreateString(text)

    def offsets(self, items: list[int]) -> int:
        self.b.StartVector(4, len(items), 4)
        for item in reversed(items):
            self.b.PrependUOffsetTRelative(item)
        return self.b.EndVector()

    def floats(self, values: list[float]) -> int:
        self.b.StartVector(4, len(values), 4)
        for value in reversed(values):
            self.b.PrependFloat32(float(value))
        return self.b.EndVector()

    def table(self, slots: Mapping[str, int], fields: Mapping[str, tuple[str, Any]]) -> int:
        """Build a table from ``fields``: name -> (kind, value); None values are left out."""
        self.b.StartObject(max(slots.values()) + 1)
        for name, (kind, value) in fields.items():
            if value is None:
                continue
            slot = slots[name]
            if kind == "offset":
                self.b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "u8":
                self.b.PrependUint8Slot(slot, value, 0)
            elif kind == "u32":
                self.b.PrependUint32Slot(slot, value, 0)
            else:  # pragma: no cover - programming error
                raise ValueError(kind)
        return self.b.EndObject()

    def associated_file(self, name: str, description: str, kind: str) -> int:
        name_off = self.string(name)
        description_off = self.string(description)
        return self.table(
            _FILE,
            {
                "name": ("offset", name_off),
                "description": ("offset", description_off),
                "type": ("u8", _FILE_TYPE[kind]),
            },
        )

    def stats(self, low: float, high: float) -> int:
        high_off = self.floats([high])
        low_off = self.floats([low])
        return self.table(_STATS, {"max": ("offset", high_off), "min": ("offset", low_off)})


def build_tflite_metadata(facts: ModelFacts) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier ``M001``) describing an image classifier.

    Input: an RGB image of ``facts.height`` x ``facts.width``, normalization mean 0 / std 1 (the
    model normalizes inside its graph and takes raw pixels 0..255). Output: one probability per
    label, with ``labels.txt`` attached as ``TENSOR_AXIS_LABELS``.
    """
    w = _Writer()
    # Input tensor: image properties, identity normalization, pixel range.
    size_off = w.table(_SIZE, {"width": ("u32", facts.width), "height": ("u32", facts.height)})
    image_off = w.table(
        _IMAGE,
        {
            "color_space": ("u8", 1 if facts.color == "RGB" else 0),
            "default_size": ("offset", size_off),
        },
    )
    input_content = w.table(
        _CONTENT,
        {"properties_type": ("u8", _CONTENT_IMAGE), "properties": ("offset", image_off)},
    )
    mean_off = w.floats([0.0])
    std_off = w.floats([1.0])
    normalization = w.table(
        _NORMALIZATION, {"mean": ("offset", mean_off), "std": ("offset", std_off)}
    )
    unit = w.table(
        _UNIT,
        {"options_type": ("u8", _UNIT_NORMALIZATION), "options": ("offset", normalization)},
    )
    units_off = w.offsets([unit])
    input_stats = w.stats(0.0, 255.0)
    input_name = w.string("image")
    input_description = w.string(
        f"RGB image, {facts.height}x{facts.width}, raw pixels 0..255 (normalization is inside the "
        f"model); fit other sizes with resize '{facts.resize}', interpolation "
        f"'{facts.interpolation}'."
    )
    input_meta = w.table(
        _TENSOR,
        {
            "name": ("offset", input_name),
            "description": ("offset", input_description),
            "content": ("offset", input_content),
            "process_units": ("offset", units_off),
            "stats": ("offset", input_stats),
        },
    )

    # Output tensor: a feature vector of probabilities, labelled by labels.txt.
    w.b.StartObject(0)  # FeatureProperties has no fields
    feature = w.b.EndObject()
    output_content = w.table(
        _CONTENT,
        {"properties_type": ("u8", _CONTENT_FEATURE), "properties": ("offset", feature)},
    )
    labels_file = w.associated_file(
        LABELS_FILE, "Class names, one per line, in output order.", "TENSOR_AXIS_LABELS"
    )
    output_files = w.offsets([labels_file])
    output_stats = w.stats(0.0, 1.0)
    output_name = w.string("probability")
    output_description = w.string(f"Probabilities of the {len(facts.labels)} classes.")
    output_meta = w.table(
        _TENSOR,
        {
            "name": ("offset", output_name),
            "description": ("offset", output_description),
            "content": ("offset", output_content),
            "stats": ("offset", output_stats),
            "associated_files": ("offset", output_files),
        },
    )

    inputs_off = w.offsets([input_meta])
    outputs_off = w.offsets([output_meta])
    subgraph_name = w.string(facts.name)
    subgraph = w.table(
        _SUBGRAPH,
        {
            "name": ("offset", subgraph_name),
            "input_tensor_metadata": ("offset", inputs_off),
            "output_tensor_metadata": ("offset", outputs_off),
        },
    )
    subgraphs_off = w.offsets([subgraph])
    facts_file = w.associated_file(
        FACTS_FILE, "Preprocessing facts as JSON (edge-classify).", "DESCRIPTIONS"
    )
    model_files = w.offsets([facts_file])
    name_off = w.string(facts.name)
    description_off = w.string(
        facts.description or f"Image classifier '{facts.name}' ({len(facts.labels)} classes)."
    )
    version_off = w.string(str(facts.version))
    author_off = w.string(facts.author)
    parser_off = w.string(MIN_PARSER_VERSION)
    root = w.table(
        _MODEL,
        {
            "name": ("offset", name_off),
            "description": ("offset", description_off),
            "version": ("offset", version_off),
            "subgraph_metadata": ("offset", subgraphs_off),
            "author": ("offset", author_off),
            "associated_files": ("offset", model_files),
            "min_parser_version": ("offset", parser_off),
        },
    )
    w.b.Finish(root, METADATA_IDENTIFIER)
    return bytes(w.b.Output())


def _zip_member(name: str) -> zipfile.ZipInfo:
    # A fixed date keeps the exported file byte-for-byte reproducible.
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED  # readers map associated files straight from memory
    info.external_attr = 0o644 << 16
    return info


def populate_tflite_metadata(model: bytes, facts: ModelFacts) -> bytes:
    """Return ``model`` with the metadata of ``facts`` and its associated files attached.

    Like tflite-support's ``MetadataPopulator``: the metadata goes into a new model buffer named by
    a ``TFLITE_METADATA`` entry (replacing an earlier one), the model is re-serialized, and the
    associated files are appended as an uncompressed zip archive.

    Raises:
        ExportError: ``model`` is not a TFLite flatbuffer, or the labels do not fit its output.
    """
    if len(model) < 8 or model[4:8] != TFLITE_IDENTIFIER:
        raise ExportError("cannot add metadata: the data is not a TFLite model (no TFL3 mark)")
    # TensorFlow's own flatbuffer object API; the exporter may use TensorFlow.
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(_strip_zip(model)))
    _check_model_fits(obj, facts)
    schema = _tflite_schema()
    metadata_buffer = schema.BufferT()
    metadata_buffer.data = np.frombuffer(build_tflite_metadata(facts), dtype=np.uint8)
    obj.metadata = list(obj.metadata or [])
    obj.buffers = list(obj.buffers or [])
    for entry in obj.metadata:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_NAME:
            obj.buffers[entry.buffer] = metadata_buffer
            break
    else:
        obj.buffers.append(metadata_buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(obj.buffers) - 1
        obj.metadata.append(entry)
    flat = flatbuffer_utils.convert_object_to_bytearray(obj)

    out = io.BytesIO()
    out.write(flat)
    with zipfile.ZipFile(out, "a") as archive:
        archive.writestr(_zip_member(LABELS_FILE), "\n".join(facts.labels) + "\n")
        archive.writestr(
            _zip_member(FACTS_FILE), json.dumps(facts.preprocessing(), indent=2) + "\n"
        )
    return out.getvalue()


def _tflite_schema() -> Any:
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def _check_model_fits(obj: Any, facts: ModelFacts) -> None:
    subgraph = obj.subgraphs[0]
    if len(subgraph.inputs) != 1 or len(subgraph.outputs) != 1:
        raise ExportError(
            "cannot add classifier metadata: the model must have one input and one output, it has "
            f"{len(subgraph.inputs)} and {len(subgraph.outputs)}"
        )
    shape = list(subgraph.tensors[subgraph.outputs[0]].shape)
    if shape[-1] != len(facts.labels):
        raise ExportError(
            f"cannot add metadata: the model outputs {shape[-1]} scores but there are "
            f"{len(facts.labels)} labels"
        )


def _strip_zip(model: bytes) -> bytes:
    """The flatbuffer part of a model that may already carry an appended zip."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            infos = archive.infolist()
    except zipfile.BadZipFile:
        return model
    if not infos:
        return model
    return model[: min(info.header_offset for info in infos)]


# --------------------------------------------------------------------------- reading (TFLite)


class _Reader:
    """Read access to one flatbuffer table by field slot."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.t = Table(buf, pos)

    @classmethod
    def root(cls, buf: bytes) -> _Reader:
        return cls(buf, struct.unpack_from("<I", buf, 0)[0])

    def _offset(self, slot: int) -> int:
        return int(self.t.Offset(4 + 2 * slot))

    def string(self, slot: int) -> str | None:
        o = self._offset(slot)
        return None if not o else self.t.String(o + self.t.Pos).decode("utf-8")

    def u8(self, slot: int) -> int:
        o = self._offset(slot)
        return 0 if not o else int(self.t.Get(flatbuffers.number_types.Uint8Flags, o + self.t.Pos))

    def u32(self, slot: int) -> int:
        o = self._offset(slot)
        return 0 if not o else int(self.t.Get(flatbuffers.number_types.Uint32Flags, o + self.t.Pos))

    def table(self, slot: int) -> _Reader | None:
        o = self._offset(slot)
        return None if not o else _Reader(self.t.Bytes, self.t.Indirect(o + self.t.Pos))

    def tables(self, slot: int) -> list[_Reader]:
        o = self._offset(slot)
        if not o:
            return []
        start = self.t.Vector(o)
        return [
            _Reader(self.t.Bytes, self.t.Indirect(start + 4 * i))
            for i in range(self.t.VectorLen(o))
        ]

    def floats(self, slot: int) -> list[float]:
        o = self._offset(slot)
        if not o:
            return []
        return [float(x) for x in self.t.GetVectorAsNumpy(flatbuffers.number_types.Float32Flags, o)]

    def data(self, slot: int) -> bytes:
        o = self._offset(slot)
        if not o:
            return b""
        start = self.t.Vector(o)
        return bytes(self.t.Bytes[start : start + self.t.VectorLen(o)])


@dataclass
class TensorInfo:
    """What the metadata says about one input or output tensor."""

    name: str | None
    description: str | None
    content: str  # image | feature | none
    color_space: str = "UNKNOWN"
    default_size: tuple[int, int] | None = None  # (height, width)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    stats_min: list[float] = field(default_factory=list)
    stats_max: list[float] = field(default_factory=list)
    associated_files: list[tuple[str, str]] = field(default_factory=list)  # (name, type)


@dataclass
class TfliteMetadata:
    """The ``TFLITE_METADATA`` of a model plus the files packed into it."""

    name: str | None
    description: str | None
    version: str | None
    author: str | None
    min_parser_version: str | None
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    associated_files: list[tuple[str, str]]
    packed_files: dict[str, bytes]

    def labels(self) -> list[str]:
        """The labels of the first output, from its ``TENSOR_AXIS_LABELS`` file.

        Raises:
            ExportError: there is no such file or it is not packed in the model.
        """
        for output in self.outputs:
            for name, kind in output.associated_files:
                if kind == "TENSOR_AXIS_LABELS":
                    if name not in self.packed_files:
                        raise ExportError(f"the model's metadata names {name}, not packed in it")
                    text = self.packed_files[name].decode("utf-8")
                    return [line.strip() for line in text.splitlines() if line.strip()]
        raise ExportError("the model's metadata has no TENSOR_AXIS_LABELS file on its output")


def _tensor_info(table: _Reader) -> TensorInfo:
    info = TensorInfo(
        name=table.string(_TENSOR["name"]),
        description=table.string(_TENSOR["description"]),
        content="none",
    )
    content = table.table(_TENSOR["content"])
    if content is not None:
        kind = content.u8(_CONTENT["properties_type"])
        props = content.table(_CONTENT["properties"])
        if kind == _CONTENT_IMAGE and props is not None:
            info.content = "image"
            info.color_space = COLOR_SPACES.get(props.u8(_IMAGE["color_space"]), "UNKNOWN")
            size = props.table(_IMAGE["default_size"])
            if size is not None:
                info.default_size = (size.u32(_SIZE["height"]), size.u32(_SIZE["width"]))
        elif kind == _CONTENT_FEATURE:
            info.content = "feature"
    for unit in table.tables(_TENSOR["process_units"]):
        if unit.u8(_UNIT["options_type"]) == _UNIT_NORMALIZATION:
            options = unit.table(_UNIT["options"])
            if options is not None:
                info.mean = options.floats(_NORMALIZATION["mean"])
                info.std = options.floats(_NORMALIZATION["std"])
    stats = table.table(_TENSOR["stats"])
    if stats is not None:
        info.stats_max = stats.floats(_STATS["max"])
        info.stats_min = stats.floats(_STATS["min"])
    info.associated_files = _files(table.tables(_TENSOR["associated_files"]))
    return info


def _files(tables: list[_Reader]) -> list[tuple[str, str]]:
    return [
        (
            t.string(_FILE["name"]) or "",
            ASSOCIATED_FILE_TYPES.get(t.u8(_FILE["type"]), "UNKNOWN"),
        )
        for t in tables
    ]


def tflite_metadata_buffer(model: bytes) -> bytes | None:
    """The raw ``TFLITE_METADATA`` flatbuffer of a TFLite model, or None when it has none.

    Reads the model flatbuffer directly (no TensorFlow). Raises ExportError for non-TFLite data.
    """
    if len(model) < 8 or model[4:8] != TFLITE_IDENTIFIER:
        raise ExportError("not a TFLite model (no TFL3 identifier)")
    root = _Reader.root(model)
    buffers = root.tables(_TFL_MODEL_BUFFERS)
    for entry in root.tables(_TFL_MODEL_METADATA):
        if entry.string(_TFL_METADATA_NAME) == METADATA_NAME:
            index = entry.u32(_TFL_METADATA_BUFFER)
            if index < len(buffers):
                data = buffers[index].data(_TFL_BUFFER_DATA)
                if data:
                    return data
    return None


def read_tflite_metadata(model: bytes) -> TfliteMetadata:
    """Read the metadata and packed files of a TFLite model we (or anyone) exported.

    Raises:
        ExportError: not a TFLite model, no ``TFLITE_METADATA``, or metadata without the ``M001``
            identifier.
    """
    raw = tflite_metadata_buffer(model)
    if raw is None:
        raise ExportError("the TFLite model has no TFLITE_METADATA")
    if raw[4:8] != METADATA_IDENTIFIER:
        raise ExportError("the TFLITE_METADATA buffer lacks the M001 identifier")
    root = _Reader.root(raw)
    subgraphs = root.tables(_MODEL["subgraph_metadata"])
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    if subgraphs:
        inputs = [_tensor_info(t) for t in subgraphs[0].tables(_SUBGRAPH["input_tensor_metadata"])]
        outputs = [
            _tensor_info(t) for t in subgraphs[0].tables(_SUBGRAPH["output_tensor_metadata"])
        ]
    packed: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            for info in archive.infolist():
                packed[info.filename] = archive.read(info)
    except zipfile.BadZipFile:
        pass
    return TfliteMetadata(
        name=root.string(_MODEL["name"]),
        description=root.string(_MODEL["description"]),
        version=root.string(_MODEL["version"]),
        author=root.string(_MODEL["author"]),
        min_parser_version=root.string(_MODEL["min_parser_version"]),
        inputs=inputs,
        outputs=outputs,
        associated_files=_files(root.tables(_MODEL["associated_files"])),
        packed_files=packed,
    )


# --------------------------------------------------------------------------- ONNX

def onnx_metadata_props(facts: ModelFacts) -> dict[str, str]:
    """The ``metadata_props`` an exported ONNX model carries (all values are strings)."""
    return {
        "labels": json.dumps(list(facts.labels), ensure_ascii=False),
        "input_height": str(facts.height),
        "input_width": str(facts.width),
        "resize": facts.resize,
        "interpolation": facts.interpolation,
        "color": facts.color,
        "model_name": facts.name,
        "model_version": str(facts.version),
    }


def set_onnx_metadata(model: Any, facts: ModelFacts) -> None:
    """Write the facts into an ``onnx.ModelProto``'s ``metadata_props`` (replacing our keys)."""
    props = onnx_metadata_props(facts)
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for prop in keep:
        model.metadata_props.add(key=prop.key, value=prop.value)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = (
        f"{facts.name} v{facts.version}: {len(facts.labels)}-class image classifier; input RGB "
        f"{facts.height}x{facts.width} raw pixels 0..255 (NHWC float32)."
    )


def read_onnx_metadata(model: Any) -> dict[str, str]:
    """The ``metadata_props`` of an ``onnx.ModelProto`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


__all__ = [
    "FACTS_FILE",
    "LABELS_FILE",
    "METADATA_NAME",
    "ModelFacts",
    "TensorInfo",
    "TfliteMetadata",
    "build_tflite_metadata",
    "onnx_metadata_props",
    "populate_tflite_metadata",
    "read_onnx_metadata",
    "read_tflite_metadata",
    "set_onnx_metadata",
    "tflite_metadata_buffer",
]
