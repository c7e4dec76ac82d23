"""The OTA policy: which published model a device takes, and when a new model is rolled back.

Pure decisions over small frozen values, like python-tuf's trust decisions: no file, network,
clock, randomness or TUF access (an import-linter contract holds this module to it), so every
rule is tested without sockets or files and the code around it (client, slot store, daemon) only
moves bytes and reports the reason string a decision carries.

Three parts:

- **Target fields**: the ``custom`` object the publisher (``edge-export publish``) writes into a
  TUF target and the device reads back (:class:`TargetFields`, :func:`candidates_from_target`).
  One definition for both sides, owned by the side that must never break it.
- **Choosing** (:func:`choose_update`): the newest version of the configured model on the
  device's channel that lists its profile (or no profile), admits its runtime, includes it in its
  staged rollout, and never failed here; never older than the active version unless a version is
  asked for by number.
- **Probation** (:func:`judge_probation`): after a switch, errors, a crash loop across restarts,
  a watchdog restart, or (with shadow probation) too little agreement with the previous model
  roll the new one back.

Staged rollout: a device belongs to a rollout of ``percent`` when its bucket
(:func:`rollout_bucket`, a sha256 of device id, model name and version mapped to 0..99) is below
``percent``. The same device is in or out every time it asks, 25% is the same quarter of the fleet
on every check, raising 25 to 50 keeps that quarter in and adds another, and each version draws
a fresh quarter, so the same devices are not always the first to take a risk.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.validation import describe_validation_error
from edge_runtime.versions import runtime_admits

#: key of our object inside a TUF target's ``custom`` (other tools may add their own keys)
CUSTOM_KEY = "edge-classify"
#: version of the target-fields format; a device skips targets of a newer format it cannot read
TARGET_FIELDS_SCHEMA = 1
#: rollout buckets: a device's bucket is one of 0..ROLLOUT_BUCKETS-1, a rollout a whole percent
ROLLOUT_BUCKETS = 100

#: where a repository keeps its metadata and its targets, below the URL a device is given
#: (``url = "http://updates.example/repo/"`` -> ``.../repo/metadata/`` and ``.../repo/targets/``);
#: the publisher writes these folders and any static server serves them as they are
METADATA_DIR = "metadata"
TARGETS_DIR = "targets"

_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
#: what a channel name may be; the publisher refuses any other before it signs anything
CHANNEL_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,31}$"


class TargetFieldsError(EdgeRuntimeError):
    """A TUF target's custom fields are missing, malformed, or of a newer format."""


# --------------------------------------------------------------------------------------------
# Target fields: what a published target tells the device before it downloads anything


class Release(BaseModel):
    """One channel a target is published on."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    rollout: StrictInt = Field(
        ge=1, le=100, description="Percent of this channel's devices that may take the target."
    )
    published: datetime | None = Field(None, description="When it was put on this channel.")


class TargetFields(BaseModel):
    """The ``custom[CUSTOM_KEY]`` object of a published bundle target.

    Unknown keys are ignored (a newer publisher may add informative ones); a format change that
    an older device must not misread raises ``schema``.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    schema_version: StrictInt = Field(TARGET_FIELDS_SCHEMA, alias="schema", ge=1)
    name: str = Field(pattern=_NAME, description="The bundle's manifest name.")
    version: StrictInt = Field(gt=0, description="The bundle's manifest version.")
    channels: dict[str, Release] = Field(
        min_length=1, description="Channel name -> rollout; one target may be on several."
    )
    profiles: tuple[str, ...] = Field(
        (), description="Device profiles it is made for; empty: any device."
    )
    runtime: str = Field("", description="Runtime versions it runs on (PEP 440); empty: any.")
    manifest_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the bundle's manifest.json, checked after extraction.",
    )
    created: datetime | None = Field(None, description="The bundle manifest's creation time.")

    @field_validator("channels")
    @classmethod
    def _verify_channel_names(cls, value: dict[str, Release]) -> dict[str, Release]:
        for name in value:
            if not re.match(CHANNEL_PATTERN, name):
                raise ValueError(f"channel name {name!r} must match {CHANNEL_PATTERN}")
        return value

    @field_validator("runtime")
    @classmethod
    def _verify_runtime(cls, value: str) -> str:
        try:
            SpecifierSet(value)
        except InvalidSpecifier:
            raise ValueError(f"runtime {value!r} is not a version range such as '>=0.1'") from None
        return value

    def to_custom(self) -> dict[str, Any]:
        """The target's ``custom`` object (JSON-ready) holding these fields."""
        return {CUSTOM_KEY: self.model_dump(mode="json", by_alias=True, exclude_none=True)}


