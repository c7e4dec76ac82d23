"""Which artifact of a bundle runs here, in which backend, and whether the bundle may run at all.

Pure decisions over a manifest, a device profile, the runtime's version and (for
``precision = "auto"``) latencies measured on this device: no file, network or hardware access,
so the OTA client can ask "can this bundle run on this device?" before it downloads or installs
anything, and :func:`edge_runtime.model.load_model` asks the same question with the same answer
when it loads. The timing itself and its cache are :mod:`edge_runtime.autoselect`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, cast

from edge_runtime import __version__
from edge_runtime.backends import (
    FORMAT_BACKENDS,
    BackendOptions,
    backends_for_format,
    check_backend_for_format,
)
from edge_runtime.errors import BundleError, ConfigError, IncompatibleBundleError
from edge_runtime.versions import runtime_admits

if TYPE_CHECKING:  # the bundle package imports this module; keep the cycle out of run time
    from devices import DeviceProfile
    from edge_runtime.bundle import Artifact, Bundle, BundleManifest

#: artifact formats and precisions in the order a device without a profile prefers them
DEFAULT_FORMATS: tuple[str, ...] = ("tflite", "onnx")
DEFAULT_PRECISIONS: tuple[str, ...] = ("int8", "fp16", "dynamic", "fp32")
#: the precision choices: ``auto`` measures the bundle's artifacts here and takes the fastest
PRECISION_CHOICES: tuple[str, ...] = ("auto", *DEFAULT_PRECISIONS)
#: measured latencies this close to the fastest (a fraction) count as a tie, which the profile's
#: order breaks: timing noise on a busy device must not flip the choice between equals
TIE_TOLERANCE = 0.10
#: an artifact without a gate decision is eligible when its recorded top-1 is at most this many
#: points below the float model's (the exporter's default gate)
DEFAULT_MAX_DROP_POINTS = 1.0


def options_from_profile(
    profile: DeviceProfile | None, threads: int | None = None, **overrides: Any
) -> BackendOptions:
    """Backend options a device profile asks for, with ``threads`` and other fields overridden.

    Raises:
        ConfigError: a negative thread count.
    """
    if threads is not None and threads < 0:
        raise ConfigError(f"threads must be 0 (all cores) or more, got {threads}")
    fields: dict[str, Any] = {}
    if profile is not None:
        fields.update(
            threads=profile.threads,
            providers=tuple(profile.onnx_providers),
            delegates=tuple(profile.delegates),
        )
    if threads is not None:
        fields["threads"] = threads
    fields.update(overrides)
    return BackendOptions(**fields)


def can_run(backend: str, fmt: str) -> bool:
    """Whether backend ``backend`` runs ``fmt`` models."""
    return backend in FORMAT_BACKENDS.get(fmt, ())


def backend_candidates(fmt: str, backend: str, profile: DeviceProfile | None) -> list[str]:
    """The backends to try for a ``fmt`` model: the named one, or (``auto``) those able to run
    it in the profile's order.

    Raises:
        UnknownComponentError: an unknown backend name.
        ConfigError: the named backend cannot run ``fmt``.
    """
    if backend != "auto":
        check_backend_for_format(backend, fmt)
        return [backend]
    return backends_for_format(fmt, profile.backends if profile is not None else ())


def select_artifact(
    manifest: BundleManifest,
    formats: Iterable[str] | None = None,
    precisions: Iterable[str] | None = None,
) -> Artifact:
    """The first artifact in preference order: by format, then by precision.

    Raises:
        BundleError: no artifact matches (the message lists what the bundle has).
    """
    format_order = list(formats) if formats is not None else list(DEFAULT_FORMATS)
    precision_order = list(precisions) if precisions is not None else list(DEFAULT_PRECISIONS)
    for fmt in format_order:
        for precision in precision_order:
            for item in manifest.artifacts:
                if item.format == fmt and item.precision == precision:
                    return item
    have = ", ".join(f"{a.path} ({a.format} {a.precision})" for a in manifest.artifacts)
    raise BundleError(
        f"bundle {manifest.name} has no {'/'.join(format_order)} artifact in precision "
        f"{'/'.join(precision_order)}; it has: {have}"
    )


def artifact_candidates(
    bundle: Bundle | BundleManifest,
    *,
    artifact: str | None = None,
    precision: str | None = None,
    backend: str = "auto",
    profile: DeviceProfile | None = None,
) -> list[Artifact]:
    """A bundle's artifacts that fit the choice, in the order to try them.

    ``bundle`` is a loaded bundle or just its manifest. Order: the profile's formats, then its
    precisions (the defaults above without a profile); formats and precisions the profile does
    not list come last, so a bundle still runs.

    Raises:
        BundleError: no artifact fits (the message lists what the bundle has).
        ConfigError: ``backend`` cannot run the named artifact.
    """
    manifest = cast("BundleManifest", getattr(bundle, "manifest", bundle))
    if artifact is not None:
        chosen = manifest.artifact(PurePath(artifact).name)
        if precision is not None and chosen.precision != precision:
            raise ConfigError(
                f"artifact {chosen.path} is {chosen.precision}, not the asked precision {precision}"
            )
        if backend != "auto":
            check_backend_for_format(backend, chosen.format)
        return [chosen]
    formats: Iterable[str] = profile.formats if profile is not None else DEFAULT_FORMATS
    precisions: Iterable[str] = profile.precision if profile is not None else DEFAULT_PRECISIONS
    formats = [f for f in formats if backend == "auto" or can_run(backend, f)]
    precisions = [precision] if precision is not None else list(precisions)
    formats += [
        f
        for f in DEFAULT_FORMATS
        if f not in formats and (backend == "auto" or can_run(backend, f))
    ]
    if precision is None:
        precisions += [p for p in DEFAULT_PRECISIONS if p not in precisions]
    ordered = [
        item
        for fmt in formats
        for prec in precisions
        for item in manifest.artifacts
        if item.format == fmt and item.precision == prec
    ]
    if not ordered:
        select_artifact(manifest, formats, precisions)  # raises, listing what the bundle has
    return ordered


# --------------------------------------------------------------------------------------------
# precision = "auto": the fastest artifact that passed the accuracy gate


@dataclass(frozen=True)
class ArtifactTiming:
    """One artifact timed on this device: median inference milliseconds (None: it could not be
    loaded or run here, ``error`` says why) and whether its accuracy may serve (``eligible``,
    ``reason``)."""

    artifact: str
    format: str
    precision: str
    backend: str
    median_ms: float | None
    runs: int = 0
    eligible: bool = True
    reason: str = ""
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "format": self.format,
            "precision": self.precision,
            "backend": self.backend,
            "median_ms": None if self.median_ms is None else round(self.median_ms, 4),
            "runs": self.runs,
            "eligible": self.eligible,
            "reason": self.reason,
            "error": self.error,
        }


def gate_verdict(manifest: BundleManifest, item: Artifact) -> tuple[bool, str]:
    """May ``item`` serve when chosen for speed? ``(eligible, reason)``.

    The exporter's accuracy gate decides when the manifest records it
    (``training.details.export.gate.decisions``, keyed ``format-precision``): only ``pass`` is
    eligible (an artifact bundled under ``--allow-accuracy-drop`` failed it). Without a
    decision, the recorded top-1 must be within the recorded ``max_accuracy_drop_points`` (else
    :data:`DEFAULT_MAX_DROP_POINTS`) of the float model's. A float32 artifact is the reference and
    always eligible, and so is one with nothing recorded (a hand-made bundle).
    """
    if item.precision == "fp32":
        return True, "float reference"
    details = manifest.training.details if manifest.training is not None else {}
    export = details.get("export") if isinstance(details, dict) else None
    export = export if isinstance(export, dict) else {}
    gate = export.get("gate")
    decisions = gate.get("decisions") if isinstance(gate, dict) else None
    key = f"{item.format}-{item.precision}"
    if isinstance(decisions, dict) and key in decisions:
        decision = str(decisions[key])
        return decision == "pass", f"accuracy gate: {decision}"
    float_accuracy = export.get("float_accuracy")
    if item.accuracy is None or not isinstance(float_accuracy, (int, float)):
        return True, "no accuracy recorded"
    limit = export.get("max_accuracy_drop_points", DEFAULT_MAX_DROP_POINTS)
    if not isinstance(limit, (int, float)):
        limit = DEFAULT_MAX_DROP_POINTS
    drop = (float(float_accuracy) - item.accuracy) * 100.0
    if drop > float(limit) + 1e-9:
        return False, f"top-1 {drop:.1f} points below float (limit {float(limit):g})"
    return True, f"top-1 within {float(limit):g} points of float"


def choose_measured(
    timings: Sequence[ArtifactTiming],
    preference: Sequence[str],
    tolerance: float = TIE_TOLERANCE,
) -> ArtifactTiming | None:
    """The fastest eligible artifact measured; None when none was.

    ``preference``: artifact names in the profile's order; among artifacts within ``tolerance``
    of the fastest median the earliest there wins (a tie on a noisy device keeps the
    profile's choice, e.g. the smaller int8 file).
    """
    timed = [t for t in timings if t.eligible and t.median_ms is not None]
    if not timed:
        return None
    fastest = min(t.median_ms for t in timed if t.median_ms is not None)
    limit = fastest * (1 + tolerance)
    close = [t for t in timed if t.median_ms is not None and t.median_ms <= limit]
    rank = {name: i for i, name in enumerate(preference)}
    return min(close, key=lambda t: (rank.get(t.artifact, len(rank)), t.median_ms))


def measured_order(candidates: Sequence[Artifact], chosen: str | None) -> list[Artifact]:
    """``candidates`` with the measured choice first and the rest in their order."""
    first = [c for c in candidates if c.path == chosen]
    return first + [c for c in candidates if c.path != chosen]


# --------------------------------------------------------------------------------------------
# May this bundle run here at all?


def compatibility_problems(
    manifest: BundleManifest,
    *,
    runtime_version: str | None = None,
    profile: DeviceProfile | str | None = None,
) -> list[str]:
    """Why ``manifest`` may not run on this runtime and device (empty: it may).

    ``runtime_version``: this runtime's version (default :data:`edge_runtime.__version__`); a
    source tree that was never installed does not know its version and is not judged by it.
    ``profile``: the device profile in use (a profile or its name); ``None`` when none is known,
    in which case the bundle's profile list is not checked.
    """
    problems = []
    if runtime_version is None:
        runtime_version = __version__
    # The same rule as the OTA policy's, so a device never downloads what it then refuses.
    if not runtime_admits(manifest.compatible.runtime_range(), runtime_version):
        problems.append(
            f"needs edge-runtime {manifest.compatible.runtime} but this runtime is "
            f"{runtime_version}: update the runtime or use a bundle made for it"
        )
    name = getattr(profile, "name", profile)
    allowed = manifest.compatible.profiles
    if name is not None and allowed and name not in allowed:
        problems.append(
            f"is made for the device profiles {', '.join(allowed)}, not for {name} "
            "(choose another profile or a bundle made for this device)"
        )
    return problems


def check_compatible(
    manifest: BundleManifest,
    *,
    runtime_version: str | None = None,
    profile: DeviceProfile | str | None = None,
) -> None:
    """Refuse a bundle this runtime or device may not run (see :func:`compatibility_problems`).

    Raises:
        IncompatibleBundleError: one line naming the bundle and every reason.
    """
    problems = compatibility_problems(manifest, runtime_version=runtime_version, profile=profile)
    if problems:
        raise IncompatibleBundleError(
            f"bundle {manifest.name} version {manifest.version} {'; and it '.join(problems)}"
        )


__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_PRECISIONS",
    "PRECISION_CHOICES",
    "ArtifactTiming",
    "artifact_candidates",
    "choose_measured",
    "gate_verdict",
    "measured_order",
    "backend_candidates",
    "can_run",
    "check_compatible",
    "compatibility_problems",
    "options_from_profile",
    "select_artifact",
]
