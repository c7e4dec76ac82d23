"""Whether this runtime's version is inside a version range (PEP 440): one rule for every check.

A bundle's ``compatible.runtime`` is judged when it is loaded (:mod:`edge_runtime.selection`),
and a published target's ``runtime`` field when a device chooses an update
(:mod:`edge_runtime.ota.policy`); both must give the same answer, or a device would download a
model it then refuses to load. Pure: it needs only ``packaging``, so the OTA policy may use it.
"""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

#: the local version label of a runtime that runs from a source tree that was never installed
UNKNOWN_VERSION_LABEL = "unknown"


def known_version(text: str) -> Version | None:
    """``text`` as a version; ``None`` when it is not one, or is a source tree's
    (``0.0.0+unknown``), which does not know its version."""
    try:
        version = Version(text)
    except InvalidVersion:
        return None
    return None if version.local == UNKNOWN_VERSION_LABEL else version


def runtime_admits(spec: str | SpecifierSet, runtime_version: str) -> bool:
    """Whether the range ``spec`` (empty: any) admits the runtime ``runtime_version``.

    A pre-release or development build is judged as the release it belongs to: a 0.2 build,
    which PEP 440 orders before 0.2, must run what its own exporter writes for ``>=0.2``. A
    runtime that does not know its version (see :func:`known_version`) is not judged at all; a
    ``spec`` that is not a version range admits nothing.
    """
    version = known_version(runtime_version)
    if version is None:
        return True
    try:
        wanted = spec if isinstance(spec, SpecifierSet) else SpecifierSet(spec)
    except InvalidSpecifier:
        return False
    return wanted.contains(version.base_version, prereleases=True)


__all__ = ["UNKNOWN_VERSION_LABEL", "known_version", "runtime_admits"]
