"""A device install: `pip install .[device]` into a fresh venv, without TensorFlow.

This is what a Raspberry Pi gets. Every runtime and device module must import there, profiles
must be packaged (a normal, non-editable install), and the real work (`edge-runtime run` on the
synthetic source, `edge-runtime classify` on a bundle's samples) must run there without ever
importing TensorFlow, Keras, tf2onnx or the exporter.

Such an import need not fail to be wrong: TensorFlow is not installed in the device venv, so an
`import tensorflow` raises ImportError, which code may catch and carry on (as an optional
fallback would), and the exporter *is* installed (it ships in the same distribution). So the
venv gets an import guard, installed only there: a `.pth` file that puts a meta-path finder in
front of every import, which writes each attempt to a log and refuses it. The tests read the
log, and check that the guard is alive before trusting its silence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "traffic-signs"
FORBIDDEN = ("tensorflow", "keras", "tf_keras", "tf2onnx", "exporter")
GUARD_LOG = "EDGE_IMPORT_GUARD_LOG"

# Loaded by site.py at the start of every interpreter of the device venv (see the module doc).
GUARD = f'''
"""Refuse and record imports of {", ".join(FORBIDDEN)} (a test's guard; not part of the product)."""
import os
import sys
import traceback

FORBIDDEN = {FORBIDDEN!r}


class ForbiddenImportGuard:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in FORBIDDEN:
            return None
        log = os.environ.get({GUARD_LOG!r})
        if log:
            frames = [f for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename]
            where = "".join(traceback.format_list(frames[-6:]))
            with open(log, "a", encoding="utf-8") as out:
                out.write(f"import {{name}} in {{sys.argv[:2]!r}}\\n{{where}}\\n")
        raise ImportError(f"{{name}} must never be imported on a device")


sys.meta_path.insert(0, ForbiddenImportGuard())
'''

PROBE = r"""
import importlib, json, pkgutil, sys
import edge_runtime, devices
names = []
for package in (edge_runtime, devices):
    names.append(package.__name__)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        names.append(info.name)
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # report every failure, not just the first
        failed[name] = f"{type(exc).__name__}: {exc}"
forbidden = sorted(m for m in sys.modules
                   if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "exporter"))
print(json.dumps({
    "modules": names, "failed": failed, "forbidden": forbidden,
    "profiles": devices.list_profiles(),
    "location": edge_runtime.__file__,
}))
"""


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("device-venv") / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    python = home / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{ROOT}[device]"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        pytest.fail(f"pip install .[device] failed:\n{output}")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert site != sysconfig.get_paths()["purelib"], "the guard goes into the device venv only"
    (Path(site) / "_forbidden_import_guard.py").write_text(GUARD, encoding="utf-8")
    (Path(site) / "forbidden-import-guard.pth").write_text(
        "import _forbidden_import_guard\n", encoding="utf-8"
    )
    return python


def run_guarded(
    python: Path, argv: list[str], log: Path, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (a venv script name or ``-c``) with the guard logging to ``log``."""
    program = [str(python.parent / argv[0])] if not argv[0].startswith("-") else [str(python)]
    args = argv[1:] if not argv[0].startswith("-") else argv
    # Run from an empty folder so the source tree is not on sys.path: the installed copy runs.
    return subprocess.run(
        [*program, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, GUARD_LOG: str(log)},
    )


def guard_report(log: Path) -> str:
    return log.read_text(encoding="utf-8") if log.exists() else ""


def test_the_guard_is_alive(device_venv: Path, tmp_path: Path) -> None:
    # A caught ImportError would hide the import from the command's result; the log still sees it.
    log = tmp_path / "guard.log"
    script = "try:\n    import keras.layers\nexcept ImportError:\n    pass\nimport exporter.cli"
    result = run_guarded(device_venv, ["-c", script], log, tmp_path)
    assert result.returncode != 0 and "must never be imported on a device" in result.stderr
    report = guard_report(log)
    assert "import keras in" in report and "import exporter in" in report


def test_device_install_has_no_tensorflow(device_venv: Path, tmp_path: Path) -> None:
    log = tmp_path / "guard.log"
    result = run_guarded(device_venv, ["-c", PROBE], log, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "site-packages" in report["location"], "the installed copy was tested, not the tree"
    assert report["failed"] == {}, report["failed"]
    assert report["forbidden"] == [], report["forbidden"]
    assert guard_report(log) == ""
    assert {"raspberry-pi-4", "jetson-orin-nano", "generic-x86_64"} <= set(report["profiles"])
    assert "edge_runtime.bundle" in report["modules"]
    # Installed distributions, not imports (which the guard refuses whether installed or not).
    names = (
        "import importlib.metadata as m; print(*(d.metadata['Name'] for d in m.distributions()))"
    )
    installed = run_guarded(device_venv, ["-c", names], log, tmp_path)
    heavy = {"tensorflow", "tensorflow-cpu", "keras", "tf-keras", "tf2onnx"}
    assert installed.returncode == 0 and "onnxruntime" in installed.stdout.lower().split()
    found = heavy & set(installed.stdout.lower().split())
    assert not found, f"the device extras must not install {sorted(found)}"


def test_device_install_has_the_console_script(device_venv: Path, tmp_path: Path) -> None:
    result = run_guarded(device_venv, ["edge-runtime", "--version"], tmp_path / "log", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("edge-runtime ")
    assert sys.version_info >= (3, 10)


@pytest.mark.parametrize("backend", ["auto", "onnxruntime"])
def test_run_on_the_synthetic_source(device_venv: Path, tmp_path: Path, backend: str) -> None:
    log = tmp_path / "guard.log"
    frames = 24
    result = run_guarded(
        device_venv,
        [
            "edge-runtime",
            "run",
            "--model",
            str(BUNDLE),
            "--backend",
            backend,
            "--source",
            "synthetic:traffic-signs",
            "--max-frames",
            str(frames),
            "--output",
            "jsonl",
        ],
        log,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert guard_report(log) == "", guard_report(log)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["frame"] for r in records] == list(range(frames))
    labels = (BUNDLE / "labels.txt").read_text(encoding="utf-8").split()
    assert all(r["label"] in [*labels, "unknown"] for r in records)


def test_classify_the_bundles_samples(device_venv: Path, tmp_path: Path) -> None:
    log = tmp_path / "guard.log"
    manifest = json.loads((BUNDLE / "manifest.json").read_text(encoding="utf-8"))
    samples = {str(BUNDLE / s["path"]): s["label"] for s in manifest["samples"]}
    for backend in ("litert", "onnxruntime"):
        result = run_guarded(
            device_venv,
            ["edge-runtime", "classify", *samples, "--model", str(BUNDLE)]
            + ["--backend", backend, "--json", "--top-k", "2"],
            log,
            tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        records = [json.loads(line) for line in result.stdout.splitlines()]
        # Every sample's top score leads the runner-up by more than 0.85 with either backend
        # (measured: 0.89 at the least), so no CPU's int8 or float rounding can flip one.
        got = {r["image"]: r["top"][0]["label"] for r in records}
        assert got == samples, backend
    assert guard_report(log) == "", guard_report(log)
