"""Which artifact and backend run here: pure decisions over a manifest and a device profile."""

from __future__ import annotations

import builtins
import dataclasses
import io
import os
import socket
from typing import Any

import pytest

from devices import load_profile
from edge_runtime.bundle import BundleManifest
from edge_runtime.errors import BundleError, ConfigError, UnknownComponentError
from edge_runtime.selection import (
    DEFAULT_PRECISIONS,
    artifact_candidates,
    backend_candidates,
    options_from_profile,
    select_artifact,
)


def artifact(path: str, fmt: str, precision: str) -> dict[str, Any]:
    return {
        "path": path,
        "format": fmt,
        "precision": precision,
        "input_dtype": "uint8" if precision == "int8" else "float32",
        "output_size": 2,
        "sha256": "0" * 64,
        "bytes": 1,
    }


def manifest(**changes: Any) -> BundleManifest:
    data: dict[str, Any] = {
        "schema": 1,
        "name": "signs",
        "version": 4,
        "created": "2026-11-28T10:00:00+00:00",
        "labels": ["stop", "go"],
        "input": {"height": 8, "width": 8},
        "artifacts": [
            artifact("m-fp32.onnx", "onnx", "fp32"),
            artifact("m-int8.onnx", "onnx", "int8"),
            artifact("m-fp32.tflite", "tflite", "fp32"),
            artifact("m-int8.tflite", "tflite", "int8"),
        ],
    }
    data.update(changes)
    return BundleManifest.model_validate(data)


@pytest.fixture
def no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any file or socket access fails the test: the decisions must be pure."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"selection touched the outside world: {args!r}")

    for owner, name in (
        (builtins, "open"),
        (io, "open"),
        (os, "open"),
        (os, "stat"),
        (os, "listdir"),
        (os, "scandir"),
        (socket, "socket"),
        (socket, "create_connection"),
    ):
        monkeypatch.setattr(owner, name, refuse)


@pytest.mark.usefixtures("no_io")
def test_default_order_without_a_profile() -> None:
    names = [a.path for a in artifact_candidates(manifest())]
    assert names == ["m-int8.tflite", "m-fp32.tflite", "m-int8.onnx", "m-fp32.onnx"]
    assert select_artifact(manifest()).path == "m-int8.tflite"
    assert DEFAULT_PRECISIONS[0] == "int8"


def test_profile_order_and_unlisted_formats_last() -> None:
    jetson = load_profile("jetson-orin-nano")
    pi = load_profile("raspberry-pi-4")
    decided = manifest()
    # The Jetson profile asks for ONNX before TFLite and fp32 before int8; the Pi the reverse.
    assert [a.path for a in artifact_candidates(decided, profile=jetson)] == [
        "m-fp32.onnx",
        "m-int8.onnx",
        "m-fp32.tflite",
        "m-int8.tflite",
    ]
    assert [a.path for a in artifact_candidates(decided, profile=pi)] == [
        "m-int8.tflite",
        "m-fp32.tflite",
        "m-int8.onnx",
        "m-fp32.onnx",
    ]
    # A profile that lists one format still gets the others last: a bundle should run.
    onnx_only = dataclasses.replace(jetson, formats=("onnx",), precision=("int8",))
    assert [a.path for a in artifact_candidates(decided, profile=onnx_only)] == [
        "m-int8.onnx",
        "m-fp32.onnx",
        "m-int8.tflite",
        "m-fp32.tflite",
    ]


@pytest.mark.usefixtures("no_io")
def test_explicit_choices() -> None:
    decided = manifest()
    assert [a.path for a in artifact_candidates(decided, backend="onnxruntime")] == [
        "m-int8.onnx",
        "m-fp32.onnx",
    ]
    assert [a.path for a in artifact_candidates(decided, precision="fp32")] == [
        "m-fp32.tflite",
        "m-fp32.onnx",
    ]
    chosen = artifact_candidates(decided, artifact="some/dir/m-int8.onnx")
    assert [a.path for a in chosen] == ["m-int8.onnx"]
    with pytest.raises(ConfigError, match="is int8, not the asked precision fp32"):
        artifact_candidates(decided, artifact="m-int8.onnx", precision="fp32")
    with pytest.raises(ConfigError, match="cannot run onnx"):
        artifact_candidates(decided, artifact="m-int8.onnx", backend="litert")
    with pytest.raises(BundleError, match="has no artifact 'nope.onnx'"):
        artifact_candidates(decided, artifact="nope.onnx")


@pytest.mark.usefixtures("no_io")
def test_nothing_fits_lists_what_the_bundle_has() -> None:
    only_tflite = manifest(artifacts=[artifact("m-int8.tflite", "tflite", "int8")])
    with pytest.raises(BundleError, match=r"it has: m-int8.tflite \(tflite int8\)"):
        artifact_candidates(only_tflite, backend="onnxruntime")
    with pytest.raises(BundleError, match="no tflite/onnx artifact in precision fp16"):
        artifact_candidates(only_tflite, precision="fp16")


@pytest.mark.usefixtures("no_io")
def test_backend_candidates() -> None:
    assert backend_candidates("onnx", "auto", None) == ["onnxruntime"]
    assert backend_candidates("tflite", "litert", None) == ["litert"]
    with pytest.raises(ConfigError, match="cannot run tflite"):
        backend_candidates("tflite", "onnxruntime", None)
    with pytest.raises(UnknownComponentError):
        backend_candidates("tflite", "tensorrt", None)


def test_options_from_profile() -> None:
    jetson = load_profile("jetson-orin-nano")
    options = options_from_profile(jetson, threads=2, warmup=0)
    assert options.threads == 2 and options.warmup == 0
    assert options.providers == tuple(jetson.onnx_providers)
    assert options_from_profile(None).threads == 0
    with pytest.raises(ConfigError, match="threads must be 0"):
        options_from_profile(None, threads=-1)
