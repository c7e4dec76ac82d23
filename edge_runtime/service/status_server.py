"""The status server: ``/healthz``, ``/status``, ``/latest`` and ``/metrics`` over HTTP.

It serves an injected :class:`~edge_runtime.status.RuntimeStatus` and belongs to the service, not
to the pipeline: the command starts it before the model is loaded and closes it after the
pipeline has stopped, so it answers during a slow model load, a reload or a hot swap, and reports
whatever the service publishes in the status (update state, reloads). The standard library's
``ThreadingHTTPServer`` runs in a daemon thread; requests read a snapshot of the status and never
hold up the pipeline.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge_runtime.address import parse_address
from edge_runtime.errors import MissingDependencyError, ServiceError
from edge_runtime.registry import require
from edge_runtime.service.metrics import PredictionMetrics
from edge_runtime.status import RuntimeStatus

log = logging.getLogger(__name__)

ENDPOINTS = ("/healthz", "/status", "/latest", "/metrics")


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
    owner: StatusServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "edge-runtime"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        owner = self.server.owner
        try:
            if path == "/healthz":
                ok, body = owner.health()
                self._json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)
            elif path == "/status":
                self._json(HTTPStatus.OK, owner.status.snapshot())
            elif path == "/latest":
                latest = owner.status.latest
                if latest is None:
                    self._json(HTTPStatus.NOT_FOUND, {"error": "no prediction yet"})
                else:
                    self._json(HTTPStatus.OK, latest.to_dict())
            elif path == "/metrics":
                self._metrics(owner)
            else:
                self._json(
                    HTTPStatus.NOT_FOUND, {"error": f"no page {path}", "endpoints": ENDPOINTS}
                )
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; nothing to answer

    def _metrics(self, owner: StatusServer) -> None:
        metrics = owner.metrics
        if metrics is None:
            self._send(
                HTTPStatus.NOT_IMPLEMENTED,
                (owner.metrics_unavailable + "\n").encode(),
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


class StatusServer:
    """Serves the health, status, latest prediction and Prometheus metrics of ``status``.

    ``host`` (default 127.0.0.1; 0.0.0.0 to serve the network), ``port`` (0 picks a free port;
    ``port`` tells which after ``start``), ``stale_after_s`` (/healthz fails when no frame was
    classified for this long, on the status's clock).

    /healthz answers 200 while the pipeline is running and frames flow, else 503 with the reason;
    /status is the status snapshot; /latest the latest prediction (404 before the first);
    /metrics the Prometheus text (501 when prometheus-client is not installed). Use it as a
    context manager, or ``start()`` and ``close()``.
    """

    def __init__(
        self,
        status: RuntimeStatus,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        stale_after_s: float = 5.0,
    ) -> None:
        self.status = status
        self.host = host
        self.port = int(port)
        self.stale_after_s = stale_after_s
        self.metrics: PredictionMetrics | None = None
        self.metrics_unavailable = ""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def at(cls, address: str, status: RuntimeStatus, **options: Any) -> StatusServer:
        """A server for ``HOST:PORT`` as users write it (see ``parse_address``), not started.

        Raises:
            ConfigError: the address is not HOST:PORT.
        """
        host, port = parse_address(address)
        return cls(status, host, port, **options)

    @property
    def url(self) -> str:
        """Where the server answers (after ``start``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind the port and start serving; the metrics start counting the status's predictions.

        Raises:
            ServiceError: the port is taken or the address cannot be bound.
        """
        if self._server is not None:
            return
        server_class = _Server6 if ":" in self.host else _Server
        try:
            server = server_class((self.host, self.port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServiceError(
                    f"cannot serve HTTP on {self.host}:{self.port}: the port is already in use "
                    "(choose another with --http HOST:PORT, or stop the other program)"
                ) from None
            raise ServiceError(
                f"cannot serve HTTP on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        try:
            client = require("prometheus_client", "metrics", "the /metrics page")
            self.metrics = PredictionMetrics(client, self.status.snapshot)
            self.status.add_observer(self.metrics.observe)
        except MissingDependencyError as exc:
            self.metrics, self.metrics_unavailable = None, str(exc)
        server.owner = self
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="status server",
            daemon=True,
        )
        self._thread.start()
        log.info("serving %s", self.url)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, JSON body) as /healthz answers."""
        snapshot = self.status.snapshot()
        state, message = str(snapshot.get("state")), str(snapshot.get("message") or "")
        age = snapshot.get("last_frame_age_s")
        ok, reason = health(state, age, self.stale_after_s, message)
        return ok, {"ok": ok, "reason": reason, "state": state, "last_frame_age_s": age}

    def close(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        server, self._server = self._server, None
        if self.metrics is not None:
            self.status.remove_observer(self.metrics.observe)
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> StatusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
