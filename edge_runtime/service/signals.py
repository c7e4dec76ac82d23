"""Signals, for the life of a run: SIGINT/SIGTERM stop after the frame in hand, a second gives up.

``with stop_on_signals(pipeline):`` installs the handlers and restores the previous ones after,
whatever happens. Further signals plug in through ``extra`` (the daemon maps SIGHUP to a
reload). Handlers run on the main thread between two bytecodes, so they only set flags and call
quick methods; the work happens in the threads that see those flags.

:func:`exit_process` ends a command-line process so that a Ctrl-C arriving while it exits (the
second one, just after the first stopped the run) is still answered with "interrupted" and exit
code 130, instead of killing the process silently.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from types import FrameType
from typing import NoReturn, Protocol

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


#: the exit code of a command interrupted by Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT


def exit_process(code: int, prog: str = "edge-runtime") -> NoReturn:
    """End the process with ``code`` after the command has returned it, answering a Ctrl-C that
    arrives meanwhile with "PROG: interrupted" on stderr and exit code 130.

    The interpreter's own exit is not used: with native libraries loaded it takes tens of
    milliseconds, and late in it CPython puts the default SIGINT disposition back, so a Ctrl-C
    then kills the process by the signal (status -2, no message). Instead this joins the
    non-daemon threads and runs the ``atexit`` callbacks (logging's flush, temporary-directory
    finalizers) as the interpreter would, flushes stdout and stderr, and leaves with
    ``os._exit``. A ``code`` of 130 means the command already reported the interruption.
    Call it from the main thread, as the last thing the process does.
    """

    def interrupted(signum: int, frame: FrameType | None) -> None:
        if code != INTERRUPTED_EXIT_CODE:
            with suppress(OSError):
                os.write(2, f"{prog}: interrupted\n".encode())
        os._exit(INTERRUPTED_EXIT_CODE)

    with suppress(ValueError):  # not the main thread: no handler, the rest still holds
        signal.signal(signal.SIGINT, interrupted)
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A reader that went away (`| head`) or a closed stream has nothing more to receive.
        with suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)
