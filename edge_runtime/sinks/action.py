"""An action announced on the console when a chosen label is decided (e.g. reject a banknote).

On a kiosk the same decision usually drives a gate through the ``gpio`` sink as well; this sink
makes the decision visible where no pin is wired, and logs it where one is.
"""

from __future__ import annotations

import sys
from typing import TextIO

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

    def build(self, context: SinkContext) -> list[Sink]:
        return [RejectSink(self.label, action=self.action, stream=context.stream)]


class RejectSink(Sink):
    """Prints ``REJECT <label>`` each time ``label`` becomes the decided label (an event).

    Options: ``label`` (required), ``action`` (the word printed, default ``REJECT``), ``stream``
    (default: standard output). ``count`` holds how many times the action fired.
    """

    name = "reject"
    Config = RejectConfig

    def __init__(self, label: str, *, action: str = "REJECT", stream: TextIO | None = None) -> None:
        if not label:
            raise ConfigError("the reject action needs the label that triggers it")
        self.label = label
        self.action = action
        self._stream = stream
        self.count = 0

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        if not (prediction.event and prediction.label == self.label):
            return
        self.count += 1
        stream = self._stream if self._stream is not None else sys.stdout
        truth = f"  (truth: {prediction.truth})" if prediction.truth is not None else ""
        stream.write(
            f"  >>> {self.action} frame #{prediction.frame_index}: {prediction.label} "
            f"{prediction.score:.3f}{truth}\n"
        )
        stream.flush()
