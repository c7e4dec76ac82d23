"""Which artifact and backend run here, and whether a bundle may: pure decisions over a manifest,
a device profile and the runtime version."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import io
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from devices import load_profile
from edge_runtime import selection
from edge_runtime.bundle import BundleManifest, parse_manifest
from edge_runtime.errors import (
    BundleError,
    ConfigError,
    IncompatibleBundleError,
    UnknownComponentError,
)
from edge_runtime.ota import policy
from edge_runtime.selection import (
    DEFAULT_PRECISIONS,
    artifact_candidates,
    backend_candidates,
    check_compatible,
    compatibility_problems,
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


@contextlib.contextmanager
def no_outside_world() -> Iterator[None]:
    """Any file or socket access inside fails the test: the decisions must be pure."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"selection touched the outside world: {args!r}")

    with pytest.MonkeyPatch.context() as patch:
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
            patch.setattr(owner, name, refuse)
        yield


def test_default_order_without_a_profile() -> None:
    with no_outside_world():
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


def test_explicit_choices() -> None:
    with no_outside_world():
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


def test_nothing_fits_lists_what_the_bundle_has() -> None:
    with no_outside_world():
        only_tflite = manifest(artifacts=[artifact("m-int8.tflite", "tflite", "int8")])
        with pytest.raises(BundleError, match=r"it has: m-int8.tflite \(tflite int8\)"):
            artifact_candidates(only_tflite, backend="onnxruntime")
        with pytest.raises(BundleError, match="no tflite/onnx artifact in precision fp16"):
            artifact_candidates(only_tflite, precision="fp16")


def test_backend_candidates() -> None:
    with no_outside_world():
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


# -- may this bundle run here? ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "version", "fits"),
    [
        (">=0.1", "0.1.0", True),
        (">=0.1,<1", "0.9.3", True),
        (">=0.1,<1", "1.0.0", False),
        (">=0.2,<1", "0.1.0", False),
        (">=0.2,<1", "0.2.0.dev3", True),  # a development build of 0.2 counts as 0.2
        (">=0.2,<1", "0.2.0rc1", True),
        ("", "7.0", True),  # no range: any runtime
        (">=0.2", "0.0.0+unknown", True),  # a never-installed source tree is not judged
        (">=0.2", "not a version", True),
    ],
)
def test_runtime_range(wanted: str, version: str, fits: bool) -> None:
    with no_outside_world():
        decided = manifest(compatible={"runtime": wanted})
        problems = compatibility_problems(decided, runtime_version=version)
        assert (problems == []) is fits, problems
        # The OTA policy judges a published target's range by the same rule, so a device never
        # downloads a model that loading would then refuse.
        assert policy.runtime_admits(wanted, version) is fits
        if not fits:
            with pytest.raises(IncompatibleBundleError) as error:
                check_compatible(decided, runtime_version=version)
            message = str(error.value)
            assert message.startswith(f"bundle signs version 4 needs edge-runtime {wanted} ")
            assert f"this runtime is {version}" in message and "\n" not in message


def test_the_default_is_this_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    decided = manifest(compatible={"runtime": ">=0.1,<1"})
    monkeypatch.setattr(selection, "__version__", "0.4.1")
    check_compatible(decided)
    monkeypatch.setattr(selection, "__version__", "1.2.0")
    with pytest.raises(IncompatibleBundleError, match="this runtime is 1.2.0"):
        check_compatible(decided)


def test_device_profiles() -> None:
    with no_outside_world():
        pi_only = manifest(compatible={"profiles": ["raspberry-pi-4", "raspberry-pi-5"]})
        check_compatible(pi_only, runtime_version="0.1.0", profile="raspberry-pi-5")
        check_compatible(pi_only, runtime_version="0.1.0", profile=None)  # no profile known
        check_compatible(manifest(), runtime_version="0.1.0", profile="jetson-nano")  # any profile
        with pytest.raises(IncompatibleBundleError) as error:
            check_compatible(pi_only, runtime_version="0.1.0", profile="generic-x86_64")
        assert str(error.value) == (
            "bundle signs version 4 is made for the device profiles raspberry-pi-4, "
            "raspberry-pi-5, not for generic-x86_64 (choose another profile or a bundle made "
            "for this device)"
        )


def test_a_profile_object_and_both_problems_in_one_line() -> None:
    jetson = load_profile("jetson-orin-nano")
    decided = manifest(compatible={"runtime": ">=2", "profiles": ["raspberry-pi-4"]})
    problems = compatibility_problems(decided, runtime_version="0.1.0", profile=jetson)
    assert len(problems) == 2 and "not for jetson-orin-nano" in problems[1]
    with pytest.raises(IncompatibleBundleError) as error:
        check_compatible(decided, runtime_version="0.1.0", profile=jetson)
    assert "needs edge-runtime >=2" in str(error.value) and "; and it is made for" in str(
        error.value
    )
    assert isinstance(error.value, BundleError)


def test_an_invalid_range_is_refused_when_the_manifest_is_read() -> None:
    data = manifest().model_dump(mode="json", by_alias=True)
    data["compatible"]["runtime"] = "version two or later"
    with pytest.raises(BundleError, match="is not a version range such as '>=0.1,<1'"):
        parse_manifest(json.dumps(data))
