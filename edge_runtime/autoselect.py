"""``precision = "auto"``: time a bundle's artifacts on this device once, cache the choice.

Which artifact is fastest depends on the processor more than on the model: int8 runs about 3x
faster than float32 on an x86 core with VNNI, and about half as fast on one without it; ARM cores
with dot-product instructions favour int8 again. So on the first load of a bundle the runtime
times each artifact that the installed backends can open (each on its own, loaded, warmed up,
then ``run`` on a blank input until a time budget is spent), and
:func:`edge_runtime.selection.choose_measured` takes the fastest whose accuracy passed the
exporter's gate. The choice is cached in a small JSON file keyed by the bundle's manifest sha256
(which covers every artifact's sha256), the processor (model name and the instruction-set flags
that change int8 and float speed), the thread count and the backend settings; a later start
reads it back and loads only the chosen artifact.

The timing runs in a child process (:func:`measure_isolated`, ``python -m
edge_runtime.autoselect``): loading every artifact would otherwise leave each backend's
libraries and arenas in the serving process for good (ONNX Runtime alone adds some 30 MB of
resident memory to a pipeline that then runs the ``.tflite``), and an artifact whose delegate
crashes takes down only the child. The cache lives in ``$XDG_CACHE_HOME/edge-runtime``
(``~/.cache/edge-runtime``) unless a directory is given (``[model] cache_dir``; the daemon passes
its state directory). It is an optimisation only: a cache that cannot be read or written, or a
timing child that fails, is logged and the profile's order stands.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import Backend, BackendOptions
from edge_runtime.bundle import Artifact, Bundle
from edge_runtime.bundle.directory import sha256_file
from edge_runtime.bundle.manifest import MANIFEST_NAME
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.fsutil import atomic_write
from edge_runtime.selection import ArtifactTiming, choose_measured, gate_verdict

log = logging.getLogger(__name__)

CACHE_NAME = "artifact-choice.json"
CACHE_SCHEMA = 1
#: entries kept in the cache file (the oldest go first): a device sees few bundles
MAX_ENTRIES = 64
#: a cache file larger than this is not read (it is ours and small; anything else is damage)
MAX_CACHE_BYTES = 1 << 20
#: instruction-set flags that decide int8 / float speed (x86 /proc/cpuinfo "flags", ARM
#: "Features"); a machine with the same model but other flags (a VM) is timed on its own
SPEED_FLAGS = frozenset(
    {
        "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
        "avx_vnni", "amx_int8", "amx_bf16", "amx_tile",
        "asimd", "asimddp", "asimdhp", "i8mm", "sve", "sve2", "bf16",
    }
)  # fmt: skip


@dataclass(frozen=True)
class TimingBudget:
    """How long the first load may spend timing each artifact.

    Each artifact runs at least ``min_runs`` times (after its load's warm-up), then until
    ``seconds`` of running have passed or ``max_runs`` runs are done. The default bounds the
    first start of a small model to a few tens of milliseconds per artifact and that of a large
    one (a 1 s InceptionV3 on a Raspberry Pi 4) to ``min_runs`` runs.
    """

    seconds: float = 0.25
    min_runs: int = 3
    max_runs: int = 50


@dataclass(frozen=True)
class MeasuredChoice:
    """What ``precision = "auto"`` decided and from what: the artifact (None: nothing could be
    timed, the profile's order stands), every artifact's timing, and whether it was just
    measured or read from the cache."""

    artifact: str | None
    timings: tuple[ArtifactTiming, ...]
    measured: bool
    key: str
    cpu: str
    measured_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "source": "measured" if self.measured else "cached",
            "cpu": self.cpu,
            "measured_at": self.measured_at,
            "timings": [t.to_json() for t in self.timings],
        }


@functools.lru_cache(maxsize=1)
def cpu_description() -> str:
    """This processor as the cache keys it: machine, model name and the speed-relevant flags.

    Reads ``/proc/cpuinfo`` once (elsewhere: ``platform``'s answer only).
    """
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")[: 1 << 20]
    except OSError:
        text = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())  # the first processor's
    # x86 says "model name"; 64-bit ARM boards say only "CPU part" and the board's "Model".
    model = fields.get("model name") or fields.get("cpu model") or fields.get("model", "")
    if "cpu part" in fields:
        model = f"{model} (part {fields['cpu part']})".strip()
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    fast = ",".join(sorted(flags & SPEED_FLAGS))
    return f"{platform.machine()} | {model or platform.processor() or 'unknown'} | {fast}"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edge-runtime``, else ``~/.cache/edge-runtime``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-runtime"


def choice_key(bundle: Bundle, backend: str, options: BackendOptions, profile: str) -> str:
    """The cache key: the manifest's sha256, the processor, and the settings that change speed."""
    described = {
        "manifest_sha256": sha256_file(bundle.root / MANIFEST_NAME),
        "cpu": cpu_description(),
        "threads": options.threads,
        "backend": backend,
        "providers": list(options.providers),
        "delegates": list(options.delegates),
        "xnnpack": options.xnnpack,
        "profile": profile,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


class ChoiceCache:
    """The JSON file of measured choices. Reading tolerates anything (a missing, damaged or
    foreign file is an empty cache); writing is atomic and never raises."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(directory or default_cache_dir()) / CACHE_NAME

    def _entries(self) -> dict[str, Any]:
        try:
            if self.path.stat().st_size > MAX_CACHE_BYTES:
                log.warning("%s is too large to be a choice cache; ignoring it", self.path)
                return {}
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("cannot read the artifact choice cache %s: %s", self.path, exc)
            return {}
        if not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries().get(key)
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        entries = self._entries()
        entries.pop(key, None)
        entries[key] = entry
        while len(entries) > MAX_ENTRIES:
            entries.pop(next(iter(entries)))
        data = {"schema": CACHE_SCHEMA, "entries": entries}
        try:
            atomic_write(self.path, (json.dumps(data, indent=1) + "\n").encode())
        except OSError as exc:
            log.warning("cannot write the artifact choice cache %s: %s", self.path, exc)


def time_backend(
    backend: Backend,
    budget: TimingBudget,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, int]:
    """Median milliseconds of ``backend.run`` on a blank input, and the runs made.

    Raises:
        BackendError: the model fails to run.
    """
    spec = backend.input
    tensor = backend.input_buffer()
    if tensor is None:
        tensor = np.zeros(spec.shape, dtype=np.dtype(spec.dtype))
    samples: list[float] = []
    started = clock()
    while len(samples) < budget.max_runs:
        before = clock()
        backend.run(tensor)
        samples.append((clock() - before) * 1e3)
        if len(samples) >= budget.min_runs and clock() - started >= budget.seconds:
            break
    return statistics.median(samples), len(samples)


def measure(
    bundle: Bundle,
    candidates: Sequence[Artifact],
    opener: Callable[[Artifact], Backend],
    budget: TimingBudget,
    clock: Callable[[], float] = time.perf_counter,
) -> list[ArtifactTiming]:
    """Time each candidate on its own (one loaded at a time, so peak memory is one model's).

    ``opener`` loads an artifact into its backend (it raises EdgeRuntimeError when it cannot:
    a missing backend package, a file the backend refuses); such an artifact is recorded with
    its error and no time.
    """
    timings = []
    for item in candidates:
        eligible, reason = gate_verdict(bundle.manifest, item)
        try:
            backend = opener(item)
        except EdgeRuntimeError as exc:
            timings.append(
                ArtifactTiming(
                    item.path, item.format, item.precision, "", None, 0, eligible, reason,
                    error=str(exc),
                )
            )  # fmt: skip
            continue
        try:
            median, runs = time_backend(backend, budget, clock)
            timings.append(
                ArtifactTiming(
                    item.path, item.format, item.precision, backend.name, median, runs,
                    eligible, reason,
                )
            )  # fmt: skip
        except EdgeRuntimeError as exc:
            timings.append(
                ArtifactTiming(
                    item.path, item.format, item.precision, backend.name, None, 0, eligible,
                    reason, error=str(exc),
                )
            )  # fmt: skip
        finally:
            backend.close()
    return timings


def _timings_from(entry: dict[str, Any]) -> tuple[ArtifactTiming, ...]:
    rows = entry.get("timings")
    if not isinstance(rows, list):
        return ()
    timings = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        try:
            median = row.get("median_ms")
            timings.append(
                ArtifactTiming(
                    artifact=str(row["artifact"]),
                    format=str(row.get("format", "")),
                    precision=str(row.get("precision", "")),
                    backend=str(row.get("backend", "")),
                    median_ms=None if median is None else float(median),
                    runs=int(row.get("runs", 0)),
                    eligible=bool(row.get("eligible", True)),
                    reason=str(row.get("reason", "")),
                    error=str(row.get("error", "")),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(timings)


#: measures the given candidates of a bundle on this device
Measurer = Callable[[Sequence[Artifact]], list[ArtifactTiming]]


def choose(
    bundle: Bundle,
    candidates: Sequence[Artifact],
    measurer: Measurer,
    *,
    backend: str,
    options: BackendOptions,
    profile: str = "",
    cache_dir: str | os.PathLike[str] | None = None,
) -> MeasuredChoice:
    """The measured choice among ``candidates`` (in the profile's order): from the cache when
    this bundle was timed here with these settings before, else measured now
    (``measurer``: :func:`measure_isolated`, or :func:`measure` in this process) and cached.

    A cached artifact that is no longer among the candidates (another ``--backend``) is timed
    again. Loading errors of single artifacts are recorded, not raised; when nothing could be
    timed the choice is None and nothing is cached.
    """
    names = [c.path for c in candidates]
    key = choice_key(bundle, backend, options, profile)
    cache = ChoiceCache(cache_dir)
    entry = cache.get(key)
    if entry is not None and entry.get("artifact") in names:
        return MeasuredChoice(
            artifact=str(entry["artifact"]),
            timings=_timings_from(entry),
            measured=False,
            key=key,
            cpu=str(entry.get("cpu", cpu_description())),
            measured_at=str(entry.get("measured_at", "")),
        )
    timings = measurer(candidates)
    best = choose_measured(timings, names)
    choice = MeasuredChoice(
        artifact=best.artifact if best is not None else None,
        timings=tuple(timings),
        measured=True,
        key=key,
        cpu=cpu_description(),
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if best is not None:
        cache.put(
            key,
            {
                "artifact": best.artifact,
                "bundle": f"{bundle.manifest.name} v{bundle.manifest.version}",
                "cpu": choice.cpu,
                "threads": options.threads,
                "backend": backend,
                "measured_at": choice.measured_at,
                "timings": [t.to_json() for t in timings],
            },
        )
    return choice


# -- timing in a child process ------------------------------------------------------------------
def measure_isolated(
    bundle: Bundle,
    candidates: Sequence[Artifact],
    *,
    backend: str,
    options: BackendOptions,
    profile: str,
    budget: TimingBudget | None = None,
    python: str = sys.executable,
) -> list[ArtifactTiming]:
    """Time ``candidates`` in a child process (``python -m edge_runtime.autoselect``), so their
    backends never load into this one. A child that fails or times out is logged, and every
    candidate is then reported untimed (the profile's order stands)."""
    chosen = budget or TimingBudget()
    request = {
        "bundle": str(bundle.root),
        "artifacts": [c.path for c in candidates],
        "backend": backend,
        "options": dataclasses.asdict(options),
        "profile": profile,
        "budget": dataclasses.asdict(chosen),
    }
    # The child imports this package from where this process found it (a source checkout too).
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    limit = 60.0 + len(candidates) * (chosen.seconds + 30.0)
    try:
        done = subprocess.run(
            [python, "-m", "edge_runtime.autoselect"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=limit,
            env=env,
        )
        rows = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        log.warning("timing the artifacts in a child process failed: %s", exc)
        rows = None
    if not isinstance(rows, list):
        if rows is None and "done" in locals():
            log.warning(
                "timing the artifacts failed (exit %s): %s",
                done.returncode,
                (done.stderr.strip().splitlines() or [""])[-1][:300],
            )
        return [
            ArtifactTiming(c.path, c.format, c.precision, "", None, 0, True, "", "not timed")
            for c in candidates
        ]
    return list(_timings_from({"timings": rows}))


def _child_main() -> int:
    """``python -m edge_runtime.autoselect``: a JSON request on stdin, the timings on stdout."""
    from edge_runtime.artifacts import open_artifact, resolve_profile
    from edge_runtime.bundle import load_bundle

    request = json.loads(sys.stdin.read())
    fields: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in request["options"].items()
    }
    options = BackendOptions(**fields)
    device = resolve_profile(request["profile"]) if request.get("profile") else None
    with load_bundle(request["bundle"], verify_hashes=False) as bundle:
        wanted = [bundle.manifest.artifact(name) for name in request["artifacts"]]

        def opener(item: Artifact) -> Backend:
            return open_artifact(bundle, item, request["backend"], options, device)

        timings = measure(bundle, wanted, opener, TimingBudget(**request["budget"]))
    print(json.dumps([t.to_json() for t in timings]))
    return 0


__all__ = [
    "ChoiceCache",
    "MeasuredChoice",
    "Measurer",
    "TimingBudget",
    "choice_key",
    "choose",
    "cpu_description",
    "default_cache_dir",
    "measure",
    "measure_isolated",
    "time_backend",
]


if __name__ == "__main__":
    sys.exit(_child_main())
