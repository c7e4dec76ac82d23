"""Stand-ins for hardware and helpers for the network sinks' tests.

Only what needs hardware is faked: a camera behind ``cv2.VideoCapture`` that delivers frames,
disappears and comes back; the ``picamera2`` module; a clock. The network pieces (MJPEG server,
webhook receiver, MQTT broker) are real servers on the loopback interface.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_runtime.types import Classification, Prediction


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Any, timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return bool(condition())
        time.sleep(interval)


def prediction(
    index: int = 0,
    label: str = "stop",
    score: float = 0.9,
    *,
    event: bool = False,
    truth: str | None = None,
    latency_ms: dict[str, float] | None = None,
) -> Prediction:
    """A prediction as the pipeline makes them."""
    return Prediction(
        frame_index=index,
        timestamp=time.monotonic(),
        label=label,
        score=score,
        top=(Classification(0, label, score),),
        source="test",
        truth=truth,
        event=event,
        latency_ms=latency_ms if latency_ms is not None else {"inference": 4.0, "total": 6.0},
    )


class FakeClock:
    """A clock that moves only when something sleeps on it; records every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


# -- a camera behind cv2.VideoCapture ------------------------------------------------------------
CAMERA_BGR = (10, 20, 30)  # the fake sensor's background colour, in OpenCV's BGR order


class FakeCamera:
    """A camera that delivers ``sessions[k]`` frames while connected (None = endless), then
    unplugs itself; the next ``outage_opens`` attempts to open it fail, after which it answers
    again. When the sessions run out it is gone for good.

    Each frame is BGR: background ``CAMERA_BGR``, pixel (0, 0) = (frame number % 256, session,
    200), so tests can check order, colour conversion and which connection a frame came from.
    With a ``gate``, each read of the driver first takes one of its permits, so a test decides
    how many frames exist.
    """

    def __init__(
        self,
        sessions: tuple[int | None, ...] = (None,),
        *,
        outage_opens: int = 2,
        width: int = 32,
        height: int = 24,
        read_delay_s: float = 0.0,
        gate: threading.Semaphore | None = None,
    ) -> None:
        self.sessions = list(sessions)
        self.gate = gate
        self.outage_opens = outage_opens
        self.width, self.height = width, height
        self.read_delay_s = read_delay_s
        self.session = 0
        self.in_outage = False
        self.failed_opens = 0
        self.open_calls: list[tuple[Any, ...]] = []
        self.captures: list[FakeVideoCapture] = []
        self.frames = 0
        self.releases = 0
        self.lock = threading.Lock()

    def factory(self, *args: Any) -> FakeVideoCapture:
        """Use as ``capture_factory``: called like ``cv2.VideoCapture(target, api[, params])``."""
        with self.lock:
            self.open_calls.append(args)
            if self.session >= len(self.sessions):
                capture = FakeVideoCapture(self, None)
            elif self.in_outage and self.failed_opens < self.outage_opens:
                self.failed_opens += 1
                capture = FakeVideoCapture(self, None)
            else:
                self.in_outage, self.failed_opens = False, 0
                remaining = self.sessions[self.session]
                capture = FakeVideoCapture(self, float("inf") if remaining is None else remaining)
            self.captures.append(capture)
            return capture

    def next_image(self) -> np.ndarray:
        image = np.empty((self.height, self.width, 3), np.uint8)
        image[:] = CAMERA_BGR
        image[0, 0] = (self.frames % 256, self.session, 200)
        self.frames += 1
        return image


class FakeVideoCapture:
    """One opened (or failed) capture of a ``FakeCamera``."""

    def __init__(self, camera: FakeCamera, remaining: float | None) -> None:
        self.camera = camera
        self.remaining = remaining
        self.props: dict[int, float] = {}
        self.set_order: list[int] = []

    def isOpened(self) -> bool:
        return self.remaining is not None

    def read(self) -> tuple[bool, np.ndarray | None]:
        camera = self.camera
        if camera.gate is not None:
            camera.gate.acquire()
        if camera.read_delay_s:
            time.sleep(camera.read_delay_s)
        with camera.lock:
            if self.remaining is None:
                return False, None
            if self.remaining <= 0:
                # Unplugged: this capture is dead, the next opens fail for a while.
                self.remaining = None
                camera.session += 1
                camera.in_outage = True
                return False, None
            self.remaining -= 1
            return True, camera.next_image()

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        self.set_order.append(prop)
        return True

    def get(self, prop: int) -> float:
        defaults = {
            cv2.CAP_PROP_FRAME_WIDTH: self.camera.width,
            cv2.CAP_PROP_FRAME_HEIGHT: self.camera.height,
            cv2.CAP_PROP_FPS: 30.0,
        }
        return float(self.props.get(prop, defaults.get(prop, 0.0)))

    def release(self) -> None:
        with self.camera.lock:
            self.camera.releases += 1
        self.remaining = None


