"""The sink interface (where predictions go), and how a sink declares its place in the config.

A sink module holds the sink and a :class:`SinkConfig` subclass: its key under ``[outputs]``, its
settings as pydantic fields (unknown keys refused, every field documented), its command-line
flags, and how it builds the sink. The runtime config's ``[outputs]`` section, ``edge-runtime
run``'s output flags and the wiring are assembled from these, so adding a sink is one new module
and its line in :mod:`edge_runtime.registry`. A config class must stay light: the sink's
third-party package is imported in ``open()``, never at module level.
"""

from __future__ import annotations

import abc
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TextIO

from pydantic import BaseModel, ConfigDict, model_validator

from edge_runtime.errors import OutputClosedError
from edge_runtime.types import Frame, Prediction

#: returns the runtime's status as a JSON-ready mapping (see edge_runtime.status.RuntimeStatus)
StatusProvider = Callable[[], Mapping[str, Any]]


class Sink(abc.ABC):
    """Receives every prediction in frame order, on the pipeline's output thread.

    ``emit`` must be quick: a sink that talks to the network queues the message and sends it from
    its own thread, and never raises for a network failure (it counts and logs it instead).
    ``Config`` is the sink's :class:`SinkConfig` (None for a sink that is only built from code).
    """

    name: str = ""
    Config: ClassVar[type[SinkConfig] | None] = None
    #: the state an actuating output declares for when decisions stop (e.g. ``"on"`` for a
    #: gate's pin, ``"reject"``); None: it has none and the fail-safe leaves it alone
    fail_safe: str | None = None

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

    def enter_fail_safe(self, reason: str) -> None:
        """Put the output into its ``fail_safe`` state and hold it there, whatever predictions
        arrive, until :meth:`leave_fail_safe` (``edge_runtime.service.failsafe`` decides when:
        no fresh confident decision for a while, a model that failed to load, a stop). Called
        from another thread than ``emit``; must be quick and must not raise for a network
        failure. The default does nothing: a sink without ``fail_safe`` actuates nothing."""

    def leave_fail_safe(self) -> None:
        """Follow the predictions again, from the state the latest ones ask for."""


class LineWriter:
    """Whole lines to a text stream, each flushed: ``stream``, or standard output as it is at
    each write. When the reader has gone (a closed pipe) the first failed write raises
    :class:`OutputClosedError`, which ends the run, and later lines are dropped (a sink's last
    words at ``close``)."""

    def __init__(self, stream: TextIO | None = None, what: str = "standard output") -> None:
        self._stream = stream
        self._what = what
        self.closed = False

    def write(self, text: str) -> None:
        """Write ``text`` (a line with its newline) and flush it.

        Raises:
            OutputClosedError: the reader of the stream has gone (once; later writes drop).
        """
        if self.closed:
            return
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(text)
            stream.flush()
        except BrokenPipeError:
            self.closed = True
            raise OutputClosedError(f"nobody reads {self._what} any more") from None


def selected(prediction: Prediction, every_frame: bool) -> bool:
    """Whether a sink that sends label changes (events), or every frame if asked, sends this."""
    return every_frame or prediction.event


@dataclass(frozen=True)
class Flag:
    """A command-line option of ``edge-runtime run`` that sets one field of an output.

    ``names``: the option strings (``("--mqtt",)``). The value arrives as text; the field's type
    converts it, as it does for a config file.
    """

    names: tuple[str, ...]
    field: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SinkContext:
    """What building a sink may need beyond its own settings: where console sinks write
    (``stream``, default standard output) and the console's status-line interval."""

    stream: TextIO | None = None
    status_interval_s: float = 5.0


class SinkConfig(BaseModel):
    """The settings of one output, under its ``key`` in ``[outputs]``.

    Class attributes a subclass sets: ``key``; ``shorthand``, the field a bare value fills
    (``mqtt = "mqtt://broker"`` means ``mqtt = { url = "mqtt://broker" }``); ``flags``, its
    command-line options; ``legacy``, flat ``[outputs]`` keys of older files that map to its
    fields (``{"jsonl_file": "path"}``); ``enabled_by_default``, for an output that is on unless
    the file turns it off (the console).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: ClassVar[str] = ""
    shorthand: ClassVar[str | None] = None
    flags: ClassVar[tuple[Flag, ...]] = ()
    legacy: ClassVar[Mapping[str, str]] = {}
    enabled_by_default: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _expand_shorthand(cls, data: Any) -> Any:
        return expand_shorthand(cls, data)

    def build(self, context: SinkContext) -> list[Sink]:
        """The sinks these settings describe, not yet opened (the pipeline opens them).

        Raises:
            ConfigError: a setting the sink refuses.
        """
        raise NotImplementedError


def expand_shorthand(config: type[SinkConfig], value: Any) -> Any:
    """``value`` as a table: a bare value fills ``config.shorthand``; a table stays as it is."""
    if config.shorthand is not None and not isinstance(value, Mapping):
        return {config.shorthand: value}
    return value
