"""Reading what model files say about themselves: TFLite metadata (flatbuffer + zip) and ONNX
metadata_props."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.errors import ModelError
from edge_runtime.metadata import (
    parse_onnx_labels,
    parse_onnx_metadata,
    parse_tflite_metadata_flatbuffer,
    read_tflite_metadata,
)

flatbuffers = pytest.importorskip("flatbuffers")


# -- a tiny flatbuffer writer for the tables the reader knows (slots from the schemas) ----------


class Writer:
    def __init__(self) -> None:
        self.b = flatbuffers.Builder(256)

    def table(self, fields: list[tuple[int, str, Any]]) -> int:
        """Fields as (slot, kind, value); children must be built already."""
        self.b.StartObject(max(slot for slot, _, _ in fields) + 1 if fields else 0)
        for slot, kind, value in fields:
            if kind == "offset":
                self.b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "u8":
                self.b.PrependUint8Slot(slot, value, 0)
            elif kind == "u32":
                self.b.PrependUint32Slot(slot, value, 0)
            elif kind == "u64":
                self.b.PrependUint64Slot(slot, value, 0)
        return self.b.EndObject()

    def offsets(self, items: list[int]) -> int:
        self.b.StartVector(4, len(items), 4)
        for item in reversed(items):
            self.b.PrependUOffsetTRelative(item)
        return self.b.EndVector()

    def floats(self, values: list[float]) -> int:
        self.b.StartVector(4, len(values), 4)
        for value in reversed(values):
            self.b.PrependFloat32(value)
        return self.b.EndVector()

    def string(self, text: str) -> int:
        return self.b.CreateString(text)

    def finish(self, root: int, identifier: bytes) -> bytes:
        self.b.Finish(root, file_identifier=identifier)
        return bytes(self.b.Output())


def metadata_flatbuffer(
    *, height: int = 32, width: int = 48, mean: float = 127.5, std: float = 127.5
) -> bytes:
    w = Writer()
    size = w.table([(0, "u32", width), (1, "u32", height)])
    image = w.table([(0, "u8", 1), (1, "offset", size)])
    content = w.table([(0, "u8", 2), (1, "offset", image)])
    normalization = w.table([(0, "offset", w.floats([mean])), (1, "offset", w.floats([std]))])
    unit = w.table([(0, "u8", 1), (1, "offset", normalization)])
    input_name, input_text = w.string("image"), w.string("A photo.")
    tensor_in = w.table(
        [
            (0, "offset", input_name),
            (1, "offset", input_text),
            (3, "offset", content),
            (4, "offset", w.offsets([unit])),
        ]
    )
    french_name, french_locale = w.string("labels_fr.txt"), w.string("fr")
    french = w.table([(0, "offset", french_name), (2, "u8", 2), (3, "offset", french_locale)])
    plain = w.table([(0, "offset", w.string("labels.txt")), (2, "u8", 2)])
    tensor_out = w.table(
        [(0, "offset", w.string("probability")), (6, "offset", w.offsets([french, plain]))]
    )
    subgraph = w.table(
        [(2, "offset", w.offsets([tensor_in])), (3, "offset", w.offsets([tensor_out]))]
    )
    name, text, version = w.string("Birds"), w.string("Finds birds."), w.string("v7")
    root = w.table(
        [
            (0, "offset", name),
            (1, "offset", text),
            (2, "offset", version),
            (3, "offset", w.offsets([subgraph])),
            (4, "offset", w.string("someone")),
        ]
    )
    return w.finish(root, b"M001")


def tflite_shell(metadata: bytes | None, *, outside: bool = False) -> bytes:
    """A TFLite ``Model`` flatbuffer holding only buffers and the metadata entry (not runnable,
    but exactly what the reader walks). ``outside`` stores the buffer after the flatbuffer with
    offset/size, as models over 2 GB do."""
    w = Writer()
    entries = []
    buffers = [w.table([])]  # buffer 0 is always empty
    if metadata is not None:
        if outside:
            # Patched below, once the flatbuffer's length is known.
            buffers.append(w.table([(1, "u64", 0xFFFFFFFF), (2, "u64", len(metadata))]))
        else:
            buffers.append(w.table([(0, "offset", w.b.CreateByteVector(metadata))]))
        name = w.string("TFLITE_METADATA")
        entries.append(w.table([(0, "offset", name), (1, "u32", 1)]))
    root = w.table(
        [(0, "u32", 3), (4, "offset", w.offsets(buffers)), (6, "offset", w.offsets(entries))]
    )
    data = w.finish(root, b"TFL3")
    if metadata is not None and outside:
        marker = (0xFFFFFFFF).to_bytes(8, "little")
        where = data.index(marker)
        data = data[:where] + len(data).to_bytes(8, "little") + data[where + 8 :]
        data += metadata
    return data


def with_zip(model: bytes, members: dict[str, bytes]) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return model + archive.getvalue()


# -- the real third-party file ------------------------------------------------------------------


def test_reads_the_metadata_of_a_third_party_model(imagenet_model: Path) -> None:
    metadata = read_tflite_metadata(imagenet_model)
    assert metadata.source == "tflite-metadata"
    assert metadata.name == "ImageClassifier"
    assert "most prominent object" in metadata.description
    assert metadata.labels_file == "imagenet_labels.txt"
    assert metadata.labels is not None and len(metadata.labels) == 1001
    assert metadata.labels[0] == "background" and metadata.labels[20] == "chickadee"
    assert (metadata.input_name, metadata.color) == ("image", "RGB")
    assert (metadata.mean, metadata.std) == ((127.5,), (127.5,))
    assert [f.type for f in metadata.associated_files] == ["TENSOR_AXIS_LABELS"]


def test_without_flatbuffers_labels_still_come_from_the_zip(
    imagenet_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "flatbuffers", None)  # import fails as if not installed
    metadata = read_tflite_metadata(imagenet_model)
    assert metadata.source == "zip"
    assert metadata.labels is not None and metadata.labels[20] == "chickadee"
    assert metadata.name == "" and metadata.mean is None


# -- hand-built files ---------------------------------------------------------------------------


def test_parses_the_metadata_flatbuffer() -> None:
    fields = parse_tflite_metadata_flatbuffer(metadata_flatbuffer())
    assert (fields["name"], fields["description"], fields["version"]) == (
        "Birds",
        "Finds birds.",
        "v7",
    )
    assert fields["author"] == "someone"
    assert (fields["input_name"], fields["input_description"]) == ("image", "A photo.")
    assert (fields["input_height"], fields["input_width"], fields["color"]) == (32, 48, "RGB")
    assert (fields["mean"], fields["std"]) == ((127.5,), (127.5,))
    # Of two label files the one without a locale is the canonical one.
    assert fields["labels_file"] == "labels.txt"
    assert [(f.name, f.locale) for f in fields["associated_files"]] == [
        ("labels_fr.txt", "fr"),
        ("labels.txt", ""),
    ]


@pytest.mark.parametrize("outside", [False, True])
def test_reads_a_model_with_metadata_and_associated_files(tmp_path: Path, outside: bool) -> None:
    path = tmp_path / "birds.tflite"
    path.write_bytes(
        with_zip(
            tflite_shell(metadata_flatbuffer(), outside=outside),
            {"labels.txt": b"tit\nwren\n", "labels_fr.txt": b"mesange\nroitelet\n"},
        )
    )
    metadata = read_tflite_metadata(path)
    assert metadata.source == "tflite-metadata"
    assert metadata.labels == ("tit", "wren")
    assert (metadata.name, metadata.input_height, metadata.input_width) == ("Birds", 32, 48)


def test_reads_our_exporters_facts_file(tmp_path: Path) -> None:
    facts = {
        "model_name": "signs",
        "model_version": 3,
        "labels": ["stop", "yield"],
        "input_height": 64,
        "input_width": 80,
        "resize": "letterbox",
        "interpolation": "linear",
        "color": "RGB",
        "pixel_range": [0, 255],
    }
    path = tmp_path / "signs.tflite"
    path.write_bytes(
        with_zip(tflite_shell(None), {"edge_classify.json": json.dumps(facts).encode()})
    )
    metadata = read_tflite_metadata(path)
    assert metadata.source == "zip"
    assert (metadata.name, metadata.version) == ("signs", "3")
    assert metadata.labels == ("stop", "yield")
    assert (metadata.resize, metadata.interpolation) == ("letterbox", "linear")
    assert (metadata.input_height, metadata.input_width) == (64, 80)


def test_a_plain_file_has_no_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.tflite"
    path.write_bytes(tflite_shell(None))
    metadata = read_tflite_metadata(path)
    assert metadata.source == "none" and metadata.labels is None


def test_corrupt_metadata_is_ignored_not_fatal(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "broken.tflite"
    data = bytearray(tflite_shell(metadata_flatbuffer()))
    # Point the metadata flatbuffer's root offset far outside the buffer.
    start = bytes(data).index(b"M001") - 4
    data[start : start + 4] = (0x7FFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    metadata = read_tflite_metadata(path)
    assert metadata.source == "none"
    assert "unreadable TFLite metadata" in caplog.text


def test_unreadable_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read model"):
        read_tflite_metadata(tmp_path / "missing.tflite")


# -- ONNX ----------------------------------------------------------


def test_onnx_properties() -> None:
    metadata = parse_onnx_metadata(
        {
            "labels": json.dumps(["a", "b", "c"]),
            "input_height": "96",
            "input_width": "128",
            "resize": "center-crop",
            "interpolation": "cubic",
            "color": "RGB",
            "model_name": "abc",
            "model_version": "2",
            "producer_note": "kept",
        }
    )
    assert metadata.source == "onnx-metadata"
    assert metadata.labels == ("a", "b", "c")
    assert (metadata.input_height, metadata.input_width) == (96, 128)
    assert (metadata.resize, metadata.interpolation, metadata.color) == (
        "center-crop",
        "cubic",
        "RGB",
    )
    assert (metadata.name, metadata.version) == ("abc", "2")
    assert metadata.extra == {"producer_note": "kept"}


def test_onnx_labels_as_lines_or_json() -> None:
    assert parse_onnx_labels("background\ncat\ndog\n") == ["background", "cat", "dog"]
    assert parse_onnx_labels('["x, y", "z"]') == ["x, y", "z"]
    with pytest.raises(ModelError, match="JSON"):
        parse_onnx_labels('["a", ')
    with pytest.raises(ModelError, match="strings"):
        parse_onnx_labels("[1, 2]")


def test_bad_onnx_values_are_ignored(caplog: Any) -> None:
    metadata = parse_onnx_metadata({"labels": "[1, 2]", "input_height": "tall"})
    assert metadata.labels is None and metadata.input_height is None
    assert "ignoring" in caplog.text
    assert parse_onnx_metadata({}).source == "none"
