"""A console for people: one line per label change, and a status line every few seconds.

Printing every frame at 30 frames per second would scroll past faster than anyone reads, so the
sink prints events (the debounced label changes) as they happen and summarises the rest.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO, get_args

from pydantic import Field

from edge_runtime.errors import OutputClosedError
from edge_runtime.sinks.base import (
    Flag,
    LineWriter,
    Sink,
    SinkConfig,
    SinkContext,
    StatusProvider,
)
from edge_runtime.terminal import printable
from edge_runtime.types import Frame, Prediction

ConsoleFormat = Literal["pretty", "jsonl", "none"]

#: the order stages are listed in; others follow alphabetically, and ``total`` comes last
STAGE_ORDER = ("capture", "preprocess", "inference", "postprocess")


def _stages(latency_ms: Mapping[str, float]) -> list[str]:
    known = [stage for stage in STAGE_ORDER if stage in latency_ms]
    others = sorted(s for s in latency_ms if s not in STAGE_ORDER and s != "total")
    return known + others + (["total"] if "total" in latency_ms else [])


def format_event(prediction: Prediction, elapsed_s: float) -> str:
    """The line announcing a new label: time, frame, label, score, truth check, total latency."""
    parts = [
        f"{elapsed_s:8.1f}s",
        f"#{prediction.frame_index:<6d}",
        f"-> {prediction.label:<20s}",
        f"{prediction.score:5.3f}",
    ]
    if prediction.truth is not None:
        verdict = "ok" if prediction.truth == prediction.label else "MISS"
        parts.append(f"truth {prediction.truth} ({verdict})")
    total = prediction.latency_ms.get("total")
    if total is not None:
        parts.append(f"{total:.1f} ms")
    return "  ".join(parts)


def format_summary(
    *,
    elapsed_s: float,
    frames: int,
    fps: float,
    label: str | None,
    score: float | None,
    accuracy: float | None,
    frames_with_truth: int,
    latency_ms: Mapping[str, float],
    source: Mapping[str, Any] | None = None,
    final: bool = False,
) -> str:
    """The periodic status line: frames, FPS, current label, running accuracy, mean latency per
    stage, and the source's dropped/corrupt/reconnect counters when they are not zero. ``final``
    marks the line printed at the end of a run."""
    parts = [f"{elapsed_s:8.1f}s", "done:" if final else "", f"frames {frames}", f"{fps:5.1f} fps"]
    parts = [part for part in parts if part]
    if label is not None:
        parts.append(f"now {label} {score or 0.0:.2f}")
    if accuracy is not None:
        parts.append(f"accuracy {accuracy:.1%} of {frames_with_truth}")
    if latency_ms:
        stages = " ".join(f"{stage} {latency_ms[stage]:.1f}" for stage in _stages(latency_ms))
        parts.append(f"ms: {stages}")
    for key in ("dropped", "corrupt", "reconnects"):
        value = (source or {}).get(key)
        if value:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


class ConsoleConfig(SinkConfig):
    """``[outputs] console``: what the terminal shows. ``console = "jsonl"`` is short for
    ``console = { format = "jsonl" }``."""

    key = "console"
    shorthand = "format"
    enabled_by_default = True
    flags = (
        Flag(
            ("--output", "-o"),
            "format",
            "console output (pretty)",
            choices=get_args(ConsoleFormat),
        ),
    )

    format: ConsoleFormat = Field(
        "pretty",
        description="pretty: a line per label change and a status line every few seconds "
        "([run] status_interval_s); jsonl: a JSON object per frame; none: nothing.",
    )

    def build(self, context: SinkContext) -> list[Sink]:
        if self.format == "pretty":
            return [PrettySink(stream=context.stream, interval_s=context.status_interval_s)]
        if self.format == "jsonl":
            from edge_runtime.sinks.jsonl import JsonLinesSink

            return [JsonLinesSink(stream=context.stream)]
        return []


class PrettySink(Sink):
    """Human-readable progress on a terminal.

    Options: ``stream`` (default: standard output), ``interval_s`` (seconds between status lines;
    0 turns them off), ``show_events`` (print a line per label change), ``clock`` (tests).
    The status line's latencies are means over the last interval; its accuracy counts every frame
    since the start whose source knew the truth.
    """

    name = "pretty"
    Config = ConsoleConfig

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        interval_s: float = 5.0,
        show_events: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = LineWriter(stream)
        self.interval_s = interval_s
        self.show_events = show_events
        self._clock = clock
        self._status: StatusProvider | None = None
        self._started: float | None = None
        self._next_summary = 0.0
        self._frames = 0
        self._truth_seen = 0
        self._truth_correct = 0
        self._latest: Prediction | None = None
        self._closed = False
        self._reset_interval(clock())

    def _reset_interval(self, now: float) -> None:
        self._interval_start = now
        self._interval_frames = 0
        self._latency_sums: dict[str, float] = {}

    def _write(self, line: str) -> None:
        # Labels and truth (folder names) may hold terminal escape sequences: shown escaped.
        self._out.write(printable(line) + "\n")

    def open(self, status: StatusProvider | None = None) -> None:
        self._status = status
        now = self._clock()
        self._started = now
        self._next_summary = now + self.interval_s
        self._reset_interval(now)

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        now = self._clock()
        if self._started is None:
            self.open()
        assert self._started is not None
        self._frames += 1
        self._interval_frames += 1
        self._latest = prediction
        if prediction.truth is not None:
            self._truth_seen += 1
            self._truth_correct += int(prediction.truth == prediction.label)
        for stage, value in prediction.latency_ms.items():
            self._latency_sums[stage] = self._latency_sums.get(stage, 0.0) + value
        if prediction.event and self.show_events:
            self._write(format_event(prediction, now - self._started))
        if self.interval_s > 0 and now >= self._next_summary:
            self._summary(now)
            self._next_summary = now + self.interval_s

    def _summary(self, now: float, final: bool = False) -> None:
        assert self._started is not None
        # The last line reports the whole run's rate; the others, the last interval's.
        if final:
            start, count = self._started, self._frames
        else:
            start, count = self._interval_start, self._interval_frames
        fps = count / (now - start) if now > start else 0.0
        means = {
            stage: total / self._interval_frames
            for stage, total in self._latency_sums.items()
            if self._interval_frames
        }
        latest = self._latest
        source: Mapping[str, Any] | None = None
        if self._status is not None:
            source = self._status().get("source")
        self._write(
            format_summary(
                elapsed_s=now - self._started,
                frames=self._frames,
                fps=fps,
                label=latest.label if latest else None,
                score=latest.score if latest else None,
                accuracy=self._truth_correct / self._truth_seen if self._truth_seen else None,
                frames_with_truth=self._truth_seen,
                latency_ms=means,
                source=source,
                final=final,
            )
        )
        self._reset_interval(now)

    def close(self) -> None:
        """Print a last status line (its rates cover the frames since the previous one)."""
        if self._closed:
            return
        self._closed = True
        if self._started is not None and self._frames:
            with contextlib.suppress(OutputClosedError):  # the run is over: nobody to tell
                self._summary(self._clock(), final=True)
