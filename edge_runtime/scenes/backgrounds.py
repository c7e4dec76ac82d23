"""Procedural backgrounds: dashcam road scenes, generic clutter for the sign samples, kiosk trays.

Layouts are drawn in fractions of the image, so a scene drawn at 96 x 96 looks like the same kind of
scene drawn at 640 x 480 and then squashed to 96 x 96, which is what the runtime does to a stream
frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_runtime.scenes.compose import (
    Color,
    ints,
    shade,
    smooth_noise,
    to_uint8,
    vertical_gradient,
)

AA = cv2.LINE_AA

SKIES: tuple[tuple[Color, Color], ...] = (
    ((70.0, 130.0, 205.0), (185.0, 212.0, 238.0)),  # clear
    ((140.0, 148.0, 160.0), (205.0, 206.0, 210.0)),  # overcast
    ((62.0, 64.0, 118.0), (232.0, 156.0, 108.0)),  # dusk
    ((165.0, 188.0, 212.0), (224.0, 228.0, 226.0)),  # hazy
    ((95.0, 150.0, 215.0), (210.0, 225.0, 240.0)),  # bright
)
VERGES: tuple[Color, ...] = (
    (88.0, 128.0, 60.0),  # grass
    (150.0, 140.0, 88.0),  # dry grass
    (118.0, 112.0, 104.0),  # pavement
    (70.0, 100.0, 58.0),  # dark grass
    (160.0, 150.0, 135.0),  # gravel
)
MUTED: tuple[Color, ...] = (
    (120.0, 120.0, 124.0),
    (150.0, 145.0, 135.0),
    (95.0, 85.0, 75.0),
    (180.0, 175.0, 165.0),
    (70.0, 90.0, 60.0),
    (110.0, 100.0, 90.0),
    (200.0, 198.0, 190.0),
    (60.0, 60.0, 66.0),
)


@dataclass(frozen=True)
class RoadLayout:
    """Where the road lies, as fractions of the image: horizon height, vanishing point, and the
    road's left and right edges at the bottom of the image."""

    horizon: float
    vanish_x: float
    left: float
    right: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> RoadLayout:
        horizon = float(rng.uniform(0.38, 0.56))
        vanish_x = float(rng.uniform(0.36, 0.64))
        half = float(rng.uniform(0.45, 0.75))
        center = float(rng.uniform(0.35, 0.65))
        return cls(horizon, vanish_x, center - half, center + half)


def _jitter(rng: np.random.Generator, color: Color, amount: float) -> Color:
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in color)  # type: ignore[return-value]


def draw_lane_dashes(
    img: np.ndarray, layout: RoadLayout, phase: float, color: tuple[int, int, int]
) -> None:
    """Draw the dashed centre line in place; ``phase`` (0..1) moves the dashes toward the
    camera."""
    h, w = img.shape[:2]
    hy = layout.horizon * h
    vx = layout.vanish_x * w
    bottom_cx = (layout.left + layout.right) / 2 * w
    road_half = (layout.right - layout.left) / 2 * w
    # Ground distance z maps to depth fraction t = z_min / z (t = 1 at the bottom row).
    period = 1.6
    for k in range(12):
        z0 = 1.0 + (k - (phase % 1.0)) * period
        z1 = z0 + period * 0.45
        if z1 <= 1.0:
            continue
        z0 = max(z0, 1.0)
        pts = []
        for z, side in ((z0, -1), (z0, 1), (z1, 1), (z1, -1)):
            t = 1.0 / z
            y = hy + (h - hy) * t
            cx = vx + (bottom_cx - vx) * t
            half = road_half * t * 0.018 + 0.3
            pts.append((cx + side * half, y))
        poly = np.round(np.array(pts) * 16).astype(np.int32)
        cv2.fillPoly(img, [poly], color, AA, shift=4)


