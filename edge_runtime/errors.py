"""The runtime's exceptions: one root, one subclass per kind of failure.

The CLI catches ``EdgeRuntimeError`` and prints its message as one line with a non-zero exit code,
so
every message here is written for the person at the terminal: what went wrong and what to do.
"""

from __future__ import annotations


class EdgeRuntimeError(Exception):
    """Root of every error the runtime raises on purpose."""


class ConfigError(EdgeRuntimeError):
    """A configuration value, command-line option or device profile is invalid."""


class BundleError(EdgeRuntimeError):
    """A model bundle is malformed, incomplete, tampered with, or unsafe to unpack."""


class IncompatibleBundleError(BundleError):
    """A valid bundle that this runtime version or device profile may not run (``compatible``)."""


class ModelError(EdgeRuntimeError):
    """A model file cannot be loaded or does not fit its labels or input description."""


class PreprocessError(EdgeRuntimeError):
    """An image cannot be decoded or prepared for the model."""


class BackendError(EdgeRuntimeError):
    """An inference backend failed to load a model or to run it."""


class SourceError(EdgeRuntimeError):
    """A frame source cannot be opened or has failed for good."""


class SinkError(EdgeRuntimeError):
    """A result sink cannot be opened."""


class OutputError(EdgeRuntimeError):
    """A result cannot be written or shown: an image file, a window where there is no display."""


class OutputClosedError(SinkError):
    """A sink's output has no reader any more (standard output piped into ``head``, which has
    exited): nothing more can be delivered there, so the run ends, as Unix tools do."""


class MissingDependencyError(EdgeRuntimeError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed: "
            f"{install_command(extra)}"
        )


def install_command(extra: str) -> str:
    """How to install an extra: ``pip install -e '.[mqtt]'`` where the runtime runs from a
    checkout (run from its folder), ``pip install 'edge-classify[mqtt]'`` elsewhere."""
    # No pathlib or os here: the pure OTA policy imports this module.
    checkout = __file__.rsplit("/", 2)[0]
    try:
        with open(f"{checkout}/pyproject.toml", encoding="utf-8") as handle:
            ours = 'name = "edge-classify"' in handle.read()
    except OSError:
        ours = False
    if ours:  # the package index's name too, for a copy of the tool taken elsewhere
        return (
            f"pip install -e '.[{extra}]' "
            f"(outside a checkout: pip install 'edge-classify[{extra}]')"
        )
    return f"pip install 'edge-classify[{extra}]'"


class UnknownComponentError(ConfigError):
    """A backend, source or sink was named that the runtime does not know."""


class ServiceError(EdgeRuntimeError):
    """A part of the long-running service cannot start (the status server's port is taken)."""