def read_target_fields(custom: Any, where: str = "target") -> TargetFields:
    """The fields in a target's ``custom`` object.

    Raises:
        TargetFieldsError: no fields of ours, invalid ones, or a newer format than this runtime
            reads (the message says which).
    """
    if not isinstance(custom, Mapping) or not isinstance(custom.get(CUSTOM_KEY), Mapping):
        raise TargetFieldsError(f"{where} has no '{CUSTOM_KEY}' custom fields: not a model bundle")
    raw = custom[CUSTOM_KEY]
    schema = raw.get("schema", TARGET_FIELDS_SCHEMA)
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > TARGET_FIELDS_SCHEMA:
        raise TargetFieldsError(
            f"{where} uses target fields format {schema}; this runtime reads format "
            f"{TARGET_FIELDS_SCHEMA}: update the runtime"
        )
    try:
        return TargetFields.model_validate(raw)
    except ValidationError as exc:
        raise TargetFieldsError(
            f"{where}: {describe_validation_error(exc, fallback='custom fields')}"
        ) from exc


@dataclass(frozen=True)
class TargetCandidate:
    """One published target on one channel, as the device sees it before downloading."""

    path: str
    length: int
    name: str
    version: int
    channel: str
    rollout: int
    manifest_sha256: str
    profiles: tuple[str, ...] = ()
    runtime: str = ""
    published: datetime | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.rollout <= 100:
            raise ValueError(f"rollout must be 1..100 percent, got {self.rollout}")
        if self.version < 1 or self.length < 0:
            raise ValueError("version must be positive and length not negative")

    @property
    def label(self) -> str:
        """``name vVERSION``, for messages."""
        return f"{self.name} v{self.version}"


def candidates_from_target(path: str, length: int, custom: Any) -> tuple[TargetCandidate, ...]:
    """One candidate per channel of a TUF target (``path``, ``length`` and ``custom`` as in the
    targets metadata).

    Raises:
        TargetFieldsError: the target's custom fields are missing or invalid.
    """
    fields = read_target_fields(custom, where=f"target {path}")
    return tuple(
        TargetCandidate(
            path=path,
            length=length,
            name=fields.name,
            version=fields.version,
            channel=channel,
            rollout=release.rollout,
            manifest_sha256=fields.manifest_sha256,
            profiles=tuple(fields.profiles),
            runtime=fields.runtime,
            published=release.published,
        )
        for channel, release in sorted(fields.channels.items())
    )


def repository_urls(url: str) -> tuple[str, str]:
    """The metadata and targets base URLs (each ending in ``/``) of a repository at ``url``
    (``http(s)://`` or ``file://``)."""
    base = url if url.endswith("/") else url + "/"
    return f"{base}{METADATA_DIR}/", f"{base}{TARGETS_DIR}/"


def candidates_from_targets(
    targets: Mapping[str, Any],
) -> tuple[tuple[TargetCandidate, ...], tuple[str, ...]]:
    """Candidates from the ``targets`` object of verified targets metadata (path -> target
    dict with ``length`` and ``custom``), and one problem line per target that was skipped.

    One unreadable target (another tool's file, a newer format) must not stop a device from
    updating, so it is reported, not raised.
    """
    found: list[TargetCandidate] = []
    problems: list[str] = []
    for path, target in sorted(targets.items()):
        length = target.get("length") if isinstance(target, Mapping) else None
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            problems.append(f"target {path} has no valid length")
            continue
        try:
            found.extend(candidates_from_target(path, length, target.get("custom")))
        except TargetFieldsError as exc:
            problems.append(str(exc))
    return tuple(found), tuple(problems)


# --------------------------------------------------------------------------------------------
# Staged rollout


def rollout_bucket(device_id: str, name: str, version: int) -> int:
    """This device's bucket 0..99 for one version of one model.

    The first 8 bytes of ``sha256(f"{device_id}:{name}:{version}")`` modulo 100: uniform (the
    modulo bias of a 64-bit number is below 1e-17), stable across runs, machines and Python
    versions, and independent between versions.
    """
    # surrogatepass: an id read from a badly encoded file still hashes (valid text hashes as
    # UTF-8 either way)
    key = f"{device_id}:{name}:{version}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest[:8], "big") % ROLLOUT_BUCKETS


