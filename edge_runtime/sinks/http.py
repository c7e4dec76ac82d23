"""A small HTTP server for monitoring: ``/healthz``, ``/status``, ``/latest`` and ``/metrics``.

It runs the standard library's ``ThreadingHTTPServer`` in a daemon thread; requests read a
snapshot of the status and never hold up the pipeline.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge_runtime.errors import ConfigError, MissingDependencyError, SinkError
from edge_runtime.registry import require
from edge_runtime.sinks.base import Sink, StatusProvider
from edge_runtime.sinks.metrics import PredictionMetrics
from edge_runtime.types import Frame, Prediction

log = logging.getLogger(__name__)

ENDPOINTS = ("/healthz", "/status", "/latest", "/metrics")


def parse_address(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT``, ``PORT`` or ``[::1]:PORT`` -> (host, port); port 0 = any free.

    Raises:
        ConfigError: the port is not a number from 0 to 65535.
    """
    text = address.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or default_host
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"'{address}' is not HOST:PORT (e.g. 0.0.0.0:8080, or :0 for any port)")
    return host, int(port_text)


def health(
    state: str | None, last_frame_age_s: float | None, stale_after_s: float, message: str = ""
) -> tuple[bool, str]:
    """Whether the runtime is healthy, and why not: it must be running and a frame must have been
    classified within ``stale_after_s`` seconds. ``state`` None means no status is known;
    ``message`` is the status's reason for its state."""
    if state is not None and state != "running":
        return False, f"pipeline is {state}" + (f": {message}" if message else "")
    if last_frame_age_s is None:
        return False, "no frame classified yet"
    if last_frame_age_s > stale_after_s:
        return False, f"no frame classified for {last_frame_age_s:.1f} s"
    return True, "ok"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sink: HttpSink


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "edge-runtime"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        sink = self.server.sink
        try:
            if path == "/healthz":
                ok, body = sink.health()
                self._json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)
            elif path == "/status":
                self._json(HTTPStatus.OK, sink.status_snapshot())
            elif path == "/latest":
                latest = sink.latest
                if latest is None:
                    self._json(HTTPStatus.NOT_FOUND, {"error": "no prediction yet"})
                else:
                    self._json(HTTPStatus.OK, latest.to_dict())
            elif path == "/metrics":
                self._metrics(sink)
            else:
                self._json(
                    HTTPStatus.NOT_FOUND, {"error": f"no page {path}", "endpoints": ENDPOINTS}
                )
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; nothing to answer

    def _metrics(self, sink: HttpSink) -> None:
        metrics = sink.metrics
        if metrics is None:
            self._send(
                HTTPStatus.NOT_IMPLEMENTED,
                (sink.metrics_unavailable + "\n").encode(),
                "text/plain; charset=utf-8",
            )
            return
        body, content_type = metrics.render()
        self._send(HTTPStatus.OK, body, content_type)

    def _json(self, code: HTTPStatus, body: Mapping[str, Any]) -> None:
        data = json.dumps(body, default=str).encode()
        self._send(code, data, "application/json")

    def _send(self, code: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class HttpSink(Sink):
    """Serves the runtime's health, status, latest prediction and Prometheus metrics.

    Options: ``host`` (default 127.0.0.1; 0.0.0.0 to serve the network), ``port`` (0 picks a free
    port; ``port`` tells which after ``open``), ``stale_after_s`` (/healthz fails when no frame was
    classified for this long), ``clock`` (tests).

    /healthz answers 200 while the pipeline is running and frames flow, else 503 with the reason;
    /status is the status snapshot; /latest the latest prediction (404 before the first);
    /metrics the Prometheus text (501 when prometheus-client is not installed).
    """

    name = "http"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        stale_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._status: StatusProvider | None = None
        self._lock = threading.Lock()
        self._latest: Prediction | None = None
        self._last_frame_at: float | None = None
        self._frames = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.metrics: PredictionMetrics | None = None
        self.metrics_unavailable = ""

    @property
    def url(self) -> str:
        """Where the server answers (after ``open``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def open(self, status: StatusProvider | None = None) -> None:
        """Bind the port and start serving.

        Raises:
            SinkError: the port is taken or the address cannot be bound.
        """
        if self._server is not None:
            return
        self._status = status
        try:
            client = require("prometheus_client", "metrics", "the /metrics page")
            self.metrics = PredictionMetrics(client, status)
        except MissingDependencyError as exc:
            self.metrics, self.metrics_unavailable = None, str(exc)
        server_class = _Server6 if ":" in self.host else _Server
        try:
            server = server_class((self.host, self.port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SinkError(
                    f"cannot serve HTTP on {self.host}:{self.port}: the port is already in use "
                    "(choose another with --http HOST:PORT, or stop the other program)"
                ) from None
            raise SinkError(
                f"cannot serve HTTP on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        server.sink = self
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="http sink",
            daemon=True,
        )
        self._thread.start()
        log.info("serving %s", self.url)

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        with self._lock:
            self._latest = prediction
            self._last_frame_at = self._clock()
            self._frames += 1
        if self.metrics is not None:
            self.metrics.observe(prediction)

    @property
    def latest(self) -> Prediction | None:
        with self._lock:
            return self._latest

    def status_snapshot(self) -> dict[str, Any]:
        """The runtime's status, or what this sink saw when it was given none."""
        if self._status is not None:
            return dict(self._status())
        with self._lock:
            latest = self._latest.to_dict() if self._latest is not None else None
            return {"frames": self._frames, "latest": latest}

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, JSON body) as /healthz answers."""
        state, message = None, ""
        if self._status is not None:
            snapshot = self._status()
            state, message = str(snapshot.get("state")), str(snapshot.get("message") or "")
        with self._lock:
            last = self._last_frame_at
        age = None if last is None else max(0.0, self._clock() - last)
        ok, reason = health(state, age, self.stale_after_s, message)
        body = {
            "ok": ok,
            "reason": reason,
            "state": state,
            "last_frame_age_s": None if age is None else round(age, 3),
        }
        return ok, body

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
