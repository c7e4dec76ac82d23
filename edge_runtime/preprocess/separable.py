"""Area (box-average) downscaling as two passes: the same filter, the frame read once.

Area averaging is separable: each output pixel is ``Wy @ image @ Wx.T``, where row ``i`` of
``Wy`` holds the share of each source row inside output row ``i``'s box. With
``g = gcd(source, output)`` the box edges ``i * source / output`` repeat every
``P = source / g`` source rows and ``Q = output / g`` outputs, and every share is a whole
multiple of ``1 / Q``: scaled by ``Q`` the row weights are small integers, the same in every
period.

- **Rows** (the frame's long, contiguous direction, where nearly all the work is): the boxes of
  one residue ``r`` (output rows ``r, r + Q, r + 2Q, ...``) start one period apart, so one
  strided view holds all of them and one numpy sum adds their whole rows (uint8 into uint16);
  the up to two partial rows at the box edges are added with their integer weights by one or
  two ``cv2.addWeighted`` calls into float32. Exact: every value is an integer below 2**24.
  ``Q`` residues, so a few calls per frame instead of one per output row, and no 11 MB integral
  image (:mod:`.area`) that also evicts the model's weights from the cache.
- **Columns**, on the small ``output_h x source_w`` float rows: ``cv2.resize`` with
  ``INTER_AREA`` (the same box weights, float32 arithmetic on exact integer rows).
- **Rounding**: divided by the row period in float64 and rounded to the nearest level (ties to
  even). The result is the box mean within float32 rounding (about 1e-5 of a level), so it can
  differ from the correctly rounded mean, and from OpenCV's ``INTER_AREA`` (which accumulates
  rows in float32 too), only where the mean is a tie (x.5), by one level.

:func:`separable_plan` says when this applies; otherwise :mod:`.area` or ``cv2.resize`` runs.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np

#: most residues the row pass may take (2-3 calls each): 1280x720 into 224x224 takes 14 and
#: 1920x1080 into 224x224 28, both about twice as fast as OpenCV; at 299 (720 into 299 rows)
#: the calls cost as much as OpenCV's loop, and the integral path (a fixed number of calls) or
#: cv2.resize runs instead
MAX_RESIDUES = 64
#: whole rows of one box summed in uint16: at most this many (65535 // 255)
MAX_ROWS_PER_BOX = 257
#: a float32 sum of integers is exact below 2**24: bounds the row period times 255
_EXACT_FLOAT32 = 2**24
_CHANNELS = 3


@dataclass(frozen=True)
class _Residue:
    """The rows of output rows ``r, r + Q, ...`` within their period: ``first`` row offset,
    ``count`` rows, the whole (weight Q) rows ``whole`` as a half-open range, and the partial
    rows as ``(offset, weight)``."""

    first: int
    count: int
    whole: tuple[int, int]
    partial: tuple[tuple[int, int], ...]


@dataclass(frozen=True, eq=False)
class SeparablePlan:
    """How one (source size -> output size) reduction runs, computed once per size pair.

    ``rows``: the row residues (Q of them); ``period_rows`` (P) and ``repeats`` (g) of the row
    axis. The row pass's sums are P times the row means.
    """

    source: tuple[int, int]
    output: tuple[int, int]
    rows: tuple[_Residue, ...]
    period_rows: int
    repeats: int


def _period(source: int, output: int) -> tuple[int, int, int]:
    """``(g, P, Q)``: repeats, source pixels and outputs per period of the box edges."""
    g = math.gcd(source, output)
    return g, source // g, output // g


def _residues(source: int, output: int) -> tuple[_Residue, ...]:
    """The residues of one axis: which source rows each covers within the period, and their
    integer weights (units of 1/Q)."""
    _, p, q = _period(source, output)
    residues: list[_Residue] = []
    for r in range(q):
        lo, hi = (r * p) // q, -((-(r + 1) * p) // q)  # floor and ceil of the box edges
        w = [min((y + 1) * q, (r + 1) * p) - max(y * q, r * p) for y in range(lo, hi)]
        whole = [i for i, value in enumerate(w) if value == q]
        span = (whole[0], whole[-1] + 1) if whole else (0, 0)
        partial = tuple((i, value) for i, value in enumerate(w) if value != q)
        residues.append(_Residue(lo, hi - lo, span, partial))
    return tuple(residues)


@functools.lru_cache(maxsize=16)
def _plan(src_h: int, src_w: int, dst_h: int, dst_w: int) -> SeparablePlan:
    g_y, p_y, _ = _period(src_h, dst_h)
    return SeparablePlan((src_h, src_w), (dst_h, dst_w), _residues(src_h, dst_h), p_y, g_y)


def separable_plan(src_h: int, src_w: int, dst_h: int, dst_w: int) -> SeparablePlan | None:
    """The plan for this area reduction when the separable path applies, else None.

    It applies to a downscale on both axes, not by whole factors on both (OpenCV's own fast path
    is faster), with at most :data:`MAX_RESIDUES` row residues, at most
    :data:`MAX_ROWS_PER_BOX` source rows per box (its sums fit uint16) and a row period whose
    weighted sums stay exact in float32.
    """
    if dst_h > src_h or dst_w > src_w or dst_h <= 0 or dst_w <= 0:
        return None
    if src_h % dst_h == 0 and src_w % dst_w == 0:
        return None
    _, p_y, q_y = _period(src_h, dst_h)
    if q_y > MAX_RESIDUES or p_y * 255 >= _EXACT_FLOAT32:
        return None
    if -(-p_y // q_y) + 1 > MAX_ROWS_PER_BOX:  # a box spans at most ceil(P / Q) + 1 rows
        return None
    return _plan(src_h, src_w, dst_h, dst_w)


class _Scratch(threading.local):
    """Per-thread buffers of the last plan (the pipeline's producer, the exporter's loaders)."""

    def __init__(self) -> None:
        self.plan: SeparablePlan | None = None
        self.buffers: dict[str, np.ndarray] = {}

    def for_plan(self, plan: SeparablePlan) -> dict[str, np.ndarray]:
        if self.plan is not plan:
            src_w, dst_w = plan.source[1], plan.output[1]
            q, g, row = len(plan.rows), plan.repeats, src_w * _CHANNELS
            self.buffers = {
                "whole": np.empty((q, g, row), np.uint16),
                "pair": np.empty((q, g, row), np.float32),
                "rows": np.empty((q, g, row), np.float32),
                "sums": np.empty((q, g, dst_w, _CHANNELS), np.float32),
                "means": np.empty((q, g, dst_w, _CHANNELS), np.float64),
            }
            self.plan = plan
        return self.buffers


_scratch = _Scratch()


def _row_pass(
    view: np.ndarray, residue: _Residue, scale: int, buf: dict[str, np.ndarray], r: int
) -> np.ndarray:
    """Integer-weighted row sums of one residue, ``(g, W*3)`` float32 (exact integers)."""
    terms: list[tuple[np.ndarray, float]] = []
    lo, hi = residue.whole
    if hi - lo >= 2:
        whole = buf["whole"][r]
        np.add.reduce(view[:, lo:hi], axis=1, dtype=np.uint16, out=whole)
        terms.append((whole, float(scale)))
    elif hi - lo == 1:
        terms.append((view[:, lo], float(scale)))
    terms.extend((view[:, offset], float(weight)) for offset, weight in residue.partial)
    out = buf["rows"][r]
    if len(terms) == 1:
        np.multiply(terms[0][0], np.float32(terms[0][1]), out=out, casting="unsafe")
    elif len(terms) == 2:
        (a, wa), (b, wb) = terms
        cv2.addWeighted(a, wa, b, wb, 0.0, dst=out, dtype=cv2.CV_32F)
    else:  # whole rows and two partial rows
        (a, wa), (b, wb), (c, wc) = terms
        pair = buf["pair"][r]
        cv2.addWeighted(b, wb, c, wc, 0.0, dst=pair, dtype=cv2.CV_32F)
        cv2.addWeighted(a, wa, pair, 1.0, 0.0, dst=out, dtype=cv2.CV_32F)
    return out


def separable_downscale(image: np.ndarray, plan: SeparablePlan, out: np.ndarray) -> np.ndarray:
    """Box-average ``image`` (uint8 HxWx3 of the plan's source size, any row stride) into ``out``
    (contiguous uint8 of the plan's output size) and return ``out``: the box means within float32
    rounding, rounded to the nearest level (see the module doc)."""
    src_w, dst_w = plan.source[1], plan.output[1]
    if image.strides[1:] != (_CHANNELS, 1):  # pixels not packed along the row (rare)
        image = np.ascontiguousarray(image)
    buf = _scratch.for_plan(plan)
    g, p = plan.repeats, plan.period_rows
    periods = image.reshape(g, p, src_w * _CHANNELS)  # a view: rows may have any stride
    sums = buf["sums"]
    scale = len(plan.rows)  # Q: whole rows weigh Q, partial rows their share of it
    for r, residue in enumerate(plan.rows):
        view = periods[:, residue.first : residue.first + residue.count]
        _row_pass(view, residue, scale, buf, r)
    # The column pass has no row to mix: one call for all residues' rows.
    rows = buf["rows"].reshape(scale * g, src_w, _CHANNELS)
    cv2.resize(rows, (dst_w, scale * g), dst=sums.reshape(scale * g, dst_w, _CHANNELS),
               interpolation=cv2.INTER_AREA)  # fmt: skip
    means = buf["means"]
    np.divide(sums, float(p), out=means)
    np.rint(means, out=means)
    # Output row r + m*Q is residue r's m-th row.
    target = out.reshape(g, scale, dst_w, _CHANNELS)
    np.copyto(target, means.transpose(1, 0, 2, 3), casting="unsafe")
    return out


__all__ = [
    "MAX_RESIDUES",
    "SeparablePlan",
    "separable_downscale",
    "separable_plan",
]
