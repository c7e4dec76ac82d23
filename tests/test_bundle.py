"""The bundle contract: manifest schema, validation errors, atomic writes, safe .tar unpacking."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.bundle import (
    MAX_TAR_MEMBERS,
    BundleManifest,
    extract_bundle_tar,
    load_bundle,
    pack_bundle,
    parse_manifest,
    write_bundle,
)
from edge_runtime.errors import BundleError
from edge_runtime.selection import select_artifact

LABELS = ["stop", "yield", "no-entry"]


def manifest_dict(**changes: object) -> dict:
    data: dict = {
        "name": "signs",
        "version": 3,
        "created": "2026-11-28T10:00:00+00:00",
        "task": "classification",
        "labels": list(LABELS),
        "input": {"height": 8, "width": 8, "resize": "letterbox", "interpolation": "area"},
        "artifacts": [
            {
                "path": "model_int8.tflite",
                "format": "tflite",
                "precision": "int8",
                "input_dtype": "uint8",
                "output_size": 3,
                "accuracy": 0.97,
                "agreement_with_float": 0.99,
                "latency_ms": 1.5,
            },
            {
                "path": "model_fp32.onnx",
                "format": "onnx",
                "precision": "fp32",
                "input_dtype": "float32",
                "output_size": 3,
                "opset": 17,
            },
        ],
        "training": {"architecture": "mobilenet_v3_small", "weights": "none", "epochs": 4},
        "thresholds": {"default": 0.5, "per_class": {"stop": 0.7}},
        "samples": [{"path": "samples/stop_0.png", "label": "stop"}],
    }
    data.update(changes)
    return data


def files() -> dict[str, bytes]:
    return {
        "model_int8.tflite": b"TFL3 int8 model bytes",
        "model_fp32.onnx": b"onnx model bytes",
        "samples/stop_0.png": b"\x89PNG fake sample",
    }


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    write_bundle(tmp_path / "signs", manifest_dict(), files())
    return tmp_path / "signs"


def test_round_trip(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    assert manifest.labels == LABELS
    assert manifest.version == 3
    assert manifest.input.resize == "letterbox"
    assert manifest.thresholds.per_class == {"stop": 0.7}
    assert (bundle_dir / "labels.txt").read_text() == "stop\nyield\nno-entry\n"
    int8 = manifest.artifact("model_int8.tflite")
    assert int8.bytes == len(files()["model_int8.tflite"])
    assert len(int8.sha256) == 64
    # Serialising and parsing again gives the same model.
    again = parse_manifest(manifest.to_json())
    assert again == manifest
    assert json.loads(manifest.to_json())["schema"] == 1


def test_select_artifact_follows_preference(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert select_artifact(bundle.manifest).path == "model_int8.tflite"
    assert select_artifact(bundle.manifest, formats=["onnx"]).path == "model_fp32.onnx"
    with pytest.raises(BundleError, match="no onnx artifact in precision int8"):
        select_artifact(bundle.manifest, formats=["onnx"], precisions=["int8"])


def test_preprocess_spec_from_manifest(bundle_dir: Path) -> None:
    spec = load_bundle(bundle_dir).manifest.input.preprocess_spec()
    assert (spec.height, spec.width, spec.resize, spec.interpolation) == (8, 8, "letterbox", "area")


def rewrite_manifest(bundle_dir: Path, **changes: object) -> None:
    data = json.loads((bundle_dir / "manifest.json").read_text())
    data.update(changes)
    (bundle_dir / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema": 2}, "unsupported bundle schema 2"),
        ({"schema": "1"}, "unsupported bundle schema '1'"),
        ({"version": 0}, "version: Input should be greater than 0"),
        ({"version": -4}, "version: Input should be greater than 0"),
        ({"version": "7"}, "version: Input should be a valid integer"),
        ({"version": 1.5}, "version: Input should be a valid integer"),
        ({"version": True}, "version: Input should be a valid integer"),
        ({"task": "detection"}, "task"),
        ({"labels": ["a", "a", "b"]}, "label 'a' appears twice"),
        ({"unexpected": 1}, "unexpected: Extra inputs are not permitted"),
    ],
)
def test_invalid_manifest_fields(bundle_dir: Path, changes: dict, message: str) -> None:
    rewrite_manifest(bundle_dir, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_dir)


def test_labels_count_differs_from_model_output(bundle_dir: Path) -> None:
    data = json.loads((bundle_dir / "manifest.json").read_text())
    data["labels"] = ["stop", "yield"]
    data["thresholds"] = {"default": 0.5}
    data["samples"] = []
    (bundle_dir / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(
        BundleError, match="2 labels but artifact model_int8.tflite outputs 3 scores"
    ):
        load_bundle(bundle_dir)


def test_labels_file_must_match_manifest(bundle_dir: Path) -> None:
    (bundle_dir / "labels.txt").write_text("stop\nyield\n")
    with pytest.raises(BundleError, match=r"labels.txt \(2 labels\) does not match"):
        load_bundle(bundle_dir)


def test_missing_artifact(bundle_dir: Path) -> None:
    (bundle_dir / "model_fp32.onnx").unlink()
    with pytest.raises(BundleError, match="missing artifact model_fp32.onnx"):
        load_bundle(bundle_dir)


def test_sha256_mismatch(bundle_dir: Path) -> None:
    path = bundle_dir / "model_int8.tflite"
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match its sha256"):
        load_bundle(bundle_dir)
    # The cheap check (size) still runs when hashes are skipped.
    load_bundle(bundle_dir, verify_hashes=False)


def test_truncated_artifact(bundle_dir: Path) -> None:
    (bundle_dir / "model_fp32.onnx").write_bytes(b"short")
    with pytest.raises(BundleError, match="the file was changed or truncated"):
        load_bundle(bundle_dir)


def test_not_json_and_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="has no manifest.json"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="is not valid JSON"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="no such file"):
        load_bundle(tmp_path / "nope")
    other = tmp_path / "file.bin"
    other.write_bytes(b"neither")
    with pytest.raises(BundleError, match="neither a bundle directory nor"):
        load_bundle(other)


def test_threshold_and_sample_labels_must_be_classes() -> None:
    with pytest.raises(BundleError, match="thresholds name classes that are not labels: cat"):
        parse_manifest(
            json.dumps(
                {
                    **manifest_dict(thresholds={"per_class": {"cat": 0.5}}),
                    "schema": 1,
                    "artifacts": [
                        {**a, "sha256": "0" * 64, "bytes": 1} for a in manifest_dict()["artifacts"]
                    ],
                }
            )
        )


# -- writing ------------------------------------------------------------------------------------


def test_write_refuses_existing_bundle_without_force(bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match="already holds a bundle; pass --force"):
        write_bundle(bundle_dir, manifest_dict(), files())
    changed = manifest_dict(version=4)
    write_bundle(bundle_dir, changed, files(), force=True)
    assert load_bundle(bundle_dir).manifest.version == 4
    assert sorted(p.name for p in bundle_dir.parent.iterdir()) == ["signs"]


def test_write_refuses_non_bundle_directory(tmp_path: Path) -> None:
    target = tmp_path / "home"
    target.mkdir()
    (target / "precious.txt").write_text("do not delete")
    with pytest.raises(BundleError, match="non-empty directory that is not a bundle"):
        write_bundle(target, manifest_dict(), files(), force=True)
    assert (target / "precious.txt").read_text() == "do not delete"


@pytest.mark.parametrize(
    ("manifest", "given_files", "message"),
    [
        (manifest_dict(version=0), files(), "version"),
        (manifest_dict(), {k: v for k, v in files().items() if "onnx" not in k}, "no file given"),
        (manifest_dict(), {**files(), "extra.bin": b"x"}, "not named in the manifest"),
    ],
)
def test_failed_write_leaves_nothing(
    tmp_path: Path, manifest: dict, given_files: dict, message: str
) -> None:
    with pytest.raises(BundleError, match=message):
        write_bundle(tmp_path / "out", manifest, given_files)
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_old_bundle(bundle_dir: Path) -> None:
    before = (bundle_dir / "manifest.json").read_bytes()
    with pytest.raises(BundleError):
        write_bundle(bundle_dir, manifest_dict(version=-1), files(), force=True)
    assert (bundle_dir / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in bundle_dir.parent.iterdir()) == ["signs"]


def test_write_from_paths(tmp_path: Path) -> None:
    sources = {}
    for name, data in files().items():
        source = tmp_path / "src" / name.replace("/", "_")
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(data)
        sources[name] = source
    bundle = write_bundle(tmp_path / "b", manifest_dict(), sources)
    assert (bundle.root / "samples" / "stop_0.png").read_bytes() == files()["samples/stop_0.png"]


# -- .tar ---------------------------------------------------------------------------------------


def test_tar_round_trip(bundle_dir: Path, tmp_path: Path) -> None:
    tar_path = pack_bundle(bundle_dir, tmp_path / "signs.tar")
    again = pack_bundle(bundle_dir, tmp_path / "again.tar")
    assert tar_path.read_bytes() == again.read_bytes(), "packing is reproducible"
    with load_bundle(tar_path) as bundle:
        assert bundle.manifest == load_bundle(bundle_dir).manifest
        unpacked = bundle.root
        assert unpacked.is_dir()
    assert not unpacked.exists(), "closing removes the unpacked copy"


def test_tar_with_top_level_folder(bundle_dir: Path, tmp_path: Path) -> None:
    tar_path = tmp_path / "wrapped.tar"
    with tarfile.open(tar_path, "w") as archive:
        archive.add(bundle_dir, arcname="signs-v3")
    with load_bundle(tar_path) as bundle:
        assert bundle.manifest.name == "signs"


def add_member(archive: tarfile.TarFile, name: str, data: bytes = b"x", **kind: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if not kind else 0
    for key, value in kind.items():
        setattr(info, key, value)
    archive.addfile(info, io.BytesIO(data) if not kind else None)


def tar_of_bundle(
    bundle_dir: Path, path: Path, extra: list[tuple[str, dict]] | None = None
) -> Path:
    with tarfile.open(path, "w") as archive:
        for name in sorted(load_bundle(bundle_dir, verify_hashes=False).manifest.member_names()):
            add_member(archive, name, (bundle_dir / name).read_bytes())
        for name, kind in extra or []:
            add_member(archive, name, b"evil", **kind)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("../evil.txt", {}, "unsafe member name"),
        ("samples/../../evil.txt", {}, "unsafe member name"),
        ("/tmp/evil.txt", {}, "unsafe member name"),
        ("C:/evil.txt", {}, "unsafe member name"),
        ("evil.txt", {}, "unexpected member 'evil.txt'"),
        ("samples/extra.png", {}, "unexpected member"),
        ("link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "is a link"),
        ("hard", {"type": tarfile.LNKTYPE, "linkname": "manifest.json"}, "is a link"),
        ("fifo", {"type": tarfile.FIFOTYPE}, "special file"),
        ("labels.txt", {}, "member 'labels.txt' twice"),
    ],
)
def test_unsafe_tar_is_refused_and_nothing_written(
    bundle_dir: Path, tmp_path: Path, name: str, kind: dict, message: str
) -> None:
    tar_path = tar_of_bundle(bundle_dir, tmp_path / "evil.tar", [(name, kind)])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleError, match=message):
        load_bundle(tar_path, extract_to=dest)
    assert list(dest.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "evil.tar", "signs"]


def test_tar_member_limit(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge_runtime.bundle.archive.MAX_TAR_MEMBERS", 3)
    tar_path = tar_of_bundle(bundle_dir, tmp_path / "many.tar")
    with pytest.raises(BundleError, match="more than 3 members"):
        load_bundle(tar_path)
    assert MAX_TAR_MEMBERS > 100


def test_tampered_tar_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    (bundle_dir / "model_fp32.onnx").write_bytes(b"ONNX model bytez")  # same length, other bytes
    tar_path = tar_of_bundle(bundle_dir, tmp_path / "tampered.tar")
    dest = tmp_path / "dest"
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(tar_path, extract_to=dest)
    assert list(dest.iterdir()) == []


def test_extract_into_non_empty_directory_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    tar_path = pack_bundle(bundle_dir, tmp_path / "ok.tar")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="not empty"):
        load_bundle(tar_path, extract_to=dest)
    assert (dest / "keep.txt").read_text() == "mine"


# Property test of the parser: whatever member names and kinds an archive holds, unpacking either
# refuses it or writes only the bundle's own files inside the destination, nowhere else.
member_names = st.one_of(
    st.sampled_from(
        [
            "manifest.json",
            "labels.txt",
            "model_int8.tflite",
            "samples/stop_0.png",
            "../x",
            "./manifest.json",
            "a/../../x",
            "/abs",
            "samples//stop_0.png",
            "samples/../labels.txt",
            "..",
            ".",
            "",
        ]
    ),
    st.text(alphabet="ab./\\:", min_size=1, max_size=12),
)
member_kinds = st.sampled_from(
    [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(extra=st.lists(st.tuples(member_names, member_kinds), max_size=5))
def test_tar_parser_never_writes_outside(
    tmp_path_factory: pytest.TempPathFactory, extra: list
) -> None:
    base = tmp_path_factory.mktemp("prop")
    bundle_dir = base / "signs"
    write_bundle(bundle_dir, manifest_dict(), files())
    tar_path = base / "t.tar"
    with tarfile.open(tar_path, "w") as archive:
        for name in sorted(load_bundle(bundle_dir).manifest.member_names()):
            add_member(archive, name, (bundle_dir / name).read_bytes())
        for name, kind in extra:
            if kind == tarfile.REGTYPE:
                add_member(archive, name, b"payload")
            else:
                add_member(archive, name, type=kind, linkname="manifest.json")
    dest = base / "dest"
    dest.mkdir()
    before = set(os.listdir(base))
    try:
        written = extract_bundle_tar(tar_path, dest)
    except BundleError:
        assert list(dest.iterdir()) == [] or all(
            p.resolve().is_relative_to(dest.resolve()) for p in dest.rglob("*")
        )
    else:
        manifest = BundleManifest.model_validate_json((dest / "manifest.json").read_text())
        assert set(written) == manifest.member_names()
        for path in dest.rglob("*"):
            assert path.resolve().is_relative_to(dest.resolve())
            assert not path.is_symlink()
    assert set(os.listdir(base)) == before
