"""The model store on the device: two slots (the active model and the previous one), a small
``state.json``, and the repository metadata cache.

::

    STORE/
      state.json          which slot serves, which one came before, the install in progress,
                          versions that failed here (and why), probation counters, last error
      slots/v7/ v6/       complete, smoke-tested bundle directories, one per version kept
      staging/            the bundle being unpacked and tested (never served)
      downloads/          the .tar being downloaded
      cache/metadata/     python-tuf's trusted metadata (the pinned root, then its successors)
      device-id           made once when update.device_id = "auto" and there is no machine id
      .lock               one writer at a time (the daemon and ``edge-runtime update``)

A slot directory is named after the version it holds and is never changed after it is moved
into ``slots/``: a new version is unpacked and tested in ``staging/`` and moved in with one
rename, and only then does ``state.json`` (written atomically: write, fsync, rename, fsync the
directory) say it is active. A crash at any point leaves a ``state.json`` that names complete
directories, the old ones or the new; :meth:`ModelStore.recover` removes whatever it does not
name. This is A/B with the slots named by content rather than by letter, so that the state can
never point at a slot whose content changed under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_runtime.errors import BundleError
from edge_runtime.fsutil import atomic_write, fsync_directory
from edge_runtime.inputfiles import describe
from edge_runtime.ota.errors import StoreError

STATE_NAME = "state.json"
STATE_SCHEMA = 1
#: events kept in the state's history
HISTORY = 30
#: an install interrupted this many times (crash, power cut, SIGKILL) is not tried again
MAX_INTERRUPTED_INSTALLS = 3
_MAX_STATE_BYTES = 1 << 20


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Slot(_Record):
    """One installed, smoke-tested version."""

    version: int
    directory: str = Field(description="Folder name under slots/.")
    target: str = ""
    installed_at: str = ""


class Pending(_Record):
    """An install in progress: the last boundary it passed."""

    version: int
    target: str
    stage: str


class Probation(_Record):
    """Counters of the model on probation (kept across restarts)."""

    version: int
    frames: int = 0
    errors: int = 0
    unclean_restarts: int = 0
    watchdog_restarts: int = 0
    shadow_compared: int = 0
    shadow_agreed: int = 0
    #: True while a daemon serves it; still True at start-up: the last one did not stop cleanly
    running: bool = False


class StoreState(_Record):
    """The whole ``state.json``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_version: int = Field(STATE_SCHEMA, alias="schema")
    active: Slot | None = None
    previous: Slot | None = None
    pending: Pending | None = None
    #: version (as text: JSON keys) -> why it failed; never installed again
    failed: dict[str, str] = Field(default_factory=dict)
    #: version -> installs of it that were interrupted
    interrupted: dict[str, int] = Field(default_factory=dict)
    probation: Probation | None = None
    last_error: str | None = None
    last_check: dict[str, Any] | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)

    def failed_versions(self) -> frozenset[int]:
        return frozenset(int(v) for v in self.failed if v.isdigit())

    def note(self, event: str, detail: str, at: str, version: int | None = None) -> None:
        """Add an event to the history (newest last)."""
        entry: dict[str, Any] = {"at": at, "event": event, "detail": detail}
        if version is not None:
            entry["version"] = version
        self.history = [*self.history, entry][-HISTORY:]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ModelStore:
    """The store at ``root`` (see the module docstring). Creating one touches nothing."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.state_path = self.root / STATE_NAME
        self.slots = self.root / "slots"
        self.staging = self.root / "staging"
        self.downloads = self.root / "downloads"
        self.cache = self.root / "cache"

    # -- files ------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the store's folders.

        Raises:
            StoreError: they cannot be created.
        """
        try:
            for folder in (self.root, self.slots, self.staging, self.downloads, self.cache):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the model store {self.root}: {describe(exc)}"
            ) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (blocking): one writer at a time, across processes.

        Raises:
            StoreError: the lock file cannot be opened.
        """
        self.ensure()
        try:
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot lock the model store {self.root}: {describe(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def load(self) -> StoreState:
        """The state (an empty one when the store has none yet).

        Raises:
            StoreError: ``state.json`` cannot be read or is not a store state.
        """
        try:
            with open(self.state_path, "rb") as handle:
                data = handle.read(_MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return StoreState()
        except OSError as exc:
            raise StoreError(f"cannot read {self.state_path}: {describe(exc)}") from None
        try:
            if len(data) > _MAX_STATE_BYTES:
                raise ValueError("too large")
            return StoreState.model_validate(json.loads(data))
        except (ValueError, ValidationError) as exc:
            raise StoreError(
                f"{self.state_path} is damaged ({type(exc).__name__}); move it away to start "
                "the store afresh"
            ) from None

    def save(self, state: StoreState) -> None:
        """Replace ``state.json`` atomically (write, fsync, rename, fsync the directory).

        Raises:
            StoreError: it cannot be written (the previous state is then untouched).
        """
        text = json.dumps(state.model_dump(mode="json", by_alias=True), indent=2) + "\n"
        try:
            atomic_write(self.state_path, text.encode())
        except OSError as exc:
            raise StoreError(f"cannot write {self.state_path}: {describe(exc)}") from None

    def slot_path(self, slot: Slot) -> Path:
        return self.slots / slot.directory

    def active_path(self) -> Path | None:
        """The active model's bundle directory, or None when nothing is installed.

        Raises:
            StoreError: the state cannot be read.
        """
        active = self.load().active
        return None if active is None else self.slot_path(active)

    # -- recovery -----------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Make the store consistent after a crash (take the lock first): an interrupted
        install is forgotten (and after MAX_INTERRUPTED_INSTALLS tries its version is
        failed), staging and downloads are emptied, slots the state does not name are removed,
        and an active slot that is not a complete bundle gives way to the previous one.
        Returns what it did, one line each.

        Raises:
            StoreError: the store cannot be read or written.
        """
        self.ensure()
        state = self.load()
        notes: list[str] = []
        changed = False
        if state.pending is not None:
            pending, key = state.pending, str(state.pending.version)
            count = state.interrupted.get(key, 0) + 1
            state.interrupted[key] = count
            state.pending = None
            changed = True
            detail = f"the install of v{pending.version} was interrupted after {pending.stage}"
            if count >= MAX_INTERRUPTED_INSTALLS:
                reason = (
                    f"its install was interrupted {count} times (the device crashed or lost "
                    "power while installing it)"
                )
                state.failed[key] = reason
                detail += f"; {reason}, so it is not tried again"
            notes.append(detail)
            state.note("interrupted", detail, utc_now(), pending.version)
        for slot_name in ("active", "previous"):
            slot: Slot | None = getattr(state, slot_name)
            if slot is None:
                continue
            problem = self.slot_problem(slot)
            if problem is None:
                continue
            changed = True
            notes.append(f"the {slot_name} slot v{slot.version} is unusable: {problem}")
            setattr(state, slot_name, None)
        if state.active is None and state.previous is not None:
            state.active, state.previous = state.previous, None
            notes.append(f"v{state.active.version} (the previous model) is active again")
        if state.probation is not None and (
            state.active is None or state.probation.version != state.active.version
        ):
            state.probation = None
            changed = True
        if changed:
            for line in notes:
                state.last_error = line
            self.save(state)
        keep = {s.directory for s in (state.active, state.previous) if s is not None}
        for folder in (self.staging, self.downloads):
            for entry in _entries(folder):
                _remove(entry)
        for entry in _entries(self.slots):
            if entry.name not in keep:
                _remove(entry)
                notes.append(f"removed the leftover slot {entry.name}")
        with contextlib.suppress(OSError):
            fsync_directory(self.slots)
        return notes

    def slot_problem(self, slot: Slot) -> str | None:
        """Why a slot's directory is not a complete bundle of its version (None: it is).

        Sizes are checked, not hashes: the directory was checked in full before it was moved
        into slots/, and loading the model checks the hashes again.
        """
        from edge_runtime.bundle import validate_directory

        path = self.slot_path(slot)
        if not path.is_dir():
            return f"{path} is missing"
        try:
            manifest = validate_directory(path, verify_hashes=False)
        except BundleError as exc:
            return str(exc)
        if manifest.version != slot.version:
            return f"{path} holds version {manifest.version}, not {slot.version}"
        return None

    def device_id(self) -> str:
        """A stable id for this device: a hash of ``/etc/machine-id`` (which must not be shown
        as it is), else a random id made once and kept in the store.

        Raises:
            StoreError: no machine id and the store cannot be written.
        """
        for source in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            with contextlib.suppress(OSError):
                text = Path(source).read_text(encoding="ascii", errors="replace").strip()
                if text:
                    digest = hashlib.sha256(f"edge-classify:{text}".encode()).hexdigest()
                    return digest[:16]
        kept = self.root / "device-id"
        with contextlib.suppress(OSError):
            text = kept.read_text(encoding="ascii", errors="replace").strip()
            if text:
                return text
        made = uuid.uuid4().hex[:16]
        self.ensure()
        try:
            atomic_write(kept, made.encode())
        except OSError as exc:
            raise StoreError(f"cannot write {kept}: {describe(exc)}") from None
        return made


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


__all__ = [
    "MAX_INTERRUPTED_INSTALLS",
    "STATE_NAME",
    "ModelStore",
    "Pending",
    "Probation",
    "Slot",
    "StoreState",
    "utc_now",
]
