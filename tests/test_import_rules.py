"""Which half of python-tuf each side may use.

import-linter sees an external package only as a whole (``tuf``), so its contracts in
pyproject.toml say who may import python-tuf at all; this test says which parts: the device
(``edge_runtime``) only the client (``tuf.ngclient``, and ``tuf.api.exceptions`` to tell refusals
apart), never the repository and signing side, which only ``exporter.publish`` uses.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_ALLOWED = ("tuf.ngclient", "tuf.api.exceptions")
SIGNING = ("tuf.api", "tuf.repository", "securesystemslib")
PUBLISHER = "exporter/publish"


def publisher_files() -> list[Path]:
    return sorted((ROOT / PUBLISHER).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, at any depth (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_device_uses_only_the_tuf_client() -> None:
    offenders = []
    for path in sorted((ROOT / "edge_runtime").rglob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top in ("tuf", "securesystemslib") and not within(name, DEVICE_ALLOWED):
                # "from tuf.ngclient import Updater" also yields tuf.ngclient.Updater: fine.
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders


def test_only_the_publisher_signs() -> None:
    offenders = []
    publisher = set(publisher_files())
    for folder in ("edge_runtime", "exporter", "devices"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path in publisher:
                continue
            for name in imported_modules(path):
                if within(name, SIGNING) and not within(name, DEVICE_ALLOWED):
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders


def test_the_rules_see_the_publishers_imports() -> None:
    # The scan must find what it polices, or the tests above could never fail.
    files = publisher_files()
    assert ROOT / PUBLISHER / "__init__.py" in files and len(files) > 1
    names = set().union(*(imported_modules(path) for path in files))
    assert "tuf.api.metadata" in names and "securesystemslib.signer" in names
