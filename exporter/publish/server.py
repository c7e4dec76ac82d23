"""The lab HTTP server: ``edge-export serve`` serves ``REPO/metadata`` and ``REPO/targets``.

Static files only, never the keys, ``repository.json`` or a folder listing, with cache headers
that fit consistent snapshots (versioned and hash-prefixed files are immutable; ``timestamp.json``
and ``root.json`` must be revalidated). SIGINT and SIGTERM stop it cleanly (``kill``, systemd
and Ctrl-C alike). In production any static HTTP server, CDN or object store serves the same
two folders.
"""

from __future__ import annotations

import http.server
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.ota.policy import METADATA_DIR, TARGETS_DIR
from edge_runtime.service.signals import STOP_SIGNALS, Handler, installed
from exporter.errors import PublishError
from exporter.publish.repository import no_repository


class _RepositoryRequestHandler(http.server.SimpleHTTPRequestHandler):
    """Static files under ``metadata/`` and ``targets/`` only: never keys, never listings."""

    server_version = "edge-export-serve"
    quiet = False
    _status = 200

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def translate_path(self, path: str) -> str:
        resolved = Path(super().translate_path(path))
        base = Path(self.directory).resolve()
        real = resolved.resolve()
        for served in (base / METADATA_DIR, base / TARGETS_DIR):
            if served in real.parents and real.is_file():
                return str(real)
        return str(base / ".not-served")  # answered 404 by the caller

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404, "No listings")
        return None

    def end_headers(self) -> None:
        # Versioned and hash-prefixed files never change; timestamp.json and root.json do, and
        # a missing N.root.json is how a device learns there is no newer root: never cache it.
        name = self.path.rsplit("/", 1)[-1].split("?", 1)[0]
        if self._status >= 400:
            self.send_header("Cache-Control", "no-store")
        elif name in ("timestamp.json", "root.json"):
            self.send_header("Cache-Control", "no-cache")
        else:
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)


def make_server(
    repo: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000, *, quiet: bool = False
) -> http.server.ThreadingHTTPServer:
    """An HTTP server of ``REPO/metadata`` and ``REPO/targets`` (port 0: a free port).

    Raises:
        PublishError: no repository at ``repo``, or the address cannot be bound.
    """
    root = Path(repo)
    if not (root / METADATA_DIR / "1.root.json").is_file():
        raise no_repository(root)
    handler = type(
        "RepositoryRequestHandler",
        (_RepositoryRequestHandler,),
        {"quiet": quiet},
    )

    def factory(*args: Any, **kwargs: Any) -> http.server.BaseHTTPRequestHandler:
        return handler(*args, directory=str(root.resolve()), **kwargs)

    try:
        return http.server.ThreadingHTTPServer((host, port), factory)
    except OSError as exc:
        raise PublishError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def server_url(server: http.server.ThreadingHTTPServer) -> str:
    """The base URL of a server from :func:`make_server`."""
    host, port = server.server_address[:2]
    text = host.decode() if isinstance(host, bytes) else str(host)
    shown = f"[{text}]" if ":" in text else text
    return f"http://{shown}:{port}/"


@dataclass(frozen=True)
class ServeResult:
    """How :func:`serve` ended."""

    url: str
    #: the signal that stopped it (``SIGTERM``, ``SIGINT``); ``None``: it served ``max_requests``
    signal: str | None = None


def serve(
    repo: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_requests: int | None = None,
    quiet: bool = False,
    announce: Callable[[str], None] = print,
) -> ServeResult:
    """Serve the repository until SIGINT or SIGTERM (or for ``max_requests`` requests).

    ``announce`` is called with the URL once the server listens and a signal stops it. Signals
    are caught only when this runs on the main thread (Python delivers them there only); the
    previous handlers are back when it returns. After ``max_requests`` it returns once those
    requests are answered; after a signal it does not wait for requests in flight (a client
    sees a short file, which python-tuf refuses by its length and hash).

    Raises:
        PublishError: no repository, or the address cannot be bound.
    """
    on_main_thread = threading.current_thread() is threading.main_thread()
    stopped_by: list[int] = []
    with make_server(repo, host, port, quiet=quiet) as server:
        if max_requests is not None:
            # Each request is answered in a thread of its own; closing the server waits for
            # these, so the last ones are answered before the process that asked for N exits.
            server.daemon_threads = False
            # handle_request() waits this long at most, so a stop signal ends the loop soon.
            server.timeout = 0.2

        def stop(signum: int) -> None:
            # Runs on the signal watcher thread: serve_forever() ends once shutdown() returns.
            stopped_by.append(signum)
            if max_requests is None:
                server.shutdown()

        handlers: dict[int, Handler] = (
            {signum: stop for signum in STOP_SIGNALS} if on_main_thread else {}
        )
        url = server_url(server)
        with installed(handlers):
            announce(url)
            if max_requests is None:
                server.serve_forever()
            else:
                idle: list[bool] = []
                server.handle_timeout = lambda: idle.append(True)  # type: ignore[method-assign]
                answered = 0
                while answered < max_requests and not stopped_by:
                    server.handle_request()
                    if not idle:
                        answered += 1
                    idle.clear()
    if stopped_by:
        return ServeResult(url, signal.Signals(stopped_by[0]).name)
    return ServeResult(url)


__all__ = ["ServeResult", "make_server", "serve", "server_url"]
