"""The one configuration of postprocessing, and its defaults.

A runtime config file's ``[postprocess]`` section, the command line and a bundle's thresholds all
end up as one frozen :class:`PostprocessConfig`; the file section takes its defaults from here
(see ``edge_runtime.config.PostprocessSection.to_postprocess_config``), so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from edge_runtime.errors import ConfigError
from edge_runtime.postprocess.scores import Activation, check_activation

Smoothing = Literal["none", "ema", "majority"]
SMOOTHING: tuple[str, ...] = get_args(Smoothing)

#: Debounce on a stream of consecutive frames (a camera, a video, synthetic scenes): a label must
#: hold for two frames before it is announced, so a one-frame flicker (motion blur, a hand passing
#: the lens) fires no event and no actuator; it costs one frame of latency (33 ms at 30 fps).
STREAM_DEBOUNCE = 2
#: Debounce on still images (image files, a folder): each image is its own decision, and waiting
#: for a second image would never announce a label that only one image shows.
STILLS_DEBOUNCE = 1


def default_debounce(stills: bool) -> int:
    """The debounce a source calls for when the configuration leaves it open."""
    return STILLS_DEBOUNCE if stills else STREAM_DEBOUNCE


@dataclass(frozen=True)
class PostprocessConfig:
    """How raw scores become a decision.

    ``top_k``: classes reported per frame. ``activation``: ``auto`` (softmax only when the outputs
    are not probabilities), ``softmax`` or ``none``. ``threshold`` / ``per_class_thresholds``:
    minimum probability, below which the label is ``unknown``. ``smoothing``: ``ema`` averages
    probability rows over about ``window`` frames, ``majority`` takes the label most of the last
    ``window`` frames had. ``debounce``: frames a new label must hold before its event fires
    (default 1, every change at once: what a single image needs; a stream wants
    :data:`STREAM_DEBOUNCE`, which the runtime configuration picks for one).
    ``announce_unknown``: fire an event when ``unknown`` becomes the label too.
    ``allow`` / ``deny``: class names that may / may not be reported.
    ``independent``: every frame is its own decision (unrelated still images): nothing carries
    over from one frame to the next, so every confident frame is announced, even when the
    image before it showed the same class.

    Raises (constructor):
        ConfigError: an unknown activation or smoothing, or a count below 1.
    """

    top_k: int = 5
    activation: Activation = "auto"
    threshold: float = 0.0
    per_class_thresholds: Mapping[str, float] = field(default_factory=dict)
    smoothing: Smoothing = "none"
    window: int = 5
    debounce: int = STILLS_DEBOUNCE
    announce_unknown: bool = False
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    independent: bool = False

    def __post_init__(self) -> None:
        check_activation(self.activation)
        if self.smoothing not in SMOOTHING:
            raise ConfigError(
                f"unknown smoothing '{self.smoothing}' (choose {', '.join(SMOOTHING)})"
            )
        for name in ("top_k", "window", "debounce"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number, at least 1, got {value!r}")
