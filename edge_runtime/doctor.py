"""``edge-runtime doctor``: is this device ready to run the service, and if not, what to do.

Each check returns :class:`Finding` lines: ``ok``, ``info`` (worth knowing, not wrong) or
``problem`` (with its fix, one line). Everything the checks read from the machine goes through
:class:`Probes` (files, globs, commands, imports, ports), so tests pass a fake ``/proc``, ``/sys``
and command runner; the real ones are the defaults.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Level = Literal["ok", "info", "problem"]

#: (backend key, distributions that provide it, the extra that installs it)
BACKENDS = (
    ("litert", ("ai-edge-litert", "tflite-runtime"), "tflite"),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu"), "onnx"),
)
#: CPU flags that make int8 inference fast, by what /proc/cpuinfo calls them
INT8_FLAGS = {
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "amx_int8": "amx",
}
SERVICE = "edge-runtime"
#: a camera in ``rpicam-hello --list-cameras``: "0 : imx708 [4608x2592 10-bit RGGB] (...)"
_CAMERA_LINE = re.compile(r"^\s*\d+\s*:")


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, the verdict, what was seen, how to fix it."""

    check: str
    level: Level
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "ok     ", "info": "info   ", "problem": "PROBLEM"}[self.level]
        fix = f" -> {self.fix}" if self.fix else ""
        return f"{mark} {self.check}: {self.detail}{fix}"

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "level": self.level, "detail": self.detail, "fix": self.fix}


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _run(command: Sequence[str]) -> tuple[int, str]:
    if shutil.which(command[0]) is None:
        raise FileNotFoundError(command[0])
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=15, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"{command[0]} did not answer within 15 s") from exc
    return done.returncode, done.stdout + done.stderr


def _version(distributions: Sequence[str]) -> str | None:
    for name in distributions:
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _from_checkout() -> bool:
    root = Path(__file__).resolve().parents[1]
    text = _read_text(str(root / "pyproject.toml")) or ""
    return 'name = "edge-classify"' in text


@dataclass
class Probes:
    """The machine as the checks see it. ``root`` prefixes /proc, /sys, /dev and /etc paths."""

    root: str = "/"
    read_text: Callable[[str], str | None] = _read_text
    glob: Callable[[str], list[str]] = field(default=lambda pattern: sorted(glob.glob(pattern)))
    run: Callable[[Sequence[str]], tuple[int, str]] = _run
    which: Callable[[str], str | None] = shutil.which
    version: Callable[[Sequence[str]], str | None] = _version
    port_free: Callable[[str, int], bool] = _port_free
    machine: str = field(default_factory=platform.machine)
    python: str = field(default_factory=lambda: platform.python_version())
    checkout: bool = field(default_factory=_from_checkout)

    def path(self, absolute: str) -> str:
        return os.path.join(self.root, absolute.lstrip("/"))

    def install_fix(self, extra: str) -> str:
        """How to install an extra, from a checkout or from the package index."""
        if self.checkout:
            return f"pip install -e '.[{extra}]'"
        return f"pip install 'edge-classify[{extra}]'"


# -- the checks ------------------------------------------------------------------------------------
def check_device(probes: Probes) -> list[Finding]:
    """The detected device and its profile, Python and the architecture."""
    from devices import detect, load_profile

    model = (probes.read_text(probes.path("/proc/device-tree/model")) or "").strip("\x00 \n")
    name = detect(probes.root, probes.machine)
    profile = load_profile(name)
    seen = f" ({model})" if model else ""
    findings = [
        Finding("device", "ok", f"profile {name}{seen}: {profile.description}"),
        Finding("python", "ok", f"Python {probes.python} on {probes.machine}"),
    ]
    return findings


