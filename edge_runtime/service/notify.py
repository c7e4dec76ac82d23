"""The systemd notification protocol (``sd_notify``), written out: a few datagrams to a socket.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or an abstract socket name
starting with ``@``) and waits for ``READY=1``. Each message is one datagram of newline-separated
``KEY=VALUE`` assignments. Without ``NOTIFY_SOCKET`` (a shell, a test) every call does nothing.

The watchdog (``WatchdogSec=`` in the unit) arrives as ``WATCHDOG_USEC``, and ``WATCHDOG_PID``
says which process it is meant for; :class:`Notifier` exposes the interval and
:meth:`Notifier.watchdog_due` says when the next ``WATCHDOG=1`` is due (at half the interval, as
``sd_watchdog_enabled(3)`` advises).

Reference: ``sd_notify(3)``, ``systemd.service(5)`` (``Type=notify-reload``'s
``RELOADING=1`` + ``MONOTONIC_USEC``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as ``RELOADING=1`` wants it in ``MONOTONIC_USEC``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _address(value: str) -> str | bytes:
    # '@name' is Linux's abstract namespace: a leading NUL byte instead of the '@'.
    return b"\0" + value[1:].encode() if value.startswith("@") else value


class Notifier:
    """Sends ``sd_notify`` messages to ``NOTIFY_SOCKET`` from ``environ`` (default
    ``os.environ``); a no-op when it is unset. ``clock`` times the watchdog (tests).

    Sending never raises: a service must not die because systemd went away. ``sent`` keeps
    every message for the status and tests.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        pid: int | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self._clock = clock
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.watchdog_interval_s = _watchdog_interval(env, os.getpid() if pid is None else pid)
        self._last_watchdog: float | None = None
        self.sent: list[str] = []

    @property
    def enabled(self) -> bool:
        """Whether a supervisor listens (``NOTIFY_SOCKET`` is set)."""
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; True when it was sent."""
        if self.address is None or not assignments:
            return False
        message = "\n".join(assignments)
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._socket.sendto(message.encode(), _address(self.address))
            except OSError as exc:
                log.debug("sd_notify to %s failed: %s", self.address, exc)
                return False
            self.sent.append(message)
        return True

    # -- the messages the daemon sends ---------------------------------------------------------
    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before systemd gives up on the start (or reload)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    # -- the watchdog ---------------------------------------------------------------------------
    @property
    def watchdog_enabled(self) -> bool:
        return self.enabled and self.watchdog_interval_s is not None

    def watchdog_due(self) -> bool:
        """Whether half the watchdog interval has passed since the last ping (or none was sent)."""
        if not self.watchdog_enabled:
            return False
        assert self.watchdog_interval_s is not None
        last = self._last_watchdog
        return last is None or self._clock() - last >= self.watchdog_interval_s / 2

    def watchdog(self) -> bool:
        """Send ``WATCHDOG=1`` if it is due; True when sent."""
        if not self.watchdog_due():
            return False
        self._last_watchdog = self._clock()
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """``WATCHDOG_USEC`` in seconds, when it is meant for this process (``WATCHDOG_PID`` unset or
    ours)."""
    usec, owner = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1_000_000


def _one_line(text: str) -> str:
    return " ".join(text.split())
