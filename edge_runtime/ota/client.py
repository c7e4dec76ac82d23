"""The update client: python-tuf's ``ngclient.Updater`` against the configured repository.

The trust decisions are python-tuf's: the metadata must chain to the root pinned at
provisioning (unknown keys and bad signatures are refused), versions never go back (rollback),
expired metadata is refused (freeze), every file is capped in length (endless data) and a
target must match its signed length and sha256. This module wires the updater to the device's
store (metadata cache, downloads), lists the verified targets as policy candidates, and turns
every refusal into one :class:`~edge_runtime.ota.errors.OtaError` with a one-line reason.

python-tuf's client looks targets up by path and has no listing: after ``refresh()`` the
targets metadata it verified is in its cache (it only writes what verified), which is where the
device reads every published version from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import tuf.api.exceptions as tuf_exceptions
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from edge_runtime.fsutil import atomic_write
from edge_runtime.inputfiles import describe
from edge_runtime.ota.errors import (
    OtaError,
    RepositoryUnavailableError,
    StoreError,
    TargetRefusedError,
    UntrustedMetadataError,
)
from edge_runtime.ota.policy import TargetCandidate, candidates_from_targets, repository_urls

#: python-tuf's limits on metadata files, kept (a bigger one is endless data)
METADATA_LIMITS = UpdaterConfig()


@dataclass(frozen=True)
class RepositoryListing:
    """What a verified refresh found: candidates, and targets that could not be read."""

    candidates: tuple[TargetCandidate, ...]
    problems: tuple[str, ...]
    root_version: int
    targets_version: int


def _connection_refused(exc: BaseException) -> str | None:
    """The reason when urllib3 could not connect at all (its NewConnectionError subclasses its
    connect *timeout*, so python-tuf reports a refused connection as a slow one)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        reason = getattr(seen, "reason", None)
        if type(seen).__name__ == "NewConnectionError":
            return str(seen).rpartition(": ")[2] or "connection failed"
        seen = reason if isinstance(reason, BaseException) else seen.__cause__
    return None


@contextmanager
def _translated(doing: str) -> Iterator[None]:
    """Raise python-tuf's and the system's errors as OtaErrors, ``doing`` saying what failed."""
    try:
        yield
    except OtaError:
        raise
    except tuf_exceptions.ExpiredMetadataError as exc:
        raise UntrustedMetadataError(
            f"{doing}: the repository's metadata has expired ({exc}): a freeze attack, or the "
            "publisher has not run `edge-export repo refresh`"
        ) from exc
    except tuf_exceptions.BadVersionNumberError as exc:
        raise UntrustedMetadataError(
            f"{doing}: the repository offers metadata older than this device has seen "
            f"({exc}): a rollback attack, or a stale mirror"
        ) from exc
    except tuf_exceptions.UnsignedMetadataError as exc:
        raise UntrustedMetadataError(
            f"{doing}: metadata not signed by the keys the pinned root trusts ({exc})"
        ) from exc
    except tuf_exceptions.LengthOrHashMismatchError as exc:
        raise TargetRefusedError(
            f"{doing}: the file does not match its signed length and sha256 ({exc}): changed "
            "on the server or in transit"
        ) from exc
    except tuf_exceptions.DownloadLengthMismatchError as exc:
        raise TargetRefusedError(f"{doing}: longer than its signed length ({exc})") from exc
    except tuf_exceptions.SlowRetrievalError as exc:
        refused = _connection_refused(exc)
        if refused is not None:
            raise RepositoryUnavailableError(f"{doing}: cannot connect ({refused})") from exc
        raise RepositoryUnavailableError(
            f"{doing}: the repository answered too slowly ({exc or 'timed out'})"
        ) from exc
    except tuf_exceptions.DownloadHTTPError as exc:
        raise RepositoryUnavailableError(
            f"{doing}: the repository answered HTTP {exc.status_code}"
        ) from exc
    except tuf_exceptions.DownloadError as exc:
        cause = exc.__cause__ or exc.__context__
        detail = f"{exc}: {cause}" if cause is not None else str(exc)
        raise RepositoryUnavailableError(f"{doing}: download failed ({detail})") from exc
    except tuf_exceptions.RepositoryError as exc:
        raise UntrustedMetadataError(
            f"{doing}: the repository's metadata is invalid ({type(exc).__name__}: {exc})"
        ) from exc
    except OSError as exc:
        raise StoreError(f"{doing}: {describe(exc)}") from exc


