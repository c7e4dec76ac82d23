"""Traffic signs: sprites drawn with OpenCV and the labelled sample renderer.

Each sign is drawn once per class on a square canvas (the sign touches the canvas edges) and cached
with its mip levels; samples and stream frames only warp and blend it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np

from edge_runtime.scenes.backgrounds import clutter_scene, distractors, road_scene
from edge_runtime.scenes.compose import (
    Color,
    Sprite,
    camera_effects,
    ints,
    make_sprite,
    paste,
    random_lighting,
    shade,
    squash,
    virtual_frame,
)

SIGN_CLASSES: tuple[str, ...] = (
    "stop",
    "yield",
    "no-entry",
    "speed-limit-30",
    "speed-limit-50",
    "speed-limit-70",
    "speed-limit-100",
    "pedestrian-crossing",
    "priority-road",
    "roundabout",
    "no-parking",
    "turn-left",
    "turn-right",
)
BACKGROUND = "background"
CLASSES: tuple[str, ...] = (*SIGN_CLASSES, BACKGROUND)
# How much of its square canvas each sign fills (a disc fills pi/4), for the stream's coverage.
SIGN_FILL: dict[str, float] = {
    **{label: float(np.pi / 4) for label in SIGN_CLASSES},
    "stop": 0.828,
    "yield": 0.435,
    "pedestrian-crossing": 1.0,
    "priority-road": 0.5,
}

SPRITE_SIDE = 320
RED: Color = (200.0, 24.0, 32.0)
BLUE: Color = (20.0, 78.0, 170.0)
WHITE: Color = (242.0, 242.0, 238.0)
BLACK: Color = (22.0, 22.0, 24.0)
YELLOW: Color = (246.0, 192.0, 20.0)
AA = cv2.LINE_AA
SHIFT = 4  # sub-pixel bits for polygon drawing
# Draws a sign into an RGB canvas and its mask (both square uint8, drawn in place).
Draw = Callable[[np.ndarray, np.ndarray], None]


def _pts(points: list[tuple[float, float]], side: int) -> np.ndarray:
    return np.round(np.array(points) * side * (1 << SHIFT)).astype(np.int32)


def _poly(img: np.ndarray, points: list[tuple[float, float]], color: Color) -> None:
    cv2.fillPoly(img, [_pts(points, img.shape[0])], ints(color), AA, shift=SHIFT)


def _disc(img: np.ndarray, radius: float, color: Color, center: tuple[float, float] = (0.5, 0.5)
          ) -> None:
    s = img.shape[0]
    c = (int(round(center[0] * s * 16)), int(round(center[1] * s * 16)))
    cv2.circle(img, c, int(round(radius * s * 16)), ints(color), -1, AA, shift=SHIFT)


def _text(img: np.ndarray, text: str, color: Color, max_w: float, max_h: float,
          thickness: float, center: tuple[float, float] = (0.5, 0.5),
          font: int = cv2.FONT_HERSHEY_DUPLEX) -> None:
    """Centred bold text fitted into ``max_w`` x ``max_h`` (fractions of the canvas)."""
    s = img.shape[0]
    thick = max(1, int(round(thickness * s)))
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, thick)
    scale = min(max_w * s / tw, max_h * s / th)
    thick = max(1, int(round(thickness * s)))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    org = (int(round(center[0] * s - tw / 2)), int(round(center[1] * s + th / 2)))
    cv2.putText(img, text, org, font, scale, ints(color), thick, AA)


def _regular_polygon(n: int, apothem: float, rotation_deg: float) -> list[tuple[float, float]]:
    r = apothem / np.cos(np.pi / n)
    angles = np.deg2rad(rotation_deg + np.arange(n) * 360.0 / n)
    return [(0.5 + r * np.cos(a), 0.5 + r * np.sin(a)) for a in angles]


def _scaled(points: list[tuple[float, float]], k: float) -> list[tuple[float, float]]:
    cx = sum(p[0] for p in points) / len(points)
    cy = sum(p[1] for p in points) / len(points)
    return [(cx + (x - cx) * k, cy + (y - cy) * k) for x, y in points]


def _draw_stop(img: np.ndarray, mask: np.ndarray) -> None:
    outer = _regular_polygon(8, 0.5, 22.5)
    _poly(mask, outer, (255, 255, 255))
    _poly(img, outer, WHITE)
    _poly(img, _regular_polygon(8, 0.46, 22.5), RED)
    _text(img, "STOP", WHITE, 0.74, 0.3, 0.045)


def _draw_yield(img: np.ndarray, mask: np.ndarray) -> None:
    tri = [(0.0, 0.06), (1.0, 0.06), (0.5, 0.93)]
    _poly(mask, tri, (255, 255, 255))
    _poly(img, tri, WHITE)
    _poly(img, _scaled(tri, 0.93), RED)
    _poly(img, _scaled(tri, 0.56), WHITE)


def _draw_no_entry(img: np.ndarray, mask: np.ndarray) -> None:
    _disc(mask, 0.5, (255, 255, 255))
    _disc(img, 0.5, WHITE)
    _disc(img, 0.475, RED)
    cv2.rectangle(img, (int(0.18 * img.shape[0]), int(0.41 * img.shape[0])),
                  (int(0.82 * img.shape[0]), int(0.59 * img.shape[0])), ints(WHITE), -1, AA)


def _draw_speed(value: int) -> Draw:
    def draw(img: np.ndarray, mask: np.ndarray) -> None:
        _disc(mask, 0.5, (255, 255, 255))
        _disc(img, 0.5, RED)
        _disc(img, 0.4, WHITE)
        # Big, bold digits: the speed limits differ only by them.
        text = str(value)
        if len(text) > 2:
            _text(img, text, BLACK, 0.7, 0.42, 0.07)
        else:
            _text(img, text, BLACK, 0.66, 0.5, 0.085)

    return draw


def _draw_pedestrian(img: np.ndarray, mask: np.ndarray) -> None:
    s = img.shape[0]
    cv2.rectangle(mask, (0, 0), (s - 1, s - 1), (255, 255, 255), -1)
    img[:] = ints(WHITE)
    r = int(0.06 * s)
    cv2.rectangle(img, (r // 2, r // 2), (s - 1 - r // 2, s - 1 - r // 2), ints(BLUE), -1)
    tri = [(0.5, 0.12), (0.9, 0.84), (0.1, 0.84)]
    _poly(img, tri, WHITE)
    ink = ints(BLACK)
    _disc(img, 0.055, BLACK, (0.5, 0.39))
    t = max(1, int(0.05 * s))

    def line(a: tuple[float, float], b: tuple[float, float]) -> None:
        cv2.line(img, (int(a[0] * s), int(a[1] * s)), (int(b[0] * s), int(b[1] * s)), ink, t, AA)

    line((0.5, 0.46), (0.47, 0.62))  # body
    line((0.47, 0.62), (0.38, 0.76))  # legs
    line((0.47, 0.62), (0.58, 0.76))
    line((0.49, 0.5), (0.38, 0.58))  # arms
    line((0.49, 0.5), (0.6, 0.57))
    for k in range(4):  # zebra stripes
        x0 = 0.26 + k * 0.13
        cv2.rectangle(img, (int(x0 * s), int(0.78 * s)), (int((x0 + 0.08) * s), int(0.82 * s)),
                      ink, -1)


def _draw_priority(img: np.ndarray, mask: np.ndarray) -> None:
    diamond = [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
    _poly(mask, diamond, (255, 255, 255))
    _poly(img, diamond, WHITE)
    _poly(img, _scaled(diamond, 0.95), (60.0, 60.0, 60.0))
    _poly(img, _scaled(diamond, 0.92), WHITE)
    _poly(img, _scaled(diamond, 0.6), YELLOW)


def _blue_disc(img: np.ndarray, mask: np.ndarray) -> None:
    _disc(mask, 0.5, (255, 255, 255))
    _disc(img, 0.5, WHITE)
    _disc(img, 0.47, BLUE)


def _arrow_head(img: np.ndarray, tip: tuple[float, float], direction: float, size: float) -> None:
    d = np.deg2rad(direction)
    ux, uy = np.cos(d), np.sin(d)
    px, py = -uy, ux
    base = (tip[0] - ux * size, tip[1] - uy * size)
    pts = [tip, (base[0] + px * size * 0.75, base[1] + py * size * 0.75),
           (base[0] - px * size * 0.75, base[1] - py * size * 0.75)]
    _poly(img, pts, WHITE)


def _draw_roundabout(img: np.ndarray, mask: np.ndarray) -> None:
    _blue_disc(img, mask)
    s = img.shape[0]
    c = (s // 2, s // 2)
    radius = int(0.25 * s)
    t = max(1, int(0.075 * s))
    for k in range(3):
        start = k * 120 + 20
        cv2.ellipse(img, c, (radius, radius), 0, start, start + 75, ints(WHITE), t, AA)
        end = np.deg2rad(start + 75)
        tip_angle = start + 75 + 22
        tip = (0.5 + 0.25 * np.cos(np.deg2rad(tip_angle)), 0.5 + 0.25 * np.sin(np.deg2rad(
            tip_angle)))
        _arrow_head(img, tip, float(np.rad2deg(end)) + 90 + 12, 0.13)


def _draw_no_parking(img: np.ndarray, mask: np.ndarray) -> None:
    _disc(mask, 0.5, (255, 255, 255))
    _disc(img, 0.5, RED)
    _disc(img, 0.39, BLUE)
    s = img.shape[0]
    a = 0.5 - 0.42 * np.cos(np.pi / 4)
    b = 0.5 + 0.42 * np.cos(np.pi / 4)
    cv2.line(img, (int(a * s), int(a * s)), (int(b * s), int(b * s)), ints(RED),
             max(1, int(0.1 * s)), AA)


def _draw_turn_right(img: np.ndarray, mask: np.ndarray) -> None:
    _blue_disc(img, mask)
    s = img.shape[0]
    t = max(1, int(0.11 * s))
    ink = ints(WHITE)
    # Shaft up from the bottom, bending right through a quarter circle, ending in a head.
    cv2.line(img, (int(0.38 * s), int(0.82 * s)), (int(0.38 * s), int(0.52 * s)), ink, t, AA)
    cv2.ellipse(img, (int(0.58 * s), int(0.52 * s)), (int(0.2 * s), int(0.2 * s)), 0, 180, 270,
                ink, t, AA)
    cv2.line(img, (int(0.58 * s), int(0.32 * s)), (int(0.66 * s), int(0.32 * s)), ink, t, AA)
    _arrow_head(img, (0.86, 0.32), 0.0, 0.2)


def _flipped(draw: Draw) -> Draw:
    def flipped(img: np.ndarray, mask: np.ndarray) -> None:
        draw(img, mask)
        img[:] = img[:, ::-1]
        mask[:] = mask[:, ::-1]

    return flipped


_DRAW: dict[str, Draw] = {
    "stop": _draw_stop,
    "yield": _draw_yield,
    "no-entry": _draw_no_entry,
    "speed-limit-30": _draw_speed(30),
    "speed-limit-50": _draw_speed(50),
    "speed-limit-70": _draw_speed(70),
    "speed-limit-100": _draw_speed(100),
    "pedestrian-crossing": _draw_pedestrian,
    "priority-road": _draw_priority,
    "roundabout": _draw_roundabout,
    "no-parking": _draw_no_parking,
    "turn-left": _flipped(_draw_turn_right),
    "turn-right": _draw_turn_right,
}


@functools.cache
def sign_sprite(label: str) -> Sprite:
    """The sprite of one sign class (cached; the sign touches the canvas edges)."""
    s = SPRITE_SIDE
    img = np.zeros((s, s, 3), np.uint8)
    mask = np.zeros((s, s, 3), np.uint8)
    _DRAW[label](img, mask)
    # Printed signs are never pure colours: a faint retroreflective grain.
    grain = np.random.default_rng(len(label)).normal(0, 3.0, (s, s, 1)).astype(np.float32)
    img = np.clip(img.astype(np.float32) + grain, 0, 255).astype(np.uint8)
    return make_sprite(img, mask[..., 0], min_side=12)


def sign_corners(
    rng: np.random.Generator, height: int, width: int, scale: float, cut: bool
) -> np.ndarray:
    """Where a sign lands in a frame: anywhere it fits (or slightly cut by the edge when
    ``cut``), turned and tilted a little. ``scale`` is its height as a fraction of the frame
    height."""
    side = scale * height
    yaw = rng.uniform(0.8, 1.0)  # the sign turned a little away from the camera
    half_w, half_h = side * yaw / 2, side / 2
    margin = -0.08 * side if cut else 0.01 * height
    cx = rng.uniform(half_w + margin, max(half_w + margin, width - half_w - margin) + 1e-6)
    cy = rng.uniform(half_h + margin, max(half_h + margin, height - half_h - margin) + 1e-6)
    angle = np.deg2rad(rng.uniform(-10, 10))
    c, s = np.cos(angle), np.sin(angle)
    local = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    local = local @ np.array([[c, -s], [s, c]]).T
    local += rng.uniform(-0.06, 0.06, (4, 2)) * side  # perspective
    return (local + np.array([cx, cy])).astype(np.float32)


def draw_pole(img: np.ndarray, corners: np.ndarray, color: tuple[int, int, int]) -> None:
    """A grey pole under the sign, about two and a half sign heights long."""
    bottom = (corners[2] + corners[3]) / 2
    center = corners.mean(0)
    end = center + (bottom - center) * 5.0
    width = max(1, int(round(np.linalg.norm(corners[1] - corners[0]) * 0.07)))
    cv2.line(img, (int(center[0]), int(center[1])), (int(end[0]), int(end[1])), color, width,
             AA)


def render_sign_sample(label: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One augmented traffic-sign sample (or a ``background`` one)."""
    height, width = virtual_frame(rng, size)
    if rng.random() < 0.6:
        img, _ = road_scene(rng, height, width)
    else:
        img = clutter_scene(rng, height, width)
    if rng.random() < 0.5:
        distractors(img, rng, int(rng.integers(1, 3)))
    if label != BACKGROUND:
        sprite = sign_sprite(label)
        fade = float(rng.uniform(0, 0.25)) if rng.random() < 0.5 else 0.0
        scale = float(rng.uniform(0.28, 0.86))
        corners = sign_corners(rng, height, width, scale, cut=rng.random() < 0.1)
        if rng.random() < 0.6:
            draw_pole(img, corners, ints(shade((128.0, 128.0, 132.0), rng.uniform(0.6, 1.1))))
        paste(img, sprite, corners, fade=fade)
        if rng.random() < 0.25:
            _occlude(img, rng, corners)
    img = squash(img, size)
    lut = random_lighting(rng, gain=(0.55, 1.3), cast=0.1, contrast=(0.7, 1.15),
                          gamma=(0.8, 1.25))
    img = cv2.LUT(img, lut)
    return camera_effects(img, rng, motion=0.06, blur=1.2, noise=(0.0, 9.0), jpeg_p=0.6,
                          jpeg_quality=(25, 95))


def _occlude(img: np.ndarray, rng: np.random.Generator, corners: np.ndarray) -> None:
    """Cover at most about 20% of the sign with a branch, a sticker or dirt."""
    x0, y0 = corners.min(0)
    x1, y1 = corners.max(0)
    w, h = x1 - x0, y1 - y0
    area = rng.uniform(0.05, 0.2) * w * h
    pw = np.sqrt(area * rng.uniform(0.5, 2.0))
    ph = area / max(pw, 1e-6)
    # Anchor on an edge of the sign, as a branch or a pole in front would be.
    px = rng.uniform(x0 - pw * 0.3, x1 - pw * 0.7)
    py = rng.uniform(y0 - ph * 0.3, y1 - ph * 0.7)
    color = ints((float(rng.uniform(30, 120)), float(rng.uniform(50, 130)),
                  float(rng.uniform(30, 90))))
    if rng.random() < 0.5:
        cv2.ellipse(img, (int(px + pw / 2), int(py + ph / 2)),
                    (max(1, int(pw / 2)), max(1, int(ph / 2))), float(rng.uniform(0, 180)), 0,
                    360, color, -1, AA)
    else:
        cv2.rectangle(img, (int(px), int(py)), (int(px + pw), int(py + ph)), color, -1)
