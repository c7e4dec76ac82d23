"""Signal handling of the service: stop after the frame in hand, give up on a second signal,
restore the previous handlers; and `edge-runtime run` stopped by SIGTERM and SIGINT for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge_runtime.service.signals import STOP_SIGNALS, installed, stop_on_signals

pytestmark = pytest.mark.timeout(60)


class Target:
    def __init__(self) -> None:
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1

    @property
    def stopping(self) -> bool:
        return self.stops > 0


def test_first_signal_stops_second_gives_up_and_handlers_come_back() -> None:
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    target = Target()
    with stop_on_signals(target):
        assert all(signal.getsignal(s) is not before[s] for s in STOP_SIGNALS)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread before kill returns
        assert target.stops == 1
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert target.stops == 1
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before


def test_extra_handlers_plug_in_and_are_restored_after_an_error() -> None:
    before = signal.getsignal(signal.SIGHUP)
    reloads: list[int] = []
    target = Target()
    with pytest.raises(RuntimeError, match="boom"):
        with stop_on_signals(target, extra={signal.SIGHUP: reloads.append}):
            os.kill(os.getpid(), signal.SIGHUP)
            assert reloads == [signal.SIGHUP] and target.stops == 0
            raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGHUP) is before


def test_installing_off_the_main_thread_is_refused() -> None:
    errors: list[BaseException] = []

    def install() -> None:
        try:
            with installed({signal.SIGUSR1: lambda signum: None}):
                pass
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert len(errors) == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_cleanly_on_a_signal(onnx_bundle: Path, signum: int) -> None:
    command = [
        sys.executable,
        "-m",
        "edge_runtime.cli",
        "run",
        "--model",
        str(onnx_bundle),
        "--source",
        "synthetic:banknotes?fps=50&width=64&height=48",
        "--output",
        "pretty",
        "--status-interval",
        "1000",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=onnx_bundle.parent
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()  # printed once the model is loaded
        assert "colours v2" in banner
        event = process.stdout.readline()  # the first decided label: frames are flowing
        assert "->" in event
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "done:" in out and err == ""
