"""Training: run directories, weights choices, feature caching, devices, reports and bad input."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from exporter.augment import AugmentPolicy, augment_image, variant_rng
from exporter.cli import main
from exporter.commands.train import parse_input_size
from exporter.dataset import load_images, synthesize_dataset
from exporter.errors import TrainingError
from exporter.features import CACHE_ENV, FeatureCache, default_cache_dir
from exporter.report import evaluate, plot_confusion_matrix, plot_training_curves, top_k_accuracy
from exporter.train import (
    RUN_FILES,
    TrainConfig,
    _class_weights,
    resolve_mixed_precision,
    resolve_strategy,
    train,
)
from tests.exporter_fixtures import make_dataset, one_error_line, scenes_module

CONTRACT_KEYS = {
    "schema", "arch", "weights", "input", "labels", "data", "dataset_fingerprint", "epochs",
    "fine_tune_layers", "batch_size", "learning_rate", "seed", "group_pattern",
    "validation_accuracy", "test_accuracy", "created", "versions",
}  # fmt: skip


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three easy classes, 12 images each."""
    return make_dataset(tmp_path_factory.mktemp("shapes"), {"a": 12, "b": 12, "c": 12}, size=40)


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line, exit 1, nothing written (these fail before TensorFlow starts)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--arch", "inception_v3", "--input-size", "48"], "needs an input of at least 75x75"),
        (["--arch", "mobilenet_v2", "--input-size", "24"], "at least 32x32"),
        (["--weights", "missing.weights.h5"], "--weights: no file"),
        (["--arch", "tiny_cnn", "--weights", "imagenet"], "tiny_cnn has no ImageNet weights"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--input-size", "big"], "--input-size must be like 96"),
        (["--split", "0.5,0.5"], "--split must be three fractions"),
        (["--split", "0.5,0.3,0.3"], "must add up to 1"),
        (["--group-pattern", "(oops"], "not a valid regular expression"),
        (["--dropout", "1.0"], "--dropout"),
    ],
)
def test_bad_options_are_one_line(
    shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra, message: str
) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(shapes), "--out", str(out), "--weights", "none",
            "--arch", "tiny_cnn", "--input-size", "32", *extra]  # fmt: skip
    assert main(args) == 1
    assert message in one_error_line(capsys)
    assert not out.exists() and not out.with_name("run.partial").exists()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda root: root.mkdir(), "no images found"),
        (lambda root: make_dataset(root, {"only": 4}, size=8), "only one class"),
        (lambda root: (make_dataset(root, {"a": 4}, size=8), (root / "b").mkdir()), "holds no"),
        (lambda root: None, "does not exist"),
    ],
    ids=["no-images", "single-class", "empty-class", "missing"],
)
def test_bad_datasets_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], build, message: str
) -> None:
    data = tmp_path / "data"
    build(data)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--weights", "none",
            "--arch", "tiny_cnn", "--input-size", "32"]  # fmt: skip
    assert main(args) == 1
    assert message in one_error_line(capsys)


def test_run_directory_is_protected(
    shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "--data", str(shapes), "--weights", "none", "--arch", "tiny_cnn",
            "--input-size", "32"]  # fmt: skip
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    assert main([*base, "--out", str(busy)]) == 1
    assert "is not empty" in one_error_line(capsys)
    assert main([*base, "--out", str(busy), "--force"]) == 1
    assert "not a run directory" in one_error_line(capsys)
    assert (busy / "thesis.tex").read_text() == "precious"
    assert main([*base, "--out", str(shapes / "runs")]) == 1
    assert "inside the dataset" in one_error_line(capsys)


def test_help_has_a_real_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "edge-export train --data" in out and "--weights none" in out


# ---------------------------------------------------------------------------------------------
# Pure pieces


def test_parse_input_size() -> None:
    assert parse_input_size("96") == (96, 96)
    assert parse_input_size("96x128") == (96, 128)
    assert parse_input_size(None) is None
    for bad in ("0", "9x", "x", "-3"):
        with pytest.raises(TrainingError):
            parse_input_size(bad)


