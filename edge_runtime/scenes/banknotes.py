"""Banknotes on a kiosk tray: genuine notes, counterfeits with missing security features.

A note is 2:1. Its security features sit at fixed places so a classifier can learn to look for
them: the watermark window on the left, the security thread, the portrait, the big denomination
digits on the right and a microprint band under them. A counterfeit lacks one or more of them
(see ``DEFECTS``).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from edge_runtime.scenes.backgrounds import tray_scene
from edge_runtime.scenes.compose import (
    Color,
    Sprite,
    camera_effects,
    ints,
    make_sprite,
    paste,
    quad,
    random_lighting,
    recolor_sprite,
    shade,
    smooth_noise,
    squash,
    virtual_frame,
)

DENOMINATIONS: tuple[int, ...] = (10, 20, 50, 100)
GENUINE: tuple[str, ...] = tuple(f"genuine-{d}" for d in DENOMINATIONS)
COUNTERFEIT = "counterfeit"
EMPTY = "empty"
CLASSES: tuple[str, ...] = (*GENUINE, COUNTERFEIT, EMPTY)
DEFECTS: tuple[str, ...] = ("no-watermark", "no-thread", "colour-shift", "blurred-microprint")

# Hues about 90 degrees apart, so a colour-shifted counterfeit (at most 38 degrees) never takes
# another denomination's colour.
BASE_COLORS: dict[int, Color] = {
    10: (198.0, 62.0, 58.0),  # red, hue 2
    20: (150.0, 176.0, 48.0),  # olive, hue 73
    50: (40.0, 150.0, 176.0),  # teal, hue 192
    100: (150.0, 74.0, 178.0),  # violet, hue 285
}
NOTE_W, NOTE_H = 400, 200
SHADOW_PAD = 0.08  # canvas margin around the note for its drop shadow, as a fraction of width
AA = cv2.LINE_AA


def _draw_note(denom: int, watermark: bool, thread: bool, sharp_microprint: bool
               ) -> np.ndarray:
    w, h = NOTE_W, NOTE_H
    base = BASE_COLORS[denom]
    paper = shade(base, 0.32, (250.0, 248.0, 240.0))
    ink = shade(base, 0.5)
    mid = shade(base, 0.62, (250.0, 248.0, 240.0))
    img = np.empty((h, w, 3), np.float32)
    img[:] = paper
    ramp = np.linspace(0.93, 1.04, w, dtype=np.float32)[None, :, None]
    img *= ramp
    img = np.clip(img, 0, 255).astype(np.uint8)
    # Guilloche: interleaved sine waves over the whole note.
    xs = np.arange(0, w + 4, 4, dtype=np.float32)
    for k in range(14):
        y0 = 10 + k * 14
        phase = k * 0.7 + denom * 0.01
        ys = y0 + 7 * np.sin(xs / (22 + denom % 7) + phase)
        pts = np.stack([xs, ys], 1)
        cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, ints(mid), 1, AA,
                      shift=4)
    cv2.rectangle(img, (6, 6), (w - 7, h - 7), ints(ink), 5)
    cv2.rectangle(img, (14, 14), (w - 15, h - 15), ints(mid), 1)
    # Watermark window: a bright oval with a faint portrait, visible as a pale area.
    if watermark:
        cv2.ellipse(img, (66, 100), (38, 62), 0, 0, 360, (240, 238, 230), -1, AA)
        faint = (214, 210, 200)
        cv2.ellipse(img, (66, 88), (15, 21), 0, 0, 360, faint, -1, AA)
        cv2.ellipse(img, (66, 138), (27, 18), 0, 180, 360, faint, -1, AA)
    # Security thread: a dark metallic stripe with small bright windows.
    if thread:
        cv2.rectangle(img, (122, 8), (137, h - 9), (58, 60, 68), -1)
        for y in range(20, h - 20, 30):
            cv2.rectangle(img, (125, y), (134, y + 9), (150, 152, 160), -1)
    # Portrait in an oval frame.
    cx, cy = 204, 96
    cv2.ellipse(img, (cx, cy), (48, 62), 0, 0, 360, ints(mid), -1, AA)
    cv2.ellipse(img, (cx, cy + 52), (40, 26), 0, 180, 360, ints(shade(base, 0.4)), -1, AA)
    cv2.ellipse(img, (cx, cy - 4), (21, 28), 0, 0, 360, ints(shade(base, 0.35,
                                                                    (235.0, 205.0, 180.0))),
                -1, AA)
    cv2.ellipse(img, (cx, cy - 20), (22, 16), 0, 180, 360, ints(shade(base, 0.3)), -1, AA)
    cv2.ellipse(img, (cx, cy), (48, 62), 0, 0, 360, ints(ink), 3, AA)
    # Denomination: big digits on the right, small ones in a corner.
    text = str(denom)
    font = cv2.FONT_HERSHEY_DUPLEX
    big = 2.6 if len(text) == 2 else 1.9
    (tw, th), _ = cv2.getTextSize(text, font, big, 9)
    cv2.putText(img, text, (int(322 - tw / 2), 40 + th), font, big, ints(shade(base, 0.45)), 9,
                AA)
    cv2.putText(img, text, (22, 38), font, 0.8, ints(ink), 2, AA)
    cv2.putText(img, "CENTRAL BANK", (150, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.45, ints(ink), 1, AA)
    # Microprint band: fine dark cross-hatching that a copier or cheap printer smears.
    band = (254, 134, 388, 184)
    patch = img[band[1]: band[3], band[0]: band[2]]
    patch[:] = (245, 243, 236)
    ph, pw = patch.shape[:2]
    for x in range(-ph, pw, 7):
        cv2.line(patch, (x, 0), (x + ph, ph), ints(shade(base, 0.35)), 2, AA)
        cv2.line(patch, (x + ph, 0), (x, ph), ints(shade(base, 0.35)), 1, AA)
    if not sharp_microprint:
        # A printer that cannot hold the lines leaves a pale smudge.
        smudge = cv2.GaussianBlur(patch, (0, 0), 5.0).astype(np.float32)
        smudge = smudge * 0.6 + np.asarray(paper, np.float32) * 0.4
        img[band[1]: band[3], band[0]: band[2]] = np.clip(smudge + 0.5, 0, 255).astype(np.uint8)
    return img


@functools.lru_cache(maxsize=64)
def note_sprite(denom: int, defects: frozenset[str] = frozenset()) -> Sprite:
    """A note with its drop shadow. ``defects`` (from ``DEFECTS``) make it a counterfeit; the
    colour shift is applied by :func:`shift_colour`, since its amount varies."""
    rgb = _draw_note(
        denom,
        watermark="no-watermark" not in defects,
        thread="no-thread" not in defects,
        sharp_microprint="blurred-microprint" not in defects,
    )
    pad = int(round(SHADOW_PAD * NOTE_W))
    ch, cw = NOTE_H + 2 * pad, NOTE_W + 2 * pad
    canvas = np.zeros((ch, cw, 3), np.uint8)
    alpha = np.zeros((ch, cw), np.float32)
    # The shadow falls down and to the right; blend it as a black layer of partial alpha.
    offset = pad // 3
    hard_shadow = np.zeros((ch, cw), np.float32)
    hard_shadow[pad + offset: pad + offset + NOTE_H, pad + offset: pad + offset + NOTE_W] = 0.45
    shadow = cv2.GaussianBlur(hard_shadow, (0, 0), pad / 3)
    note_mask = np.zeros((ch, cw), np.uint8)
    cv2.rectangle(note_mask, (pad, pad), (pad + NOTE_W - 1, pad + NOTE_H - 1), 255, -1)
    note_a = note_mask.astype(np.float32) / 255.0
    canvas[pad: pad + NOTE_H, pad: pad + NOTE_W] = rgb
    alpha[:] = note_a + shadow * (1 - note_a)
    content = (pad / cw, pad / ch, (pad + NOTE_W) / cw, (pad + NOTE_H) / ch)
    return make_sprite(canvas, alpha, content, min_side=16)


def shift_colour(
    sprite: Sprite, hue_deg: float, saturation: float, max_width: int | None = None
) -> Sprite:
    """The note's inks shifted in hue by ``hue_deg`` and scaled in saturation (a counterfeit's
    wrong colours); pale and grey areas hardly change. ``max_width``: see ``recolor_sprite``."""

    def fn(rgb: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + hue_deg * 256.0 / 360.0) % 256.0
        hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
        return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)

    return recolor_sprite(sprite, fn, max_width)


def random_defects(rng: np.random.Generator) -> tuple[str, ...]:
    """One to three defects, most often one."""
    count = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    picked = rng.choice(len(DEFECTS), size=count, replace=False)
    return tuple(DEFECTS[i] for i in sorted(picked))


def counterfeit_sprite(
    denom: int,
    defects: tuple[str, ...],
    rng: np.random.Generator,
    max_width: int | None = None,
) -> Sprite:
    """The sprite of a counterfeit with the given defects (the colour shift drawn from ``rng``;
    it is pasted at most ``max_width`` pixels wide, if given)."""
    sprite = note_sprite(denom, frozenset(d for d in defects if d != "colour-shift"))
    if "colour-shift" in defects:
        hue = float(rng.uniform(25, 38)) * (1 if rng.random() < 0.5 else -1)
        sprite = shift_colour(sprite, hue, float(rng.uniform(0.75, 1.3)), max_width)
    return sprite


def note_corners(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Where a note lands in a frame: near the middle of the tray, 0.5 to 0.85 of the frame
    width, turned up to 10 degrees."""
    note_w = rng.uniform(0.5, 0.85) * width
    cx = width / 2 + rng.uniform(-0.1, 0.1) * width
    cy = height / 2 + rng.uniform(-0.1, 0.1) * height
    return quad(cx, cy, note_w, note_w * NOTE_H / NOTE_W, float(rng.uniform(-10, 10)))


def render_banknote_sample(label: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One augmented banknote sample (or an ``empty`` tray)."""
    height, width = virtual_frame(rng, size)
    img = tray_scene(rng, height, width)
    if label != EMPTY:
        if label == COUNTERFEIT:
            denom = int(rng.choice(DENOMINATIONS))
            sprite = counterfeit_sprite(denom, random_defects(rng), rng, max_width=width)
        else:
            sprite = note_sprite(int(label.split("-")[1]))
        paste(img, sprite, note_corners(rng, height, width))
    img = squash(img, size)
    lut = random_lighting(rng, gain=(0.7, 1.25), cast=0.05, contrast=(0.85, 1.1),
                          gamma=(0.85, 1.15))
    img = cv2.LUT(img, lut)
    # Uneven light across the tray: a soft brightness field.
    if rng.random() < 0.5:
        field = 0.85 + 0.3 * smooth_noise(rng, size, size, 2)
        img = np.clip(img * field[..., None] + 0.5, 0, 255).astype(np.uint8)
    return camera_effects(img, rng, motion=0.0, blur=0.8, noise=(0.0, 6.0), jpeg_p=0.5,
                          jpeg_quality=(55, 95))
