"""The GPU training check (tests/hardware/gpu_train.py) runs here on its tiny configuration: its
CPU half measures, its GPU half says when there is no GPU, and the table is what the docs get."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "hardware" / "gpu_train.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, str(SCRIPT), "--smoke", *args], capture_output=True,
                          text=True, timeout=600, env=env, cwd=ROOT)  # fmt: skip


@pytest.mark.tensorflow
def test_smoke_run_measures_the_cpu_and_reports_the_gpu() -> None:
    done = run("--json")
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["device"]: r for r in json.loads(done.stdout)}
    cpu = results["cpu"]
    assert cpu["available"] and cpu["replicas"] == 1 and cpu["mixed_precision"] is False
    assert cpu["features_images_per_s"] > 0 and cpu["fine_tune_images_per_s"] > 0
    assert cpu["global_batch"] == 2 and cpu["steps"] == 2
    gpu = results["gpu"]
    if not gpu["available"]:  # this machine: the GPU half says so and still succeeds
        assert set(gpu) == {"device", "available"}
        required = run("--devices", "gpu", "--require-gpu")
        assert "| GPU: none visible |" in required.stdout
        assert required.returncode == 1 and "no GPU visible" in required.stderr
    else:  # a GPU machine: mixed precision on every visible GPU
        assert gpu["mixed_precision"] is True and gpu["replicas"] >= 1
        assert gpu["fine_tune_images_per_s"] > 0
