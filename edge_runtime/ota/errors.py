"""The OTA exceptions: one root (:class:`OtaError`), one subclass per kind of refusal.

Each carries a one-line ``reason`` for ``/status``, the log and the command line, and an
``exit_code`` that ``edge-runtime update`` exits with, so a script (or an operator reading
``$?``) can tell "try again later" from "this release was refused" without parsing text.
"""

from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError

#: ``edge-runtime update`` exit codes (documented in its --help)
EXIT_UP_TO_DATE = 0
EXIT_INSTALLED = 10
EXIT_ROLLED_BACK = 11


class OtaError(EdgeRuntimeError):
    """An update check or install that did not happen; the active model keeps serving."""

    exit_code = 20
    #: whether the version involved must never be tried again on this device
    bans_version = False

    @property
    def reason(self) -> str:
        return " ".join(str(self).split())


class RepositoryUnavailableError(OtaError):
    """The repository cannot be reached or answered too slowly, or a download broke off.
    Nothing is wrong with the release: the next check tries again."""

    exit_code = 20


class UntrustedMetadataError(OtaError):
    """The repository's metadata does not verify against the pinned root: an unknown key, a
    bad signature, a version older than one already seen (rollback), expired metadata (freeze),
    or garbage."""

    exit_code = 21


class TargetRefusedError(OtaError):
    """A downloaded bundle is not the one its signed metadata describes (length, sha256), or
    is larger than this device accepts."""

    exit_code = 22


class BundleRefusedError(OtaError):
    """A correctly signed bundle that is unsafe or wrong inside (a tampered manifest or
    artifact, unsafe tar members, a name or version other than its target's), or made for
    another runtime or device profile."""

    exit_code = 22
    bans_version = True


class SmokeTestFailedError(OtaError):
    """The new model failed its smoke test, or crashed or hung the child process running it."""

    exit_code = 23
    bans_version = True


class StoreError(OtaError):
    """The model store cannot be written (disk full, permissions) or its state is unreadable."""

    exit_code = 24


__all__ = [
    "EXIT_INSTALLED",
    "EXIT_ROLLED_BACK",
    "EXIT_UP_TO_DATE",
    "BundleRefusedError",
    "OtaError",
    "RepositoryUnavailableError",
    "SmokeTestFailedError",
    "StoreError",
    "TargetRefusedError",
    "UntrustedMetadataError",
]
