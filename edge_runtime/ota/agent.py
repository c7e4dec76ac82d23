"""The update agent: check the repository, install a new version safely, judge probation,
roll back. ``edge-runtime update``, ``edge-runtime models`` and the daemon all call it.

The install pipeline, each step a boundary recorded in the store's state before the next:

1. **download** the target chosen by :func:`edge_runtime.ota.policy.choose_update` (python-tuf
   verifies its signed length and sha256) into ``downloads/``;
2. **extract** it with the allow-list extractor into a fresh folder in ``staging/`` (regular
   files the manifest names only, each artifact checked against its sha256); the manifest must
   be the one the signed target describes (name, version, manifest sha256), and its
   ``compatible`` must admit this runtime and device profile;
3. **smoke-test** it in a child process (:mod:`edge_runtime.ota.probe`);
4. **switch**: move it into ``slots/`` and write the state that makes it active (atomically);
   the previous model's slot is kept for rollback, older ones are removed.

A version that fails steps 2-3 or its probation is recorded as failed and never taken again; a
download that breaks off or a full disk is tried again at the next check. Nothing before step 4
changes what serves.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import BundleError, IncompatibleBundleError
from edge_runtime.fsutil import fsync_directory, fsync_tree
from edge_runtime.inputfiles import describe
from edge_runtime.ota.client import RepositoryListing, UpdateClient
from edge_runtime.ota.errors import (
    EXIT_INSTALLED,
    EXIT_ROLLED_BACK,
    EXIT_UP_TO_DATE,
    BundleRefusedError,
    OtaError,
    SmokeTestFailedError,
    StoreError,
)
from edge_runtime.ota.fetchers import fetcher_for
from edge_runtime.ota.policy import (
    DeviceFacts,
    ProbationDecision,
    ProbationSettings,
    ProbationStats,
    TargetCandidate,
    UpdateState,
    choose_update,
    judge_probation,
)
from edge_runtime.ota.probe import ProbeResult, run_probe
from edge_runtime.ota.store import ModelStore, Pending, Probation, Slot, StoreState, utc_now

log = logging.getLogger("edge_runtime.ota")

#: the install boundaries, in order (hooks are called with these names once each is passed)
STAGES = ("downloaded", "extracted", "smoke-tested", "switched")
#: errno values that mean the store is full, not that the bundle is bad
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

Probe = Callable[..., ProbeResult]
Hook = Callable[[str], None]


@dataclass(frozen=True)
class CheckResult:
    """What one check did: ``up-to-date``, ``installed`` or ``rolled-back``, and why."""

    outcome: str
    detail: str
    version: int | None = None

    @property
    def exit_code(self) -> int:
        return {"installed": EXIT_INSTALLED, "rolled-back": EXIT_ROLLED_BACK}.get(
            self.outcome, EXIT_UP_TO_DATE
        )


def _disk_full(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class UpdateAgent:
    """Over-the-air updates for one ``[update]`` section.

    Injectable: ``client`` (default: python-tuf against ``section.url``), ``probe`` (the
    child-process smoke test), ``hook`` (called after each install boundary in :data:`STAGES`;
    tests stop the process there), ``profile`` (this device's profile name; None: unknown),
    ``runtime_version``, ``clock`` (monotonic, for the fetchers).
    """

    def __init__(
        self,
        section: Any,
        *,
        profile: str | None,
        runtime_version: str,
        client: UpdateClient | None = None,
        probe: Probe = run_probe,
        hook: Hook | None = None,
        backend: str = "auto",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.section = section
        self.store = ModelStore(section.store)
        self.profile = profile
        self.runtime_version = runtime_version
        self._client = client
        self._probe = probe
        self._hook = hook
        self._backend = backend
        self._clock = clock
        self._device_id: str | None = None

    # -- facts --------------------------------------------------------------------------------
    @property
    def device_id(self) -> str:
        if self._device_id is None:
            given = self.section.device_id
            self._device_id = self.store.device_id() if given == "auto" else given
        return self._device_id

    def device(self) -> DeviceFacts:
        return DeviceFacts(self.device_id, self.profile, self.runtime_version)

    def client(self) -> UpdateClient:
        if self._client is None:
            self.store.ensure()
            fetcher = fetcher_for(
                self.section.url,
                timeout_s=self.section.download_timeout_s,
                max_download_s=self.section.max_download_s,
                clock=self._clock,
                temp_dir=self.store.downloads,
            )
            self._client = UpdateClient(
                self.section.url,
                self.section.root,
                self.store.cache,
                fetcher=fetcher,
                max_bundle_bytes=self.section.max_bundle_bytes,
            )
        return self._client

    def probation_settings(self) -> ProbationSettings:
        section = self.section
        return ProbationSettings(
            frames=section.probation_frames,
            max_errors=section.max_errors,
            shadow=section.shadow,
            min_agreement=section.min_agreement,
        )

    def state(self) -> StoreState:
        """The store's state (read only).

        Raises:
            StoreError: it cannot be read.
        """
        return self.store.load()

    def recover(self) -> list[str]:
        """Clean up after a crash (see :meth:`ModelStore.recover`); logs what it did."""
        with self.store.locked():
            notes = self.store.recover()
        for line in notes:
            log.warning("model store: %s", line)
        return notes

    # -- checking and installing ------------------------------------------------------------
    def check(self, *, version: int | None = None) -> CheckResult:
        """Check the repository once and install what the policy chooses.

        ``version``: install that version (an operator's choice; rollout is then ignored).

        Raises:
            OtaError: the check or the install was refused or failed (the subclass says how;
                the reason is in the store's ``last_error``). The active model is untouched.
        """
        with self.store.locked():
            self.store.recover()
            state = self.store.load()
            try:
                listing = self.client().refresh()
                result = self._check_locked(state, listing, version)
            except OtaError as exc:
                self._record_failure(exc)
                raise
            return result

    def _check_locked(
        self, state: StoreState, listing: RepositoryListing, version: int | None
    ) -> CheckResult:
        for problem in listing.problems:
            log.warning("update: skipped a target: %s", problem)
        active = state.active.version if state.active is not None else None
        decision = choose_update(
            listing.candidates,
            self.device(),
            UpdateState(active_version=active, failed_versions=state.failed_versions()),
            name=self.section.name,
            channel=self.section.channel,
            version=version,
        )
        if decision.action == "stay" or decision.target is None:
            state.last_check = {"at": utc_now(), "outcome": "up-to-date", "detail": decision.reason}
            if version is not None:
                state.last_error = decision.reason
            self.store.save(state)
            if version is not None:
                raise BundleRefusedError(decision.reason)
            log.info("update: %s", decision.reason)
            return CheckResult("up-to-date", decision.reason, active)
        log.info("update: %s", decision.reason)
        slot = self._install(decision.target)
        detail = f"v{slot.version} is active ({decision.reason})"
        return CheckResult("installed", detail, slot.version)

    def _record_failure(self, exc: OtaError) -> None:
        with contextlib.suppress(OtaError):
            state = self.store.load()
            state.last_error = exc.reason
            state.last_check = {"at": utc_now(), "outcome": "refused", "detail": exc.reason}
            self.store.save(state)
        log.error("update refused: %s", exc.reason)

    def _stage(self, state: StoreState, target: TargetCandidate, stage: str) -> None:
        state.pending = Pending(version=target.version, target=target.path, stage=stage)
        self.store.save(state)
        if self._hook is not None and stage in STAGES:
            self._hook(stage)

    def _install(self, target: TargetCandidate) -> Slot:
        store = self.store
        state = store.load()
        key = str(target.version)
        self._check_space(target)
        staging: Path | None = None
        tar = store.downloads / f"v{target.version}.tar"
        try:
            self._stage(state, target, "downloading")
            self.client().download(target, tar)
            self._stage(state, target, "downloaded")
            staging = Path(tempfile.mkdtemp(prefix=f"v{target.version}-", dir=store.staging))
            self._extract(target, tar, staging)
            self._stage(state, target, "extracted")
            with contextlib.suppress(OSError):
                tar.unlink()
            probe = self._probe(
                staging,
                timeout_s=self.section.smoke_timeout_s,
                profile=self.profile,
                backend=self._backend,
            )
            if not probe.passed:
                raise SmokeTestFailedError(f"{target.label} failed its smoke test: {probe.reason}")
            log.info("update: %s smoke test: %s", target.label, probe.reason)
            self._stage(state, target, "smoke-tested")
            slot = self._switch(state, target, staging)
        except OtaError as exc:
            state = store.load()
            state.pending = None
            if exc.bans_version:
                state.failed[key] = exc.reason
                state.note("failed", exc.reason, utc_now(), target.version)
            store.save(state)
            raise
        finally:
            for leftover in (staging, tar):
                if leftover is not None and leftover.exists():
                    if leftover.is_dir():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)
        if self._hook is not None:
            self._hook("switched")
        store.recover()  # the slot before the previous one goes
        return slot

    def _check_space(self, target: TargetCandidate) -> None:
        try:
            free = shutil.disk_usage(self.store.root).free
        except OSError as exc:
            raise StoreError(
                f"cannot check the free space in {self.store.root}: {describe(exc)}"
            ) from None
        # The .tar and its unpacked copy exist side by side for a moment.
        needed = 2 * target.length + (1 << 20)
        if free < needed:
            raise StoreError(
                f"not enough space in {self.store.root} for {target.label}: {free} bytes free, "
                f"{needed} needed"
            )

    def _extract(self, target: TargetCandidate, tar: Path, staging: Path) -> None:
        from edge_runtime.bundle import MANIFEST_NAME, load_bundle
        from edge_runtime.selection import check_compatible

        where = f"{target.label} ({target.path})"
        try:
            bundle = load_bundle(tar, extract_to=staging)
        except BundleError as exc:
            if _disk_full(exc):
                raise StoreError(
                    f"{where}: the store is full while unpacking ({exc}); the next check tries "
                    "again"
                ) from exc
            raise BundleRefusedError(f"{where} is refused: {exc}") from exc
        manifest = bundle.manifest
        if (manifest.name, manifest.version) != (target.name, target.version):
            raise BundleRefusedError(
                f"{where} is refused: its manifest says {manifest.name} v{manifest.version}, "
                "its signed target another"
            )
        digest = hashlib.sha256((staging / MANIFEST_NAME).read_bytes()).hexdigest()
        if digest != target.manifest_sha256:
            raise BundleRefusedError(
                f"{where} is refused: its manifest.json is not the one the signed target "
                "describes (sha256 differs)"
            )
        try:
            check_compatible(manifest, runtime_version=self.runtime_version, profile=self.profile)
        except IncompatibleBundleError as exc:
            raise BundleRefusedError(f"{where} is refused: {exc}") from exc
        try:
            fsync_tree(staging)
        except OSError as exc:
            if exc.errno in _FULL:
                raise StoreError(f"{where}: the store is full ({describe(exc)})") from exc
            raise StoreError(f"{where}: cannot sync {staging}: {describe(exc)}") from exc

    def _switch(self, state: StoreState, target: TargetCandidate, staging: Path) -> Slot:
        store = self.store
        directory = f"v{target.version}"
        dest = store.slots / directory
        try:
            if dest.exists():  # a leftover of an install that never became active
                shutil.rmtree(dest)
            staging.rename(dest)
            fsync_directory(store.slots)
            fsync_directory(store.staging)
        except OSError as exc:
            raise StoreError(f"cannot move {target.label} into {dest}: {describe(exc)}") from exc
        slot = Slot(
            version=target.version, directory=directory, target=target.path, installed_at=utc_now()
        )
        if state.active is not None and state.active.version != target.version:
            state.previous = state.active
        state.active = slot
        state.pending = None
        state.interrupted.pop(str(target.version), None)
        state.probation = Probation(version=target.version)
        state.last_error = None
        frames = self.section.probation_frames
        detail = f"installed {target.label}; on probation for {frames} frames"
        state.last_check = {"at": utc_now(), "outcome": "installed", "detail": detail}
        state.note("installed", detail, utc_now(), target.version)
        store.save(state)
        log.info("update: %s", detail)
        return slot

    # -- rollback and probation ---------------------------------------------------------------
    def rollback(self, reason: str, *, ban: bool = True) -> Slot:
        """Make the previous model active again; the one that served is removed and (``ban``)
        never installed again.

        Raises:
            StoreError: there is no previous model, or the store cannot be written.
        """
        with self.store.locked():
            self.store.recover()
            state = self.store.load()
            if state.active is None or state.previous is None:
                raise StoreError("no previous model to roll back to")
            failed = state.active
            state.active, state.previous = state.previous, None
            state.probation = None
            if ban:
                state.failed[str(failed.version)] = reason
            detail = f"rolled back from v{failed.version} to v{state.active.version}: {reason}"
            state.last_error = detail
            state.note("rolled-back", detail, utc_now(), failed.version)
            self.store.save(state)
            self.store.recover()
        log.warning("update: %s", detail)
        return state.active

    def start_probation(self) -> ProbationDecision | None:
        """At start-up: count a restart that did not follow a clean stop, then judge. None:
        no model is on probation."""
        with self.store.locked():
            state = self.store.load()
            probation = state.probation
            if probation is None:
                return None
            if probation.running:
                probation.unclean_restarts += 1
                state.note(
                    "unclean-restart",
                    f"restart {probation.unclean_restarts} without a clean stop during probation",
                    utc_now(),
                    probation.version,
                )
            probation.running = True
            self.store.save(state)
        return judge_probation(self._stats(probation), self.probation_settings())

    def record_probation(
        self, delta: ProbationStats, *, stopping: bool = False
    ) -> ProbationDecision | None:
        """Add ``delta`` to the counters of the model on probation, save them, and judge.
        ``stopping``: a clean stop (the next start is no crash). A ``pass`` ends probation."""
        with self.store.locked():
            state = self.store.load()
            probation = state.probation
            if probation is None:
                return None
            for name in (
                "frames", "errors", "watchdog_restarts", "shadow_compared", "shadow_agreed"
            ):
                setattr(probation, name, getattr(probation, name) + getattr(delta, name))
            if stopping:
                probation.running = False
            decision = judge_probation(self._stats(probation), self.probation_settings())
            if decision.verdict == "pass":
                state.probation = None
                state.note("trusted", decision.reason, utc_now(), probation.version)
                log.info("update: v%d %s", probation.version, decision.reason)
            self.store.save(state)
        return decision

    @staticmethod
    def _stats(probation: Probation) -> ProbationStats:
        return ProbationStats(
            frames=probation.frames,
            errors=probation.errors,
            unclean_restarts=probation.unclean_restarts,
            watchdog_restarts=probation.watchdog_restarts,
            shadow_compared=probation.shadow_compared,
            shadow_agreed=min(probation.shadow_agreed, probation.shadow_compared),
        )


def summary(state: StoreState) -> dict[str, Any]:
    """The store's state as ``/status`` and ``models list --json`` show it."""

    def slot(value: Slot | None) -> dict[str, Any] | None:
        return None if value is None else value.model_dump(mode="json")

    return {
        "active": slot(state.active),
        "previous": slot(state.previous),
        "pending": state.pending.model_dump(mode="json") if state.pending else None,
        "failed": {int(k): v for k, v in sorted(state.failed.items(), key=lambda i: int(i[0]))},
        "probation": state.probation.model_dump(mode="json") if state.probation else None,
        "last_error": state.last_error,
        "last_check": state.last_check,
    }





def agent_for_config(config: Any, **options: Any) -> UpdateAgent:
    """The agent for a runtime config's ``[update]`` section, on this device: its profile is
    ``[model] profile`` or the detected one, its runtime this one.

    Raises:
        ConfigError: the config has no ``[update]`` section, or its profile is unknown.
    """
    from devices import profile_for_this_device
    from edge_runtime import __version__
    from edge_runtime.artifacts import resolve_profile
    from edge_runtime.errors import ConfigError

    if config.update is None:
        raise ConfigError("update: this config has no [update] section (see docs/updates.md)")
    configured = config.model.profile
    profile = profile_for_this_device() if configured is None else resolve_profile(configured)
    options.setdefault("backend", config.model.backend)
    return UpdateAgent(
        config.update,
        profile=None if profile is None else profile.name,
        runtime_version=__version__,
        **options,
    )


def model_to_serve(config: Any, agent: UpdateAgent) -> tuple[str, str]:
    """The model a config with ``[update]`` serves, and where it comes from: the store's
    active slot; else ``[model] path`` (the factory model); else the newest eligible version,
    installed now.

    Raises:
        OtaError: the store is empty, there is no ``[model] path``, and nothing could be
            installed (the reason says why).
    """
    agent.recover()
    active = agent.store.active_path()
    if active is not None:
        return str(active), "the update store's active slot"
    if config.model.path is not None:
        return str(config.model.path), "[model] path (no update installed yet)"
    log.info("update: the store is empty and [model] path is not set: installing a model first")
    result = agent.check()
    active = agent.store.active_path()
    if active is None:
        raise StoreError(
            f"no model to serve: the update store is empty and {result.detail}; set [model] "
            "path to a factory model, or publish a version this device may take"
        )
    return str(active), "the update store's active slot (installed at start-up)"

__all__ = ["STAGES", "CheckResult", "UpdateAgent", "agent_for_config", "model_to_serve", "summary"]
