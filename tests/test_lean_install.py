"""A device install: `pip install .[device]` into a fresh venv, without TensorFlow.

This is what a Raspberry Pi gets. Every runtime and device module must import there, profiles
must be packaged (a normal, non-editable install), and nothing may pull in TensorFlow, Keras,
tf2onnx or the exporter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib, json, pkgutil, sys
import edge_runtime, devices
names = []
for package in (edge_runtime, devices):
    names.append(package.__name__)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        names.append(info.name)
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # report every failure, not just the first
        failed[name] = f"{type(exc).__name__}: {exc}"
forbidden = sorted(m for m in sys.modules
                   if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "exporter"))
print(json.dumps({
    "modules": names, "failed": failed, "forbidden": forbidden,
    "profiles": devices.list_profiles(),
    "location": edge_runtime.__file__,
}))
"""


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("device-venv") / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    python = home / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{ROOT}[device]"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        pytest.fail(f"pip install .[device] failed:\n{output}")
    return python


def test_device_install_has_no_tensorflow(device_venv: Path, tmp_path: Path) -> None:
    # Run from an empty folder so the source tree is not on sys.path: this tests the installed copy.
    result = subprocess.run(
        [str(device_venv), "-c", PROBE], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "site-packages" in report["location"], "the installed copy was tested, not the tree"
    assert report["failed"] == {}, report["failed"]
    assert report["forbidden"] == [], report["forbidden"]
    assert {"raspberry-pi-4", "jetson-orin-nano", "generic-x86_64"} <= set(report["profiles"])
    assert "edge_runtime.bundle" in report["modules"]
    tf = subprocess.run(
        [str(device_venv), "-c", "import tensorflow"], capture_output=True, text=True, cwd=tmp_path
    )
    assert tf.returncode != 0, "TensorFlow must not be installed by the device extras"


def test_device_install_has_the_console_script(device_venv: Path, tmp_path: Path) -> None:
    script = device_venv.parent / "edge-runtime"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("edge-runtime ")
    assert sys.version_info >= (3, 10)
