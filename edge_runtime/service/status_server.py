"""The status server: ``/healthz``, ``/status``, ``/latest`` and ``/metrics`` over HTTP.

It serves an injected :class:`~edge_runtime.status.RuntimeStatus` and belongs to the service, not
to the pipeline: the command starts it before the model is loaded and closes it after the
pipeline has stopped, so it answers during a slow model load, a reload or a hot swap, and reports
whatever the service publishes in the status (update state, reloads).

It must never slow the frame loop nor let clients pile up threads, so:

- bodies are rendered at most once per ``refresh_s`` (:class:`RenderCache`): a hundred clients
  in that time cost one status snapshot and one Prometheus rendering;
- connections are accepted at most ``max_requests_per_s`` a second (:class:`RateLimiter`);
  clients beyond that wait in the kernel's listen queue, costing no CPU;
- at most ``max_connections`` are handled at once, each in its own thread; when all are taken,
  a new connection replaces the oldest one still waiting for its request (idle clients cannot
  lock out those that ask), and only when all of them are being answered is it answered 503 at
  once by the accepting thread;
- a request must arrive completely within ``request_timeout_s`` of its connection (a deadline,
  not an idle timeout, so a client trickling a byte a second is cut off too), and one request
  is served per connection.

What is served says no more than needed (:func:`public_status`): credentials redacted, file
names instead of paths, no software versions in the ``Server`` header.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge_runtime.address import parse_address
from edge_runtime.errors import MissingDependencyError, ServiceError
from edge_runtime.redaction import redact_data
from edge_runtime.registry import require
from edge_runtime.service.metrics import PredictionMetrics
from edge_runtime.status import RuntimeStatus

log = logging.getLogger(__name__)

ENDPOINTS = ("/healthz", "/status", "/latest", "/metrics")
SERVER_NAME = "edge-runtime"

#: (status code, body, content type, extra headers) of a page added with ``add_page``
Page = tuple[HTTPStatus, bytes, str, Mapping[str, str]]


class StreamRequest:
    """What a stream handler (``add_stream``) gets: answer with :meth:`refuse`, or :meth:`start`
    and then :meth:`write` until it returns; ``closing`` is set when the server stops. A write
    to a client that stopped reading fails within the request timeout (``OSError``)."""

    def __init__(self, handler: _Handler, closing: threading.Event) -> None:
        self._handler = handler
        self.closing = closing
        self.head_only = handler.command == "HEAD"

    def refuse(self, code: HTTPStatus, message: str) -> None:
        self._handler._json(code, {"error": message})

    def start(self, content_type: str) -> None:
        handler = self._handler
        handler.send_response(HTTPStatus.OK)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Cache-Control", "no-store")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.flush()

    def write(self, data: bytes) -> None:
        self._handler.wfile.write(data)
        self._handler.wfile.flush()


_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+:")


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


def _file_name(location: str) -> str:
    """A path's last part (``/home/pi/models/signs.tar`` -> ``signs.tar``); URIs with a scheme
    (``camera:0``, ``rtsp://...``) as they are."""
    if not location or _SCHEME.match(location):
        return location
    return Path(location).name or location


def public_status(
    snapshot: Mapping[str, Any], *, full_paths: bool = False, home: str | None = None
) -> dict[str, Any]:
    """What the status server shows of a status snapshot: every string with its credentials
    redacted and, unless ``full_paths``, the model's path and a file source's location as file
    names, and the home directory ``home`` written as ``~`` anywhere else (messages)."""
    data: dict[str, Any] = redact_data(snapshot)
    if full_paths:
        return data
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("path"), str):
        model["path"] = _file_name(model["path"])
    for part in (data.get("source"), data.get("latest")):
        for key in ("uri", "source"):
            if isinstance(part, dict) and isinstance(part.get(key), str):
                part[key] = _file_name(part[key])
    if home and home != "/":
        data = _replace_in_strings(data, home, "~")
    return data


