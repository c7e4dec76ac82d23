"""Drawing primitives shared by the scenarios: sprites, compositing, lighting and camera effects.

Everything here is a pure function of its arguments (randomness comes in as a
``numpy.random.Generator``), so a sample or a stream frame is reproducible from its seed.
Geometry uses *edge* coordinates: an image of width ``w`` spans ``0..w`` and pixel ``i`` covers
``i..i+1``; OpenCV's centre convention is applied only inside :func:`paste`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

Color = tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class Sprite:
    """An RGBA image with its mip levels, for pasting at any size without aliasing.

    ``levels[0]`` is full resolution; each level is float32, H x W x 4, premultiplied by alpha
    (alpha in 0..1). ``content`` is the box ``(x0, y0, x1, y1)`` of the object inside the
    level-0 canvas, as fractions; the rest of the canvas holds effects such as a drop shadow.
    """

    levels: tuple[np.ndarray, ...]
    content: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    @property
    def coverage(self) -> float:
        """Mean alpha over the content box: the fraction of the object's box the object fills."""
        base = self.levels[-1]
        h, w = base.shape[:2]
        x0, y0, x1, y1 = self.content
        box = base[int(y0 * h) : max(int(y0 * h) + 1, int(y1 * h)),
                   int(x0 * w) : max(int(x0 * w) + 1, int(x1 * w)), 3]
        return float(box.mean())


def make_sprite(
    rgb: np.ndarray,
    alpha: np.ndarray,
    content: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
    min_side: int = 12,
) -> Sprite:
    """A sprite from an RGB uint8 image and an alpha mask (uint8 0..255 or float 0..1)."""
    a = alpha.astype(np.float32)
    if alpha.dtype == np.uint8:
        a /= 255.0
    rgba = np.empty(rgb.shape[:2] + (4,), np.float32)
    rgba[..., :3] = rgb.astype(np.float32) * a[..., None]
    rgba[..., 3] = a
    levels: list[np.ndarray] = [rgba]
    while min(levels[-1].shape[:2]) // 2 >= min_side:
        h, w = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    return Sprite(tuple(levels), content)


def recolor_sprite(
    sprite: Sprite, fn: Callable[[np.ndarray], np.ndarray], max_width: int | None = None
) -> Sprite:
    """A sprite whose RGB is ``fn(rgb_uint8) -> rgb_uint8`` applied to the un-premultiplied
    colours (alpha and content unchanged).

    With ``max_width``, the new sprite starts at the smallest level at least that wide, which is
    enough for pasting at up to that width and much cheaper than recolouring full resolution.
    """
    levels = sprite.levels
    if max_width is not None:
        while len(levels) > 1 and levels[1].shape[1] >= max_width:
            levels = levels[1:]
    base = levels[0]
    a = base[..., 3]
    safe = np.maximum(a, 1e-3)[..., None]
    rgb = np.clip(base[..., :3] / safe + 0.5, 0, 255).astype(np.uint8)
    new_rgb = fn(rgb)
    min_side = min(levels[-1].shape[:2])
    return make_sprite(new_rgb, a, sprite.content, min_side=min_side)


