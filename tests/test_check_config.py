"""`edge-runtime check-config` lists every problem with its key path, checks what can be checked
without hardware, and says what only the device can tell."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_runtime.checks import check_config_file
from edge_runtime.cli import main
from tests.fakes_service import MODEL

pytestmark = pytest.mark.skipif(
    not (MODEL / "manifest.json").exists(), reason="the bundled models are not built"
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_every_problem_is_listed_with_its_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        f'[model]\npath = "{MODEL}"\nthreads = "x"\nbogus = 1\n'
        '[source]\nuri = "synthetic:nope"\n'
        '[service]\nhttp = "notaport"\n'
        '[outputs]\nmqtt = { url = "mqtt://b", qos = 5 }\n'
        '[update]\nurl = "http://updates.example/"\n',
    )
    assert main(["check-config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    wheres = [line.removeprefix(f"edge-runtime: error: {path}: ").split(":")[0] for line in lines]
    assert wheres == [
        "model.threads",
        "model.bogus",
        "outputs.mqtt.qos",
        "service.http",
        "update.root",
        "update.name",
        "source.uri",
    ]
    assert "model.bogus: unknown key" in err
    assert "unknown synthetic scenario 'nope'" in err
    assert "'notaport' is not HOST:PORT" in err


def test_the_update_section_needs_a_readable_pinned_root(tmp_path: Path) -> None:
    body = (
        '[source]\nuri = "synthetic:traffic-signs"\n'
        '[update]\nurl = "http://updates.example/"\nname = "traffic-signs"\n'
        f'store = "{tmp_path / "store"}"\nroot = "{tmp_path / "root.json"}"\n'
    )
    path = write(tmp_path, body)
    report = check_config_file(path)
    assert [p.where for p in report.problems] == ["update.root"]
    assert "copy the repository's root.json there" in report.problems[0].message
    (tmp_path / "root.json").write_text('{"signed": {"_type": "timestamp"}}')
    assert "not the repository's root.json" in str(check_config_file(path).problems[0])
    (tmp_path / "root.json").write_text('{"signed": {"_type": "root"}, "signatures": []}')
    # No [model] path: the update store's model serves.
    report = check_config_file(path)
    assert report.problems == () and report.config is not None
    assert report.config.model.path is None


def test_a_model_is_needed_without_the_update_section(tmp_path: Path) -> None:
    path = write(tmp_path, '[source]\nuri = "synthetic:traffic-signs"\n')
    report = check_config_file(path)
    assert [p.where for p in report.problems] == ["model.path"]
    assert "[update] to serve the models installed over the air" in report.problems[0].message


def bundle_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(MODEL, copy)
    return copy


def test_a_truncated_artifact_and_a_manifest_that_is_no_json_are_problems(
    tmp_path: Path,
) -> None:
    bundle = bundle_copy(tmp_path)
    artifact = bundle / "model-int8.tflite"
    artifact.write_bytes(artifact.read_bytes()[:100])
    path = write(tmp_path, f'[model]\npath = "{bundle}"\n[source]\nuri = "synthetic:banknotes"\n')
    (problem,) = check_config_file(path).problems
    assert problem.where == "model.path" and "truncated" in problem.message

    (bundle / "manifest.json").write_text("{ not json")
    (problem,) = check_config_file(path).problems
    assert problem.where == "model.path" and "manifest.json" in problem.message


def test_a_changed_artifact_fails_its_sha256(tmp_path: Path) -> None:
    bundle = bundle_copy(tmp_path)
    artifact = bundle / "model-fp32.onnx"
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 0xFF
    artifact.write_bytes(bytes(data))
    path = write(tmp_path, f'[model]\npath = "{bundle}"\n[source]\nuri = "synthetic:banknotes"\n')
    (problem,) = check_config_file(path).problems
    assert "sha256" in problem.message


def test_cameras_are_checked_as_far_as_the_machine_allows(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    path = write(tmp_path, f'[model]\npath = "{MODEL}"\n[source]\nuri = "camera:99"\n')
    # No camera on this machine at all: only the device can tell.
    report = check_config_file(path, devices=str(dev))
    assert report.ok
    assert any("/dev/video99 is checked on the device" in note for note in report.device_checks)
    # A machine with cameras, but not that one: a problem.
    (dev / "video0").touch()
    (problem,) = check_config_file(path, devices=str(dev)).problems
    assert problem.where == "source.uri"
    assert "no /dev/video99 on this machine (there is /dev/video0)" in problem.message
    path.write_text(f'[model]\npath = "{MODEL}"\n[source]\nuri = "camera:0"\n')
    assert check_config_file(path, devices=str(dev)).ok
    path.write_text(f'[model]\npath = "{MODEL}"\n[source]\nuri = "camera:150"\n')
    (problem,) = check_config_file(path, devices=str(dev)).problems
    assert "camera numbers go from 0 to 99" in problem.message


def test_network_sources_need_a_host(tmp_path: Path) -> None:
    path = write(tmp_path, f'[model]\npath = "{MODEL}"\n[source]\nuri = "rtsp:///live"\n')
    (problem,) = check_config_file(path).problems
    assert problem.where == "source.uri" and "names no host" in problem.message


def test_ok_says_what_needs_the_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        f'[model]\npath = "{MODEL}"\n[source]\nuri = "picamera2:0"\n[service]\nhttp = ":8081"\n',
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "needs the device: source.uri: picamera2:0: the camera is opened" in out
    assert "needs the device: service.http: whether :8081 is free" in out
    assert out.splitlines()[-1].endswith("picamera2 source picamera2:0)")


def test_json_lists_the_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[model]\npath = "/nowhere"\n[source]\nuri = "camera:0"\n')
    assert main(["check-config", str(path), "--json"]) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["problems"][0]["where"] == "model.path"
