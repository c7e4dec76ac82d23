"""The lazy registry: nothing imported until chosen, missing extras named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge_runtime import registry
from edge_runtime.errors import MissingDependencyError, UnknownComponentError


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(
        UnknownComponentError, match="unknown backend 'tensorrt' .*litert, onnxruntime"
    ):
        registry.load("backend", "tensorrt")


def test_every_entry_names_a_module_of_ours() -> None:
    for kind in ("backend", "source", "sink"):
        for name in registry.names(kind):  # type: ignore[arg-type]
            target = registry.entry(kind, name).target  # type: ignore[arg-type]
            if target.startswith("tests."):
                continue  # a fake another test module registered (tests/fakes_service.py)
            assert target.startswith("edge_runtime.") and ":" in target


def test_missing_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes an import fail, also when an earlier test imported paho for real.
    for name in ("paho", "paho.mqtt", "paho.mqtt.client"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edge-classify\[mqtt\]'"):
        registry.require("paho.mqtt.client", "mqtt", "the MQTT sink")


def test_load_reports_missing_third_party_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sink_with_missing_dep.py").write_text("import not_installed_pkg\nThing = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(
        registry._ENTRIES["sink"],
        "needs-missing",
        registry.Entry("sink_with_missing_dep:Thing", "mqtt"),
    )
    with pytest.raises(MissingDependencyError, match=r"not_installed_pkg.*edge-classify\[mqtt\]"):
        registry.load("sink", "needs-missing")
    # A module of our own that is missing is a bug, not a missing extra: it is not disguised.
    monkeypatch.setitem(
        registry._ENTRIES["sink"],
        "broken",
        registry.Entry("edge_runtime.sinks.no_such_module:Thing", "mqtt"),
    )
    with pytest.raises(ModuleNotFoundError):
        registry.load("sink", "broken")


def test_importing_the_runtime_imports_no_backend() -> None:
    # Importing the package and the registry must not pull in any inference library.
    import subprocess

    code = (
        "import sys, edge_runtime, edge_runtime.registry, edge_runtime.bundle, "
        "edge_runtime.preprocess, devices;"
        "heavy = [m for m in ('onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'tensorflow',"
        " 'paho', 'prometheus_client', 'tuf') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