def _replace_in_strings(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {key: _replace_in_strings(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_in_strings(item, old, new) for item in value]
    return value


class RenderCache:
    """Values rendered at most once per ``period_s`` seconds of ``clock``, by key.

    A request finds a fresh value or renders it; concurrent requests wait for the one render in
    progress (blocked, costing nothing) instead of rendering too. ``period_s`` 0 renders every
    time. ``renders`` counts the renders, for tests.
    """

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, Any]] = {}
        self.renders = 0

    def get(self, key: str, render: Callable[[], Any]) -> Any:
        with self._lock:
            now = self._clock()
            cached = self._values.get(key)
            if cached is not None and now - cached[0] < self.period_s:
                return cached[1]
            value = render()
            self.renders += 1
            self._values[key] = (now, value)
            return value


class RateLimiter:
    """A token bucket: ``rate_per_s`` events a second on average, ``burst`` at once.

    :meth:`reserve` books the next event and says how long to wait before it may happen (0 when
    a token is there). ``rate_per_s`` None or 0: no limit.
    """

    def __init__(
        self, rate_per_s: float | None, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s or 0.0
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._last = clock()

    def reserve(self) -> float:
        """Book one event; the seconds to wait before it."""
        if self.rate_per_s <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s


class _DeadlineReader(io.RawIOBase):
    """Reads a socket until a deadline: each read may wait only for the time left, so the whole
    request must arrive in time however slowly the client trickles it."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


def _busy_response() -> bytes:
    body = json.dumps({"error": "too many connections; retry shortly"}).encode()
    head = (
        "HTTP/1.0 503 Service Unavailable\r\n"
        f"Server: {SERVER_NAME}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


_BUSY = _busy_response()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Clients over the accept rate wait here, in the kernel, at no cost to the frame loop.
    request_queue_size = 128
    # Handler threads end on their own within the request timeout, and close() cuts them short.
    block_on_close = False
    owner: StatusServer

    def get_request(self) -> tuple[socket.socket, Any]:
        # Pacing the accepts bounds the server's work whatever the clients do: those over the
        # rate wait in the listen queue, blocked in their connect or first read.
        self.owner._pace()
        return super().get_request()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.owner._enter(request):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.owner._leave(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner._leave(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; a client that went away is no news.
        failure = sys.exc_info()[1]
        if isinstance(failure, OSError):
            log.debug("status request from %s: %s", client_address, failure)
        else:
            log.warning("status request from %s failed", client_address, exc_info=True)

    def _refuse(self, request: socket.socket) -> None:
        """503 from the accepting thread, without waiting for the client: a fresh connection's
        send buffer takes the few bytes at once."""
        try:
            request.setblocking(False)
            request.send(_BUSY)
        except OSError:
            pass
        self.shutdown_request(request)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = SERVER_NAME
    sys_version = ""

    def version_string(self) -> str:
        return SERVER_NAME  # no Python or library versions for a scanner to match

    def setup(self) -> None:
        owner = self.server.owner
        self.connection = self.request
        self.rfile = io.BufferedReader(
            _DeadlineReader(self.connection, time.monotonic() + owner.request_timeout_s)
        )
        self.wfile = self.connection.makefile("wb")

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        # The request is in; the answer gets its own bound (a client that does not read).
        self.server.owner._received(self.connection)
        self.connection.settimeout(self.server.owner.request_timeout_s)
        return True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        owner = self.server.owner
        try:
            if path in ENDPOINTS:
                code, body, content_type = owner.page(path)
                self._send(code, body, content_type)
            elif path in owner.pages:
                code, body, content_type, headers = owner.added_page(path)
                self._send(code, body, content_type, headers)
            elif path in owner.streams:
                owner.streams[path](StreamRequest(self, owner._closing))
            else:
                self._json(
                    HTTPStatus.NOT_FOUND,
                    {"error": f"no page {path}", "endpoints": owner.endpoints},
                )
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client went away or stopped reading; nothing to answer

    def do_HEAD(self) -> None:
        self.do_GET()  # _send leaves the body out for HEAD

    def _not_allowed(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "read-only: use GET or HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _json(self, code: HTTPStatus, body: Mapping[str, Any]) -> None:
        self._send(code, json.dumps(body, default=str).encode(), "application/json")

    def _send(
        self,
        code: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if code == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class StatusServer:
    """Serves the health, status, latest prediction and Prometheus metrics of ``status``.

    ``host`` (default 127.0.0.1; 0.0.0.0 to serve the network), ``port`` (0 picks a free port;
    ``port`` tells which after ``start``), ``stale_after_s`` (/healthz fails when no frame was
    classified for this long, on the status's clock).

    Limits (see the module docstring): ``refresh_s`` (pages are at most this old),
    ``max_connections`` (connections served at once), ``max_requests_per_s``
    (accept rate; 0 = no limit), ``request_timeout_s`` (time for a request to arrive, and for
    its answer to leave).
    ``full_paths`` shows the model's and the source's paths instead of their file names;
    ``clock`` times the page cache and the rate limit (tests); ``board`` returns the board's
    health for /metrics (``hardware.BoardMonitor.read``: SoC temperature, throttling).

    /healthz answers 200 while the pipeline is running and frames flow, else 503 with the reason;
    /status is the status snapshot; /latest the latest prediction (404 before the first);
    /metrics the Prometheus text (501 when prometheus-client is not installed). HEAD answers
    like GET without the body. Use it as a context manager, or ``start()`` and ``close()``.
    """

    def __init__(
        self,
        status: RuntimeStatus,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        stale_after_s: float = 5.0,
        refresh_s: float = 0.5,
        max_connections: int = 8,
        max_requests_per_s: float = 50.0,
        request_timeout_s: float = 5.0,
        full_paths: bool = False,
        clock: Callable[[], float] = time.monotonic,
        board: Callable[[], Any] | None = None,
    ) -> None:
        if max_connections < 1 or request_timeout_s <= 0 or refresh_s < 0:
            raise ValueError(
                "max_connections must be at least 1, request_timeout_s positive and refresh_s "
                "not negative"
            )
        self.status = status
        self.host = host
        self.port = int(port)
        self.stale_after_s = stale_after_s
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.full_paths = full_paths
        self.metrics: PredictionMetrics | None = None
        self.metrics_unavailable = ""
        self.board = board
        self.cache = RenderCache(refresh_s, clock)
        self._limiter = RateLimiter(max_requests_per_s, burst=max(1, max_connections), clock=clock)
        # Each connection being served, with whether its request is still to come.
        self._connections: dict[socket.socket, bool] = {}
        self._connections_lock = threading.Lock()
        self._closing = threading.Event()
        self._home = _home_directory()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: pages added by the service (the live view): path -> (render, cached)
        self.pages: dict[str, tuple[Callable[[], Page], bool]] = {}
        #: streams added by the service: path -> handler of a StreamRequest
        self.streams: dict[str, Callable[[StreamRequest], None]] = {}

    def add_page(self, path: str, render: Callable[[], Page], *, cached: bool = True) -> None:
        """Serve ``render()``'s page at ``path`` (through the page cache unless ``cached`` is
        false: for bodies that change per request, such as the latest frame)."""
        self.pages[path] = (render, cached)

    def add_stream(self, path: str, handler: Callable[[StreamRequest], None]) -> None:
        """Serve ``path`` with ``handler``, which writes the answer itself for as long as it
        likes (an MJPEG stream); it holds one of the ``max_connections`` slots meanwhile."""
        self.streams[path] = handler

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every path served."""
        return (*ENDPOINTS, *self.pages, *self.streams)

    def added_page(self, path: str) -> Page:
        """An ``add_page`` page, from the cache when it is a cached one."""
        render, cached = self.pages[path]
        if not cached:
            return render()
        page: Page = self.cache.get(path, render)
        return page

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

    @property
    def active_connections(self) -> int:
        """Connections being served now (each holds one handler thread)."""
        with self._connections_lock:
            return len(self._connections)

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
            self.metrics = PredictionMetrics(client, self.public_snapshot, self.board)
            self.status.add_observer(self.metrics.observe)
        except MissingDependencyError as exc:
            self.metrics, self.metrics_unavailable = None, str(exc)
        server.owner = self
        self.port = int(server.server_address[1])
        self._closing.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="status server",
            daemon=True,
        )
        self._thread.start()
        log.info("serving %s", self.url)

    # -- pages -------------------------------------------------------------------------------
    def public_snapshot(self) -> dict[str, Any]:
        """The status snapshot as served (see :func:`public_status`)."""
        return public_status(self.status.snapshot(), full_paths=self.full_paths, home=self._home)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, JSON body) as /healthz answers."""
        snapshot = self.public_snapshot()
        state, message = str(snapshot.get("state")), str(snapshot.get("message") or "")
        age = snapshot.get("last_frame_age_s")
        ok, reason = health(state, age, self.stale_after_s, message)
        return ok, {"ok": ok, "reason": reason, "state": state, "last_frame_age_s": age}

    def page(self, path: str) -> tuple[HTTPStatus, bytes, str]:
        """(status code, body, content type) of one of ``ENDPOINTS``, from the page cache."""
        page: tuple[HTTPStatus, bytes, str] = self.cache.get(path, lambda: self._render(path))
        return page

    def _render(self, path: str) -> tuple[HTTPStatus, bytes, str]:
        if path == "/healthz":
            ok, verdict = self.health()
            return _json_page(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, verdict)
        if path == "/status":
            return _json_page(HTTPStatus.OK, self.public_snapshot())
        if path == "/latest":
            latest = self.status.latest
            if latest is None:
                return _json_page(HTTPStatus.NOT_FOUND, {"error": "no prediction yet"})
            shown = public_status(
                {"latest": latest.to_dict()}, full_paths=self.full_paths, home=self._home
            )
            return _json_page(HTTPStatus.OK, shown["latest"])
        if path == "/metrics":
            if self.metrics is None:
                text = (self.metrics_unavailable + "\n").encode()
                return HTTPStatus.NOT_IMPLEMENTED, text, "text/plain; charset=utf-8"
            exposition, content_type = self.metrics.render()
            return HTTPStatus.OK, exposition, content_type
        raise KeyError(path)

    # -- connection limits (called by the server's threads) ----------------------------------
    def _pace(self) -> None:
        delay = self._limiter.reserve()
        if delay > 0:
            self._closing.wait(delay)

    def _enter(self, connection: socket.socket) -> bool:
        """Admit a new connection, making room by cutting the oldest one that has not sent its
        request yet; False when every slot is answering a request."""
        with self._connections_lock:
            if len(self._connections) >= self.max_connections:
                # Dicts keep insertion order: the first waiting one is the oldest.
                oldest = next((c for c, waiting in self._connections.items() if waiting), None)
                if oldest is None:
                    return False
                del self._connections[oldest]
                try:
                    oldest.shutdown(socket.SHUT_RDWR)  # its handler's read returns at once
                except OSError:
                    pass
            self._connections[connection] = True
            return True

    def _received(self, connection: socket.socket) -> None:
        with self._connections_lock:
            if connection in self._connections:
                self._connections[connection] = False

    def _leave(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.pop(connection, None)

    def close(self) -> None:
        """Stop serving, cut the connections in progress and release the port. Safe to call
        twice."""
        server, self._server = self._server, None
        self._closing.set()
        if self.metrics is not None:
            self.status.remove_observer(self.metrics.observe)
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # the handler's read or write returns
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> StatusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_page(code: HTTPStatus, body: Mapping[str, Any]) -> tuple[HTTPStatus, bytes, str]:
    return code, json.dumps(body, default=str).encode(), "application/json"


def _home_directory() -> str | None:
    try:
        return str(Path.home())
    except (KeyError, RuntimeError):  # no HOME and no passwd entry (a bare service user)
        return None
