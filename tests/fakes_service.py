"""Fakes for the service tests: a systemd notification socket, sources that stall or lose their
device, and a model that wedges on command.

The sources register under URI schemes of their own (``stalled:``, ``flaky:``) so that a daemon
builds them from its config file like any other source.
"""

from __future__ import annotations

import os
import select
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import registry
from edge_runtime.serving import ServingModel, load_serving_model
from edge_runtime.sources.live import Captured, LiveOptions, LiveSource
from edge_runtime.types import Frame

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "traffic-signs"


class NotifySocket:
    """A datagram socket bound where ``NOTIFY_SOCKET`` points, recording each message as systemd
    would receive it. ``abstract``: an ``@name`` in Linux's abstract namespace."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"edge-runtime-test-{os.getpid()}-{id(self)}"
            self.sock.bind(b"\0" + name.encode())
            self.address = "@" + name
            self._dir = None
        else:
            self._dir = tempfile.mkdtemp(prefix="notify-")
            self.address = os.path.join(self._dir, "notify.sock")
            self.sock.bind(self.address)
        self.sock.settimeout(0.05)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Linux queues only a few datagrams per unix socket (net.unix.max_dgram_qlen): read
        # them as they come so the sender never blocks.
        while not self._stop.is_set():
            select.select([self.sock], [], [], 0.05)
            self._drain()

    def _drain(self) -> None:
        with self._lock:
            while True:
                try:
                    data = self.sock.recv(4096, socket.MSG_DONTWAIT)
                except (BlockingIOError, TimeoutError, OSError):
                    return
                self.messages.append(data.decode())

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address, **extra}

    def snapshot(self) -> list[str]:
        """Every message so far: a datagram is in the socket when the sender's call returns."""
        self._drain()
        with self._lock:
            return list(self.messages)

    def kinds(self) -> list[str]:
        """Each message by its first assignment's key (READY, STATUS, WATCHDOG, ...)."""
        return [message.split("\n", 1)[0].split("=", 1)[0] for message in self.snapshot()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        if self._dir is not None:
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)


@contextmanager
def notify_socket(abstract: bool = False) -> Iterator[NotifySocket]:
    listener = NotifySocket(abstract)
    try:
        yield listener
    finally:
        listener.close()


def without_watchdog(kinds: list[str]) -> list[str]:
    """The message kinds without the watchdog pings and rate-limited STATUS lines between them."""
    return [kind for kind in kinds if kind not in ("WATCHDOG", "STATUS")]


# -- sources ------------------------------------------------------------------------------------
class _Controls:
    """Shared switches the tests flip: whether the device is present, whether reads wedge."""

    def __init__(self) -> None:
        self.present = threading.Event()
        self.present.set()
        self.wedged = threading.Event()
        self.connects = 0


CONTROLS = _Controls()


class FlakyOptions(LiveOptions):
    """Options of ``flaky:``."""


class FlakySource(LiveSource):
    """A live camera of small grey frames at about 50 fps that the test unplugs
    (``CONTROLS.present.clear()``) and plugs back; reconnect attempts fail while it is away."""

    Options = FlakyOptions

    def __init__(self, uri: str, **live: Any) -> None:
        live.setdefault("reconnect_initial_s", 0.05)
        live.setdefault("reconnect_max_s", 0.1)
        super().__init__(uri, **live)
        self._index = 0

    def _connect(self) -> None:
        if not CONTROLS.present.is_set():
            from edge_runtime.errors import SourceError

            raise SourceError(f"{self.uri}: no device")
        CONTROLS.connects += 1

    def _capture(self) -> Captured | None:
        if not CONTROLS.present.is_set():
            return None
        while CONTROLS.wedged.is_set() and not self._stop.is_set():
            time.sleep(0.01)  # a driver call that does not return
        time.sleep(0.02)
        self._index += 1
        return Captured(np.full((48, 64, 3), (self._index * 7) % 255, np.uint8))


class StalledSource(LiveSource):
    """Delivers ``frames`` frames, then nothing more, ever, while staying connected (a camera
    whose driver hangs): no reconnect, no end."""

    Options = LiveOptions

    def __init__(self, uri: str, **live: Any) -> None:
        super().__init__(uri, **live)
        self.frames = int(uri.partition(":")[2] or 5)
        self._sent = 0

    def _connect(self) -> None:
        pass

    def _capture(self) -> Captured | None:
        if self._sent >= self.frames:
            self._stop.wait()
            return None
        self._sent += 1
        time.sleep(0.02)
        return Captured(np.full((48, 64, 3), 120, np.uint8))


def register_fake_sources(monkeypatch: Any = None) -> None:
    """Register ``flaky:`` and ``stalled:``; with a pytest ``monkeypatch``, only until the test
    ends (the registry's source table is restored, so no later test sees them)."""
    if monkeypatch is not None:
        monkeypatch.setitem(registry._ENTRIES, "source", dict(registry._ENTRIES["source"]))
    registry.register("source", "flaky", "tests.fakes_service:FlakySource")
    registry.register("source", "stalled", "tests.fakes_service:StalledSource")


# -- a model that wedges --------------------------------------------------------------------------
class WedgeableModel:
    """A loaded model whose ``infer`` blocks while ``wedge`` is set (a backend call that never
    returns); ``blocked`` is set while it blocks. Everything else goes to the real model."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.wedge = threading.Event()
        self.blocked = threading.Event()
        self.release = threading.Event()

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        if self.wedge.is_set():
            self.blocked.set()
            self.release.wait()
        return np.asarray(self._inner.infer(tensor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class WedgeableLoader:
    """A model loader for ``Daemon(loader=...)`` whose models can be wedged, and that can be
    made to fail or to wait (``gate``) like a slow load."""

    def __init__(self) -> None:
        self.models: list[WedgeableModel] = []
        self.fail: str | None = None
        self.gate: threading.Event | None = None

    def __call__(self, config: Any, **options: Any) -> ServingModel:
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail is not None:
            from edge_runtime.errors import ModelError

            raise ModelError(self.fail)
        serving = load_serving_model(config, **options)
        model = WedgeableModel(serving.model)
        self.models.append(model)
        return ServingModel(model, serving.postprocessor)  # type: ignore[arg-type]


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def frame_of(index: int) -> Frame:
    return Frame(np.zeros((4, 4, 3), np.uint8), index, time.monotonic(), "test")
