"""Area (box-average) downscaling through an integral image: OpenCV's ``INTER_AREA``, faster.

A camera frame reduced to a small model input is where preprocessing costs the most: OpenCV's
``INTER_AREA`` for a non-integer factor (1280x720 to 96x96 is 13.3 x 7.5) walks every source
pixel through a general weighted-sum loop, about 3 ms per 720p frame on a desktop core, while the
model itself may need less than one. Area averaging is the right filter for it (every source
pixel counts once, so fine detail does not alias), and it is linear: each output pixel is the
mean of the image over a box whose edges fall between pixels. So it equals a difference of the
image's integral (summed-area table) at the box corners, where the integral at a fractional
position is the bilinear interpolation of the integral at whole pixels (the image is piecewise
constant). One ``cv2.integral`` pass (SIMD, a third of the cost) and a gather at the
(out_h + 1) x (out_w + 1) box corners give the same means; the results match ``INTER_AREA`` to
within one level of rounding (OpenCV accumulates in float32; measured in docs/benchmarks.md).

:func:`plan_for` decides when this pays: a large reduction to a small grid. Otherwise, and for
integer factors (OpenCV's own fast path), ``cv2.resize`` runs as before. Where the box edges
repeat within a few outputs (most camera and model sizes), :mod:`.separable` runs instead: it
reads the frame once and writes no integral image, about half the time again.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import cv2
import numpy as np

#: reductions smaller than this (source pixels per output pixel) stay with cv2.resize: gathering
#: the box corners costs about as much per output pixel as OpenCV's loop per ~20 source pixels
MIN_REDUCTION = 24.0
#: the integral image is int32: every box sum of a frame up to this many pixels fits exactly
MAX_SOURCE_PIXELS = (2**31 - 1) // 255
#: the integral buffer kept per thread; larger frames use cv2.resize (their buffer would cost
#: more memory than a device should hold for preprocessing): 1920x1080 fits
MAX_INTEGRAL_BYTES = 32 * 2**20


@dataclass(frozen=True, eq=False)
class AreaPlan:
    """Where the box corners of one (source size -> output size) reduction fall, computed once.

    ``index``: flat positions of the four integral samples around each corner, ``(4, G*3)`` with
    the channel folded in (G = (out_h + 1) * (out_w + 1)). ``wx``, ``wy``, ``wxy``: the
    bilinear weights of those samples, broadcast to the corner grid. ``scale``: 1 / box area.
    """

    source: tuple[int, int]
    output: tuple[int, int]
    index: np.ndarray
    wx: np.ndarray
    wy: np.ndarray
    wxy: np.ndarray
    scale: np.float32


def _edges(source: int, output: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole-pixel part and fraction of the box edges along one axis (as OpenCV places them)."""
    edges = np.arange(output + 1, dtype=np.float64) * (source / output)
    edges[-1] = source
    whole = np.minimum(np.floor(edges).astype(np.intp), source - 1)
    return whole, (edges - whole).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _plan(src_h: int, src_w: int, dst_h: int, dst_w: int) -> AreaPlan:
    y0, fy = _edges(src_h, dst_h)
    x0, fx = _edges(src_w, dst_w)
    row = src_w + 1
    base = (y0[:, None] * row + x0[None, :]).reshape(-1)
    corners = np.stack([base, base + 1, base + row, base + row + 1])  # (4, G)
    index = (corners[:, :, None] * 3 + np.arange(3)).reshape(4, -1)
    grid = (dst_h + 1, dst_w + 1, 3)
    wx = np.ascontiguousarray(np.broadcast_to(fx[None, :, None], grid))
    wy = np.ascontiguousarray(np.broadcast_to(fy[:, None, None], grid))
    for array in (index, wx, wy):
        array.setflags(write=False)
    wxy = wx * wy
    wxy.setflags(write=False)
    area = (src_h / dst_h) * (src_w / dst_w)
    return AreaPlan((src_h, src_w), (dst_h, dst_w), index, wx, wy, wxy, np.float32(1.0 / area))


