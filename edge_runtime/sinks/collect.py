"""Field data: the frames a model was unsure of, saved for people to review and train on.

What a device sees is the best training data a team will get. This sink saves the frames whose
decision is ``unknown``, whose best two classes are within ``margin`` of each other, or whose
own best class disagrees with the smoothed decision, as ``DIR/<decided-label>/<time>_<score>.jpg``
with a JSON sidecar (scores, model name and version, source, frame index, capture group). It is
rate-limited (a token bucket: ``max_per_minute``, bursts of ``burst``) and capped in megabytes,
the oldest frames dropped first. A full, read-only or missing folder never stops the pipeline:
the failed save raises, the pipeline counts it (``sink_collect`` in /status ``errors``) and
logs one line, and the next qualifying frame tries again.

Frames saved within ``group_gap_s`` of each other form one capture group (the same scene seen
a few times): ``edge-export dataset import`` keeps a group on one side of a train/test split.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from edge_runtime.errors import SinkError
from edge_runtime.sinks.base import Flag, Sink, SinkConfig, SinkContext, StatusProvider
from edge_runtime.types import Frame, Prediction

log = logging.getLogger(__name__)

REASONS = ("unknown", "margin", "disagrees")


def collect_reason(
    prediction: Prediction, *, margin: float, unknown: bool, disagree: bool
) -> str | None:
    """Why ``prediction``'s frame is worth a person's look, or None: ``unknown`` (no class was
    confident enough), ``margin`` (the best two classes of the frame are less than ``margin``
    apart) or ``disagrees`` (the frame's own best class is not the smoothed decision)."""
    if unknown and prediction.unknown:
        return "unknown"
    top = prediction.top
    if len(top) >= 2 and top[0].score - top[1].score < margin:
        return "margin"
    if disagree and top and not prediction.unknown and top[0].label != prediction.label:
        return "disagrees"
    return None


class TokenBucket:
    """At most ``rate_per_minute`` on average, ``burst`` at once; ``clock`` in seconds."""

    def __init__(self, rate_per_minute: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "label"


def _stamp(wall: float) -> str:
    """A UTC time that sorts as text and holds no ``_`` (the file name's separator)."""
    seconds = int(wall)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f"{wall - seconds:.3f}"[1:] + "Z"


class CollectConfig(SinkConfig):
    """``[collect]`` (or ``[outputs] collect``): save the frames the model was unsure of under
    ``dir``, for review and retraining. ``collect = "DIR"`` is short for ``{ dir = "DIR" }``."""

    key = "collect"
    shorthand = "dir"
    flags = (
        Flag(
            ("--collect",),
            "dir",
            "save frames the model was unsure of under DIR/<label>/ for review",
            "DIR",
        ),
    )

    dir: str = Field(description="Folder receiving <decided-label>/<time>_<score>.jpg + .json.")
    margin: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Save a frame whose best two classes are less than this apart (0: never).",
    )
    unknown: bool = Field(True, description="Save frames decided 'unknown'.")
    disagree: bool = Field(
        True, description="Save frames whose own best class is not the smoothed decision."
    )
    max_per_minute: float = Field(
        6.0, gt=0, description="Frames saved a minute, on average (a token bucket)."
    )
    burst: int = Field(3, ge=1, description="Frames that may be saved at once after a pause.")
    max_mb: float = Field(
        500.0, gt=0, description="Megabytes the folder may hold; the oldest frames go first."
    )
    quality: int = Field(90, ge=1, le=100, description="JPEG quality of the saved frames.")
    group_gap_s: float = Field(
        30.0,
        gt=0,
        description="Frames saved within this many seconds of the previous one share a capture "
        "group, kept together by edge-export dataset import.",
    )

    def build(self, context: SinkContext) -> list[Sink]:
        return [
            CollectSink(
                self.dir,
                margin=self.margin,
                unknown=self.unknown,
                disagree=self.disagree,
                max_per_minute=self.max_per_minute,
                burst=self.burst,
                max_mb=self.max_mb,
                quality=self.quality,
                group_gap_s=self.group_gap_s,
            )
        ]


@dataclass(frozen=True)
class _Saved:
    key: str  # the file name: its time sorts oldest first
    image: Path
    bytes: int


class CollectSink(Sink):
    """Saves qualifying frames; see the module docstring. ``clock`` (monotonic, for the rate
    and the groups) and ``wall`` (for the names and sidecars) are injectable for tests.

    Counters: ``saved``, ``dropped`` (removed to stay under the cap), ``rate_limited``,
    ``failed``.
    """

    name = "collect"
    Config = CollectConfig

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        margin: float = 0.2,
        unknown: bool = True,
        disagree: bool = True,
        max_per_minute: float = 6.0,
        burst: int = 3,
        max_mb: float = 500.0,
        quality: int = 90,
        group_gap_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.margin, self.unknown, self.disagree = margin, unknown, disagree
        self.max_bytes = int(max_mb * 1e6)
        self.quality = quality
        self.group_gap_s = group_gap_s
        self._clock, self._wall = clock, wall
        self._bucket = TokenBucket(max_per_minute, burst, clock)
        self._status: StatusProvider | None = None
        self._files: list[_Saved] = []
        self._total = 0
        self._group: str | None = None
        self._last_save: float | None = None
        self.saved = self.dropped = self.rate_limited = self.failed = 0

    def open(self, status: StatusProvider | None = None) -> None:
        """Make the folder and learn what it already holds (for the cap). A folder that cannot
        be made is logged, not raised: the pipeline runs, and each save tries again."""
        self._status = status
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning(
                "collect: cannot create %s (%s); frames are not saved until it can be",
                self.directory,
                exc.strerror or exc,
            )
            return
        found = []
        for image in self.directory.glob("*/*.jpg"):
            try:
                size = image.stat().st_size + _size(image.with_suffix(".json"))
            except OSError:
                continue
            found.append(_Saved(image.name, image, size))
        self._files = sorted(found, key=lambda saved: saved.key)
        self._total = sum(saved.bytes for saved in self._files)
        self._trim()

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        """Save the frame when it qualifies and the rate allows.

        Raises:
            SinkError: it could not be written (no space, read-only, no permission); nothing
                half-written is left behind.
        """
        if frame is None:
            return
        reason = collect_reason(
            prediction, margin=self.margin, unknown=self.unknown, disagree=self.disagree
        )
        if reason is None:
            return
        if not self._bucket.take():
            self.rate_limited += 1
            return
        now = self._clock()
        last = self._last_save
        if self._group is None or last is None or now - last > self.group_gap_s:
            self._group = _stamp(self._wall()).replace(".", "")
        self._last_save = now
        try:
            self._save(prediction, frame, reason, self._group)
        except OSError as exc:
            self.failed += 1
            raise SinkError(
                f"cannot save a frame under {self.directory}: {exc.strerror or exc}"
            ) from None

    def _save(self, prediction: Prediction, frame: Frame, reason: str, group: str) -> None:
        import cv2

        folder = self.directory / _slug(prediction.label)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{_stamp(self._wall())}_{prediction.score:.3f}"
        if (folder / f"{stem}.jpg").exists():
            stem = f"{stem}-{frame.index}"
        ok, data = cv2.imencode(
            ".jpg",
            cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR),
            [int(cv2.IMWRITE_JPEG_QUALITY), self.quality],
        )
        if not ok:
            raise OSError("the frame could not be encoded as JPEG")
        model = dict((self._status() if self._status else {}).get("model") or {})
        sidecar = {
            "label": prediction.label,
            "score": round(prediction.score, 6),
            "reason": reason,
            "top": [
                {"index": c.index, "label": c.label, "score": round(c.score, 6)}
                for c in prediction.top
            ],
            "model": {
                "name": model.get("name"),
                "version": model.get("version"),
                "artifact": model.get("artifact"),
            },
            "source": prediction.source or frame.source,
            "frame": prediction.frame_index,
            "truth": prediction.truth,
            "time": _stamp(self._wall()),
            "group": group,
        }
        text = json.dumps(sidecar, indent=2).encode()
        image = folder / f"{stem}.jpg"
        _write_whole(image, data.tobytes())
        try:
            _write_whole(image.with_suffix(".json"), text)
        except OSError:
            image.unlink(missing_ok=True)
            raise
        self._files.append(_Saved(image.name, image, len(data) + len(text)))
        self._total += len(data) + len(text)
        self.saved += 1
        self._trim()

    def _trim(self) -> None:
        """Drop the oldest frames until the folder is under its cap."""
        while self._files and self._total > self.max_bytes:
            oldest = self._files.pop(0)
            self._total -= oldest.bytes
            for path in (oldest.image, oldest.image.with_suffix(".json")):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    log.warning("collect: cannot remove %s: %s", path, exc.strerror or exc)
            self.dropped += 1

    def describe(self) -> dict[str, Any]:
        return {
            "dir": str(self.directory),
            "saved": self.saved,
            "dropped": self.dropped,
            "rate_limited": self.rate_limited,
            "failed": self.failed,
            "bytes": self._total,
        }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name and rename it: a reader (or a power cut) never
    sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError:
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass
        raise