def road_scene(
    rng: np.random.Generator, h: int, w: int, layout: RoadLayout | None = None
) -> tuple[np.ndarray, RoadLayout]:
    """A dashcam view: sky, far scenery, verges, asphalt with edge lines, roadside clutter.

    The centre-line dashes are not drawn (the stream animates them with
    :func:`draw_lane_dashes`). Returns the RGB uint8 image and its layout.
    """
    if layout is None:
        layout = RoadLayout.random(rng)
    hy = int(round(layout.horizon * h))
    side = max(h, w)
    sky_top, sky_bottom = SKIES[int(rng.integers(len(SKIES)))]
    img = np.empty((h, w, 3), np.float32)
    if hy > 0:
        sky = img[:hy]
        sky[:] = vertical_gradient(hy, w, _jitter(rng, sky_top, 18), _jitter(rng, sky_bottom, 14))
        clouds = np.clip(smooth_noise(rng, hy, w, int(rng.integers(3, 9))) - 0.45, 0, 1)
        clouds *= 1.8 * float(rng.uniform(0.0, 0.5))
        sky += (np.float32(235.0) - sky) * clouds[..., None]
    verge = _jitter(rng, VERGES[int(rng.integers(len(VERGES)))], 16)
    if hy < h:
        ground = img[hy:]
        ground[:] = vertical_gradient(h - hy, w, shade(verge, 0.8, sky_bottom), verge)
        ground *= (0.82 + 0.36 * smooth_noise(rng, h - hy, w, int(rng.integers(12, 40))))[
            ..., None
        ]
    # Asphalt: a trapezoid from the vanishing point to the bottom edge.
    vx = layout.vanish_x * w
    grey = float(rng.uniform(70, 118))
    asphalt = _jitter(rng, (grey, grey, grey + 3), 5)
    top_half = 0.004 * w
    road = np.array(
        [
            [vx - top_half, hy],
            [vx + top_half, hy],
            [layout.right * w, h],
            [layout.left * w, h],
        ]
    )
    cv2.fillPoly(img, [np.round(road * 16).astype(np.int32)], asphalt, cv2.LINE_8, shift=4)
    # Grain over everything (asphalt, grass, haze), drawn at half resolution for speed.
    coarse_grain = rng.standard_normal(((h + 1) // 2, (w + 1) // 2), dtype=np.float32)
    grain = cv2.resize(coarse_grain, (w, h), interpolation=cv2.INTER_NEAREST)
    img += (grain * float(rng.uniform(2.0, 7.0)))[..., None]
    img8 = to_uint8(img)
    _far_scenery(img8, rng, hy, sky_bottom)
    # Edge lines.
    line_color = ints(_jitter(rng, (225.0, 225.0, 215.0), 15))
    thick = max(1, int(round(side * 0.006)))
    for edge in (layout.left, layout.right):
        inner = edge + (0.04 if edge == layout.left else -0.04)
        cv2.line(
            img8,
            (int(round(vx)), hy),
            (int(round(inner * w)), h),
            line_color,
            thick,
            AA,
        )
    _roadside(img8, rng, layout, hy)
    return img8, layout


def _far_scenery(img: np.ndarray, rng: np.random.Generator, hy: int, sky: Color) -> None:
    h, w = img.shape[:2]
    if hy < 4:
        return
    kind = rng.integers(3)
    if kind == 0 or rng.random() < 0.4:  # tree line or hills
        xs = np.linspace(0, w, int(rng.integers(8, 30)))
        heights = hy - rng.uniform(0.02, 0.16, xs.size) * h
        color = shade(_jitter(rng, (58.0, 88.0, 62.0), 20), 0.8, sky)
        poly = np.concatenate([np.stack([xs, heights], 1), [[w, hy + 1], [0, hy + 1]]])
        cv2.fillPoly(img, [np.round(poly * 16).astype(np.int32)], ints(color), AA, shift=4)
    if kind >= 1:  # buildings
        x = rng.uniform(-0.05, 0.1) * w
        while x < w:
            bw = rng.uniform(0.05, 0.16) * w
            bh = rng.uniform(0.05, 0.3) * h
            color = _jitter(rng, MUTED[int(rng.integers(len(MUTED)))], 20)
            if rng.random() < 0.75:
                p0 = (int(x), int(hy - bh))
                p1 = (int(x + bw), hy + 1)
                cv2.rectangle(img, p0, p1, ints(shade(color, 0.85, sky)), -1)
                win = ints(shade(color, 0.6))
                rows = int(bh / (0.025 * h + 1))
                cols = int(bw / (0.02 * w + 1))
                for r in range(1, rows):
                    for c in range(1, cols):
                        if rng.random() < 0.6:
                            cx = int(x + c * bw / cols)
                            cy = int(hy - bh + r * bh / rows)
                            s = max(1, int(0.005 * w))
                            cv2.rectangle(img, (cx - s, cy - s), (cx + s, cy + s), win, -1)
            x += bw + rng.uniform(0.0, 0.08) * w


def _roadside(img: np.ndarray, rng: np.random.Generator, layout: RoadLayout, hy: int) -> None:
    """Trees, lamp posts and parked or distant cars (none of them look like a sign)."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 6))):
        t = rng.uniform(0.05, 0.9)  # depth fraction: small = far
        side = -1 if rng.random() < 0.5 else 1
        edge = layout.left if side < 0 else layout.right
        bx = layout.vanish_x * w + (edge * w - layout.vanish_x * w) * t
        bx += side * rng.uniform(0.03, 0.3) * w * t
        by = hy + (h - hy) * t
        scale = t * h
        kind = rng.integers(3)
        if kind == 0:  # tree
            trunk = ints(_jitter(rng, (90.0, 70.0, 52.0), 15))
            crown = ints(_jitter(rng, (55.0, 100.0, 50.0), 25))
            th = scale * rng.uniform(0.6, 1.4)
            cv2.line(img, (int(bx), int(by)), (int(bx), int(by - th)), trunk,
                     max(1, int(scale * 0.05)), AA)
            for _ in range(3):
                r = max(1, int(scale * rng.uniform(0.18, 0.35)))
                ox = int(bx + rng.uniform(-0.2, 0.2) * scale)
                oy = int(by - th + rng.uniform(-0.15, 0.15) * scale)
                cv2.circle(img, (ox, oy), r, crown, -1, AA)
        elif kind == 1:  # lamp post
            gray = ints(_jitter(rng, (110.0, 110.0, 115.0), 20))
            ph = scale * rng.uniform(1.0, 1.8)
            cv2.line(img, (int(bx), int(by)), (int(bx), int(by - ph)), gray,
                     max(1, int(scale * 0.03)), AA)
            cv2.line(img, (int(bx), int(by - ph)), (int(bx - side * 0.2 * scale), int(by - ph)),
                     gray, max(1, int(scale * 0.025)), AA)
        else:  # car
            body = ints(_jitter(rng, MUTED[int(rng.integers(len(MUTED)))], 30))
            cw, ch = scale * rng.uniform(0.5, 0.8), scale * rng.uniform(0.25, 0.4)
            cv2.rectangle(img, (int(bx - cw / 2), int(by - ch)), (int(bx + cw / 2), int(by)),
                          body, -1)
            cv2.rectangle(img, (int(bx - cw * 0.35), int(by - ch * 1.5)),
                          (int(bx + cw * 0.35), int(by - ch)), ints(shade(body, 0.8)), -1)
            wheel = max(1, int(ch * 0.25))
            for wx in (bx - cw * 0.3, bx + cw * 0.3):
                cv2.circle(img, (int(wx), int(by)), wheel, (25, 25, 25), -1, AA)


def clutter_scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A generic background: gradients, noise textures and random non-sign shapes."""
    kind = int(rng.integers(4))
    if kind == 0:  # sky over foliage
        top, bottom = SKIES[int(rng.integers(len(SKIES)))]
        img = vertical_gradient(h, w, _jitter(rng, top, 25), _jitter(rng, bottom, 25))
        split = rng.uniform(0.3, 0.8)
        leaf = _jitter(rng, (60.0, 105.0, 55.0), 30)
        tex = smooth_noise(rng, h, w, int(rng.integers(6, 30)))
        boundary = split * h + (smooth_noise(rng, 1, w, 6)[0] - 0.5) * 0.3 * h
        rows = np.arange(h, dtype=np.float32)[:, None]
        mask = (rows > boundary[None, :]).astype(np.float32)[..., None]
        foliage = np.asarray(leaf, np.float32) * (0.6 + 0.7 * tex)[..., None]
        img = img * (1 - mask) + foliage * mask
    elif kind == 1:  # coloured noise texture
        base = _jitter(rng, MUTED[int(rng.integers(len(MUTED)))], 40)
        img = np.empty((h, w, 3), np.float32)
        for c in range(3):
            n = smooth_noise(rng, h, w, int(rng.integers(3, 24)))
            img[..., c] = base[c] * (0.6 + 0.8 * n)
    elif kind == 2:  # wall / pavement
        base = _jitter(rng, MUTED[int(rng.integers(len(MUTED)))], 35)
        img = np.broadcast_to(np.asarray(base, np.float32), (h, w, 3)).copy()
        img *= (0.85 + 0.3 * smooth_noise(rng, h, w, int(rng.integers(2, 8))))[..., None]
        step = rng.uniform(0.08, 0.25) * h
        y = rng.uniform(0, step)
        line = shade(base, 0.7)
        img8 = to_uint8(img)
        while y < h:
            cv2.line(img8, (0, int(y)), (w, int(y)), ints(line), max(1, int(h * 0.008)))
            y += step
        img = img8.astype(np.float32)
    else:  # plain sky
        top, bottom = SKIES[int(rng.integers(len(SKIES)))]
        img = vertical_gradient(h, w, _jitter(rng, top, 30), _jitter(rng, bottom, 30))
        clouds = smooth_noise(rng, h, w, int(rng.integers(2, 8)))
        img += (np.float32(235.0) - img) * (np.clip(clouds - 0.5, 0, 1) * 1.5)[..., None]
    img8 = to_uint8(img)
    distractors(img8, rng, int(rng.integers(0, 4)))
    return img8


def distractors(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Draw ``count`` things that are not signs: the grey back of a sign, billboards, bushes,
    poles, cars, windows."""
    h, w = img.shape[:2]
    for _ in range(count):
        kind = int(rng.integers(6))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(0.08, 0.45) * h
        color = ints(_jitter(rng, MUTED[int(rng.integers(len(MUTED)))], 25))
        if kind == 0:  # back of a sign on a pole
            cv2.line(img, (int(cx), int(cy)), (int(cx), h), (120, 120, 124),
                     max(1, int(s * 0.07)), AA)
            if rng.random() < 0.5:
                cv2.circle(img, (int(cx), int(cy)), int(s / 2), color, -1, AA)
            else:
                cv2.rectangle(img, (int(cx - s / 2), int(cy - s / 2)),
                              (int(cx + s / 2), int(cy + s / 2)), color, -1)
        elif kind == 1:  # billboard with a few stripes of text-like lines
            bw, bh = s * rng.uniform(1.0, 2.0), s * rng.uniform(0.5, 0.9)
            p0 = (int(cx - bw / 2), int(cy - bh / 2))
            p1 = (int(cx + bw / 2), int(cy + bh / 2))
            cv2.rectangle(img, p0, p1, color, -1)
            ink = ints(shade(color, 0.5))
            for k in range(int(rng.integers(1, 4))):
                y = int(p0[1] + (k + 1) * bh / 4)
                cv2.line(img, (int(p0[0] + bw * 0.1), y), (int(p1[0] - bw * 0.1), y), ink,
                         max(1, int(bh * 0.06)))
        elif kind == 2:  # bush
            green = ints(_jitter(rng, (60.0, 105.0, 55.0), 30))
            for _ in range(4):
                r = max(1, int(s * rng.uniform(0.2, 0.4)))
                cv2.circle(img, (int(cx + rng.uniform(-0.4, 0.4) * s),
                                 int(cy + rng.uniform(-0.2, 0.2) * s)), r, green, -1, AA)
        elif kind == 3:  # pole
            cv2.line(img, (int(cx), int(cy)), (int(cx + rng.uniform(-0.05, 0.05) * s), h),
                     color, max(1, int(s * 0.06)), AA)
        elif kind == 4:  # car
            cw, ch = s * 1.6, s * 0.6
            cv2.rectangle(img, (int(cx - cw / 2), int(cy - ch / 2)),
                          (int(cx + cw / 2), int(cy + ch / 2)), color, -1)
            for wx in (cx - cw * 0.3, cx + cw * 0.3):
                cv2.circle(img, (int(wx), int(cy + ch / 2)), max(1, int(ch * 0.25)),
                           (25, 25, 25), -1, AA)
        else:  # window grid
            cols, rows = int(rng.integers(2, 5)), int(rng.integers(2, 4))
            cell = s / 2
            for r in range(rows):
                for c in range(cols):
                    x0 = int(cx + c * cell)
                    y0 = int(cy + r * cell)
                    cv2.rectangle(img, (x0, y0), (int(x0 + cell * 0.7), int(y0 + cell * 0.7)),
                                  color, -1)


TRAYS: tuple[Color, ...] = (
    (52.0, 56.0, 62.0),  # slate
    (40.0, 50.0, 72.0),  # blue-black
    (42.0, 70.0, 56.0),  # green felt
    (96.0, 90.0, 84.0),  # warm grey plastic
    (70.0, 58.0, 48.0),  # dark wood
    (30.0, 30.0, 32.0),  # black rubber
)


def tray_scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A kiosk tray seen from above: a textured surface in a bevelled rim, lit from one side."""
    surface = _jitter(rng, TRAYS[int(rng.integers(len(TRAYS)))], 10)
    img = np.broadcast_to(np.asarray(surface, np.float32), (h, w, 3)).copy()
    fine = rng.standard_normal((h, w), dtype=np.float32) * float(rng.uniform(2.0, 7.0))
    coarse = smooth_noise(rng, h, w, int(rng.integers(3, 10)))
    img *= (0.9 + 0.2 * coarse)[..., None]
    img += fine[..., None]
    # Directional light: one side brighter.
    angle = rng.uniform(0, 2 * np.pi)
    strength = float(rng.uniform(0.05, 0.25))
    xs = (np.linspace(-0.5, 0.5, w, dtype=np.float32) * np.float32(np.cos(angle) * strength))
    ys = (np.linspace(-0.5, 0.5, h, dtype=np.float32) * np.float32(np.sin(angle) * strength))
    img *= (1.0 + xs[None, :] + ys[:, None])[..., None]
    img8 = to_uint8(img)
    # Rim: a lighter band around the edge with a dark inner lip.
    rim = max(2, int(round(min(h, w) * rng.uniform(0.04, 0.08))))
    rim_color = ints(_jitter(rng, shade(surface, 0.55, (200.0, 200.0, 205.0)), 15))
    lip = ints(shade(surface, 0.5))
    cv2.rectangle(img8, (0, 0), (w - 1, h - 1), rim_color, rim * 2)
    cv2.rectangle(img8, (rim, rim), (w - 1 - rim, h - 1 - rim), lip,
                  max(1, rim // 4))
    if rng.random() < 0.5:  # a printed hint on the rim
        scale = rim / 30.0
        cv2.putText(img8, "INSERT NOTE", (rim * 2, int(rim * 0.8)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, ints(shade(rim_color, 0.6)), max(1, int(scale * 2)), AA)
    return img8