def in_rollout(device_id: str, name: str, version: int, percent: int) -> bool:
    """Whether this device is among the ``percent`` of the fleet a rollout admits.

    Monotonic: a device admitted at ``percent`` is admitted at every higher percent.
    """
    return rollout_bucket(device_id, name, version) < percent


# --------------------------------------------------------------------------------------------
# Choosing a target


@dataclass(frozen=True)
class DeviceFacts:
    """What the policy knows about this device."""

    device_id: str
    #: the device profile's name (``raspberry-pi-5``); ``None``: unknown, so only targets that
    #: list no profiles fit
    profile: str | None
    #: this runtime's version (``edge_runtime.__version__``)
    runtime_version: str

    def __post_init__(self) -> None:
        if not self.device_id:
            raise ValueError("device_id must not be empty")


@dataclass(frozen=True)
class UpdateState:
    """What this device has installed (from its slot store)."""

    active_version: int | None = None
    #: versions that failed their smoke test or probation here: never taken again
    failed_versions: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Skipped:
    """A candidate that was not taken, and why."""

    version: int
    reason: str


@dataclass(frozen=True)
class UpdateDecision:
    """What to do after a check: ``install`` ``target``, or ``stay`` with the active model."""

    action: Literal["install", "stay"]
    reason: str
    target: TargetCandidate | None = None
    #: newer candidates that were passed over, newest first, each with its reason
    skipped: tuple[Skipped, ...] = ()


def _refusal(
    candidate: TargetCandidate, device: DeviceFacts, state: UpdateState, pinned: bool
) -> str | None:
    """Why ``candidate`` may not be installed on this device (None: it may)."""
    if candidate.version in state.failed_versions:
        return "failed here before and is never retried"
    if candidate.profiles and device.profile not in candidate.profiles:
        mine = device.profile or "no known profile"
        return f"is made for {', '.join(candidate.profiles)}, this device is {mine}"
    if not runtime_admits(candidate.runtime, device.runtime_version):
        return f"needs edge-runtime {candidate.runtime}, this one is {device.runtime_version}"
    if not pinned:
        bucket = rollout_bucket(device.device_id, candidate.name, candidate.version)
        if bucket >= candidate.rollout:
            return (
                f"is rolled out to {candidate.rollout}% and this device is outside it "
                f"(bucket {bucket})"
            )
    return None


def choose_update(
    candidates: Iterable[TargetCandidate],
    device: DeviceFacts,
    state: UpdateState,
    *,
    name: str,
    channel: str,
    version: int | None = None,
) -> UpdateDecision:
    """Which target of model ``name`` on ``channel`` this device should install, if any.

    Without ``version``: the newest candidate newer than the active version that fits the
    device's profile and runtime, never failed here, and whose rollout includes this device.
    With ``version`` (an operator asks for that version by number, e.g. to go back after a bad
    release): that version even when it is older than the active one or outside its rollout,
    still only if it fits the device and never failed here.
    """
    mine = sorted(
        (c for c in candidates if c.name == name and c.channel == channel),
        key=lambda c: c.version,
        reverse=True,
    )
    where = f"{name} on channel {channel}"
    active = state.active_version
    if version is not None:
        chosen = next((c for c in mine if c.version == version), None)
        if chosen is None:
            return UpdateDecision("stay", f"{where} has no version {version}")
        if version == active:
            return UpdateDecision("stay", f"{chosen.label} is already active")
        problem = _refusal(chosen, device, state, pinned=True)
        if problem:
            return UpdateDecision(
                "stay", f"{chosen.label} {problem}", skipped=(Skipped(version, problem),)
            )
        return UpdateDecision("install", f"install {chosen.label} as asked", target=chosen)

    if not mine:
        return UpdateDecision("stay", f"nothing published for {where}")
    skipped: list[Skipped] = []
    for candidate in mine:
        if active is not None and candidate.version <= active:
            break
        problem = _refusal(candidate, device, state, pinned=False)
        if problem is None:
            passed = "".join(f"; v{s.version} {s.reason}" for s in skipped)
            return UpdateDecision(
                "install",
                f"install {candidate.label} from {channel} (rollout {candidate.rollout}%)"
                + passed,
                target=candidate,
                skipped=tuple(skipped),
            )
        skipped.append(Skipped(candidate.version, problem))

    now = f"v{active} is active" if active is not None else "no model is installed"
    if not skipped:
        return UpdateDecision("stay", f"up to date: {now}, the newest on {where}")
    newest = skipped[0]
    more = f" (and {len(skipped) - 1} more newer versions skipped)" if len(skipped) > 1 else ""
    return UpdateDecision(
        "stay",
        f"{now}; {name} v{newest.version} {newest.reason}{more}",
        skipped=tuple(skipped),
    )