def test_device_choices() -> None:
    assert resolve_mixed_precision("auto", gpus=0) is False
    assert resolve_mixed_precision("auto", gpus=1) is True
    assert resolve_mixed_precision("on", gpus=0) is True
    assert resolve_mixed_precision("off", gpus=4) is False
    assert resolve_strategy("auto", gpus=0) == "none"
    assert resolve_strategy("auto", gpus=1) == "none"
    assert resolve_strategy("auto", gpus=2) == "mirrored"
    assert resolve_strategy("multi-worker", gpus=0) == "multi-worker"
    with pytest.raises(TrainingError):
        resolve_strategy("parameter-server", gpus=0)


def test_class_weights_balance_the_loss() -> None:
    targets = np.array([0] * 30 + [1] * 10)
    weights = _class_weights(targets, 2, enabled=True)
    assert weights[targets].sum() == pytest.approx(40.0)
    assert weights[0] * 30 == pytest.approx(weights[1] * 10)
    assert (_class_weights(targets, 2, enabled=False) == 1).all()


def test_augmentation_is_repeatable_and_stays_uint8() -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    policy = AugmentPolicy()
    first = augment_image(image, variant_rng("ab" * 32, 1), policy)
    again = augment_image(image, variant_rng("ab" * 32, 1), policy)
    other = augment_image(image, variant_rng("ab" * 32, 2), policy)
    assert first.dtype == np.uint8 and first.shape == image.shape
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other) and not np.array_equal(first, image)
    still = AugmentPolicy(rotation=0, zoom=0, shift=0, brightness=0, contrast=0)
    np.testing.assert_array_equal(augment_image(image, variant_rng("00", 1), still), image)


def test_feature_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = {"arch": "tiny_cnn", "input_size": [32, 32], "weights": "file:abc"}
    cache = FeatureCache(tmp_path, identity)
    vector = np.arange(5, dtype=np.float32)
    assert cache.get("f00d" * 16, 0) is None
    cache.put("f00d" * 16, 0, vector)
    np.testing.assert_array_equal(FeatureCache(tmp_path, identity).get("f00d" * 16, 0), vector)
    assert FeatureCache(tmp_path, {**identity, "weights": "file:xyz"}).get("f00d" * 16, 0) is None
    assert cache.get("f00d" * 16, 1) is None
    assert (cache.hits, cache.misses) == (0, 2)
    assert not list(tmp_path.rglob("*.tmp"))
    assert FeatureCache(None, identity).get("f00d" * 16, 0) is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"


def test_metrics() -> None:
    probabilities = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]], dtype=float
    )
    truth = np.array([0, 2, 2, 1])
    assert top_k_accuracy(probabilities, truth, 1) == pytest.approx(0.5)
    assert top_k_accuracy(probabilities, truth, 2) == pytest.approx(1.0)
    result = evaluate(probabilities, truth, ["x", "y", "z"], paths=["p0", "p1", "p2", "p3"])
    assert result["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert result["per_class"]["x"] == {"precision": 0.5, "recall": 1.0, "f1": 0.666667,
                                        "support": 1}  # fmt: skip
    assert result["per_class"]["z"]["recall"] == 0.5 and result["top5_k"] == 3
    assert [m["path"] for m in result["mistakes"]] == ["p1", "p3"]