# -- picamera2 ------------------------------------------------------------------------------------
def fake_picamera2_module(scene_rgb: np.ndarray, cameras: int = 1) -> types.ModuleType:
    """A ``picamera2`` module whose camera shows ``scene_rgb`` (RGB, uint8).

    ``capture_array`` lays the pixels out in memory the way libcamera does for the configured
    format (picamera2's documentation): RGB888 -> [B, G, R], BGR888 -> [R, G, B],
    XRGB8888 -> [B, G, R, 255], XBGR8888 -> [R, G, B, 255].
    """
    module = types.ModuleType("picamera2")
    layouts = {
        "RGB888": lambda rgb: rgb[..., ::-1],
        "BGR888": lambda rgb: rgb,
        "XRGB8888": lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)]),
        "XBGR8888": lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
    }

    class Picamera2:
        instances: list[Picamera2] = []

        def __init__(self, camera_num: int = 0) -> None:
            if camera_num >= cameras:
                raise IndexError("list index out of range")
            self.camera_num = camera_num
            self.config: dict[str, Any] | None = None
            self.started = False
            self.closed = False
            self.captures = 0
            Picamera2.instances.append(self)

        @staticmethod
        def global_camera_info() -> list[dict[str, Any]]:
            return [{"Model": "imx708", "Num": n} for n in range(cameras)]

        def create_video_configuration(
            self, main: dict[str, Any], controls: dict[str, Any], buffer_count: int
        ) -> dict[str, Any]:
            return {"main": dict(main), "controls": dict(controls), "buffer_count": buffer_count}

        def configure(self, config: dict[str, Any]) -> None:
            if config["main"]["format"] not in layouts:
                raise RuntimeError(f"bad format {config['main']['format']}")
            self.config = config

        def start(self) -> None:
            if self.config is None:
                raise RuntimeError("Camera has not been configured")
            self.started = True

        def capture_array(self, name: str = "main") -> np.ndarray:
            if not self.started:
                raise RuntimeError("Camera is not running")
            assert self.config is not None
            time.sleep(0.002)  # a sensor delivers frames at its own pace
            self.captures += 1
            width, height = self.config["main"]["size"]
            scene = cv2.resize(scene_rgb, (width, height), interpolation=cv2.INTER_NEAREST)
            return np.ascontiguousarray(layouts[self.config["main"]["format"]](scene))

        def stop(self) -> None:
            self.started = False

        def close(self) -> None:
            self.closed = True

    module.Picamera2 = Picamera2  # type: ignore[attr-defined]
    return module


# -- network servers on the loopback interface -----------------------------------------------------
class MjpegServer:
    """A real MJPEG-over-HTTP camera: each connection gets ``frames_per_connection`` JPEG frames
    (multipart/x-mixed-replace), then the server hangs up, as a camera rebooting would."""

    def __init__(self, frames_per_connection: int = 15, size: tuple[int, int] = (64, 48)) -> None:
        self.frames_per_connection = frames_per_connection
        self.connections = 0
        width, height = size
        bgr = np.zeros((height, width, 3), np.uint8)
        bgr[..., 2] = 220  # red in BGR
        self.jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(owner.frames_per_connection):
                        part = (
                            b"--frame\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(owner.jpeg)}\r\n\r\n".encode()
                            + owner.jpeg
                            + b"\r\n"
                        )
                        self.wfile.write(part)
                        time.sleep(0.01)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class WebhookReceiver:
    """A real HTTP server that records POSTed JSON bodies.

    ``responses`` is a list of status codes answered in turn (then 200). ``gate`` (when set) is
    an Event each request waits on before answering; ``arrived`` is set when a request comes in.
    """

    def __init__(self, responses: list[int] | None = None, gate: threading.Event | None = None):
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.responses = list(responses or [])
        self.gate = gate
        self.arrived = threading.Event()
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                owner.headers.append(dict(self.headers))
                owner.arrived.set()
                if owner.gate is not None:
                    owner.gate.wait(10)
                code = owner.responses.pop(0) if owner.responses else 200
                owner.statuses.append(code)
                if code == 200:
                    owner.bodies.append(body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def mosquitto_binary() -> str | None:
    """The mosquitto broker's path (Debian installs it in /usr/sbin, often not on PATH)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


class Mosquitto:
    """A real mosquitto broker on a loopback port, started and stopped by the test."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = mosquitto_binary()
        assert binary is not None
        self.binary = binary
        self.port = port or free_port()
        self.config = workdir / f"mosquitto-{self.port}.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def accepting() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.port)) == 0

        if not wait_until(accepting, timeout=10):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port}")
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MqttRecorder:
    """A paho subscriber that records (topic, payload, retained) for the given topics."""

    def __init__(self, port: int, topics: list[str]) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

        def on_connect(client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
            client.subscribe([(topic, 1) for topic in topics])

        def on_subscribe(client: Any, userdata: Any, mid: Any, codes: Any, props: Any) -> None:
            self.subscribed.set()

        def on_message(client: Any, userdata: Any, message: Any) -> None:
            with self._lock:
                self.messages.append((message.topic, message.payload.decode(), message.retain))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.subscribed.wait(5):
            raise RuntimeError("the test subscriber could not subscribe")

    def payloads(self, topic: str) -> list[str]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def listening_socket() -> Iterator[int]:
    """A port some other program already listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield int(holder.getsockname()[1])
