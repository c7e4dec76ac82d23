"""A tiny but real training run directory for export tests (see the run-directory contract).

Three classes of noisy PNG images with random occluding boxes: the class channel is brighter by
``CLASS_GAIN``, but each image also has its own random tint per channel (``TINT``), so the classes
overlap. The best possible top-1 is about 85-90%: a trained model has images close to its decision
boundaries, where int8 rounding can change an answer, which is what the export tests must be able
to see (on well-separated data every artifact scores 100% and the gate has no work to do). A
two-layer conv net with the normalization inside the graph (Rescaling to [-1, 1]) learns it in a
few dozen steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.bundle import InputDescription
from edge_runtime.preprocess import PreprocessSpec, prepare_file
from exporter.runinfo import RunInfo

LABELS = ("red", "green", "blue sky")
INPUT_SIZE = (32, 32)
IMAGE_SHAPE = (40, 48)  # not the input size: the export must resize like the device
SPLIT_SIZES = {"train": 40, "val": 10, "test": 40}
CLASS_GAIN = 40.0
TINT = 20.0


def _image(rng: np.random.Generator, cls: int) -> np.ndarray:
    h, w = IMAGE_SHAPE
    image = rng.normal(90, 25, size=(h, w, 3)) + rng.normal(0, TINT, size=3)
    image[..., cls] += CLASS_GAIN
    # An occluding box of a random colour, at most a fifth of the image.
    bh, bw = rng.integers(4, h // 2), rng.integers(4, w // 2)
    y, x = rng.integers(0, h - bh), rng.integers(0, w - bw)
    image[y : y + bh, x : x + bw] = rng.integers(0, 256, size=3)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_dataset(root: Path, seed: int = 0) -> dict[str, list[list[str]]]:
    """Write class-per-folder PNGs under ``root``; returns the splits (relative paths)."""
    rng = np.random.default_rng(seed)
    splits: dict[str, list[list[str]]] = {name: [] for name in SPLIT_SIZES}
    for cls, label in enumerate(LABELS):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        number = 0
        for split, count in SPLIT_SIZES.items():
            for _ in range(count):
                rel = f"{label}/{number:03d}.png"
                rgb = _image(rng, cls)
                cv2.imwrite(str(root / rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                splits[split].append([rel, label])
                number += 1
    return splits


def build_model(num_classes: int = len(LABELS)):
    import keras

    inputs = keras.Input((*INPUT_SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def make_run_dir(out: Path, data: Path, seed: int = 0, epochs: int = 12) -> Path:
    """Write the dataset under ``data`` and a trained run directory at ``out``."""
    import keras

    splits = write_dataset(data, seed)
    spec = PreprocessSpec(*INPUT_SIZE, resize="squash", interpolation="area")

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([prepare_file(data / rel, spec) for rel, _ in splits[split]])
        y = np.array([LABELS.index(label) for _, label in splits[split]])
        return x.astype(np.float32), y

    keras.utils.set_random_seed(seed)
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x_train, y_train = arrays("train")
    x_val, y_val = arrays("val")
    model.fit(x_train, y_train, epochs=epochs, batch_size=24, verbose=0)
    val_accuracy = float(model.evaluate(x_val, y_val, verbose=0)[1])

    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    RunInfo(
        arch="tiny_cnn",
        weights="none",
        input=InputDescription(height=INPUT_SIZE[0], width=INPUT_SIZE[1]),
        labels=list(LABELS),
        data=str(data),
        dataset_fingerprint="0" * 64,
        epochs=epochs,
        batch_size=24,
        learning_rate=0.01,
        seed=seed,
        validation_accuracy=val_accuracy,
        created="2024-01-01T00:00:00+00:00",
        versions={"tensorflow": "test", "keras": keras.__version__},
    ).write(out / "run.json")
    (out / "splits.json").write_text(
        json.dumps({"root": str(data), **splits}, indent=2), encoding="utf-8"
    )
    return out