def test_plots_are_png(tmp_path: Path) -> None:
    plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cm.png", "title")
    phases = [("head", {"loss": [1.0, 0.5], "accuracy": [0.5, 0.8], "val_loss": [1.1, 0.7],
                        "val_accuracy": [0.4, 0.7]}),
              ("fine-tune", {"loss": [0.4], "accuracy": [0.9], "val_loss": [0.6],
                             "val_accuracy": [0.75]})]  # fmt: skip
    plot_training_curves(phases, tmp_path / "curves.png")
    for name in ("cm.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# Real training (TensorFlow)


@pytest.mark.tensorflow
def test_from_scratch_on_synthetic_scenes_beats_chance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    data = tmp_path / "banknotes"
    summary = synthesize_dataset(
        "banknotes", data, per_class=30, size=32, seed=3, scenes=scenes_module()
    )
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--out", str(out), "--arch", "tiny_cnn",
                 "--weights", "none", "--input-size", "32", "--epochs", "8",
                 "--learning-rate", "0.003", "--quiet", "--json"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    chance = 1 / len(summary.labels)
    # 30 validation images; runs with seeds 0-2 reached 0.77-0.83. Needing 13 of 30 (2.5x
    # chance) fails with probability 5e-5 if the true rate is 0.75 (binomial), and 0.02 even
    # at 0.6: a CPU's different float rounding cannot move a run that far.
    assert result["images"]["val"] == 30
    assert result["validation_accuracy"] >= 2.5 * chance, result
    assert result["training_mode"] == "end-to-end"

    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    assert not out.with_name("run.partial").exists()
    run = json.loads((out / "run.json").read_text())
    assert CONTRACT_KEYS <= set(run) and run["schema"] == 2
    assert run["weights"] == "none"
    assert run["input"] == {"height": 32, "width": 32, "channels": 3, "color": "RGB",
                            "resize": "squash", "interpolation": "area", "fill": 0}  # fmt: skip
    assert run["data"] == str(data.resolve()) and len(run["dataset_fingerprint"]) == 64
    labels = (out / "labels.txt").read_text().splitlines()
    assert labels == run["labels"] == sorted(summary.labels)

    # The saved model loads without custom objects and takes raw float32 pixels 0..255.
    model = keras.saving.load_model(out / "model.keras")
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, len(labels))
    splits = json.loads((out / "splits.json").read_text())
    assert splits["root"] == run["data"]
    from edge_runtime.preprocess import PreprocessSpec

    images = load_images([Path(splits["root"]) / p for p, _ in splits["test"]],
                         PreprocessSpec(32, 32, "squash", "area"))  # fmt: skip
    probabilities = model.predict(images.astype(np.float32), verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    truth = np.array([labels.index(label) for _, label in splits["test"]])
    report = json.loads((out / "report.json").read_text())
    assert report["top1"] == pytest.approx(np.mean(probabilities.argmax(1) == truth), abs=1e-6)
    assert report["top1"] == run["test_accuracy"]
    assert len(report["confusion_matrix"]) == len(labels) and set(report["per_class"]) == set(
        labels
    )


@pytest.mark.tensorflow
def test_weights_file_feature_cache_and_fine_tuning(shapes: Path, tmp_path: Path) -> None:
    import keras

    backbone = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    weights = tmp_path / "mnv3s.weights.h5"
    backbone.save_weights(weights)
    cache = tmp_path / "cache"
    config = TrainConfig(
        data=shapes, out=tmp_path / "run", arch="mobilenet_v3_small", weights=str(weights),
        input_size=(32, 32), epochs=3, batch_size=16, augment_variants=1, fine_tune_layers=6,
        fine_tune_epochs=1, cache_dir=cache, seed=1,
    )  # fmt: skip
    result = train(config)
    run = result.run
    assert run.weights == "mnv3s.weights.h5" and run.weights_identity.startswith("file:")
    assert run.training_mode == "frozen-features+fine-tune"
    assert [p["name"] for p in run.phases] == ["head", "fine-tune"]
    computed = 2 * run.images["train"] + run.images["val"]
    assert run.feature_cache is not None
    assert run.feature_cache["misses"] == computed and run.feature_cache["hits"] == 0
    assert len(list(cache.rglob("*.npy"))) == computed

    # The frozen bottom of the backbone still holds the file's weights.
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras")
    first_conv = saved.get_layer("mobilenet_v3_small").get_layer("conv")
    np.testing.assert_array_equal(
        first_conv.get_weights()[0], backbone.get_layer("conv").get_weights()[0]
    )

    again = train(TrainConfig(**{**config.__dict__, "fine_tune_layers": 0, "force": True})).run
    assert again.feature_cache == {**run.feature_cache, "hits": computed, "misses": 0}
    assert again.training_mode == "frozen-features"


@pytest.mark.tensorflow
def test_weights_of_another_network_are_one_line(
    shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    other = tmp_path / "mnv2.weights.h5"
    keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(other)
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not hdf5")
    base = ["train", "--data", str(shapes), "--out", str(tmp_path / "run"), "--quiet",
            "--input-size", "32", "--arch", "mobilenet_v3_small"]  # fmt: skip
    for path in (other, junk):
        args = [*base, "--weights", str(path)]
        assert main(args) == 1
        line = one_error_line(capsys)
        assert f"--weights {path.name} does not hold weights of the mobilenet_v3_small" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.tensorflow
def test_imagenet_without_internet_names_the_alternatives(
    shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras-home"))
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    args = ["train", "--data", str(shapes), "--out", str(tmp_path / "run"), "--quiet",
            "--input-size", "32", "--arch", "mobilenet_v3_small"]  # fmt: skip
    args += ["--weights", "imagenet"]
    assert main(args) == 1
    line = one_error_line(capsys)
    assert "cannot download the ImageNet weights" in line
    assert "--weights PATH" in line and "--weights none" in line


@pytest.mark.tensorflow
def test_failed_run_leaves_the_previous_run_alone(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.train as train_module

    out = tmp_path / "run"
    config = TrainConfig(data=shapes, out=out, arch="tiny_cnn", weights="none",
                         input_size=(16, 16), epochs=1, batch_size=16)  # fmt: skip
    train(config)
    before = (out / "run.json").read_bytes()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_module, "plot_training_curves", disk_full)
    with pytest.raises(OSError):
        train(TrainConfig(**{**config.__dict__, "force": True, "seed": 5}))
    assert (out / "run.json").read_bytes() == before
    assert not out.with_name("run.partial").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)


@pytest.mark.tensorflow
def test_mixed_precision_and_mirrored_strategy_on_the_cpu(shapes: Path, tmp_path: Path) -> None:
    import keras

    config = TrainConfig(data=shapes, out=tmp_path / "run", arch="tiny_cnn", weights="none",
                         input_size=(16, 16), epochs=1, batch_size=16, mixed_precision="on",
                         strategy="mirrored")  # fmt: skip
    run = train(config).run
    assert run.mixed_precision is True
    assert run.strategy == "mirrored" and run.replicas == 1
    assert keras.mixed_precision.global_policy().name == "float32"
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras")
    policies = {layer.dtype_policy.name for layer in saved.layers}
    policies |= {layer.dtype_policy.name for layer in saved.get_layer("tiny_cnn").layers}
    assert policies == {"float32"}
    assert saved.output.dtype == "float32"


@pytest.mark.tensorflow
def test_head_learns_from_pretrained_features(tmp_path: Path) -> None:
    # A backbone trained on these classes, saved as a weights file, is a "pretrained" one: the
    # frozen-feature path must reach a high accuracy with the head alone.
    import keras

    shapes = make_dataset(tmp_path / "shapes", {"a": 40, "b": 40, "c": 40}, size=40)
    scratch = TrainConfig(data=shapes, out=tmp_path / "scratch", arch="tiny_cnn",
                          weights="none", input_size=(32, 32), epochs=6, batch_size=16,
                          learning_rate=0.003)  # fmt: skip
    train(scratch)
    weights = tmp_path / "tiny.weights.h5"
    keras.saving.load_model(tmp_path / "scratch" / "model.keras").get_layer(
        "tiny_cnn"
    ).save_weights(weights)
    transfer = train(
        TrainConfig(data=shapes, out=tmp_path / "transfer", arch="tiny_cnn", weights=str(weights),
                    input_size=(32, 32), epochs=15, batch_size=16, learning_rate=0.01,
                    cache_dir=tmp_path / "cache")  # fmt: skip
    ).run
    assert transfer.training_mode == "frozen-features"
    assert transfer.validation_accuracy is not None
    # 18 validation images (15% of 40 a class); runs seen got them all right. If the true
    # rate were as low as 95%, 15 or more right (>= 0.8) would still come with probability
    # 0.989 (binomial), so the bound holds whatever rounding a CPU's kernels do.
    assert transfer.images["val"] == 18
    assert transfer.validation_accuracy >= 0.8, transfer.phases
