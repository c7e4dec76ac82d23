"""A loopback HTTP server in front of a TUF repository folder that misbehaves on purpose.

``mode`` says how, for requests whose path contains ``match`` (others are served as they are):

- ``cut``: send the headers and half the body of the file, then close the connection (the
  server goes away mid-download);
- ``stall``: send the headers and a few bytes, then wait ``stall_s`` before each further byte
  (slower than any client timeout the tests set);
- ``garbage``: answer 200 with random bytes of the same length instead of the file;
- ``down``: close the connection without answering.

The request loop is bounded and the server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        settings = self.server.settings
        settings["requests"] += 1
        relative = unquote(urlparse(self.path).path).lstrip("/")
        path = (settings["root"] / relative).resolve()
        if settings["root"] not in path.parents or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        faulty = settings["match"] in relative
        mode = settings["mode"] if faulty else "ok"
        if faulty:
            settings["hits"] += 1
        if mode == "down":
            self.close_connection = True
            return
        if mode == "garbage":
            data = os.urandom(len(data))
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "cut":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if mode == "stall":
            self.wfile.write(data[:16])
            self.wfile.flush()
            for offset in range(16, len(data)):
                if settings["stop"].wait(settings["stall_s"]):
                    return
                try:
                    self.wfile.write(data[offset : offset + 1])
                    self.wfile.flush()
                except OSError:
                    return
            return
        self.wfile.write(data)


@contextlib.contextmanager
def faulty_server(
    root: Path, *, mode: str, match: str, stall_s: float = 5.0, max_requests: int = 500
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Serve ``root`` on a free loopback port; yields the base URL and the settings (``mode``
    and ``match`` may be changed while it runs; ``hits`` counts faulty answers)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.timeout = 0.05
    stop = threading.Event()
    server.settings = {  # type: ignore[attr-defined]
        "root": root.resolve(),
        "mode": mode,
        "match": match,
        "stall_s": stall_s,
        "stop": stop,
        "hits": 0,
        "requests": 0,
    }

    def loop() -> None:
        while not stop.is_set() and server.settings["requests"] < max_requests:  # type: ignore[attr-defined]
            server.handle_request()

    thread = threading.Thread(target=loop, name="faulty-repo-server", daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield f"http://127.0.0.1:{port}/", server.settings  # type: ignore[attr-defined]
    finally:
        stop.set()
        thread.join(timeout=10)
        server.server_close()
