"""``edge-export build RECIPE.toml``: validation, and stages that rerun only when their inputs
change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.errors import RecipeError
from exporter.recipe import load_recipe

RECIPE = """\
name = "signs"
version = 1
workdir = "work"

[dataset]
scenario = "banknotes"
per_class = {per_class}
size = 32
seed = 1

[train]
arch = "tiny_cnn"
weights = "none"
input_size = [32, 32]
epochs = {epochs}
batch_size = 16
patience = 0
augment_variants = 0
min_per_class = 4

[export]
out = "bundles/signs"
formats = ["tflite-fp32", "tflite-int8"]
calibration_images = 20
allow_accuracy_drop = true
threshold = {threshold}
"""


def _write(path: Path, per_class: int = 8, epochs: int = 1, threshold: float = 0.5) -> Path:
    path.write_text(RECIPE.format(per_class=per_class, epochs=epochs, threshold=threshold))
    return path


def test_recipe_is_validated_with_clear_messages(tmp_path: Path) -> None:
    recipe = load_recipe(_write(tmp_path / "r.toml"))
    assert recipe.data_dir == tmp_path / "work" / "data"
    assert recipe.bundle_dir == tmp_path / "bundles" / "signs"
    assert recipe.train.arch == "tiny_cnn" and recipe.train.input_size == (32, 32)

    cases = {
        "name = \"signs\"\nversion = 1\nextra = 3\n[train]\n[export]\nout='b'\n": "extra: unknown",
        "name = \"signs\"\nversion = 0\n[train]\n[export]\nout='b'\n": "version: Input should be",
        "name = \"Signs\"\nversion = 1\n[train]\ndata='d'\n[export]\nout='b'\n": "not allowed",
        "name = \"s\"\nversion = 1\n[train]\nepoch = 3\ndata='d'\n[export]\nout='b'\n": (
            "train.epoch: unknown setting"
        ),
        "name = \"s\"\nversion = 1\n[train]\n[export]\nout='b'\n": "give a [dataset] section",
        "name = \"s\"\nversion = 1\n[train]\ndata='d'\n[export]\nout='b'\nformats=['x']\n": (
            "unknown format 'x'"
        ),
        "name = 's'\nversion = 1\n[train\n": "is not valid TOML",
    }
    for text, message in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(RecipeError, match=message.replace("[", r"\[")):
            load_recipe(path)
    with pytest.raises(RecipeError, match="no recipe at"):
        load_recipe(tmp_path / "missing.toml")


def test_build_cli_reports_a_bad_recipe_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "s"\nversion = 1\n[train]\ndata="d"\nepochz=2\n[export]\nout="b"\n')
    assert main(["build", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"edge-export: error: {path}: train.epochz: unknown setting"


@pytest.mark.tensorflow
def test_build_runs_each_stage_once_and_again_only_when_its_inputs_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_runtime.bundle import load_bundle

    recipe = _write(tmp_path / "signs.toml")

    def build() -> dict[str, str]:
        capsys.readouterr()
        assert main(["build", str(recipe)]) == 0
        captured = capsys.readouterr()
        lines = dict(line.split(": ", 1) for line in captured.out.splitlines())
        return {stage: status.split(" (")[0] for stage, status in lines.items()}

    assert build() == {"dataset": "ran", "train": "ran", "export": "ran"}
    bundle = tmp_path / "bundles" / "signs"
    with load_bundle(bundle) as loaded:
        assert (loaded.manifest.name, loaded.manifest.version) == ("signs", 1)
        assert [a.path for a in loaded.manifest.artifacts] == [
            "model-fp32.tflite",
            "model-int8.tflite",
        ]
        assert loaded.manifest.training is not None
        assert loaded.manifest.training.architecture == "tiny_cnn"
    stamp = json.loads((tmp_path / "work" / "stages" / "export.json").read_text())
    assert stamp["output"] == str(bundle) and len(stamp["inputs"]) == 64
    written = (bundle / "manifest.json").stat().st_mtime_ns

    capsys.readouterr()
    assert main(["build", str(recipe)]) == 0
    captured = capsys.readouterr()
    assert "export: up to date" in captured.err
    assert captured.out.splitlines() == [
        f"dataset: up to date ({tmp_path / 'work' / 'data'})",
        f"train: up to date ({tmp_path / 'work' / 'run'})",
        f"export: up to date ({bundle})",
    ]
    assert (bundle / "manifest.json").stat().st_mtime_ns == written

    # An export setting: only export runs again (and may replace the bundle it wrote).
    _write(recipe, threshold=0.7)
    assert build() == {"dataset": "up to date", "train": "up to date", "export": "ran"}
    with load_bundle(bundle) as loaded:
        assert loaded.manifest.thresholds.default == 0.7

    # A training setting: train and export run again, the dataset stays.
    _write(recipe, threshold=0.7, epochs=2)
    assert build() == {"dataset": "up to date", "train": "ran", "export": "ran"}

    # A lost output is rebuilt even though the settings did not change.
    import shutil

    shutil.rmtree(bundle)
    assert build() == {"dataset": "up to date", "train": "up to date", "export": "ran"}
