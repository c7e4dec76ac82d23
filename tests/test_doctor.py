"""`edge-runtime doctor` over a fake machine: /proc, /sys, /dev and the commands are fakes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from edge_runtime.doctor import Finding, Probes, check_cameras, check_cpu, diagnose
from tests.fakes_service import MODEL

PI_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics asimddp\n"
X86_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_tile amx_int8\n"


def machine(
    tmp_path: Path, *, model: str = "", cpuinfo: str = X86_CPUINFO, videos: int = 0
) -> Path:
    root = tmp_path / "root"
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "dev").mkdir()
    if model:
        (root / "proc" / "device-tree" / "model").write_text(model + "\x00")
    (root / "proc" / "cpuinfo").write_text(cpuinfo)
    for index in range(videos):
        (root / "dev" / f"video{index}").touch()
    return root


def probes(
    root: Path,
    *,
    commands: dict[str, tuple[int, str]] | None = None,
    versions: dict[str, str] | None = None,
    free: bool = True,
    machine_name: str = "x86_64",
    checkout: bool = True,
) -> Probes:
    known = dict(commands or {})
    installed = (
        {"ai-edge-litert": "2.3.0", "onnxruntime": "1.32.0"} if versions is None else versions
    )

    def run(command: Sequence[str]) -> tuple[int, str]:
        key = " ".join(command)
        if key not in known:
            raise FileNotFoundError(command[0])
        return known[key]

    def which(name: str) -> str | None:
        return f"/usr/bin/{name}" if any(k.split()[0] == name for k in known) else None

    def version(distributions: Sequence[str]) -> str | None:
        for name in distributions:
            if name in installed:
                return f"{name} {installed[name]}"
        return None

    return Probes(
        root=str(root),
        run=run,
        which=which,
        version=version,
        port_free=lambda host, port: free,
        machine=machine_name,
        python="3.11.7",
        checkout=checkout,
    )


def levels(findings: list[Finding]) -> dict[str, str]:
    return {f.check: f.level for f in findings}


def test_a_healthy_raspberry_pi(tmp_path: Path) -> None:
    root = machine(tmp_path, model="Raspberry Pi 5 Model B Rev 1.0", cpuinfo=PI_CPUINFO)
    cameras = (
        "Available cameras\n-----------------\n0 : imx708 [4608x2592 10-bit RGGB] (/base/...)\n"
    )
    found = diagnose(
        probes(root, commands={"rpicam-hello --list-cameras": (0, cameras)}, machine_name="aarch64")
    )
    by_check = {f.check: f for f in found}
    assert by_check["device"].detail.startswith("profile raspberry-pi-5 (Raspberry Pi 5 Model B")
    assert by_check["cpu int8"].level == "ok" and "dotprod" in by_check["cpu int8"].detail
    assert by_check["cameras libcamera"].detail.startswith("0 : imx708")
    assert not [f for f in found if f.level == "problem"]


def test_x86_int8_features_and_v4l2_nodes(tmp_path: Path) -> None:
    root = machine(tmp_path, videos=2)
    p = probes(root)
    (cpu,) = check_cpu(p)
    assert cpu.detail.endswith("amx, avx512_vnni")
    (cams,) = check_cameras(p)
    assert cams.detail == "/dev/video0, /dev/video1"
    csi = probes(root, commands={"gst-inspect-1.0 nvarguscamerasrc": (0, "Factory Details")})
    assert any(f.check == "cameras csi" for f in check_cameras(csi))


@pytest.mark.parametrize("checkout", [True, False])
def test_a_missing_backend_says_how_to_install_it(tmp_path: Path, checkout: bool) -> None:
    root = machine(tmp_path)
    found = diagnose(probes(root, versions={"ai-edge-litert": "2.3.0"}, checkout=checkout))
    (missing,) = [f for f in found if f.check == "backend onnxruntime"]
    assert missing.level == "info"  # litert is there: not a problem unless the config needs it
    fix = "pip install -e '.[onnx]'" if checkout else "pip install 'edge-classify[onnx]'"
    assert missing.fix == fix
    none = diagnose(probes(root, versions={}, checkout=checkout))
    assert levels(none)["backends"] == "problem"


@pytest.mark.skipif(not (MODEL / "manifest.json").exists(), reason="bundled models not built")
def test_the_configured_model_smoke_test_port_and_camera(tmp_path: Path) -> None:
    from edge_runtime.config import parse_config

    root = machine(tmp_path)
    config = parse_config(
        {"model": {"path": str(MODEL)}, "source": {"uri": "camera:0"}, "service": {"http": ":8090"}}
    )
    found = diagnose(probes(root, free=False), config)
    by_check = {f.check: f for f in found}
    assert by_check["model"].level == "ok" and "samples right" in by_check["model"].detail
    assert by_check["http"].level == "problem" and "in use" in by_check["http"].detail
    assert by_check["cameras"].level == "problem"  # the config reads a camera and there is none
    assert all(f.fix for f in found if f.level == "problem")


def test_a_failed_service_is_a_problem_with_its_fix(tmp_path: Path) -> None:
    root = machine(tmp_path)
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    commands = {
        "systemctl is-active edge-runtime": (3, "failed\n"),
        "systemctl is-enabled edge-runtime": (0, "enabled\n"),
    }
    (service,) = [f for f in diagnose(probes(root, commands=commands)) if f.check == "service"]
    assert service.level == "problem" and service.detail == "failed, enabled"
    assert "journalctl -u edge-runtime" in service.fix


def test_the_command_exits_0_when_all_is_well(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_runtime.cli import main

    code = main(["doctor", "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == (0 if body["ok"] else 1)
    assert {f["check"] for f in body["findings"]} >= {"device", "python", "backend litert"}