class UpdateClient:
    """One repository as seen from this device.

    ``cache``: where python-tuf keeps the metadata it trusts (``cache/metadata``) between
    checks; ``root``: the root pinned at provisioning, copied there on first use (after that
    the cache holds the newest root that chained to it, so key rotations carry over).
    ``fetcher``: the transport (see :func:`edge_runtime.ota.fetchers.fetcher_for`).
    """

    def __init__(
        self,
        url: str,
        root: str | os.PathLike[str],
        cache: str | os.PathLike[str],
        *,
        fetcher: FetcherInterface,
        max_bundle_bytes: int,
    ) -> None:
        self.url = url
        self.root = Path(root)
        self.metadata_dir = Path(cache) / "metadata"
        self.fetcher = fetcher
        self.max_bundle_bytes = max_bundle_bytes
        self._updater: Updater | None = None

    def _new_updater(self) -> Updater:
        metadata_url, targets_url = repository_urls(self.url)
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        trusted = self.metadata_dir / "root.json"
        if not trusted.exists():
            try:
                pinned = self.root.read_bytes()
            except OSError as exc:
                raise StoreError(
                    f"cannot read the pinned root {self.root}: {describe(exc)}"
                ) from None
            atomic_write(trusted, pinned)
        return Updater(
            metadata_dir=str(self.metadata_dir),
            metadata_base_url=metadata_url,
            target_base_url=targets_url,
            fetcher=self.fetcher,
            config=UpdaterConfig(
                root_max_length=METADATA_LIMITS.root_max_length,
                timestamp_max_length=METADATA_LIMITS.timestamp_max_length,
                snapshot_max_length=METADATA_LIMITS.snapshot_max_length,
                targets_max_length=METADATA_LIMITS.targets_max_length,
                app_user_agent="edge-runtime",
            ),
            bootstrap=trusted.read_bytes(),
        )

    def refresh(self) -> RepositoryListing:
        """Fetch and verify the repository's metadata; the targets it lists.

        Raises:
            RepositoryUnavailableError: unreachable, too slow, or a download broke off.
            UntrustedMetadataError: metadata that does not verify (keys, signatures,
                rollback, freeze, garbage).
            StoreError: the metadata cache cannot be written.
        """
        with _translated(f"checking {self.url}"):
            updater = self._new_updater()
            updater.refresh()
            data = json.loads((self.metadata_dir / "targets.json").read_bytes())
            root_version = json.loads((self.metadata_dir / "root.json").read_bytes())["signed"][
                "version"
            ]
        self._updater = updater
        candidates, problems = candidates_from_targets(data["signed"]["targets"])
        return RepositoryListing(
            candidates=candidates,
            problems=problems,
            root_version=int(root_version),
            targets_version=int(data["signed"]["version"]),
        )

    def download(self, candidate: TargetCandidate, dest: str | os.PathLike[str]) -> Path:
        """Download ``candidate`` (from the last :meth:`refresh`) to ``dest``, verified.

        Raises:
            TargetRefusedError: larger than this device accepts, or not matching its signed
                length and sha256.
            RepositoryUnavailableError: the download failed or was too slow.
            StoreError: ``dest`` cannot be written.
        """
        if candidate.length > self.max_bundle_bytes:
            raise TargetRefusedError(
                f"{candidate.label} is {candidate.length} bytes, more than this device accepts "
                f"(update.max_bundle_bytes = {self.max_bundle_bytes})"
            )
        updater = self._updater
        if updater is None:
            raise RuntimeError("refresh() before download()")
        with _translated(f"downloading {candidate.label}"):
            info = updater.get_targetinfo(candidate.path)
            if info is None:
                raise TargetRefusedError(f"{candidate.label}: no longer in the repository")
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            return Path(updater.download_target(info, filepath=os.fspath(dest)))


__all__ = ["METADATA_LIMITS", "RepositoryListing", "UpdateClient"]