# --------------------------------------------------------------------------------------------
# Probation and rollback


@dataclass(frozen=True)
class ProbationSettings:
    """When a new model on probation is rolled back.

    Defaults, and why:

    - ``max_errors = 2``: inference errors from a model that passed its smoke test are rare
      (a shape the backend refuses, memory); two are tolerated, the third rolls back. A rollback
      bans the version on this device for good, so a single transient error must not.
    - ``max_unclean_restarts = 1``: one restart without a clean stop during probation may be a
      power cut; a second is a crash loop.
    - ``max_watchdog_restarts = 0``: systemd restarted the service because its frame loop
      stopped: with a model that just arrived, the model is the suspect.
    - Shadow probation (``shadow``): the new model and the previous one both classify live
      frames; see :func:`judge_probation` for how ``min_agreement`` is judged.
    """

    #: frames the new model must serve before it is trusted
    frames: int = 300
    max_errors: int = 2
    max_unclean_restarts: int = 1
    max_watchdog_restarts: int = 0
    shadow: bool = False
    #: the share of shadow comparisons in which both models must give the same top-1 label
    min_agreement: float = 0.9
    #: comparisons needed before agreement is judged (see judge_probation)
    min_shadow_comparisons: int = 300
    #: one-sided z of the confidence bound: 2.326 is 99%
    z: float = 2.326
    #: probation waits for enough comparisons up to this many times ``frames``, then passes
    max_frames_factor: int = 4

    def __post_init__(self) -> None:
        if self.frames < 1 or self.min_shadow_comparisons < 1 or self.max_frames_factor < 1:
            raise ValueError("probation frames, comparisons and factor must be positive")
        if min(self.max_errors, self.max_unclean_restarts, self.max_watchdog_restarts) < 0:
            raise ValueError("probation limits must not be negative")
        if not 0.0 < self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in (0, 1], got {self.min_agreement}")
        if self.z <= 0:
            raise ValueError("z must be positive")


@dataclass(frozen=True)
class ProbationStats:
    """What happened since the new model became active (kept across restarts by the store)."""

    #: frames the new model classified
    frames: int = 0
    #: inference errors of the new model
    errors: int = 0
    #: restarts during probation that did not follow a clean stop (crash, kill, power cut)
    unclean_restarts: int = 0
    #: of those, restarts systemd made because the watchdog expired
    watchdog_restarts: int = 0
    #: shadow comparisons made (both models on the same frame) and how many agreed on top-1
    shadow_compared: int = 0
    shadow_agreed: int = 0

    def __post_init__(self) -> None:
        counts = (
            self.frames,
            self.errors,
            self.unclean_restarts,
            self.watchdog_restarts,
            self.shadow_compared,
            self.shadow_agreed,
        )
        if min(counts) < 0:
            raise ValueError("probation counts must not be negative")
        if self.shadow_agreed > self.shadow_compared:
            raise ValueError("shadow_agreed cannot exceed shadow_compared")


@dataclass(frozen=True)
class ProbationDecision:
    """``continue`` probation, ``pass`` (the new model is trusted) or ``rollback``."""

    verdict: Literal["continue", "pass", "rollback"]
    reason: str


def agreement_upper_bound(agreed: int, compared: int, z: float) -> float:
    """Wilson score upper bound of the true agreement rate, one-sided at ``z``.

    Wilson's interval keeps its coverage near 0 and 1, where agreement rates live and the
    normal approximation fails.
    """
    if compared <= 0:
        return 1.0
    p = agreed / compared
    z2 = z * z
    centre = p + z2 / (2 * compared)
    spread = z * math.sqrt(p * (1 - p) / compared + z2 / (4 * compared * compared))
    return min(1.0, (centre + spread) / (1 + z2 / compared))


