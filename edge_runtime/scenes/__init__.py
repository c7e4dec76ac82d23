"""Synthetic scenes: labelled training images and camera-like streams of the same world.

Two scenarios, each with a fixed class list:

- ``traffic-signs``: a dashcam on a road; 13 signs and ``background``.
- ``banknotes``: a kiosk camera above a tray; four genuine denominations, ``counterfeit`` and
  ``empty``.

:func:`render_sample` draws one augmented training image of a class. :class:`SceneStream` plays an
endless dashcam or kiosk video with the truth of every frame. The two are designed together: at
every frame whose truth is not None, the stream frame squashed to a square model input looks like a
:func:`render_sample` image of that class (object size, position, aspect, backgrounds and lighting
lie inside the sample augmentation), so a model trained on samples classifies the stream.

Only numpy and OpenCV are used; every function is pure (randomness comes from the caller's
generator or the stream seed) and importing this package renders nothing.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.scenes import banknotes, signs
from edge_runtime.scenes.stream import CLEAR_FRAMES, FPS, SIGN_TRUTH_MIN_SIZE, SceneStream

SCENARIOS: tuple[str, ...] = ("traffic-signs", "banknotes")

_CLASSES: dict[str, tuple[str, ...]] = {
    "traffic-signs": signs.CLASSES,
    "banknotes": banknotes.CLASSES,
}

MIN_SAMPLE_SIZE = 16
MAX_SAMPLE_SIZE = 1024

__all__ = [
    "CLEAR_FRAMES",
    "FPS",
    "SCENARIOS",
    "SIGN_TRUTH_MIN_SIZE",
    "SceneStream",
    "class_names",
    "render_sample",
]


def class_names(scenario: str) -> list[str]:
    """The classes of ``scenario`` in their fixed order (the model's output order).

    Raises:
        ConfigError: ``scenario`` is not one of ``SCENARIOS``.
    """
    try:
        return list(_CLASSES[scenario])
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}"
        ) from None


def render_sample(scenario: str, label: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One labelled training image: RGB uint8, ``size`` x ``size`` x 3, fully augmented.

    The result depends only on the arguments and the state of ``rng`` (which it advances).

    Raises:
        ConfigError: unknown scenario or label, ``rng`` not a ``numpy.random.Generator``, or
            ``size`` outside 16..1024.
    """
    names = class_names(scenario)
    if label not in names:
        raise ConfigError(
            f"unknown class {label!r} for scenario {scenario}: choose one of {', '.join(names)}"
        )
    if not isinstance(rng, np.random.Generator):
        raise ConfigError("render_sample needs a numpy.random.Generator (numpy.random.default_rng)")
    if (
        isinstance(size, bool)
        or not isinstance(size, (int, np.integer))
        or not MIN_SAMPLE_SIZE <= size <= MAX_SAMPLE_SIZE
    ):
        raise ConfigError(
            f"sample size must be an integer in {MIN_SAMPLE_SIZE}..{MAX_SAMPLE_SIZE}, got {size!r}"
        )
    if scenario == "traffic-signs":
        return signs.render_sign_sample(label, rng, int(size))
    return banknotes.render_banknote_sample(label, rng, int(size))
