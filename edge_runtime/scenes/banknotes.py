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

# Hues 70 to 120 degrees apart, so a colour-shifted counterfeit (35 to 50 degrees) does not take
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
    """The note at 400 x 200. The security features are drawn big and contrasting, so that
    each one is still visible when the whole note is 50 to 90 pixels wide in the model input."""
    w, h = NOTE_W, NOTE_H
    base = BASE_COLORS[denom]
    white = (250.0, 248.0, 240.0)
    paper = shade(base, 0.5, white)
    ink = shade(base, 0.45)
    mid = shade(base, 0.75, white)
    img = np.empty((h, w, 3), np.float32)
    img[:] = paper
    img *= np.linspace(0.94, 1.04, w, dtype=np.float32)[None, :, None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    # Guilloche: interleaved sine waves over the whole note.
    xs = np.arange(0, w + 4, 4, dtype=np.float32)
    for k in range(14):
        ys = 10 + k * 14 + 7 * np.sin(xs / (22 + denom % 7) + k * 0.7)
        pts = np.stack([xs, ys], 1)
        cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, ints(mid), 1, AA,
                      shift=4)
    cv2.rectangle(img, (6, 6), (w - 7, h - 7), ints(ink), 6)
    cv2.rectangle(img, (15, 15), (w - 16, h - 16), ints(mid), 1)
    # Watermark window: a large near-white oval with a faint portrait.
    if watermark:
        cv2.ellipse(img, (66, 100), (44, 70), 0, 0, 360, (250, 248, 242), -1, AA)
        faint = (226, 222, 214)
        cv2.ellipse(img, (66, 88), (17, 23), 0, 0, 360, faint, -1, AA)
        cv2.ellipse(img, (66, 146), (30, 22), 0, 180, 360, faint, -1, AA)
    # Security thread: a wide dark metallic stripe with small bright windows.
    if thread:
        cv2.rectangle(img, (126, 8), (149, h - 9), (36, 38, 46), -1)
        for y in range(18, h - 24, 34):
            cv2.rectangle(img, (131, y), (144, y + 10), (172, 174, 184), -1)
    # Portrait in an oval frame.
    cx, cy = 212, 96
    cv2.ellipse(img, (cx, cy), (46, 62), 0, 0, 360, ints(mid), -1, AA)
    cv2.ellipse(img, (cx, cy + 52), (38, 26), 0, 180, 360, ints(shade(base, 0.4)), -1, AA)
    skin = shade(base, 0.35, (235.0, 205.0, 180.0))
    cv2.ellipse(img, (cx, cy - 4), (20, 27), 0, 0, 360, ints(skin), -1, AA)
    cv2.ellipse(img, (cx, cy - 20), (21, 15), 0, 180, 360, ints(shade(base, 0.3)), -1, AA)
    cv2.ellipse(img, (cx, cy), (46, 62), 0, 0, 360, ints(ink), 3, AA)
    # Denomination: big digits on the right, small ones in a corner.
    text = str(denom)
    font = cv2.FONT_HERSHEY_DUPLEX
    big = 2.4 if len(text) == 2 else 1.75
    (tw, th), _ = cv2.getTextSize(text, font, big, 9)
    cv2.putText(img, text, (int(322 - tw / 2), 34 + th), font, big, ints(shade(base, 0.35)), 9,
                AA)
    cv2.putText(img, text, (22, 40), font, 0.8, ints(ink), 2, AA)
    cv2.putText(img, "CENTRAL BANK", (160, 29), cv2.FONT_HERSHEY_SIMPLEX, 0.45, ints(ink), 1, AA)
    # Microprint band: dense dark cross-hatching on white, which a copier or a cheap printer
    # turns into a pale smudge.
    x0, y0, x1, y1 = 262, 128, 390, 186
    patch = img[y0:y1, x0:x1]
    patch[:] = (248, 246, 240)
    ph, pw = patch.shape[:2]
    dark = ints(shade(base, 0.25))
    for x in range(-ph, pw, 9):
        cv2.line(patch, (x, 0), (x + ph, ph), dark, 2, AA)
        cv2.line(patch, (x + ph, 0), (x, ph), dark, 2, AA)
    if not sharp_microprint:
        smudge = cv2.GaussianBlur(patch, (0, 0), 6.0).astype(np.float32)
        smudge = smudge * 0.35 + np.asarray(white, np.float32) * 0.65
        patch[:] = np.clip(smudge + 0.5, 0, 255).astype(np.uint8)
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
        # Off in hue and in saturation, as a counterfeiter's inks are: each by more than the
        # kiosk's lighting ever changes a genuine note.
        hue = float(rng.uniform(35, 50)) * (1 if rng.random() < 0.5 else -1)
        saturation = float(rng.uniform(0.55, 0.75) if rng.random() < 0.5 else rng.uniform(1.3, 1.5))
        sprite = shift_colour(sprite, hue, saturation, max_width)
    return sprite


def note_corners(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Where a note lands in a frame: near the middle of the tray, 0.55 to 0.9 of the frame
    width, turned up to 10 degrees."""
    note_w = rng.uniform(0.55, 0.9) * width
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
    # Kiosk lighting is controlled: brightness varies, colour casts stay small (a cast would
    # mimic the colour-shift defect).
    lut = random_lighting(rng, gain=(0.7, 1.25), cast=0.03, contrast=(0.85, 1.1),
                          gamma=(0.85, 1.15))
    img = cv2.LUT(img, lut)
    # Uneven light across the tray: a soft brightness field.
    if rng.random() < 0.5:
        field = 0.85 + 0.3 * smooth_noise(rng, size, size, 2)
        img = np.clip(img * field[..., None] + 0.5, 0, 255).astype(np.uint8)
    # A kiosk camera is fixed and focused on the tray: little blur, mild compression.
    return camera_effects(img, rng, motion=0.0, blur=0.5, noise=(0.0, 6.0), jpeg_p=0.5,
                          jpeg_quality=(60, 95))
