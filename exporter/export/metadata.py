"""Self-describing model files: TFLite metadata and ONNX ``metadata_props``, written.

A ``.tflite`` file we export carries the standard TFLite metadata, as the tflite-support
``MetadataPopulator`` writes it, so MediaPipe, Coral and Android tools read our files:

* a ``ModelMetadata`` flatbuffer (schema ``metadata_schema.fbs``, file identifier ``M001``) stored
  in a model buffer that the model's ``metadata`` entry named ``TFLITE_METADATA`` points to;
* the associated files (``labels.txt`` as ``TENSOR_AXIS_LABELS`` of the output, and
  ``edge_classify.json`` with the preprocessing facts) appended to the model as an uncompressed zip
  archive, so the file is at once a valid flatbuffer and a valid zip.

The official writer (tflite-support) cannot share an environment with TensorFlow (protobuf pins),
so the metadata flatbuffer is built here with the ``flatbuffers`` package, field by field, with the
table slots and enum values of the runtime's schema (:mod:`edge_runtime.metadata`). One definition
of the contract: the device reads our files with the runtime's reader, and so do the tests.

ONNX files carry the same facts as ``metadata_props`` (see :func:`onnx_metadata_props`), which the
device reads with :func:`edge_runtime.metadata.parse_onnx_metadata`.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np

from edge_runtime.metadata import (
    ASSOCIATED_FILE,
    CONTENT,
    FACTS_FILE_NAME,
    FEATURE_PROPERTIES,
    FILE_TYPE_VALUES,
    IMAGE_PROPERTIES,
    IMAGE_PROPERTIES_MEMBER,
    IMAGE_SIZE,
    LABELS_FILE_NAME,
    METADATA_IDENTIFIER,
    MODEL_METADATA,
    NORMALIZATION_OPTIONS,
    NORMALIZATION_OPTIONS_MEMBER,
    PROCESS_UNIT,
    STATS,
    SUBGRAPH_METADATA,
    TENSOR_METADATA,
    TFLITE_IDENTIFIER,
    TFLITE_METADATA_NAME,
)
from exporter.errors import ExportError

# Everything we write exists since metadata schema 1.0.0 (see metadata_version.cc upstream).
MIN_PARSER_VERSION = "1.0.0"
_RGB = 1  # ColorSpaceType.RGB


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
            ASSOCIATED_FILE,
            {
                "name": ("offset", name_off),
                "description": ("offset", description_off),
                "type": ("u8", FILE_TYPE_VALUES[kind]),
            },
        )

    def stats(self, low: float, high: float) -> int:
        high_off = self.floats([high])
        low_off = self.floats([low])
        return self.table(STATS, {"max": ("offset", high_off), "min": ("offset", low_off)})


def build_tflite_metadata(facts: ModelFacts) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier ``M001``) describing an image classifier.

    Input: an RGB image of ``facts.height`` x ``facts.width``, normalization mean 0 / std 1 (the
    model normalizes inside its graph and takes raw pixels 0..255). Output: one probability per
    label, with ``labels.txt`` attached as ``TENSOR_AXIS_LABELS``.
    """
    w = _Writer()
    # Input tensor: image properties, identity normalization, pixel range.
    size_off = w.table(IMAGE_SIZE, {"width": ("u32", facts.width), "height": ("u32", facts.height)})
    image_off = w.table(
        IMAGE_PROPERTIES,
        {
            "color_space": ("u8", _RGB if facts.color == "RGB" else 0),
            "default_size": ("offset", size_off),
        },
    )
    input_content = w.table(
        CONTENT,
        {
            "content_properties_type": ("u8", IMAGE_PROPERTIES_MEMBER),
            "content_properties": ("offset", image_off),
        },
    )
    mean_off = w.floats([0.0])
    std_off = w.floats([1.0])
    normalization = w.table(
        NORMALIZATION_OPTIONS, {"mean": ("offset", mean_off), "std": ("offset", std_off)}
    )
    unit = w.table(
        PROCESS_UNIT,
        {
            "options_type": ("u8", NORMALIZATION_OPTIONS_MEMBER),
            "options": ("offset", normalization),
        },
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
        TENSOR_METADATA,
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
        CONTENT,
        {
            "content_properties_type": ("u8", FEATURE_PROPERTIES),
            "content_properties": ("offset", feature),
        },
    )
    labels_file = w.associated_file(
        LABELS_FILE_NAME, "Class names, one per line, in output order.", "TENSOR_AXIS_LABELS"
    )
    output_files = w.offsets([labels_file])
    output_stats = w.stats(0.0, 1.0)
    output_name = w.string("probability")
    output_description = w.string(f"Probabilities of the {len(facts.labels)} classes.")
    output_meta = w.table(
        TENSOR_METADATA,
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
        SUBGRAPH_METADATA,
        {
            "name": ("offset", subgraph_name),
            "input_tensor_metadata": ("offset", inputs_off),
            "output_tensor_metadata": ("offset", outputs_off),
        },
    )
    subgraphs_off = w.offsets([subgraph])
    facts_file = w.associated_file(
        FACTS_FILE_NAME, "Preprocessing facts as JSON (edge-classify).", "DESCRIPTIONS"
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
        MODEL_METADATA,
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
        if name == TFLITE_METADATA_NAME:
            obj.buffers[entry.buffer] = metadata_buffer
            break
    else:
        obj.buffers.append(metadata_buffer)
        entry = schema.MetadataT()
        entry.name = TFLITE_METADATA_NAME
        entry.buffer = len(obj.buffers) - 1
        obj.metadata.append(entry)
    flat = flatbuffer_utils.convert_object_to_bytearray(obj)

    out = io.BytesIO()
    out.write(flat)
    with zipfile.ZipFile(out, "a") as archive:
        archive.writestr(_zip_member(LABELS_FILE_NAME), "\n".join(facts.labels) + "\n")
        archive.writestr(
            _zip_member(FACTS_FILE_NAME), json.dumps(facts.preprocessing(), indent=2) + "\n"
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


__all__ = [
    "MIN_PARSER_VERSION",
    "ModelFacts",
    "build_tflite_metadata",
    "onnx_metadata_props",
    "populate_tflite_metadata",
    "set_onnx_metadata",
]
