"""An action announced on the console when a chosen label is decided (e.g. reject a banknote).

On a kiosk the same decision usually drives a gate through the ``gpio`` sink as well; this sink
makes the decision visible where no pin is wired, and logs it where one is.
"""

from __future__ import annotations

import sys
import threading
from typing import Literal, TextIO

from pydantic import Field

from edge_runtime.errors import ConfigError
from edge_runtime.sinks.base import Flag, Sink, SinkConfig, SinkContext
from edge_runtime.types import Frame, Prediction


class RejectConfig(SinkConfig):
    """``[outputs] reject``: announce an action on the console when a label is decided.
    ``reject = "counterfeit"`` is short for ``reject = { label = "counterfeit" }``; older
    files' ``reject_label`` means ``reject.label``."""

    key = "reject"
    shorthand = "label"
    legacy = {"reject_label": "label"}
    flags = (
        Flag(("--reject-label",), "label", "announce REJECT when this label is decided", "LABEL"),
    )

    label: str = Field(min_length=1, description="The label that triggers the action.")
    action: str = Field("REJECT", min_length=1, description="The word printed.")
    fail_safe: Literal["reject"] | None = Field(
        None,
        description="'reject': while decisions are missing (no fresh confident decision for "
        "[service] stale_after_s, a model that failed to load, the daemon stopping) the action "
        "is announced as standing, for everything, until a fresh decision arrives.",
    )

    def build(self, context: SinkContext) -> list[Sink]:
        return [
            RejectSink(
                self.label, action=self.action, stream=context.stream, fail_safe=self.fail_safe
            )
        ]


class RejectSink(Sink):
    """Prints ``REJECT <label>`` each time ``label`` becomes the decided label (an event).

    Options: ``label`` (required), ``action`` (the word printed, default ``REJECT``), ``stream``
    (default: standard output), ``fail_safe`` (``"reject"``: announce the action as standing
    while in the fail-safe state). ``count`` holds how many times the action fired.
    """

    name = "reject"
    Config = RejectConfig

    def __init__(
        self,
        label: str,
        *,
        action: str = "REJECT",
        stream: TextIO | None = None,
        fail_safe: str | None = None,
    ) -> None:
        if not label:
            raise ConfigError("the reject action needs the label that triggers it")
        if fail_safe not in (None, "reject"):
            raise ConfigError(f"the reject action's fail-safe is 'reject', got '{fail_safe}'")
        self.label = label
        self.action = action
        self._stream = stream
        self.fail_safe = fail_safe
        self.held = False
        self._lock = threading.Lock()
        self.count = 0

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        if not (prediction.event and prediction.label == self.label) or self.held:
            return
        self.count += 1
        truth = f"  (truth: {prediction.truth})" if prediction.truth is not None else ""
        self._write(
            f"  >>> {self.action} frame #{prediction.frame_index}: {prediction.label} "
            f"{prediction.score:.3f}{truth}\n"
        )

    def enter_fail_safe(self, reason: str) -> None:
        if self.fail_safe is None or self.held:
            return
        self.held = True
        self._write(f"  >>> {self.action} all (fail-safe: {reason})\n")

    def leave_fail_safe(self) -> None:
        if self.held:
            self.held = False
            self._write(f"  >>> {self.action} lifted: decisions are fresh again\n")

    def _write(self, text: str) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:  # the fail-safe writes from another thread than emit
            stream.write(text)
            stream.flush()
