"""Signals, for the life of a run: SIGINT/SIGTERM stop after the frame in hand, a second gives up.

``with stop_on_signals(pipeline):`` installs the handlers and restores the previous ones after,
whatever happens. Further signals plug in through ``extra`` (the daemon maps SIGHUP to a
reload). Handlers run on the main thread between two bytecodes, so they only set flags and call
quick methods; the work happens in the threads that see those flags.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

#: the signals that ask the runtime to stop: Ctrl-C, and what systemd and `kill` send
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int], None]


class Stoppable(Protocol):
    """What the stop handler needs: ``Pipeline`` provides it."""

    def stop(self) -> None: ...

    @property
    def stopping(self) -> bool: ...


def stop_handler(target: Stoppable) -> Handler:
    """A handler that asks ``target`` to stop after the frame in hand; a second signal while it
    is stopping gives up at once (KeyboardInterrupt, which the CLI reports as "interrupted")."""

    def handle(signum: int) -> None:
        if target.stopping:
            raise KeyboardInterrupt
        target.stop()

    return handle


@contextmanager
def installed(handlers: Mapping[int, Handler]) -> Iterator[None]:
    """Install ``handlers`` (signal number -> handler taking the number) for the block.

    Must be called from the main thread (Python delivers signals there only).

    Raises:
        ValueError: called from another thread.
    """

    def adapt(handler: Handler) -> Callable[[int, FrameType | None], None]:
        return lambda signum, frame: handler(signum)

    previous: dict[int, object] = {}
    try:
        for signum, handler in handlers.items():
            previous[signum] = signal.signal(signum, adapt(handler))
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)  # type: ignore[arg-type]


@contextmanager
def stop_on_signals(
    target: Stoppable, extra: Mapping[int, Handler] | None = None
) -> Iterator[None]:
    """SIGINT and SIGTERM stop ``target`` (see :func:`stop_handler`) while the block runs;
    ``extra`` adds handlers for other signals (e.g. SIGHUP -> reload).

    Raises:
        ValueError: called from another thread than the main one.
    """
    stop = stop_handler(target)
    with installed({**{signum: stop for signum in STOP_SIGNALS}, **(extra or {})}):
        yield
