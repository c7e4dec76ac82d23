"""Publish predictions to an MQTT broker (paho-mqtt 2.x).

The client connects and reconnects in paho's own network thread (``connect_async`` +
``loop_start``), so a missing broker never holds up the pipeline: messages published while
disconnected wait in paho's bounded queue or are counted as dropped. A retained status topic says
``online`` while connected; the broker publishes the last will ``offline`` if the device vanishes.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator

from edge_runtime.errors import ConfigError
from edge_runtime.registry import require
from edge_runtime.sinks.base import Flag, Sink, SinkConfig, SinkContext, StatusProvider, selected
from edge_runtime.types import Frame, Prediction

log = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is, parsed from ``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for
    TLS; a bare ``host[:port]`` means ``mqtt://``)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse a broker URL; default ports are 1883 (mqtt) and 8883 (mqtts).

    Raises:
        ConfigError: not an mqtt:// or mqtts:// URL with a host.
    """
    text = url.strip()
    if "://" not in text:
        text = f"mqtt://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError(f"'{url}' is not an MQTT broker URL (mqtt://host:1883 or mqtts://host)")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(f"'{url}' has a bad port") from None
    if not parts.hostname:
        raise ConfigError(f"'{url}' names no broker host (e.g. mqtt://broker.local:1883)")
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def default_topic(kind: str, hostname: str | None = None) -> str:
    """``edge-classify/<hostname>/<kind>``, with characters MQTT reserves replaced."""
    host = hostname or socket.gethostname() or "device"
    for reserved in "/+#":
        host = host.replace(reserved, "_")
    return f"edge-classify/{host}/{kind}"


class MqttConfig(SinkConfig):
    """``[outputs] mqtt``: publish events to an MQTT broker. ``mqtt = "mqtt://broker:1883"`` is
    short for ``mqtt = { url = "mqtt://broker:1883" }``."""

    key = "mqtt"
    shorthand = "url"
    flags = (Flag(("--mqtt",), "url", "publish events, e.g. mqtt://broker:1883", "URL"),)

    url: str = Field(description="mqtt://[user[:password]@]host[:port], or mqtts:// for TLS.")
    topic: str | None = Field(None, description="Default: edge-classify/<hostname>/predictions.")
    status_topic: str | None = Field(
        None,
        description="Retained online/offline, also the last will. "
        "Default: edge-classify/<hostname>/status.",
    )
    every_frame: bool = Field(False, description="Publish every frame, not only label changes.")
    qos: Literal[0, 1, 2] = Field(1, description="MQTT quality of service.")
    client_id: str | None = Field(None, description="Default: one the broker assigns.")
    keepalive_s: int = Field(30, ge=1, description="Seconds between keep-alive pings.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First wait before reconnecting.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest wait between reconnects.")
    max_queued: int = Field(
        1000, ge=0, description="Messages held while disconnected; later ones are dropped."
    )
    fail_safe: str | None = Field(
        None,
        min_length=1,
        description="A state name subscribers act on (e.g. 'closed'): while decisions are "
        "missing (no fresh confident decision for [service] stale_after_s, a model that failed "
        'to load, the daemon stopping) {"fail_safe": true, "state": ..., "reason": ...} '
        "is published, retained, on fail_safe_topic and predictions are held back.",
    )
    fail_safe_topic: str | None = Field(
        None, description="Default: edge-classify/<hostname>/fail_safe."
    )

    @field_validator("url")
    @classmethod
    def _verify_url(cls, value: str) -> str:
        try:
            parse_broker_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    def build(self, context: SinkContext) -> list[Sink]:
        return [MqttSink(**self.model_dump())]


class MqttSink(Sink):
    """Publishes each event (or every frame) as ``Prediction.to_dict()`` JSON.

    Options: ``url`` (the broker), ``topic`` (default ``edge-classify/<hostname>/predictions``),
    ``status_topic`` (default ``edge-classify/<hostname>/status``; retained ``online`` /
    ``offline``, the latter also as last will), ``every_frame`` (default False: events only),
    ``qos`` (0, 1 or 2; default 1), ``client_id``, ``keepalive_s``, ``reconnect_min_s`` /
    ``reconnect_max_s`` (paho's reconnect back-off), ``max_queued`` (messages held while
    disconnected; later ones are dropped and counted), ``fail_safe`` and ``fail_safe_topic``
    (the state published, retained, while in the fail-safe state).
    """

    name = "mqtt"
    Config = MqttConfig

    def __init__(
        self,
        url: str = "mqtt://localhost:1883",
        *,
        topic: str | None = None,
        status_topic: str | None = None,
        every_frame: bool = False,
        qos: int = 1,
        client_id: str | None = None,
        keepalive_s: int = 30,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        max_queued: int = 1000,
        fail_safe: str | None = None,
        fail_safe_topic: str | None = None,
    ) -> None:
        if qos not in (0, 1, 2):
            raise ConfigError(f"MQTT qos must be 0, 1 or 2, got {qos}")
        self.address = parse_broker_url(url)
        self.topic = topic or default_topic("predictions")
        self.status_topic = status_topic or default_topic("status")
        self.every_frame = every_frame
        self.qos = qos
        self.client_id = client_id or ""
        self.keepalive_s = keepalive_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.max_queued = max_queued
        self.fail_safe = fail_safe
        self.fail_safe_topic = fail_safe_topic or default_topic("fail_safe")
        self.held = False
        self.connected = threading.Event()
        #: handed to a connected client / held for the next connection / given up
        self.published = 0
        self.queued = 0
        self.dropped = 0
        self.connects = 0
        self._client: Any = None
        self._mqtt: Any = None

    def open(self, status: StatusProvider | None = None) -> None:
        """Start connecting in the background; returns at once.

        Raises:
            MissingDependencyError: paho-mqtt is not installed.
        """
        if self._client is not None:
            return
        mqtt = require("paho.mqtt.client", "mqtt", "the MQTT sink")
        self._mqtt = mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id)
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set()
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(self.reconnect_min_s, self.reconnect_max_s)
        client.max_queued_messages_set(self.max_queued)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.connect_async(self.address.host, self.address.port, keepalive=self.keepalive_s)
        client.loop_start()
        self._client = client

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("MQTT broker %s refused the connection: %s", self.address.host, reason_code)
            return
        self.connects += 1
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        self.connected.set()
        log.info("connected to MQTT broker %s:%d", self.address.host, self.address.port)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.connected.clear()
        if getattr(reason_code, "is_failure", False):
            log.warning("lost the MQTT broker (%s); reconnecting", reason_code)

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        if self._client is None or not selected(prediction, self.every_frame) or self.held:
            return
        self._publish(self.topic, prediction.to_dict())

    def enter_fail_safe(self, reason: str) -> None:
        if self.fail_safe is None or self.held:
            return
        self.held = True
        body = {"fail_safe": True, "state": self.fail_safe, "reason": reason}
        self._publish(self.fail_safe_topic, body, retain=True)

    def leave_fail_safe(self) -> None:
        if self.held:
            self.held = False
            body = {"fail_safe": False, "state": None, "reason": "fresh decisions"}
            self._publish(self.fail_safe_topic, body, retain=True)

    def _publish(self, topic: str, body: dict[str, Any], retain: bool = False) -> None:
        if self._client is None:
            return
        payload = json.dumps(body, separators=(",", ":"))
        mqtt = self._mqtt
        info = self._client.publish(topic, payload, qos=self.qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.published += 1
        elif info.rc == mqtt.MQTT_ERR_NO_CONN and self.qos > 0:
            # paho keeps qos 1/2 messages and sends them once it has reconnected.
            self.queued += 1
        else:
            # qos 0 while disconnected, or the offline queue is full: never wait for the broker.
            self.dropped += 1
            log.debug("MQTT publish dropped: %s", mqtt.error_string(info.rc))

    def close(self) -> None:
        """Announce ``offline`` (retained), flush briefly, disconnect."""
        client, self._client = self._client, None
        if client is None:
            return
        if self.connected.is_set():
            # Messages leave in order: once 'offline' is acknowledged, so is a fail-safe state
            # published before it.
            info = client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as exc:
                log.debug("MQTT offline status not confirmed: %s", exc)
        client.disconnect()
        client.loop_stop()
        self.connected.clear()
