"""The sink interface: where predictions go."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any

from edge_runtime.types import Frame, Prediction

#: returns the runtime's status as a JSON-ready mapping (see edge_runtime.status.RuntimeStatus)
StatusProvider = Callable[[], Mapping[str, Any]]


class Sink(abc.ABC):
    """Receives every prediction in frame order, on the pipeline's output thread.

    ``emit`` must be quick: a sink that talks to the network queues the message and sends it from
    its
    own thread, and never raises for a network failure (it counts and logs it instead).
    """

    name: str = ""

    def open(self, status: StatusProvider | None = None) -> None:
        """Start (bind a port, connect a broker). ``status`` gives the runtime's live status.

        Raises:
            SinkError: the sink cannot start (port taken, bad address).
        """

    @abc.abstractmethod
    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        """Handle one prediction. ``frame`` is the captured frame, for sinks that show or save
        it."""

    def close(self) -> None:
        """Flush and stop. Safe to call twice."""


def selected(prediction: Prediction, every_frame: bool) -> bool:
    """Whether a sink that sends label changes (events), or every frame if asked, sends this."""
    return every_frame or prediction.event