def paste(
    dst: np.ndarray,
    sprite: Sprite,
    corners: np.ndarray,
    fade: float = 0.0,
    fade_to: Color = (170.0, 165.0, 150.0),
) -> tuple[int, int, int, int]:
    """Warp ``sprite`` so the corners of its content box land on ``corners`` and blend it in place.

    ``corners`` is 4 x 2 (x, y) in edge coordinates of ``dst``, in the order top-left, top-right,
    bottom-right, bottom-left of the content. ``fade`` (0..1) washes the sprite's colours toward
    ``fade_to``, as sun and dirt do. Returns the touched pixel box ``(x0, y0, x1, y1)`` (empty when
    the sprite lies outside ``dst``).
    """
    corners = np.asarray(corners, np.float32).reshape(4, 2)
    cx0, cy0, cx1, cy1 = sprite.content
    base_h, base_w = sprite.levels[0].shape[:2]
    unit = np.array(
        [[cx0, cy0], [cx1, cy0], [cx1, cy1], [cx0, cy1]], np.float32
    ) * np.array([base_w, base_h], np.float32)
    # Where the whole canvas (content plus effects) lands.
    to_dst = cv2.getPerspectiveTransform(unit, corners)
    canvas = np.array([[0, 0], [base_w, 0], [base_w, base_h], [0, base_h]], np.float32)
    canvas_dst = cv2.perspectiveTransform(canvas[None], to_dst)[0]
    # The mip level that is at least as large as the pasted size, to avoid aliasing.
    span = max(
        float(np.linalg.norm(canvas_dst[1] - canvas_dst[0])),
        float(np.linalg.norm(canvas_dst[2] - canvas_dst[3])),
    ) / base_w
    span = max(span, float(np.linalg.norm(canvas_dst[3] - canvas_dst[0])) / base_h)
    level_index = 0
    while level_index + 1 < len(sprite.levels) and span <= 0.5 ** (level_index + 1):
        level_index += 1
    level = sprite.levels[level_index]
    lh, lw = level.shape[:2]

    h, w = dst.shape[:2]
    x0 = max(int(np.floor(canvas_dst[:, 0].min())), 0)
    y0 = max(int(np.floor(canvas_dst[:, 1].min())), 0)
    x1 = min(int(np.ceil(canvas_dst[:, 0].max())), w)
    y1 = min(int(np.ceil(canvas_dst[:, 1].max())), h)
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0)
    src = np.array([[0, 0], [lw, 0], [lw, lh], [0, lh]], np.float32) - 0.5
    shifted = canvas_dst - np.array([x0 + 0.5, y0 + 0.5], np.float32)
    matrix = cv2.getPerspectiveTransform(src, shifted)
    warped = cv2.warpPerspective(
        level,
        matrix,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    )
    roi = dst[y0:y1, x0:x1]
    alpha = warped[..., 3:4]
    rgb = warped[..., :3]
    if fade > 0:
        rgb = rgb * (1.0 - fade) + alpha * (np.asarray(fade_to, np.float32) * fade)
    blended = roi.astype(np.float32) * (1.0 - alpha) + rgb + 0.5
    np.clip(blended, 0, 255, out=blended)
    roi[...] = blended.astype(np.uint8)
    return (x0, y0, x1, y1)


def quad(cx: float, cy: float, w: float, h: float, angle_deg: float = 0.0) -> np.ndarray:
    """Corners (TL, TR, BR, BL) of a w x h box centred at (cx, cy), rotated clockwise on screen."""
    t = np.deg2rad(angle_deg)
    c, s = np.cos(t), np.sin(t)
    local = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    rot = np.array([[c, -s], [s, c]])
    return (local @ rot.T + np.array([cx, cy])).astype(np.float32)


