"""Small image datasets for the exporter's tests, written to temporary folders."""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

TESTDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "testdata"

# Distinct colors and shapes, so a small network learns the classes from scratch in a few epochs.
COLORS = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 40), (160, 60, 200)]


def class_image(class_index: int, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """An RGB uint8 image of class ``class_index``: a colored shape on a noisy background."""
    image = rng.integers(60, 140, (size, size, 3), dtype=np.uint8)
    color = tuple(int(c) for c in COLORS[class_index % len(COLORS)])
    center = (
        int(size / 2 + rng.integers(-size // 8, size // 8 + 1)),
        int(size / 2 + rng.integers(-size // 8, size // 8 + 1)),
    )
    radius = int(size * rng.uniform(0.25, 0.35))
    shape = class_index % 3
    if shape == 0:
        cv2.circle(image, center, radius, color, -1)
    elif shape == 1:
        cv2.rectangle(
            image,
            (center[0] - radius, center[1] - radius),
            (center[0] + radius, center[1] + radius),
            color,
            -1,
        )
    else:
        points = np.array(
            [
                [center[0], center[1] - radius],
                [center[0] - radius, center[1] + radius],
                [center[0] + radius, center[1] + radius],
            ],
            dtype=np.int32,
        )
        cv2.fillPoly(image, [points], color)
    return image


def write_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())
    return path


def make_dataset(
    root: Path,
    counts: dict[str, int],
    *,
    size: int = 40,
    seed: int = 0,
    suffix: str = ".png",
    name: str = "{label}_{index:04d}",
) -> Path:
    """Write ``counts[label]`` images per class folder under ``root``; returns ``root``."""
    rng = np.random.default_rng(seed)
    for class_index, (label, count) in enumerate(sorted(counts.items())):
        for index in range(count):
            file_name = name.format(label=label, index=index, cls=class_index) + suffix
            write_image(root / label / file_name, class_image(class_index, rng, size))
    return root


class StandInScenes(types.SimpleNamespace):
    """The ``edge_runtime.scenes`` API (SCENARIOS, class_names, render_sample), drawn simply."""

    SCENARIOS = ("traffic-signs", "banknotes")

    @staticmethod
    def class_names(scenario: str) -> list[str]:
        if scenario == "traffic-signs":
            return ["stop", "yield", "speed-limit-30", "no-entry"]
        return ["eur-5", "eur-10", "counterfeit"]

    @staticmethod
    def render_sample(scenario: str, label: str, rng: np.random.Generator, size: int) -> np.ndarray:
        return class_image(StandInScenes.class_names(scenario).index(label), rng, size)


def scenes_module() -> object:
    """The runtime's scene renderer when it is installed, else the stand-in."""
    try:
        module = importlib.import_module("edge_runtime.scenes")
    except ImportError:
        return StandInScenes()
    if not hasattr(module, "render_sample"):
        return StandInScenes()
    return module


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a failing edge-export command (and that there is only one)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("edge-export: error: ")
    return err[0]
