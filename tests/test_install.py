"""The systemd unit and the install script: systemd-analyze's security score and verify, a dry
install into a folder that yields a working venv, config and unit, twice, and every shipped
profile's generated config passing check-config.

The dry install makes a real venv and pip installs this checkout into it, without dependencies
(PIP_NO_DEPS), from the interpreter this test venv was made from; the venv then finds numpy,
pydantic and the backends through PYTHONPATH pointing at this test venv's site-packages. That
keeps the test to seconds, offline, while the venv, the entry point, the config and the unit are
the installer's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from devices import list_profiles
from devices.templates import render_config
from edge_runtime.checks import check_config_file
from tests.fakes_service import MODEL

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "devices" / "systemd" / "edge-runtime.service"
INSTALL = ROOT / "devices" / "install.sh"
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (.ci/run installs systemd)"
)


def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here (verify checks it)."""
    binary = tmp_path / "bin" / "edge-runtime"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    text = UNIT.read_text().replace("/opt/edge-runtime/venv/bin/edge-runtime", str(binary))
    copy = tmp_path / "edge-runtime.service"
    copy.write_text(text)
    return copy


@needs_systemd
def test_the_unit_passes_systemd_analyze_security(tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--threshold=25", str(unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "Overall exposure level" in result.stdout


@needs_systemd
def test_the_unit_verifies_clean(tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", str(unit_copy(tmp_path))], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stderr


def test_the_unit_says_what_the_daemon_needs() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=30",
        "Restart=on-failure",
        "StateDirectory=edge-runtime",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-gpiochip rw",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ):
        assert f"\n{line}\n" in text, line


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_install_script_is_shellcheck_clean() -> None:
    result = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def base_python() -> str:
    """The interpreter this test venv was made from (a venv is made from it)."""
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        candidate = Path(sys.base_prefix) / "bin" / name
        if candidate.exists():
            return str(candidate)
    pytest.skip("no base interpreter to make a venv with")


def run_install(prefix: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "bash",
            str(INSTALL),
            "--prefix",
            str(prefix),
            "--no-systemd",
            "--python",
            base_python(),
            "--profile",
            "raspberry-pi-5",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=prefix.parent,
        timeout=300,
    )


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``folder`` but Python's caches."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            info = path.stat()
            found[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return found


@pytest.mark.skipif(not (MODEL / "manifest.json").exists(), reason="bundled models not built")
def test_a_dry_install_makes_a_working_venv_config_and_unit_and_is_idempotent(
    tmp_path: Path,
) -> None:
    prefix = tmp_path / "root"
    env = {
        **os.environ,
        "PIP_NO_DEPS": "1",
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
    }
    env.pop("VIRTUAL_ENV", None)
    first = run_install(prefix, env)
    assert first.returncode == 0, first.stdout + first.stderr
    venv = prefix / "opt" / "edge-runtime" / "venv"
    config = prefix / "etc" / "edge-runtime" / "config.toml"
    unit = prefix / "etc" / "systemd" / "system" / "edge-runtime.service"
    assert config.is_file() and unit.is_file()
    # A Pi's venv sees apt's picamera2: made with --system-site-packages.
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    version = subprocess.run(
        [str(venv / "bin" / "edge-runtime"), "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert version.returncode == 0 and version.stdout.startswith("edge-runtime "), version.stderr
    checked = subprocess.run(
        [str(venv / "bin" / "edge-runtime"), "check-config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stderr
    assert "needs the device: source.uri: picamera2:0" in checked.stdout
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import edge_runtime; print(edge_runtime.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert where.stdout.startswith(str(venv)), "the venv runs its own copy of the package"
    text = unit.read_text()
    assert f"ExecStart={venv}/bin/edge-runtime daemon --config {config}\n" in text
    assert f'path = "{prefix}/opt/edge-runtime/models/traffic-signs"' in config.read_text()

    # A second run changes nothing and keeps a config the user edited.
    config.write_text(config.read_text().replace("stale_after_s = 5.0", "stale_after_s = 7.0"))
    before = snapshot(prefix)
    second = run_install(prefix, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert snapshot(prefix) == before
    assert "keeping" in second.stdout and "is installed already" in second.stdout


@pytest.mark.skipif(not (MODEL / "manifest.json").exists(), reason="bundled models not built")
@pytest.mark.parametrize("profile", list_profiles())
def test_every_profiles_config_passes_check_config(tmp_path: Path, profile: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(render_config(profile, str(MODEL)))
    report = check_config_file(path, devices=str(tmp_path))  # a machine without cameras
    assert report.ok, report.problems
    assert any(note.startswith("source.uri: ") for note in report.device_checks)
