"""Annotated frames for people: a preview video and/or a snapshot per label change.

What the model saw is the fastest answer to "why did it say that?": the frame, the decided label
and score, the raw top classes and, for synthetic scenes, the truth.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field, model_validator

from edge_runtime.errors import SinkError
from edge_runtime.sinks.base import Flag, Sink, SinkConfig, SinkContext
from edge_runtime.types import UNKNOWN, Frame, Prediction

log = logging.getLogger(__name__)

_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def annotate(image_rgb: np.ndarray, prediction: Prediction) -> np.ndarray:
    """A BGR copy of the frame with the decision drawn on it (for cv2 writers)."""
    canvas = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    height, width = canvas.shape[:2]
    scale = max(0.4, min(width, height) / 640)
    thickness = max(1, int(round(2 * scale)))
    banner = int(34 * scale) * (1 + min(3, len(prediction.top)))
    overlay = canvas.copy()
    cv2.rectangle(overlay, (0, 0), (width, banner), (0, 0, 0), -1)
    cv2.addWeighted(overlay, 0.55, canvas, 0.45, 0, dst=canvas)
    ok = prediction.truth is None or prediction.truth == prediction.label
    colour = (80, 220, 80) if ok else (60, 60, 240)
    if prediction.label == UNKNOWN:
        colour = (0, 200, 255)
    line = f"{prediction.label}  {prediction.score:.2f}"
    if prediction.truth is not None:
        line += f"   truth: {prediction.truth}"
    y = int(28 * scale)
    cv2.putText(canvas, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, colour, thickness)
    for item in prediction.top[:3]:
        y += int(30 * scale)
        bar = int((width // 3) * max(0.0, min(1.0, item.score)))
        cv2.rectangle(canvas, (8, y - int(14 * scale)), (8 + bar, y + 2), (200, 160, 60), -1)
        cv2.putText(
            canvas,
            f"{item.label} {item.score:.2f}",
            (16 + width // 3, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6 * scale,
            (240, 240, 240),
            max(1, thickness - 1),
        )
    cv2.putText(
        canvas,
        f"#{prediction.frame_index}",
        (8, height - 10),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5 * scale,
        (240, 240, 240),
        1,
    )
    return canvas


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "label"


class PreviewConfig(SinkConfig):
    """``[outputs] preview``: annotated frames into a video, a snapshot folder or both.
    ``preview = "out.mp4"`` is short for ``preview = { video = "out.mp4" }``; older files'
    ``snapshot_dir`` key means ``preview.snapshot_dir``."""

    key = "preview"
    shorthand = "video"
    legacy = {"snapshot_dir": "snapshot_dir"}
    flags = (
        Flag(("--preview",), "video", "write annotated frames to a video", "FILE.mp4"),
        Flag(("--snapshot-dir",), "snapshot_dir", "save an annotated frame per change", "DIR"),
    )

    video: str | None = Field(
        None, description=f"A video file ({', '.join(sorted(_CODECS))}) receiving every frame."
    )
    snapshot_dir: str | None = Field(
        None, description="A folder receiving one JPEG per label change."
    )
    fps: float = Field(15.0, gt=0, description="Frame rate written into the video.")

    @model_validator(mode="after")
    def _verify_target(self) -> PreviewConfig:
        if self.video is None and self.snapshot_dir is None:
            raise ValueError("the preview needs a video file, a snapshot_dir, or both")
        return self

    def build(self, context: SinkContext) -> list[Sink]:
        return [PreviewSink(self.video, snapshot_dir=self.snapshot_dir, fps=self.fps)]


class PreviewSink(Sink):
    """Writes annotated frames.

    Options: ``video`` (a .mp4/.avi file receiving every frame), ``snapshot_dir`` (a folder
    receiving one JPEG per label change), ``fps`` (frame rate written into the video).

    Raises (open):
        SinkError: the video file cannot be written or the folder cannot be made.
    """

    name = "preview"
    Config = PreviewConfig

    def __init__(
        self,
        video: str | os.PathLike[str] | None = None,
        *,
        snapshot_dir: str | os.PathLike[str] | None = None,
        fps: float = 15.0,
    ) -> None:
        if video is None and snapshot_dir is None:
            raise SinkError("the preview sink needs a video file, a snapshot folder, or both")
        self.video = Path(video) if video is not None else None
        if self.video is not None and self.video.suffix.lower() not in _CODECS:
            raise SinkError(f"preview video must end in {', '.join(sorted(_CODECS))}: {video}")
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir is not None else None
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self.frames_written = 0
        self.snapshots = 0

    def open(self, status: object = None) -> None:
        if self.snapshot_dir is not None:
            try:
                self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SinkError(
                    f"cannot create snapshot folder {self.snapshot_dir}: {exc}"
                ) from exc
        if self.video is not None and not self.video.parent.is_dir():
            raise SinkError(f"cannot write preview {self.video}: its folder does not exist")

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        if frame is None:
            return
        canvas = annotate(frame.image, prediction)
        if self.video is not None:
            if self._writer is None:
                height, width = canvas.shape[:2]
                fourcc = cv2.VideoWriter.fourcc(*_CODECS[self.video.suffix.lower()])
                self._writer = cv2.VideoWriter(str(self.video), fourcc, self.fps, (width, height))
                if not self._writer.isOpened():
                    self._writer = None
                    self.video = None
                    log.warning("cannot write the preview video; preview disabled")
                    return
            self._writer.write(canvas)
            self.frames_written += 1
        if self.snapshot_dir is not None and prediction.event:
            name = f"{prediction.frame_index:07d}_{_slug(prediction.label)}.jpg"
            if cv2.imwrite(str(self.snapshot_dir / name), canvas):
                self.snapshots += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