def virtual_frame(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """Height and width of the camera frame a ``size`` x ``size`` sample is drawn in.

    The runtime squashes a whole camera frame to the square model input, so samples are drawn in
    a frame 0.9 to 1.5 times wider than high (a 640 x 480 stream frame is 4/3) and squashed the
    same way by :func:`squash`. One sample in three is drawn at twice the resolution, so the
    downsampling softness of a large stream frame is part of the training data too.
    """
    scale = 2 if rng.random() < 0.33 else 1
    aspect = float(rng.uniform(0.9, 1.5))
    return size * scale, max(size, int(round(size * scale * aspect)))


def squash(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a frame to ``size`` x ``size`` ignoring its aspect, as the runtime's ``squash`` mode
    with ``area`` interpolation does."""
    if img.shape[:2] == (size, size):
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def lighting_lut(
    gain: float = 1.0,
    cast: Color = (1.0, 1.0, 1.0),
    contrast: float = 1.0,
    gamma: float = 1.0,
    offset: float = 0.0,
) -> np.ndarray:
    """A per-channel lookup table (1 x 256 x 3, uint8) for brightness, colour cast, contrast and
    gamma; apply it with ``cv2.LUT``."""
    x = np.arange(256, dtype=np.float32) / 255.0
    y = np.clip((x - 0.5) * contrast + 0.5, 0.0, 1.0) ** gamma
    table = np.empty((1, 256, 3), np.float32)
    for c in range(3):
        table[0, :, c] = y * gain * cast[c] + offset
    return np.clip(table * 255.0 + 0.5, 0, 255).astype(np.uint8)


def lit_color(color: Color, lut: np.ndarray) -> tuple[int, int, int]:
    """A colour passed through a lighting table, as ints for cv2 drawing calls."""
    return tuple(int(lut[0, int(np.clip(color[c], 0, 255)), c]) for c in range(3))  # type: ignore[return-value]


def random_lighting(
    rng: np.random.Generator,
    gain: tuple[float, float],
    cast: float,
    contrast: tuple[float, float],
    gamma: tuple[float, float],
) -> np.ndarray:
    """A lighting table drawn uniformly from the given ranges (``cast`` is the per-channel
    relative spread)."""
    return lighting_lut(
        gain=float(rng.uniform(*gain)),
        cast=tuple(float(v) for v in rng.uniform(1 - cast, 1 + cast, 3)),  # type: ignore[arg-type]
        contrast=float(rng.uniform(*contrast)),
        gamma=float(rng.uniform(*gamma)),
    )


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Value noise in 0..1 (float32, h x w) with about ``cells`` features across the longer side."""
    cells = max(2, cells)
    gh = max(2, int(round(cells * h / max(h, w))) + 1)
    gw = max(2, int(round(cells * w / max(h, w))) + 1)
    grid = rng.random((gh, gw), dtype=np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def vertical_gradient(h: int, w: int, top: Color, bottom: Color) -> np.ndarray:
    """An RGB float32 image fading from ``top`` to ``bottom``."""
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    column = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return cv2.resize(column, (w, h), interpolation=cv2.INTER_NEAREST)


def add_noise(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian sensor noise, with a little more in dark areas as real sensors have."""
    if sigma <= 0:
        return img
    noise = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    out = img.astype(np.float32) + noise
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def motion_blur(img: np.ndarray, length: float, angle_deg: float) -> np.ndarray:
    """Blur along a line of ``length`` pixels (no-op under 2 px)."""
    k = int(round(length))
    if k < 2:
        return img
    size = k | 1
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    t = np.deg2rad(angle_deg)
    dx, dy = np.cos(t) * (k / 2), np.sin(t) * (k / 2)
    cv2.line(
        kernel,
        (int(round(c - dx)), int(round(c - dy))),
        (int(round(c + dx)), int(round(c + dy))),
        1.0,
        1,
        cv2.LINE_AA,
    )
    kernel /= kernel.sum()
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through JPEG at ``quality`` (RGB in, RGB out) for compression artefacts."""
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:  # pragma: no cover - cv2 always encodes a valid uint8 image
        return img
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if decoded is None:  # pragma: no cover - a buffer cv2 just encoded always decodes
        return img
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def camera_effects(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    motion: float,
    blur: float,
    noise: tuple[float, float],
    jpeg_p: float,
    jpeg_quality: tuple[int, int],
) -> np.ndarray:
    """What a camera adds after the light: motion blur (max length as a fraction of the image
    side, with probability 0.3), defocus (max sigma in pixels, probability 0.25), sensor noise
    (sigma range) and JPEG compression (probability, quality range)."""
    side = img.shape[0]
    if motion > 0 and rng.random() < 0.3:
        img = motion_blur(img, rng.uniform(0, motion) * side, rng.uniform(0, 180))
    if blur > 0 and rng.random() < 0.25:
        sigma = rng.uniform(0.3, blur)
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = add_noise(img, rng, float(rng.uniform(*noise)))
    if rng.random() < jpeg_p:
        img = jpeg(img, int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)))
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round and clip a float image to uint8."""
    out = img + np.float32(0.5)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def shade(color: Color, factor: float, toward: Color = (0.0, 0.0, 0.0)) -> Color:
    """``color`` moved toward ``toward`` by ``1 - factor`` (factor 1 keeps it)."""
    return tuple(  # type: ignore[return-value]
        float(c * factor + t * (1.0 - factor)) for c, t in zip(color, toward)
    )


def ints(color: Color) -> tuple[int, int, int]:
    """A colour as ints for cv2 drawing calls."""
    return (int(round(color[0])), int(round(color[1])), int(round(color[2])))