def judge_probation(stats: ProbationStats, settings: ProbationSettings) -> ProbationDecision:
    """Whether a model on probation keeps serving, is now trusted, or is rolled back.

    Errors, crash loops and watchdog restarts roll back as soon as they pass their limit.
    Shadow agreement is judged once, when the probation frames are done and at least
    ``min_shadow_comparisons`` were made: the model is rolled back only when the upper
    confidence bound of its agreement is below ``min_agreement``, that is when the data make it
    unlikely that the model is as good as asked. The burden of proof is on the rollback because
    a rolled-back version is never retried on this device.

    How many comparisons are enough (exact binomial tails, pinned by the tests): with 300
    comparisons, z = 2.326 and one look, the model is rolled back when it agrees on at most 257
    (85.7%) for a ``min_agreement`` of 0.9. A model whose true agreement is exactly 0.9 is then
    rolled back 1.1% of the time, one 5 points below 65% of the time and one 10 points below
    99.6% of the time, while one 5 points above passes every time but once in a billion. With
    only 50 comparisons the model 10 points below would pass almost one time in two. The bound
    assumes independent comparisons; consecutive video frames are not, so the daemon spaces its
    comparisons out (e.g. at most two a second) rather than comparing every frame.
    """
    if stats.watchdog_restarts > settings.max_watchdog_restarts:
        return ProbationDecision(
            "rollback",
            f"the watchdog restarted the service {stats.watchdog_restarts} time(s) during "
            "probation (the frame loop stopped)",
        )
    if stats.unclean_restarts > settings.max_unclean_restarts:
        return ProbationDecision(
            "rollback",
            f"crash loop: {stats.unclean_restarts} restarts without a clean stop during "
            "probation",
        )
    if stats.errors > settings.max_errors:
        return ProbationDecision(
            "rollback",
            f"{stats.errors} inference errors in {stats.frames} frames during probation "
            f"(at most {settings.max_errors} tolerated)",
        )
    if stats.frames < settings.frames:
        return ProbationDecision(
            "continue", f"probation: {stats.frames} of {settings.frames} frames served"
        )
    if not settings.shadow:
        return ProbationDecision(
            "pass",
            f"probation passed: {stats.frames} frames, {stats.errors} errors",
        )

    compared, agreed = stats.shadow_compared, stats.shadow_agreed
    if compared < settings.min_shadow_comparisons:
        if stats.frames < settings.frames * settings.max_frames_factor:
            return ProbationDecision(
                "continue",
                f"probation: waiting for shadow comparisons ({compared} of "
                f"{settings.min_shadow_comparisons})",
            )
        return ProbationDecision(
            "pass",
            f"probation passed: {stats.frames} frames, {stats.errors} errors; shadow agreement "
            f"inconclusive ({compared} comparisons, {settings.min_shadow_comparisons} needed)",
        )
    observed = agreed / compared
    upper = agreement_upper_bound(agreed, compared, settings.z)
    summary = (
        f"shadow agreement {observed:.1%} over {compared} comparisons "
        f"(upper bound {upper:.1%})"
    )
    if upper < settings.min_agreement:
        return ProbationDecision(
            "rollback", f"{summary} is below min_agreement {settings.min_agreement:.1%}"
        )
    return ProbationDecision(
        "pass", f"probation passed: {stats.frames} frames, {stats.errors} errors, {summary}"
    )


__all__ = [
    "CHANNEL_PATTERN",
    "CUSTOM_KEY",
    "METADATA_DIR",
    "ROLLOUT_BUCKETS",
    "TARGETS_DIR",
    "TARGET_FIELDS_SCHEMA",
    "DeviceFacts",
    "ProbationDecision",
    "ProbationSettings",
    "ProbationStats",
    "Release",
    "Skipped",
    "TargetCandidate",
    "TargetFields",
    "TargetFieldsError",
    "UpdateDecision",
    "UpdateState",
    "agreement_upper_bound",
    "candidates_from_target",
    "candidates_from_targets",
    "choose_update",
    "in_rollout",
    "judge_probation",
    "read_target_fields",
    "repository_urls",
    "rollout_bucket",
    "runtime_admits",
]
