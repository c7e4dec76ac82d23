"""Train/serve parity: the exporter feeds the model exactly the pixels the device prepares.

Training, validation, test and calibration images all come from ``exporter.dataset`` (read_images,
load_images, prepare_dataset); the device runs ``edge_runtime.preprocess.prepare_file``. For every
resize mode the two must agree bit for bit, as uint8 and as the float32 tensor the model gets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.preprocess import (
    RESIZE_MODES,
    PreprocessSpec,
    prepare_file,
    prepare_float,
    read_image,
)
from exporter.dataset import load_images, model_input, prepare_dataset, read_images
from tests.exporter_fixtures import TESTDATA, write_image


def textured(height: int, width: int, seed: int) -> np.ndarray:
    """Noise plus gradients: every resize mode and interpolation gives distinct pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256])
    noise = rng.integers(-40, 40, (3, height, width))
    return np.clip(base + noise, 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of odd-sized, non-square images in each format the loader reads."""
    root = tmp_path_factory.mktemp("parity")
    shapes = [(37, 61), (90, 33), (48, 48), (17, 200), (123, 77)]
    suffixes = [".png", ".jpg", ".bmp", ".webp", ".ppm"]
    for index, ((h, w), suffix) in enumerate(zip(shapes, suffixes)):
        for label in ("a", "b"):
            write_image(root / label / f"{label}{index}{suffix}", textured(h, w, index))
    gray = root / "a" / "gray.png"
    import cv2

    cv2.imwrite(str(gray), textured(29, 41, 9)[..., 0])
    return root


SPECS = [
    PreprocessSpec(32, 32, mode, interp)
    for mode in RESIZE_MODES
    for interp in ("area", "linear", "nearest")
] + [PreprocessSpec(24, 40, mode, "cubic") for mode in RESIZE_MODES]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.resize}-{s.interpolation}-{s.width}")
def test_exporter_images_equal_the_device_preprocessing(
    dataset: Path, spec: PreprocessSpec
) -> None:
    paths = sorted(dataset.rglob("*.*"))
    device = np.stack([prepare_file(path, spec) for path in paths])

    exported = load_images(paths, spec, workers=3)
    assert exported.dtype == np.uint8
    np.testing.assert_array_equal(exported, device)

    # The float tensor the model gets is the device's float path, exactly.
    device_float = np.stack([prepare_float(read_image(path), spec) for path in paths])
    np.testing.assert_array_equal(model_input(exported), device_float)
    assert model_input(exported).dtype == np.float32


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_training_splits_hold_the_device_pixels(dataset: Path, mode: str) -> None:
    spec = PreprocessSpec(28, 20, mode, "area")
    prepared = prepare_dataset(dataset, spec, fractions=(0.5, 0.25, 0.25), seed=1)
    for split in ("train", "val", "test"):
        paths = prepared.splits.paths(split)
        assert len(paths) == len(prepared.images[split]) > 0
        for image, path in zip(prepared.images[split], paths):
            np.testing.assert_array_equal(image, prepare_file(path, spec))


def test_thread_count_does_not_change_pixels(dataset: Path) -> None:
    paths = sorted(dataset.rglob("*.*"))
    spec = PreprocessSpec(32, 32, "letterbox", "linear")
    one = read_images(paths, spec, workers=1).images
    many = read_images(paths, spec, workers=8).images
    np.testing.assert_array_equal(one, many)


def test_real_photos_match_the_device_path() -> None:
    gtsrb = TESTDATA / "gtsrb"
    if not gtsrb.is_dir():
        pytest.skip(f"real photos not found at {gtsrb} (a fresh clone has none)")
    paths = sorted(gtsrb.rglob("*.png"))[::97]
    for mode in RESIZE_MODES:
        spec = PreprocessSpec(48, 48, mode, "area")
        device = np.stack([prepare_file(path, spec) for path in paths])
        np.testing.assert_array_equal(load_images(paths, spec), device)