def check_backends(probes: Probes, wanted: str | None = None) -> list[Finding]:
    """Each inference backend's version, or the line that installs it. Missing is a problem
    when no backend is there at all, or when ``wanted`` (the config's backend) is missing."""
    findings = []
    installed = 0
    for key, distributions, extra in BACKENDS:
        version = probes.version(distributions)
        if version is not None:
            installed += 1
            findings.append(Finding(f"backend {key}", "ok", version))
            continue
        level: Level = "problem" if wanted == key else "info"
        findings.append(
            Finding(f"backend {key}", level, "not installed", probes.install_fix(extra))
        )
    if not installed:
        findings.append(
            Finding("backends", "problem", "no inference backend", probes.install_fix("device"))
        )
    return findings


def cpu_flags(cpuinfo: str) -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def check_cpu(probes: Probes) -> list[Finding]:
    """The CPU features that decide whether int8 is faster than fp32."""
    text = probes.read_text(probes.path("/proc/cpuinfo"))
    if text is None:
        return [Finding("cpu", "info", "/proc/cpuinfo is not readable")]
    found = sorted({name for flag, name in INT8_FLAGS.items() if flag in cpu_flags(text)})
    if found:
        return [Finding("cpu int8", "ok", f"integer dot-product instructions: {', '.join(found)}")]
    return [
        Finding(
            "cpu int8",
            "info",
            "no dotprod/i8mm/VNNI/AMX: int8 saves memory but may not beat fp32 here "
            "(edge-runtime bench --model M measures both)",
        )
    ]


def check_cameras(probes: Probes, needs_camera: bool = False) -> list[Finding]:
    """V4L2 nodes, libcamera's cameras and Jetson's nvarguscamerasrc. None found is a problem
    when the config's source is a camera (``needs_camera``)."""
    findings = []
    nodes = probes.glob(probes.path("/dev/video*"))
    if nodes:
        names = ", ".join(f"/dev/{os.path.basename(n)}" for n in nodes)
        findings.append(Finding("cameras v4l2", "ok", names))
    for tool in ("rpicam-hello", "libcamera-hello"):
        if probes.which(tool) is None:
            continue
        try:
            code, out = probes.run([tool, "--list-cameras"])
        except OSError as exc:
            findings.append(Finding("cameras libcamera", "info", f"{tool} failed: {exc}"))
            break
        cameras = [line.strip() for line in out.splitlines() if _CAMERA_LINE.match(line)]
        if code == 0 and cameras:
            findings.append(Finding("cameras libcamera", "ok", "; ".join(cameras)))
        else:
            findings.append(Finding("cameras libcamera", "info", "no camera listed"))
        break
    if probes.which("gst-inspect-1.0") is not None:
        try:
            code, _ = probes.run(["gst-inspect-1.0", "nvarguscamerasrc"])
        except OSError:
            code = 1
        if code == 0:
            findings.append(
                Finding("cameras csi", "ok", "GStreamer has nvarguscamerasrc (csi://N)")
            )
    if not findings:
        level: Level = "problem" if needs_camera else "info"
        findings.append(
            Finding(
                "cameras",
                level,
                "no camera found (no /dev/video*, libcamera or nvarguscamerasrc)",
                "check the cable and `ls /dev/video*`; a Pi camera needs rpicam-apps"
                if needs_camera
                else "",
            )
        )
    return findings


