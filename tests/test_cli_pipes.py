"""`edge-runtime run` writing into a real pipe whose reader goes away (`| head -1`): the run ends
by itself, quietly, with exit code 0, while a sink that merely fails keeps being retried."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

SOURCE = "synthetic:banknotes?width=64&height=48"


def run_into_a_closed_pipe(bundle: Path, output: str, lines: int = 1) -> tuple[int, str]:
    """Start an endless run, read ``lines`` lines of its output, close the pipe like `head`
    does, and wait (bounded) for the process; its exit code and stderr."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_runtime.cli",
            "run",
            "--model",
            str(bundle),
            "--source",
            SOURCE,
            "--output",
            output,
            "--status-interval",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=bundle.parent,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        for _ in range(lines):
            assert process.stdout.readline()
        process.stdout.close()  # the reader exits
        process.wait(timeout=60)  # an endless source: only the closed pipe can end the run
        return process.returncode, process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("output", ["jsonl", "pretty"])
def test_a_closed_stdout_ends_the_run_quietly(onnx_bundle: Path, output: str) -> None:
    code, err = run_into_a_closed_pipe(onnx_bundle, output, lines=2)
    assert code == 0, err
    # Neither the sink (once per frame) nor the interpreter's last flush report the pipe.
    assert "Broken pipe" not in err and "BrokenPipeError" not in err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_output_left_in_the_buffer_for_a_closed_pipe_is_dropped_quietly(
    onnx_bundle: Path, tmp_path: Path
) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text(f'[model]\npath = "{onnx_bundle}"\n\n[source]\nuri = "{SOURCE}"\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "check-config", str(config), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # gone before the command prints its (buffered) output
    assert process.wait(timeout=60) == 0
    assert process.stderr.read() == b""