def plan_for(src_h: int, src_w: int, dst_h: int, dst_w: int) -> AreaPlan | None:
    """The plan for this reduction when the integral path is faster, else None (cv2.resize).

    It is used for a downscale on both axes by at least :data:`MIN_REDUCTION` source pixels
    per output pixel, with a non-integer factor on some axis, for frames whose integral fits
    :data:`MAX_INTEGRAL_BYTES` and whose sums fit int32.
    """
    if dst_h > src_h or dst_w > src_w:
        return None
    if src_h % dst_h == 0 and src_w % dst_w == 0:
        return None  # OpenCV's integer-factor path is faster still
    if src_h * src_w < MIN_REDUCTION * dst_h * dst_w or src_h * src_w > MAX_SOURCE_PIXELS:
        return None
    if (src_h + 1) * (src_w + 1) * 3 * 4 > MAX_INTEGRAL_BYTES:
        return None
    return _plan(src_h, src_w, dst_h, dst_w)


class _Scratch(threading.local):
    """Per-thread buffers: the integral image, the corner samples and the box sums. Threads
    (the pipeline's producer, the exporter's loader pool) each reuse their own."""

    def __init__(self) -> None:
        self.integral = np.empty(0, np.int32)
        self.shapes: tuple[tuple[int, int], tuple[int, int]] | None = None
        self.buffers: dict[str, np.ndarray] = {}

    def for_plan(self, plan: AreaPlan) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        src_h, src_w = plan.source
        need = (src_h + 1) * (src_w + 1) * 3
        if self.integral.size < need:
            self.integral = np.empty(need, np.int32)
        integral = self.integral[:need].reshape(src_h + 1, src_w + 1, 3)
        if self.shapes != (plan.source, plan.output):
            dst_h, dst_w = plan.output
            grid, box = (dst_h + 1, dst_w + 1, 3), (dst_h, dst_w, 3)
            self.buffers = {
                "corners": np.empty((4, *grid), np.int32),
                "frac": np.empty(grid, np.float32),
                "term": np.empty(grid, np.float32),
                "box": np.empty(box, np.float32),
                "whole": np.empty(box, np.int32),
            }
            self.shapes = (plan.source, plan.output)
        return integral, self.buffers


_scratch = _Scratch()


def _box_difference(grid: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[i, j] = grid[i+1, j+1] - grid[i, j+1] - grid[i+1, j] + grid[i, j]``."""
    np.subtract(grid[1:, 1:], grid[:-1, 1:], out=out)
    out -= grid[1:, :-1]
    out += grid[:-1, :-1]
    return out


def area_downscale(image: np.ndarray, plan: AreaPlan, out: np.ndarray) -> np.ndarray:
    """Box-average ``image`` (uint8 HxWx3, the plan's source size) into ``out`` (uint8, the
    plan's output size) and return ``out``: ``cv2.resize(image, ..., INTER_AREA)`` within one
    level of rounding."""
    integral, buf = _scratch.for_plan(plan)
    cv2.integral(image, sum=integral, sdepth=cv2.CV_32S)
    corners = buf["corners"]
    np.take(integral.reshape(-1), plan.index, out=corners.reshape(4, -1))
    a, b, c, d = corners
    # The integral at a fractional corner is a + wx(b - a) + wy(c - a) + wx*wy(a - b - c + d).
    # The whole-pixel term a is large (up to 255 x the frame): its box difference is exact in
    # int32 (wrapping arithmetic, and the result is a box sum that fits). The fractional terms
    # are sums of single pixel rows and columns, small enough for float32.
    d -= b
    d -= c
    d += a
    b -= a
    c -= a
    frac, term = buf["frac"], buf["term"]
    np.multiply(b, plan.wx, out=frac)
    np.multiply(c, plan.wy, out=term)
    frac += term
    np.multiply(d, plan.wxy, out=term)
    frac += term
    box = _box_difference(frac, buf["box"])
    box += _box_difference(a, buf["whole"])
    box *= plan.scale
    np.rint(box, out=box)
    np.copyto(out, box, casting="unsafe")
    return out


__all__ = ["MIN_REDUCTION", "AreaPlan", "area_downscale", "plan_for"]
