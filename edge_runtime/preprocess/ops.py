"""Resize modes, ROI crop, channel order and input quantization."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np

from edge_runtime.errors import PreprocessError
from edge_runtime.imageio import read_image
from edge_runtime.preprocess.area import area_downscale, plan_for
from edge_runtime.preprocess.separable import separable_downscale, separable_plan

ResizeMode = Literal["squash", "center-crop", "letterbox"]
Interpolation = Literal["nearest", "linear", "area", "cubic", "lanczos"]
ChannelOrder = Literal["RGB", "BGR"]

RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
INTERPOLATIONS: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}


@dataclass(frozen=True)
class Roi:
    """A region of interest as fractions of the frame: left, top, width, height, each in 0..1.

    Fractions keep one setting valid whatever resolution the camera delivers.
    """

    x: float
    y: float
    width: float
    height: float

    def __post_init__(self) -> None:
        values = (self.x, self.y, self.width, self.height)
        if not all(0.0 <= v <= 1.0 for v in values) or self.width <= 0 or self.height <= 0:
            raise PreprocessError(
                f"ROI values must be fractions in 0..1 with a positive size: {values}"
            )
        if self.x + self.width > 1.0 + 1e-9 or self.y + self.height > 1.0 + 1e-9:
            raise PreprocessError(f"ROI reaches outside the frame: {values}")

    @classmethod
    def parse(cls, text: str) -> Roi:
        """Parse ``'x,y,width,height'`` (fractions), as given on the command line.

        Raises:
            PreprocessError: not four numbers, or not a valid ROI.
        """
        try:
            x, y, w, h = (float(part) for part in text.split(","))
        except ValueError:
            raise PreprocessError(
                f"ROI must be 'x,y,width,height' as fractions, got '{text}'"
            ) from None
        return cls(x, y, w, h)

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Pixel box ``(x0, y0, x1, y1)`` of this ROI in a frame of the given size (at least
        1x1)."""
        x0 = min(int(round(self.x * width)), width - 1)
        y0 = min(int(round(self.y * height)), height - 1)
        x1 = max(min(int(round((self.x + self.width) * width)), width), x0 + 1)
        y1 = max(min(int(round((self.y + self.height) * height)), height), y0 + 1)
        return x0, y0, x1, y1


