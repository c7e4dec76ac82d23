"""Signals, for the life of a run: SIGINT/SIGTERM stop after the frame in hand, a second gives up.

``with stop_on_signals(pipeline):`` installs the handlers and restores the previous ones after,
whatever happens. Further signals plug in through ``extra`` (the daemon maps SIGHUP to a
reload).

The handlers do not run in the interpreter's signal context. There, Python code runs between
any two bytecodes of the main thread, even inside ``threading`` primitives (a second Ctrl-C
nested in the first one's ``Event.set()`` waited for the lock that call held: a hang), and an
exception raised there can leave a lock taken. So the interpreter-level handler only writes the
signal's number into a pipe, and a watcher thread reads it and calls the handlers, which may
then take locks like any other code. A second stop signal gives up: "interrupted", the atexit
callbacks (temporary-directory finalizers, logging), exit code 130; a third ends the process
from the signal context at once, should the watcher be stuck.

:func:`exit_process` ends a command-line process so that a Ctrl-C arriving while it exits (the
second one, just after the first stopped the run) is still answered with "interrupted" and exit
code 130, instead of killing the process silently.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from types import FrameType
from typing import NoReturn, Protocol

log = logging.getLogger(__name__)

#: the signals that ask the runtime to stop: Ctrl-C, and what systemd and `kill` send
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: the exit code of a command interrupted by Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT

Handler = Callable[[int], None]


class Stoppable(Protocol):
    """What the stop handler needs: ``Pipeline`` provides it."""

    def stop(self) -> None: ...

    @property
    def stopping(self) -> bool: ...


def give_up(prog: str = "edge-runtime") -> NoReturn:
    """End the process now: "PROG: interrupted" on stderr, the atexit callbacks (which remove
    temporary directories registered with ``weakref.finalize`` and flush the logs), exit code
    130. Nothing else is flushed or closed: that is what giving up means."""
    with suppress(OSError):
        os.write(2, f"{prog}: interrupted\n".encode())
    try:
        atexit._run_exitfuncs()
    finally:
        os._exit(INTERRUPTED_EXIT_CODE)


def stop_handler(target: Stoppable, on_give_up: Callable[[], object] = give_up) -> Handler:
    """A handler that asks ``target`` to stop after the frame in hand; a second signal while it
    is stopping calls ``on_give_up`` (default :func:`give_up`: the process ends, code 130)."""

    def handle(signum: int) -> None:
        if target.stopping:
            on_give_up()
            return
        target.stop()

    return handle


class _Watcher:
    """The thread that runs the handlers, fed signal numbers through a pipe by the interpreter-
    level handler (:meth:`notify`, which takes no lock and so cannot deadlock with the main
    thread it interrupts)."""

    def __init__(self, handlers: Mapping[int, Handler]) -> None:
        self._handlers = dict(handlers)
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._stops = itertools.count(1)  # next() is atomic: nested signals count right
        self._thread = threading.Thread(target=self._run, name="signal watcher", daemon=True)
        self._thread.start()

    def notify(self, signum: int, frame: FrameType | None) -> None:
        if signum in STOP_SIGNALS and next(self._stops) >= 3:
            # The watcher has not managed to give up: do it from here (no lock, no flush).
            with suppress(OSError):
                os.write(2, b"edge-runtime: interrupted\n")
            os._exit(INTERRUPTED_EXIT_CODE)
        with suppress(OSError):  # a full pipe already holds more signals than anyone needs
            os.write(self._write, bytes([signum]))

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self._read, 64)
            except OSError:
                return
            for signum in data:
                if signum == 0:  # close()
                    return
                handler = self._handlers.get(signum)
                if handler is None:
                    continue
                try:
                    handler(signum)
                except Exception:  # one failing handler must not end the others
                    log.exception("the handler of signal %d failed", signum)

    def close(self) -> None:
        with suppress(OSError):
            os.write(self._write, b"\x00")
        self._thread.join(timeout=5.0)
        for fd in (self._read, self._write):
            with suppress(OSError):
                os.close(fd)


@contextmanager
def installed(handlers: Mapping[int, Handler]) -> Iterator[None]:
    """Install ``handlers`` (signal number -> handler taking the number) for the block; they run
    on a watcher thread, moments after the signal (see the module docstring).

    Must be called from the main thread (Python receives signals there only).

    Raises:
        ValueError: called from another thread.
    """
    watcher = _Watcher(handlers)
    previous: dict[int, object] = {}
    try:
        for signum in handlers:
            previous[signum] = signal.signal(signum, watcher.notify)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)  # type: ignore[arg-type]
        watcher.close()


@contextmanager
def stop_on_signals(
    target: Stoppable,
    extra: Mapping[int, Handler] | None = None,
    *,
    on_give_up: Callable[[], object] = give_up,
) -> Iterator[None]:
    """SIGINT and SIGTERM stop ``target`` (see :func:`stop_handler`; ``on_give_up`` replaces
    what a second one does) while the block runs; ``extra`` adds handlers for other signals
    (e.g. SIGHUP -> reload).

    Raises:
        ValueError: called from another thread than the main one.
    """
    stop = stop_handler(target, on_give_up)
    with installed({**{signum: stop for signum in STOP_SIGNALS}, **(extra or {})}):
        yield


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