def check_model(config: Any, smoke: Callable[..., Any] | None = None) -> list[Finding]:
    """The configured model loads here and passes its ``samples/`` smoke test (a bundle with
    samples), with the config's backend and artifact choices."""
    from edge_runtime.errors import EdgeRuntimeError

    section = config.model
    if section.path is None and config.update is not None:
        # The update store's active model serves: check that one (no network here).
        from edge_runtime.ota.errors import OtaError
        from edge_runtime.ota.store import ModelStore

        try:
            active = ModelStore(config.update.store).active_path()
        except OtaError as exc:
            return [Finding("model", "problem", exc.reason, "see docs/updates.md")]
        if active is None:
            return [
                Finding(
                    "model",
                    "info",
                    f"no model installed yet in the update store {config.update.store}",
                    "the daemon installs the newest eligible version when it starts",
                )
            ]
        model = section.model_copy(update={"path": str(active)})
        config = config.model_copy(update={"model": model})
        section = config.model
    try:
        from edge_runtime.model import model_kind

        kind = model_kind(section.path)
        if kind == "bundle":
            from edge_runtime.smoke import smoke_test

            result = (smoke or smoke_test)(
                section.path,
                artifact=section.artifact,
                precision=section.precision,
                backend=section.backend,
            )
            level: Level = "ok" if result.passed else "problem"
            fix = "" if result.passed else "re-export the bundle, or choose another artifact"
            return [Finding("model", level, result.summary(), fix)]
        from edge_runtime.serving import load_serving_model

        serving = load_serving_model(config)
        try:
            info = serving.model.info
            return [
                Finding(
                    "model",
                    "ok",
                    f"{section.path} loads ({info.get('backend')}); a bare model has no samples "
                    "to smoke-test",
                )
            ]
        finally:
            serving.close()
    except EdgeRuntimeError as exc:
        return [Finding("model", "problem", str(exc), "fix [model] in the config")]


def check_port(probes: Probes, address: str) -> list[Finding]:
    """The status server's HOST:PORT is free (or the service already holds it)."""
    from edge_runtime.address import parse_address

    host, port = parse_address(address)
    if port == 0 or probes.port_free(host, port):
        return [Finding("http", "ok", f"{host}:{port} is free")]
    return [
        Finding(
            "http",
            "problem",
            f"{host}:{port} is in use (the service itself, when it runs, holds it)",
            "stop the other program, or set [service] http to another port",
        )
    ]


def port_held_by_service(findings: list[Finding]) -> bool:
    return any(f.check == "service" and f.detail.startswith("active") for f in findings)


def check_service(probes: Probes) -> list[Finding]:
    """The systemd service's state, when systemd runs this machine."""
    if probes.which("systemctl") is None or not os.path.isdir(probes.path("/run/systemd/system")):
        return [Finding("service", "info", "systemd is not running here")]
    try:
        _, active = probes.run(["systemctl", "is-active", SERVICE])
        _, enabled = probes.run(["systemctl", "is-enabled", SERVICE])
    except OSError as exc:
        return [Finding("service", "info", f"systemctl failed: {exc}")]
    active, enabled = active.strip() or "unknown", enabled.strip() or "unknown"
    if active == "active":
        return [Finding("service", "ok", f"active, {enabled}")]
    if "not-found" in enabled or enabled in ("", "unknown"):
        return [Finding("service", "info", "not installed", "sudo devices/install.sh installs it")]
    return [
        Finding(
            "service",
            "problem",
            f"{active}, {enabled}",
            f"journalctl -u {SERVICE} -n 50 says why; sudo systemctl restart {SERVICE}",
        )
    ]


def diagnose(
    probes: Probes | None = None,
    config: Any = None,
    *,
    smoke: Callable[..., Any] | None = None,
) -> list[Finding]:
    """Every check, in the order the report lists them. ``config``: a RuntimeConfig (None: the
    model and port checks are skipped)."""
    probes = probes or Probes()
    findings = check_device(probes)
    findings += check_backends(probes, None if config is None else _wanted_backend(config))
    findings += check_cpu(probes)
    findings += check_cameras(probes, needs_camera=config is not None and _camera(config))
    if config is not None:
        findings += check_model(config, smoke)
    service = check_service(probes)
    if config is not None:
        port = check_port(probes, config.http)
        if port[0].level == "problem" and port_held_by_service(service):
            port = [Finding("http", "ok", f"{config.http} is held by the running service")]
        findings += port
    return findings + service


def _wanted_backend(config: Any) -> str | None:
    backend = str(config.model.backend)
    return None if backend == "auto" else backend


def _camera(config: Any) -> bool:
    from edge_runtime.sources import scheme_kind

    return scheme_kind(config.source.uri) in ("camera", "v4l2", "csi", "picamera2")
