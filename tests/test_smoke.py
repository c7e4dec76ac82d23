"""The device's smoke test of a bundle: load it, run samples/, compare labels (no TensorFlow)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_onnx_bundle

from edge_runtime.bundle import load_bundle, write_bundle
from edge_runtime.errors import BundleError
from edge_runtime.model import load_model
from edge_runtime.smoke import smoke_test

pytest.importorskip("onnxruntime")

COLOURS = {"red": (230, 30, 30), "green": (30, 230, 30), "blue": (30, 30, 230)}


def _bundle_with_samples(dest: Path, wrong: int = 0) -> Path:
    """The tiny ONNX bundle plus one solid-colour sample per colour, labelled with what the
    model says (``wrong`` of them with another label)."""
    plain = write_onnx_bundle(dest.parent / f"{dest.name}-plain")
    manifest = json.loads((plain / "manifest.json").read_text())
    files: dict[str, Path | bytes] = {a["path"]: plain / a["path"] for a in manifest["artifacts"]}
    samples = []
    with load_model(plain, artifact="model_fp32.onnx") as model:
        for index, rgb in enumerate(COLOURS.values()):
            image = np.full((20, 30, 3), rgb, np.uint8)
            label = model.classify(image, 1)[0].label
            if index < wrong:
                label = next(name for name in model.labels if name != label)
            ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            assert ok
            member = f"samples/{index:03d}.png"
            files[member] = png.tobytes()
            samples.append({"path": member, "label": label})
    for key in ("sha256", "bytes"):
        for artifact in manifest["artifacts"]:
            artifact.pop(key, None)
    write_bundle(dest, {**manifest, "samples": samples}, files)
    return dest


def test_a_bundle_passes_its_own_samples_on_each_artifact(tmp_path: Path) -> None:
    bundle = _bundle_with_samples(tmp_path / "colours")
    for artifact in ("model_fp32.onnx", "model_int8.onnx"):
        result = smoke_test(bundle, artifact=artifact)
        assert result.passed and not result.failures
        assert (result.name, result.version, result.artifact) == ("colours", 2, artifact)
        assert result.backend == "onnxruntime" and len(result.outcomes) == 3
        assert all(len(o.scores) == 3 and 0 <= o.score <= 1 for o in result.outcomes)
        assert result.summary() == f"colours v2 {artifact} on onnxruntime: all 3 samples right"
        assert result.to_json()["passed"] is True
    # Without a choice, the artifact this device would serve is tested.
    assert smoke_test(bundle).artifact == "model_int8.onnx"


def test_a_wrong_label_fails_and_says_which(tmp_path: Path) -> None:
    bundle = _bundle_with_samples(tmp_path / "colours", wrong=1)
    result = smoke_test(bundle, artifact="model_fp32.onnx")
    assert not result.passed
    (failure,) = result.failures
    assert failure.path == "samples/000.png" and failure.predicted != failure.expected
    assert "2 of 3 samples right; wrong: 000.png " in result.summary()
    assert result.to_json()["wrong"][0]["path"] == "samples/000.png"


def test_a_packed_bundle_is_tested_and_its_unpacked_copy_removed(tmp_path: Path) -> None:
    bundle = _bundle_with_samples(tmp_path / "colours")
    packed = tmp_path / "colours.tar"
    with tarfile.open(packed, "w") as archive:
        for path in sorted(bundle.rglob("*")):
            archive.add(path, arcname=path.relative_to(bundle).as_posix(), recursive=False)
    with load_bundle(packed) as opened:
        assert opened.manifest.samples
    assert smoke_test(packed, artifact="model_fp32.onnx").passed


def test_a_bundle_without_samples_cannot_be_smoke_tested(tmp_path: Path) -> None:
    bundle = write_onnx_bundle(tmp_path / "colours")
    with pytest.raises(BundleError, match="has no samples/: nothing to smoke-test it with"):
        smoke_test(bundle)
    with pytest.raises(BundleError):
        smoke_test(_bundle_with_samples(tmp_path / "other"), artifact="missing.onnx")
