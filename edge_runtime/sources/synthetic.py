"""Rendered scenes with known labels: ``synthetic:traffic-signs``, ``synthetic:banknotes``.

No hardware needed, and every frame carries its ``truth``, so the runtime can report accuracy. With
``fps`` the source behaves like a live camera (a capture thread at that rate, latest frame wins,
dropped frames counted); without it, like a file (every frame in order, as fast as they are read).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from pydantic import Field

from edge_runtime.errors import ConfigError, SourceError
from edge_runtime.sources.live import Captured, EndOfStream, LiveOptions, LiveSource
from edge_runtime.types import Frame


class SceneLike(Protocol):
    """What the source needs from ``edge_runtime.scenes.SceneStream``."""

    def frame(self, index: int) -> tuple[np.ndarray, str | None, dict[str, Any]]: ...


SceneFactory = Callable[..., SceneLike]


def parse_scenario(uri: str) -> str:
    """``synthetic:traffic-signs`` -> ``traffic-signs``.

    Raises:
        ConfigError: no scenario named.
    """
    scenario = uri.partition(":")[2].lstrip("/").split("?", 1)[0]
    if not scenario:
        raise ConfigError(
            "name a scenario after 'synthetic:', "
            "e.g. synthetic:traffic-signs or synthetic:banknotes"
        )
    return scenario


class SyntheticOptions(LiveOptions):
    """Options of ``synthetic:<scenario>``."""

    seed: int = Field(0, description="Same seed, same frames.")
    width: int = Field(640, ge=1, description="Frame width in pixels.")
    height: int = Field(480, ge=1, description="Frame height in pixels.")
    frames: int | None = Field(None, ge=0, description="Stop after this many; default endless.")
    fps: float | None = Field(
        None, gt=0, description="Pace like a live camera at this rate; default as fast as read."
    )


class SyntheticSource(LiveSource):
    """Deterministic rendered frames.

    Options: ``seed`` (same seed, same frames), ``width``, ``height``, ``frames`` (stop after this
    many; default endless), ``fps`` (pace like a live camera at this rate; default: as fast as
    read), ``scene_factory`` (replaces ``edge_runtime.scenes.SceneStream``), plus the
    ``LiveSource`` options for the paced mode.
    """

    Options = SyntheticOptions

    def __init__(
        self,
        uri: str,
        *,
        seed: int = 0,
        width: int = 640,
        height: int = 480,
        frames: int | None = None,
        fps: float | None = None,
        scene_factory: SceneFactory | None = None,
        **live: Any,
    ) -> None:
        super().__init__(uri.split("?", 1)[0], **live)
        self.scenario = parse_scenario(uri)
        if fps is not None and fps <= 0:
            raise ConfigError(f"fps must be positive, got {fps}")
        if frames is not None and frames < 0:
            raise ConfigError(f"frames must not be negative, got {frames}")
        self.seed, self.width, self.height = int(seed), int(width), int(height)
        self.frames = frames
        self.fps = fps
        self.live = fps is not None
        self._scene_factory = scene_factory
        self._scene: SceneLike | None = None
        self._next_render = 0.0

    def _make_scene(self) -> SceneLike:
        factory = self._scene_factory
        if factory is None:
            from edge_runtime import scenes

            known = scenes.SCENARIOS
            if self.scenario not in known:
                raise SourceError(
                    f"unknown synthetic scenario '{self.scenario}' "
                    f"(known: {', '.join(sorted(known))})"
                )
            factory = scenes.SceneStream
        return factory(self.scenario, seed=self.seed, width=self.width, height=self.height)

    def open(self) -> None:
        """Build the scene (and start the paced capture thread when ``fps`` is set).

        Raises:
            SourceError: the scenario is unknown.
        """
        if self._scene is None:
            self._scene = self._make_scene()
        if self.live:
            super().open()
        else:
            self._opened = True

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame; None after ``frames`` frames (or after ``close()``).

        Raises:
            SourceError: the scenario is unknown.
        """
        if self.live:
            return super().read(timeout)
        if not self._opened:
            self.open()
        if self._closed or (self.frames is not None and self._next_index >= self.frames):
            return None
        captured = self._render()
        frame = Frame(
            image=captured.image,
            index=self._next_index,
            timestamp=time.monotonic(),
            source=self.uri,
            truth=captured.truth,
            meta=captured.meta,
        )
        self._next_index += 1
        self._count(captured=1, delivered=1)
        return frame

    def close(self) -> None:
        if self.live:
            super().close()
        self._closed = True

    @property
    def ended(self) -> bool:
        if self.live:
            return super().ended
        return self._closed or (self.frames is not None and self._next_index >= self.frames)

    def _render(self) -> Captured:
        assert self._scene is not None
        image, truth, meta = self._scene.frame(self._next_index)
        return Captured(image, truth, dict(meta))

    # -- paced (live) mode ---------------------------------------------------------------------
    def _connect(self) -> None:
        self._next_render = self._clock()

    def _capture(self) -> Captured | None:
        if self.frames is not None and self._next_index >= self.frames:
            raise EndOfStream
        assert self.fps is not None
        # A sensor exposes on its own clock whether or not anyone reads: wait for the next tick
        # without catching up on ticks missed while rendering was slow.
        now = self._clock()
        if self._next_render > now:
            self._sleep(self._next_render - now)
        self._next_render = max(self._next_render + 1.0 / self.fps, self._clock())
        return self._render()

    def preflight(self, devices: str = "/dev") -> list[str]:
        from edge_runtime import scenes

        if self._scene_factory is None and self.scenario not in scenes.SCENARIOS:
            raise SourceError(
                f"unknown synthetic scenario '{self.scenario}' "
                f"(known: {', '.join(sorted(scenes.SCENARIOS))})"
            )
        return []

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "scenario": self.scenario,
            "seed": self.seed,
            "fps": self.fps,
        }
