"""POST each event as JSON to a URL, from a background thread (standard library only).

The pipeline only appends to a bounded queue; when the receiver is slow or down, the oldest
messages are dropped (and counted) so memory stays bounded and the newest state gets through.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import Field, field_validator

from edge_runtime import __version__
from edge_runtime.errors import ConfigError
from edge_runtime.sinks.base import Flag, Sink, SinkConfig, SinkContext, StatusProvider, selected
from edge_runtime.types import Frame, Prediction

log = logging.getLogger(__name__)

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded FIFO whose ``put`` never blocks: when full, the oldest item makes room."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"queue size must be at least 1, got {capacity}")
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Append ``item``; True when the oldest item was dropped to make room."""
        with self._cond:
            dropped = len(self._items) >= self._capacity
            if dropped:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None after ``timeout`` or once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        """Wake the reader; it drains what is left, then gets None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def retry_delay(attempt: int, first_s: float, max_s: float = 30.0) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): doubling from ``first_s``, capped."""
    return float(min(max_s, first_s * 2 ** min(attempt - 1, 30)))


def is_retryable(status: int | None) -> bool:
    """Retry network failures (no status), rate limits and server errors; not other client
    errors, which would fail again."""
    return status is None or status == 429 or status >= 500


def _verify_webhook_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"webhook URL must start with http:// or https://, got '{url}'")
    return url


class WebhookConfig(SinkConfig):
    """``[outputs] webhook``: POST each event as JSON. ``webhook = "https://host/hook"`` is short
    for ``webhook = { url = "https://host/hook" }``."""

    key = "webhook"
    shorthand = "url"
    flags = (Flag(("--webhook",), "url", "POST events as JSON to this URL", "URL"),)

    url: str = Field(description="An http:// or https:// URL.")
    every_frame: bool = Field(False, description="POST every frame, not only label changes.")
    queue_size: int = Field(256, ge=1, description="Messages waiting; the oldest is dropped.")
    timeout_s: float = Field(5.0, gt=0, description="Seconds per request.")
    retries: int = Field(3, ge=0, description="Retries of network errors, 429 and 5xx.")
    retry_delay_s: float = Field(0.5, ge=0, description="First back-off, then doubling.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers, e.g. Authorization."
    )
    drain_timeout_s: float = Field(5.0, ge=0, description="How long closing waits to send.")
    fail_safe: str | None = Field(
        None,
        min_length=1,
        description="A state name the receiver acts on (e.g. 'closed'): while decisions are "
        "missing (no fresh confident decision for [service] stale_after_s, a model that failed "
        'to load, the daemon stopping) it is POSTed as {"fail_safe": true, "state": ..., '
        '"reason": ...} and predictions are held back until {"fail_safe": false}.',
    )

    @field_validator("url")
    @classmethod
    def _verify_url(cls, value: str) -> str:
        try:
            return _verify_webhook_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    def build(self, context: SinkContext) -> list[Sink]:
        return [WebhookSink(**self.model_dump())]


class WebhookSink(Sink):
    """POSTs ``Prediction.to_dict()`` JSON to ``url`` for each event (or every frame).

    Options: ``every_frame`` (default False: events only), ``queue_size`` (messages waiting;
    the oldest is dropped when full), ``timeout_s`` (per request), ``retries`` (after the first
    try, for network errors, 429 and 5xx), ``retry_delay_s`` (first back-off, then doubling),
    ``headers`` (e.g. an ``Authorization`` header), ``drain_timeout_s`` (how long ``close`` waits
    to send what is queued), ``sleep`` (tests).
    """

    name = "webhook"
    Config = WebhookConfig

    def __init__(
        self,
        url: str,
        *,
        every_frame: bool = False,
        queue_size: int = 256,
        timeout_s: float = 5.0,
        retries: int = 3,
        retry_delay_s: float = 0.5,
        headers: Mapping[str, str] | None = None,
        drain_timeout_s: float = 5.0,
        fail_safe: str | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.url = _verify_webhook_url(url)
        self.fail_safe = fail_safe
        self.held = False
        self.every_frame = every_frame
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"edge-runtime/{__version__}",
            **dict(headers or {}),
        }
        self.drain_timeout_s = drain_timeout_s
        self.queue: DropOldestQueue[dict[str, Any]] = DropOldestQueue(queue_size)
        self._stop = threading.Event()
        self._sleep: Callable[[float], object] = sleep or self._stop.wait
        self._thread: threading.Thread | None = None
        self._counts_lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.retried = 0

    @property
    def dropped(self) -> int:
        """Messages pushed out of the full queue before they could be sent."""
        return self.queue.dropped

    def open(self, status: StatusProvider | None = None) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webhook sink", daemon=True)
            self._thread.start()

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        if selected(prediction, self.every_frame) and not self.held:
            if self.queue.put(prediction.to_dict()):
                log.debug("webhook queue full: dropped the oldest message")

    def enter_fail_safe(self, reason: str) -> None:
        if self.fail_safe is None or self.held:
            return
        self.held = True
        self.queue.put({"fail_safe": True, "state": self.fail_safe, "reason": reason})

    def leave_fail_safe(self) -> None:
        if self.held:
            self.held = False
            self.queue.put({"fail_safe": False, "state": None, "reason": "fresh decisions"})

    def _run(self) -> None:
        while not self._stop.is_set():
            body = self.queue.get()
            if body is None:
                return
            self._deliver(body)

    def _deliver(self, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(retry_delay(attempt, self.retry_delay_s))
                with self._counts_lock:
                    self.retried += 1
            status, reason = self._post(data)
            if status is not None and 200 <= status < 300:
                with self._counts_lock:
                    self.sent += 1
                return
            if not is_retryable(status) or self._stop.is_set():
                break
        with self._counts_lock:
            self.failed += 1
        log.warning("webhook %s failed: %s", self.url, reason)

    def _post(self, data: bytes) -> tuple[int | None, str]:
        request = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return int(response.status), f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return exc.code, f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, str(reason)

    def stats(self) -> dict[str, int]:
        """Counters: sent, failed (gave up), retried, dropped (queue full), queued (waiting)."""
        with self._counts_lock:
            counts = {"sent": self.sent, "failed": self.failed, "retried": self.retried}
        return {**counts, "dropped": self.dropped, "queued": len(self.queue)}

    def close(self) -> None:
        """Send what is queued (for up to ``drain_timeout_s``), then stop."""
        thread, self._thread = self._thread, None
        self.queue.close()
        if thread is None:
            return
        thread.join(timeout=self.drain_timeout_s)
        if thread.is_alive():
            # Stop retrying; an in-flight request still ends by its own timeout.
            self._stop.set()
            thread.join(timeout=self.timeout_s)
            log.warning("webhook %s: %d messages not sent at close", self.url, len(self.queue))