@dataclass(frozen=True)
class PreprocessSpec:
    """How a frame becomes a model input: size, resize mode, interpolation, ROI, channel order.

    ``fill`` is the gray level of letterbox padding. ``channel_order`` is the order the *model*
    wants;
    frames are always RGB, and our own models want RGB too.
    """

    height: int
    width: int
    resize: ResizeMode = "squash"
    interpolation: Interpolation = "area"
    roi: Roi | None = None
    channel_order: ChannelOrder = "RGB"
    fill: int = 0

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise PreprocessError(f"input size must be positive, got {self.height}x{self.width}")
        if self.resize not in RESIZE_MODES:
            raise PreprocessError(
                f"unknown resize mode '{self.resize}' (choose {', '.join(RESIZE_MODES)})"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise PreprocessError(
                f"unknown interpolation '{self.interpolation}' (choose {', '.join(INTERPOLATIONS)})"
            )
        if self.channel_order not in ("RGB", "BGR"):
            raise PreprocessError(f"channel order must be RGB or BGR, got '{self.channel_order}'")
        if not 0 <= self.fill <= 255:
            raise PreprocessError(f"letterbox fill must be 0..255, got {self.fill}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


def crop_roi(image: np.ndarray, roi: Roi | None) -> np.ndarray:
    """The ROI of ``image`` as a view (no copy); the whole image when ``roi`` is None."""
    if roi is None:
        return image
    x0, y0, x1, y1 = roi.box(image.shape[0], image.shape[1])
    return image[y0:y1, x0:x1]


def center_crop_box(src_h: int, src_w: int, dst_h: int, dst_w: int) -> tuple[int, int, int, int]:
    """The largest centred box ``(x0, y0, x1, y1)`` of the source with the target's aspect ratio."""
    if src_w * dst_h > dst_w * src_h:  # source is wider than the target: trim left and right
        crop_w = max(1, int(round(src_h * dst_w / dst_h)))
        x0 = (src_w - crop_w) // 2
        return x0, 0, x0 + crop_w, src_h
    crop_h = max(1, int(round(src_w * dst_h / dst_w)))
    y0 = (src_h - crop_h) // 2
    return 0, y0, src_w, y0 + crop_h


def letterbox_box(src_h: int, src_w: int, dst_h: int, dst_w: int) -> tuple[int, int, int, int]:
    """Where the aspect-preserving resized source lands in the target: ``(x0, y0, x1, y1)``."""
    scale = min(dst_w / src_w, dst_h / src_h)
    new_w = min(dst_w, max(1, int(round(src_w * scale))))
    new_h = min(dst_h, max(1, int(round(src_h * scale))))
    x0 = (dst_w - new_w) // 2
    y0 = (dst_h - new_h) // 2
    return x0, y0, x0 + new_w, y0 + new_h


def _check_frame(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise PreprocessError("frames must be uint8 numpy arrays")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise PreprocessError(f"frames must be RGB, height x width x 3, got shape {image.shape}")


def _check_out(out: np.ndarray, spec: PreprocessSpec, dtype: type) -> None:
    if out.shape != spec.shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise PreprocessError(
            f"output buffer must be a contiguous {np.dtype(dtype).name} array of shape {spec.shape}"
        )


def _resize(region: np.ndarray, out: np.ndarray, flag: int) -> np.ndarray:
    """Resize ``region`` into ``out`` (uint8, contiguous). Area downscaling by a non-integer
    factor runs as two exact integer passes where the box edges repeat often enough
    (:mod:`.separable`), else through the integral image for large reductions (:mod:`.area`):
    the same box means as ``INTER_AREA``, correctly rounded, in a fraction of its time.
    Everything else is ``cv2.resize``, which writes straight into ``out``."""
    if flag == cv2.INTER_AREA:
        src_h, src_w, dst_h, dst_w = region.shape[0], region.shape[1], out.shape[0], out.shape[1]
        separable = separable_plan(src_h, src_w, dst_h, dst_w)
        if separable is not None:
            return separable_downscale(region, separable, out)
        plan = plan_for(src_h, src_w, dst_h, dst_w)
        if plan is not None:
            return area_downscale(region, plan, out)
    resized = cv2.resize(region, (out.shape[1], out.shape[0]), dst=out, interpolation=flag)
    if resized is not out:  # pragma: no cover - defensive, cv2 reallocated
        np.copyto(out, resized)
    return out


def prepare(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray | None = None) -> np.ndarray:
    """Turn an RGB uint8 frame into the model's uint8 HxWx3 input (no normalization).

    Applies the ROI crop, then the resize mode with the chosen interpolation, then the channel
    order.
    When ``out`` is given (uint8, ``spec.shape``, contiguous) the result is written there and
    returned.

    Raises:
        PreprocessError: the frame is not RGB uint8 HxWx3, or ``out`` does not fit.
    """
    _check_frame(image)
    if out is None:
        out = np.empty(spec.shape, dtype=np.uint8)
    else:
        _check_out(out, spec, np.uint8)
    region = crop_roi(image, spec.roi)
    src_h, src_w = region.shape[:2]
    flag = INTERPOLATIONS[spec.interpolation]

    if spec.resize == "center-crop":
        x0, y0, x1, y1 = center_crop_box(src_h, src_w, spec.height, spec.width)
        region = region[y0:y1, x0:x1]
    if spec.resize in ("squash", "center-crop"):
        if region.shape[:2] == (spec.height, spec.width):
            np.copyto(out, region)
        else:
            _resize(region, out, flag)
    else:  # letterbox
        x0, y0, x1, y1 = letterbox_box(src_h, src_w, spec.height, spec.width)
        out.fill(spec.fill)
        if (y1 - y0, x1 - x0) == (src_h, src_w):
            out[y0:y1, x0:x1] = region
        else:
            placed = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
            out[y0:y1, x0:x1] = _resize(region, placed, flag)

    if spec.channel_order == "BGR":
        out[...] = out[..., ::-1]
    return out


def prepare_float(
    image: np.ndarray,
    spec: PreprocessSpec,
    out: np.ndarray | None = None,
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """The same as :func:`prepare`, as float32 pixels 0..255 (exactly the uint8 result cast).

    ``scratch`` is an optional uint8 buffer of ``spec.shape`` to avoid allocating per frame.

    Raises:
        PreprocessError: as :func:`prepare`.
    """
    pixels = prepare(image, spec, out=scratch)
    if out is None:
        return pixels.astype(np.float32)
    _check_out(out, spec, np.float32)
    np.copyto(out, pixels, casting="unsafe")
    return out


def quantize_pixels(
    pixels: np.ndarray,
    dtype: np.dtype | type,
    scale: float,
    zero_point: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Express 0..255 pixels in a quantized input's integer domain: ``round(p / scale +
    zero_point)``.

    Models we export take uint8 with scale 1 and zero point 0, which is a plain copy; third-party
    int8
    models typically use zero point -128. Results are clipped to the dtype's range.

    Raises:
        PreprocessError: ``dtype`` is not an integer type or ``scale`` is not positive.
    """
    target = np.dtype(dtype)
    if target.kind not in "iu":
        raise PreprocessError(f"quantized inputs must be integer, got {target}")
    if not scale > 0:
        raise PreprocessError(f"quantization scale must be positive, got {scale}")
    if out is None:
        out = np.empty(pixels.shape, dtype=target)
    info = np.iinfo(target)
    if abs(scale - 1.0) < 1e-6 and float(zero_point).is_integer():
        if target == np.uint8 and zero_point == 0 and pixels.dtype == np.uint8:
            np.copyto(out, pixels)
            return out
        # Widen before shifting so nothing wraps around (e.g. 200 - 128 in int8).
        shifted = pixels.astype(np.int16) + int(zero_point)
    else:
        shifted = np.rint(pixels.astype(np.float32) / np.float32(scale) + np.float32(zero_point))
    np.clip(shifted, info.min, info.max, out=shifted)
    np.copyto(out, shifted, casting="unsafe")
    return out


def prepare_file(path: str | os.PathLike[str], spec: PreprocessSpec) -> np.ndarray:
    """Read an image file and prepare it: what the exporter feeds the model for a training image.

    Raises:
        PreprocessError: the file cannot be read or decoded.
    """
    return prepare(read_image(path), spec)
