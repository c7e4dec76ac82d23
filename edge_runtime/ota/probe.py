"""The smoke test of a newly installed bundle, in a child process.

A model that crashes its backend (a segfault in native code), eats all memory or never returns
must not take the daemon down with it, nor leave it waiting: the parent runs
``python -m edge_runtime.ota.probe BUNDLE`` in a session of its own, reads one JSON line from
it, and kills the whole session when it has not answered within the timeout. The child runs
:func:`edge_runtime.smoke.smoke_test` exactly as the exporter's ``verify`` does (load the
artifact this device would choose, run ``samples/``, require the expected labels).

Exit codes of the child: 0 every sample right, 3 a wrong label, 4 the bundle or model could not
be loaded or run, 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: the child's output that is kept (it prints one short JSON line)
MAX_OUTPUT = 64 * 1024
EXIT_PASSED, EXIT_WRONG, EXIT_ERROR = 0, 3, 4


@dataclass(frozen=True)
class ProbeResult:
    """The smoke test's verdict and a one-line reason."""

    passed: bool
    reason: str


def probe_command() -> list[str]:
    """The child's command line, without its arguments."""
    return [sys.executable, "-m", "edge_runtime.ota.probe"]


def run_probe(
    bundle: str | os.PathLike[str],
    *,
    timeout_s: float,
    profile: str | None = None,
    backend: str = "auto",
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> ProbeResult:
    """Smoke-test the bundle directory ``bundle`` in a child process.

    ``command`` replaces :func:`probe_command` (tests wrap the child); ``env`` its environment.
    Never raises for anything the child does: a crash, a hang, garbage output are failed
    results whose reason says which.
    """
    argv = [*(command or probe_command()), os.fspath(bundle), "--backend", backend]
    if profile:
        argv += ["--profile", profile]
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills all it started
            env=dict(env) if env is not None else None,
        )
    except OSError as exc:
        return ProbeResult(False, f"the smoke test could not start: {exc.strerror or exc}")
    try:
        out, err = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(child)
        return ProbeResult(
            False,
            f"the smoke test did not finish within {timeout_s:g} s (the model hangs); killed",
        )
    except BaseException:
        _kill_group(child)
        raise
    code = child.returncode
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return ProbeResult(False, f"the smoke test crashed ({name})")
    answer = _last_json_line(out[-MAX_OUTPUT:])
    if answer is None:
        tail = err[-MAX_OUTPUT:].decode("utf-8", "replace").strip().splitlines()
        last = tail[-1] if tail else "no output"
        return ProbeResult(False, f"the smoke test exited with status {code}: {last}")
    summary = " ".join(str(answer.get("summary", "")).split())
    passed = bool(answer.get("passed")) and code == EXIT_PASSED
    return ProbeResult(passed, summary or ("passed" if passed else f"failed (status {code})"))


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.kill()
    child.wait()


def _last_json_line(data: bytes) -> dict[str, object] | None:
    for line in reversed(data.decode("utf-8", "replace").splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """The child: smoke-test one bundle, print one JSON line, exit with the verdict."""
    parser = argparse.ArgumentParser(prog="python -m edge_runtime.ota.probe")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)

    from edge_runtime.artifacts import resolve_profile
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.model import options_from_profile
    from edge_runtime.smoke import smoke_test

    try:
        profile = resolve_profile(args.profile)
        result = smoke_test(
            args.bundle,
            backend=args.backend,
            profile=profile,
            options=options_from_profile(profile),
        )
    except EdgeRuntimeError as exc:
        print(json.dumps({"passed": False, "summary": f"cannot run the model: {exc}"}))
        return EXIT_ERROR
    print(json.dumps({"passed": result.passed, "summary": result.summary()}))
    return EXIT_PASSED if result.passed else EXIT_WRONG


__all__ = ["ProbeResult", "main", "probe_command", "run_probe"]

if __name__ == "__main__":  # pragma: no cover - the child process
    sys.exit(main())
