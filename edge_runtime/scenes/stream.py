"""Endless, deterministic camera-like streams of the scenarios, with the truth of every frame.

A stream is a sequence of *segments*, one object each (a sign passing a dashcam, a note put on a
kiosk tray). A segment's timing, object and look come from its own seed ``(seed, scenario,
segment)``, so ``frame(i)`` does not depend on which frames were asked for before. Backgrounds and
object sprites are rendered once per segment and cached; a frame only copies the background,
warps the sprite into it and adds sensor noise.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge_runtime.scenes import banknotes, signs
from edge_runtime.scenes.backgrounds import RoadLayout, draw_lane_dashes, road_scene, tray_scene
from edge_runtime.scenes.compose import (
    lighting_lut,
    lit_color,
    paste,
    quad,
    recolor_sprite,
)

FPS = 30
# Traffic signs: truth is the sign's label only while its height is at least this fraction of the
# frame height and the whole sign is in view (render_sample draws signs of 0.28..0.86).
SIGN_TRUTH_MIN_SIZE = 0.36
# Frames after an object has left during which the truth is None, so a smoothed classifier has time
# to let go of the last label before "background" / "empty" is expected.
CLEAR_FRAMES = 8
CROSSFADE_FRAMES = 30
BANKNOTE_CYCLE: tuple[str, ...] = (*banknotes.GENUINE, *banknotes.GENUINE, *(
    [banknotes.COUNTERFEIT] * 3))


def _ease_out(t: float) -> float:
    return 1.0 - (1.0 - t) ** 2


def _ease_in(t: float) -> float:
    return t * t


@dataclass(frozen=True)
class _Segment:
    """What happens in one segment: its object, its timing (frames) and its geometry."""

    index: int
    start: int
    label: str
    phases: tuple[tuple[str, int], ...]  # (phase name, frame count) in order
    params: dict[str, Any]

    @property
    def length(self) -> int:
        return sum(n for _, n in self.phases)

    def locate(self, offset: int) -> tuple[str, int, int]:
        """The phase at ``offset`` frames into the segment, the offset into it and its length."""
        for name, n in self.phases:
            if offset < n:
                return name, offset, n
            offset -= n
        name, n = self.phases[-1]
        return name, n - 1, n


class SceneStream:
    """A deterministic synthetic camera for one scenario, nominally at ``fps`` frames a second.

    ``frame(i)`` returns the RGB uint8 image (height x width x 3), the truth label (None while
    ambiguous) and a meta dict; it is the same for the same scenario, seed, size and index in any
    call order. ``truth(i)`` gives the same truth and meta without rendering.

    Each segment runs through phases (``meta["phase"]``) with these truths:

    - traffic-signs: ``clear`` (None, 8 frames after the last sign left) -> ``background``
      (``"background"``) -> ``enter`` (None: a sign appears at the vanishing point and grows) ->
      ``approach`` (the sign's label, once its height is at least ``SIGN_TRUTH_MIN_SIZE`` of the
      frame height with the whole sign in view) -> ``hold`` (the label; the sign stays still) ->
      ``leave`` (None: it slides out of the side of the frame). Signs come in shuffled rounds of
      all 13, so every sign shows within 26 segments.
    - banknotes: ``clear`` (None) -> ``empty`` (``"empty"``) -> ``insert`` (None: the note slides
      in) -> ``hold`` (``genuine-N`` or ``counterfeit``) -> ``remove`` (None). Notes come in
      shuffled rounds of 11: each denomination twice and three counterfeits (27%).

    Meta keys: ``scenario``, ``segment``, ``phase``, ``object`` (label of the object visible in
    the frame, else None), ``coverage`` (fraction of the frame the object covers), ``bbox``
    (visible pixel box ``[x0, y0, x1, y1]`` or None), ``in_view`` (the whole object is in the
    frame); traffic-signs add ``size`` (sign height / frame height), banknotes add
    ``denomination`` and ``defects`` (of the visible note).

    Raises:
        ConfigError: unknown scenario, negative seed or a frame size outside 32..4096.
    """

    fps = FPS

    def __init__(
        self, scenario: str, *, seed: int = 0, width: int = 640, height: int = 480
    ) -> None:
        from edge_runtime.errors import ConfigError
        from edge_runtime.scenes import SCENARIOS, class_names

        self.labels = class_names(scenario)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"the scene seed must be a non-negative integer, got {seed!r}")
        for name, value in (("width", width), ("height", height)):
            if not isinstance(value, (int, np.integer)) or not 32 <= value <= 4096:
                raise ConfigError(f"the scene {name} must be an integer in 32..4096, got {value!r}")
        self.scenario = scenario
        self.seed = int(seed)
        self.width = int(width)
        self.height = int(height)
        self._code = SCENARIOS.index(scenario) + 1
        self._starts: list[int] = [0]
        self._plans: dict[int, _Segment] = {}
        self._assets: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._noise: tuple[np.ndarray, np.ndarray] | None = None
        self._static: tuple[tuple[Any, ...], np.ndarray] | None = None
        self._tray_image: np.ndarray | None = None
        self._lock = threading.RLock()
        stream_rng = self._rng(0, 0)
        self._layout = RoadLayout.random(stream_rng)

    # -- timeline -------------------------------------------------------------------------------

    def _rng(self, kind: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._code, kind, index])

    def _segment(self, k: int) -> _Segment:
        plan = self._plans.get(k)
        if plan is None:
            # Segments are planned in order because each starts where the previous one ended.
            while len(self._starts) <= k:
                prev = len(self._starts) - 1
                self._starts.append(self._starts[prev] + self._segment(prev).length)
            rng = self._rng(1, k)
            if self.scenario == "traffic-signs":
                plan = self._plan_sign(k, self._starts[k], rng)
            else:
                plan = self._plan_note(k, self._starts[k], rng)
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[k] = plan
        return plan

    def _segment_at(self, index: int) -> tuple[_Segment, int]:
        while self._starts[-1] + self._segment(len(self._starts) - 1).length <= index:
            last = len(self._starts) - 1
            self._starts.append(self._starts[last] + self._segment(last).length)
        k = bisect.bisect_right(self._starts, index) - 1
        seg = self._segment(k)
        return seg, index - seg.start

    def _cycle_label(self, k: int, cycle: tuple[str, ...]) -> str:
        order = self._rng(2, k // len(cycle)).permutation(len(cycle))
        return cycle[int(order[k % len(cycle)])]

    def _plan_sign(self, k: int, start: int, rng: np.random.Generator) -> _Segment:
        label = self._cycle_label(k, signs.SIGN_CLASSES)
        w, h = self.width, self.height
        side = 1 if rng.random() < 0.7 else -1
        yaw = float(rng.uniform(0.85, 1.0))
        size = float(rng.uniform(0.44, 0.62))
        margin = 0.03
        vx = self._layout.vanish_x * w
        # Signs stand beside the road: offset from the vanishing point, but fully in the frame.
        room = (w - vx) if side > 0 else vx
        size = min(size, 2 * (room - margin * w - 0.1 * w) / (h * yaw))
        half_w, half_h = size * h * yaw / 2, size * h / 2
        max_offset = min(0.32 * w, room - margin * w - half_w)
        offset = float(rng.uniform(min(0.1 * w, max_offset), max_offset))
        hold_x = float(np.clip(vx + side * offset, half_w + margin * w, w - half_w - margin * w))
        hold_y = float(np.clip(rng.uniform(0.3, 0.5) * h, half_h + margin * h,
                               h - half_h - margin * h))
        phases = (
            ("clear", CLEAR_FRAMES),
            ("background", int(rng.integers(40, 100))),
            ("drive", int(rng.integers(45, 75))),
            ("hold", int(rng.integers(45, 90))),
            ("leave", int(rng.integers(10, 18))),
        )
        params = {
            "side": side,
            "yaw": yaw,
            "size": size,
            "hold": (hold_x, hold_y),
            "angle": float(rng.uniform(-4, 4)),
            "start_size": 0.05,
        }
        return _Segment(k, start, label, phases, params)

    def _plan_note(self, k: int, start: int, rng: np.random.Generator) -> _Segment:
        label = self._cycle_label(k, BANKNOTE_CYCLE)
        denom = int(label.split("-")[1]) if label != banknotes.COUNTERFEIT else int(
            rng.choice(banknotes.DENOMINATIONS))
        defects = banknotes.random_defects(rng) if label == banknotes.COUNTERFEIT else ()
        w, h = self.width, self.height
        phases = (
            ("clear", CLEAR_FRAMES),
            ("empty", int(rng.integers(30, 60))),
            ("insert", int(rng.integers(18, 30))),
            ("hold", int(rng.integers(60, 100))),
            ("remove", int(rng.integers(14, 22))),
        )
        params = {
            "denomination": denom,
            "defects": defects,
            "width": float(rng.uniform(0.62, 0.8)) * w,
            "hold": (w / 2 + float(rng.uniform(-0.06, 0.06)) * w,
                     h / 2 + float(rng.uniform(-0.05, 0.05)) * h),
            "angle": float(rng.uniform(-6, 6)),
            "tilt": float(rng.uniform(-8, 8)),
            "from": "bottom" if rng.random() < 0.7 else "right",
        }
        return _Segment(k, start, label, phases, params)

    # -- geometry and truth ----------------------------------------------------------------------

    def _sign_geometry(self, seg: _Segment, phase: str, t: float) -> tuple[np.ndarray, float]:
        """Corners of the sign and its height as a fraction of the frame height."""
        p = seg.params
        h = self.height
        vx, vy = self._layout.vanish_x * self.width, self._layout.horizon * h
        hx, hy = p["hold"]
        size = p["size"]
        if phase == "drive":
            # Constant speed toward the sign: its size grows as 1 / distance.
            ratio = p["size"] / p["start_size"]
            r = 1.0 / (ratio * (1.0 - t) + t)
            size = p["size"] * r
            cx, cy = vx + (hx - vx) * r, vy + (hy - vy) * r
        elif phase == "hold":
            cx, cy = hx, hy
        else:  # leave: slide out sideways while growing
            e = _ease_in(t)
            size = p["size"] * (1.0 + 0.5 * e)
            half_w = size * h * p["yaw"] / 2
            end_x = self.width + half_w + 2 if p["side"] > 0 else -half_w - 2
            cx = hx + (end_x - hx) * e
            cy = hy - 0.1 * h * e
        corners = quad(cx, cy, size * h * p["yaw"], size * h, p["angle"])
        return corners, size

    def _note_geometry(self, seg: _Segment, phase: str, t: float) -> np.ndarray:
        p = seg.params
        hx, hy = p["hold"]
        nw = p["width"]
        nh = nw * banknotes.NOTE_H / banknotes.NOTE_W
        if phase == "hold":
            return quad(hx, hy, nw, nh, p["angle"])
        e = _ease_out(t) if phase == "insert" else 1.0 - _ease_in(t)
        # Out of view: far enough past the edge that the rotated note and its shadow are hidden.
        reach = 0.75 * nw + 0.1 * nw
        if p["from"] == "bottom":
            sx, sy = hx, self.height + reach
        else:
            sx, sy = self.width + reach, hy
        cx, cy = sx + (hx - sx) * e, sy + (hy - sy) * e
        return quad(cx, cy, nw, nh, p["angle"] + p["tilt"] * (1.0 - e))

    def _describe(
        self, index: int
    ) -> tuple[_Segment, str, str | None, dict[str, Any], np.ndarray | None]:
        """Segment, phase, truth, meta and object corners of frame ``index`` (no rendering)."""
        seg, offset = self._segment_at(index)
        phase, into, n = seg.locate(offset)
        t = (into + 1) / n
        corners: np.ndarray | None = None
        size = 0.0
        if self.scenario == "traffic-signs":
            if phase in ("drive", "hold", "leave"):
                corners, size = self._sign_geometry(seg, phase, t)
            fill = signs.SIGN_FILL[seg.label]
        else:
            if phase in ("insert", "hold", "remove"):
                corners = self._note_geometry(seg, phase, t)
            fill = 1.0
        in_view = corners is not None and bool(
            corners.min() >= 0
            and corners[:, 0].max() <= self.width
            and corners[:, 1].max() <= self.height
        )
        truth: str | None = None
        if phase == "background":
            truth = signs.BACKGROUND
        elif phase == "empty":
            truth = banknotes.EMPTY
        elif phase == "drive":
            if in_view and size >= SIGN_TRUTH_MIN_SIZE:
                truth = seg.label
            phase = "approach" if truth is not None else "enter"
        elif phase == "hold" and in_view and (
            self.scenario == "banknotes" or size >= SIGN_TRUTH_MIN_SIZE
        ):
            truth = seg.label
        meta: dict[str, Any] = {
            "scenario": self.scenario,
            "segment": seg.index,
            "phase": phase,
            "object": None,
            "coverage": 0.0,
            "bbox": None,
            "in_view": False,
        }
        if corners is not None:
            x0, y0 = corners.min(0)
            x1, y1 = corners.max(0)
            vx0, vy0 = max(float(x0), 0.0), max(float(y0), 0.0)
            vx1, vy1 = min(float(x1), float(self.width)), min(float(y1), float(self.height))
            if vx1 > vx0 and vy1 > vy0:
                # The box's visible part times how much of its box the object fills.
                visible = (vx1 - vx0) * (vy1 - vy0) * fill
                meta["object"] = seg.label
                meta["coverage"] = round(visible / (self.width * self.height), 4)
                meta["bbox"] = [int(np.floor(vx0)), int(np.floor(vy0)), int(np.ceil(vx1)),
                                int(np.ceil(vy1))]
                meta["in_view"] = in_view
        if self.scenario == "traffic-signs":
            meta["size"] = round(size, 4) if meta["object"] else 0.0
        else:
            shown = meta["object"] is not None
            meta["denomination"] = seg.params["denomination"] if shown else None
            meta["defects"] = list(seg.params["defects"]) if shown else []
        return seg, phase, truth, meta, corners

    def truth(self, index: int) -> tuple[str | None, dict[str, Any]]:
        """The truth label and meta of frame ``index`` without rendering it.

        Raises:
            ConfigError: ``index`` is negative.
        """
        self._check_index(index)
        with self._lock:
            _, _, truth, meta, _ = self._describe(int(index))
        return truth, meta

    # -- rendering --------------------------------------------------------------------------------

    def _check_index(self, index: int) -> None:
        from edge_runtime.errors import ConfigError

        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ConfigError(f"frame index must be a non-negative integer, got {index!r}")

    def _segment_assets(self, seg: _Segment) -> dict[str, Any]:
        assets = self._assets.get(seg.index)
        if assets is not None:
            self._assets.move_to_end(seg.index)
            return assets
        rng = self._rng(3, seg.index)
        if self.scenario == "traffic-signs":
            bg, _ = road_scene(rng, self.height, self.width, self._layout)
            lut = lighting_lut(
                gain=float(rng.uniform(0.75, 1.15)),
                cast=tuple(float(v) for v in rng.uniform(0.95, 1.05, 3)),  # type: ignore[arg-type]
                contrast=float(rng.uniform(0.85, 1.05)),
                gamma=float(rng.uniform(0.9, 1.1)),
            )
            fade = float(rng.uniform(0, 0.15))

            def look(rgb: np.ndarray) -> np.ndarray:
                faded = rgb * (1.0 - fade) + np.array([170.0, 165.0, 150.0]) * fade
                return cv2.LUT(np.clip(faded + 0.5, 0, 255).astype(np.uint8), lut)

            assets = {
                "background": cv2.LUT(bg, lut),
                "sprite": recolor_sprite(signs.sign_sprite(seg.label), look),
                "dash": lit_color((225.0, 225.0, 215.0), lut),
                "pole": lit_color((128.0, 128.0, 132.0), lut),
            }
        else:
            p = seg.params
            sprite = (banknotes.counterfeit_sprite(p["denomination"], p["defects"], rng)
                      if seg.label == banknotes.COUNTERFEIT
                      else banknotes.note_sprite(p["denomination"]))
            assets = {"background": self._tray(), "sprite": sprite}
        self._assets[seg.index] = assets
        while len(self._assets) > 3:
            self._assets.popitem(last=False)
        return assets

    def _tray(self) -> np.ndarray:
        """The kiosk tray, rendered once per stream (the camera and the tray never move)."""
        if self._tray_image is None:
            rng = self._rng(4, 0)
            img = tray_scene(rng, self.height, self.width)
            self._tray_image = cv2.LUT(img, lighting_lut(gain=float(rng.uniform(0.9, 1.1))))
        return self._tray_image

    def _noise_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sensor noise for frame ``index`` as a (positive, negative) pair of uint8 images: windows
        of one noise field, shifted from frame to frame so the grain flickers like a sensor's."""
        if self._noise is None:
            rng = self._rng(5, 0)
            n = rng.standard_normal((self.height + 8, self.width + 8, 3), dtype=np.float32) * 2.0
            self._noise = (np.clip(n, 0, 255).astype(np.uint8),
                           np.clip(-n, 0, 255).astype(np.uint8))
        dy, dx = (index * 5) % 8, (index * 3) % 8
        window = (slice(dy, dy + self.height), slice(dx, dx + self.width))
        return self._noise[0][window], self._noise[1][window]

    def frame(self, index: int) -> tuple[np.ndarray, str | None, dict[str, Any]]:
        """Frame ``index``: the RGB uint8 image, its truth label (None when ambiguous) and meta.

        Raises:
            ConfigError: ``index`` is negative.
        """
        self._check_index(index)
        index = int(index)
        with self._lock:
            seg, phase, truth, meta, corners = self._describe(index)
            img = self._compose(seg, phase, index, corners)
            pos, neg = self._noise_pair(index)
            cv2.add(img, pos, dst=img)
            cv2.subtract(img, neg, dst=img)
        return img, truth, meta

    def _compose(self, seg: _Segment, phase: str, index: int, corners: np.ndarray | None
                 ) -> np.ndarray:
        assets = self._segment_assets(seg)
        if self.scenario == "banknotes":
            key = (seg.index, None if corners is None else corners.round(3).tobytes())
            if self._static is not None and self._static[0] == key:
                return self._static[1].copy()
            img = self._tray().copy()
            if corners is not None:
                paste(img, assets["sprite"], corners)
            self._static = (key, img)
            return img.copy()
        offset = index - seg.start
        if seg.index > 0 and offset < CROSSFADE_FRAMES:
            prev = self._segment_assets(self._segment(seg.index - 1))["background"]
            a = (offset + 1) / (CROSSFADE_FRAMES + 1)
            img = cv2.addWeighted(prev, 1.0 - a, assets["background"], a, 0.0)
        else:
            img = assets["background"].copy()
        draw_lane_dashes(img, self._layout, index * 0.06, assets["dash"])
        if corners is not None:
            signs.draw_pole(img, corners, assets["pole"])
            paste(img, assets["sprite"], corners)
        return img
