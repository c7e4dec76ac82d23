"""Signal handling of the service: stop after the frame in hand, give up on a second signal,
restore the previous handlers; and `edge-runtime run` stopped by SIGTERM and SIGINT for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_runtime.service.signals import STOP_SIGNALS, installed, stop_on_signals
from tests.fakes_io import wait_until

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
    given_up: list[str] = []
    with stop_on_signals(target, on_give_up=lambda: given_up.append("now")):
        assert all(signal.getsignal(s) is not before[s] for s in STOP_SIGNALS)
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_until(lambda: target.stops == 1)  # on the watcher thread, moments later
        os.kill(os.getpid(), signal.SIGINT)
        assert wait_until(lambda: given_up == ["now"])
        assert target.stops == 1
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before
    assert not any(t.name == "signal watcher" for t in threading.enumerate())


def test_handlers_may_take_locks_the_interrupted_thread_holds() -> None:
    # A stop handler sets an Event, whose lock the main thread may hold when the signal comes
    # (it stops the pipeline the same way). In the signal context that was a deadlock.
    lock = threading.Lock()
    stopped = threading.Event()
    with installed({signal.SIGUSR1: lambda signum: (lock.acquire(), stopped.set())}):
        with lock:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)  # the handler is waiting for the lock, not deadlocked with us
            assert not stopped.is_set()
        assert stopped.wait(5)
    lock.release()


def test_extra_handlers_plug_in_and_are_restored_after_an_error() -> None:
    before = signal.getsignal(signal.SIGHUP)
    reloads: list[int] = []
    target = Target()
    with pytest.raises(RuntimeError, match="boom"):
        with stop_on_signals(target, extra={signal.SIGHUP: reloads.append}):
            os.kill(os.getpid(), signal.SIGHUP)
            assert wait_until(lambda: reloads == [signal.SIGHUP]) and target.stops == 0
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


# -- a second Ctrl-C, whenever it comes ----------------------------------------------------------
# `python -c` with these lines runs `edge-runtime` (its console entry point) with one slow step
# that announces itself on stderr, so that a test can send the second Ctrl-C right inside it.
SLOW_STEP = {
    # The pipeline winding down: the console sink's last flush takes its time.
    "sink-close": (
        "from edge_runtime.sinks import console\n"
        "real_close = console.PrettySink.close\n"
        "def close(self):\n"
        "    print('slow step', file=sys.stderr, flush=True)\n"
        "    time.sleep(30)\n"
        "    real_close(self)\n"
        "console.PrettySink.close = close\n"
    ),
    # A sink whose close ignores KeyboardInterrupt (a stubborn library): the deadline ends it.
    "stubborn-close": (
        "from edge_runtime.sinks import console\n"
        "def close(self):\n"
        "    print('slow step', file=sys.stderr, flush=True)\n"
        "    end = time.monotonic() + 30\n"
        "    while time.monotonic() < end:\n"
        "        try:\n"
        "            time.sleep(0.05)\n"
        "        except KeyboardInterrupt:\n"
        "            pass\n"
        "console.PrettySink.close = close\n"
    ),
    # After the command returned its exit code: the process's own exit (atexit callbacks).
    "process-exit": (
        "import atexit\n"
        "atexit.register(lambda: (print('slow step', file=sys.stderr, flush=True), "
        "time.sleep(30)))\n"
    ),
}


def run_command(bundle: Path, slow_step: str | None = None, *extra: str) -> list[str]:
    args = [
        "run",
        "--model",
        str(bundle),
        "--source",
        "synthetic:banknotes?fps=50&width=64&height=48",
        "--output",
        "pretty",
        "--status-interval",
        "1000",
        *extra,
    ]
    if slow_step is None:
        return [sys.executable, "-m", "edge_runtime.cli", *args]
    code = (
        "import sys, time\n"
        + SLOW_STEP[slow_step]
        + f"sys.argv = ['edge-runtime', *{args!r}]\n"
        + "from edge_runtime.cli import entry\n"
        + "entry()\n"
    )
    return [sys.executable, "-c", code]


def communicate(process: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    """The process's output once it has ended; if it hangs instead, fail with its threads'
    stacks (faulthandler, which PYTHONFAULTHANDLER turns on, prints them on SIGABRT)."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _, err = process.communicate(timeout=30)
        pytest.fail(f"the process hung; its threads:\n{err}")


def start(command: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )


def assert_ended_cleanly_or_interrupted(code: int, out: str, err: str) -> None:
    """Exit 130 with the one line, or (when the second signal came after the process had ended,
    or merged with the first) a clean stop; never killed by the signal, never a traceback."""
    assert "Traceback" not in err and "Exception ignored" not in err, err
    if code == 130:
        assert err.strip().splitlines()[-1] == "edge-runtime: interrupted", err
    else:
        assert code == 0 and "done:" in out and err == "", (code, err)


@pytest.mark.parametrize("gap_s", [0.0, 0.02, 0.05])
def test_second_ctrl_c_soon_after_the_first(onnx_bundle: Path, gap_s: float) -> None:
    process = start(run_command(onnx_bundle), onnx_bundle.parent)
    try:
        assert process.stdout is not None
        assert "colours v2" in process.stdout.readline()  # the banner: the model is loaded
        assert "->" in process.stdout.readline()  # frames are flowing
        process.send_signal(signal.SIGINT)
        time.sleep(gap_s)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        out, err = communicate(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert_ended_cleanly_or_interrupted(process.returncode, out, err)


@pytest.mark.parametrize("slow_step", ["sink-close", "stubborn-close", "process-exit"])
def test_second_ctrl_c_mid_shutdown_is_interrupted(onnx_bundle: Path, slow_step: str) -> None:
    process = start(run_command(onnx_bundle, slow_step, "--max-frames", "5"), onnx_bundle.parent)
    try:
        assert process.stdout is not None and process.stderr is not None
        assert "colours v2" in process.stdout.readline()
        if slow_step != "process-exit":
            assert "->" in process.stdout.readline()
            process.send_signal(signal.SIGINT)  # the first: stop after the frame in hand
        # Else the run ends by itself (--max-frames) and the process starts exiting.
        for line in process.stderr:  # bounded by the test's timeout
            if line.strip() == "slow step":
                break
        process.send_signal(signal.SIGINT)
        out, err = communicate(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "edge-runtime: interrupted"
    assert "Traceback" not in err and "Exception ignored" not in err
