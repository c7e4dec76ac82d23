"""An action announced on the console when a chosen label is decided (e.g. reject a banknote).

On a kiosk the same decision usually drives a gate through the ``gpio`` sink as well; this sink
makes the decision visible where no pin is wired, and logs it where one is.
"""

from __future__ import annotations

import sys
from typing import TextIO

from edge_runtime.errors import ConfigError
from edge_runtime.sinks.base import Sink
from edge_runtime.types import Frame, Prediction


class RejectSink(Sink):
    """Prints ``REJECT <label>`` each time ``label`` becomes the decided label (an event).

    Options: ``label`` (required), ``action`` (the word printed, default ``REJECT``), ``stream``
    (default: standard output). ``count`` holds how many times the action fired.
    """

    name = "reject"

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
