"""Result sinks, each against the real thing: a mosquitto broker, a local webhook receiver,
rotating files, and gpiozero's mock pins. (The status server has tests/test_status_server.py.)"""

from __future__ import annotations

import io
import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.errors import (
    ConfigError,
    MissingDependencyError,
    SinkError,
    UnknownComponentError,
)
from edge_runtime.sinks import open_sink, selected
from edge_runtime.sinks.console import PrettySink, format_event, format_summary
from edge_runtime.sinks.gpio import GateLogic, GpioSink
from edge_runtime.sinks.jsonl import JsonLinesSink, needs_rotation, rotation_plan
from edge_runtime.sinks.mqtt import MqttSink, default_topic, parse_broker_url
from edge_runtime.sinks.webhook import DropOldestQueue, WebhookSink, is_retryable, retry_delay
from edge_runtime.status import RuntimeStatus
from tests.fakes_io import (
    FakeClock,
    Mosquitto,
    MqttRecorder,
    WebhookReceiver,
    free_port,
    listening_socket,
    mosquitto_binary,
    prediction,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


# -- choosing sinks ------------------------------------------------------------------------------
def test_event_selection() -> None:
    assert selected(prediction(event=True), every_frame=False)
    assert not selected(prediction(event=False), every_frame=False)
    assert selected(prediction(event=False), every_frame=True)


def test_open_sink_builds_by_name_and_checks_options(tmp_path: Path) -> None:
    sink = open_sink("jsonl", path=tmp_path / "out.jsonl", max_bytes=100)
    assert isinstance(sink, JsonLinesSink) and sink.max_bytes == 100
    with pytest.raises(ConfigError, match="unknown option colour for the pretty sink"):
        open_sink("pretty", colour=True)
    with pytest.raises(ConfigError, match="the webhook sink needs url"):
        open_sink("webhook")
    with pytest.raises(UnknownComponentError, match="unknown sink 'slack'.*jsonl"):
        open_sink("slack")


@pytest.mark.parametrize(
    ("name", "module", "options", "extra"),
    [
        ("mqtt", "paho.mqtt.client", {}, "mqtt"),
        ("gpio", "gpiozero", {"pin": 17, "label": "counterfeit"}, "rpi"),
    ],
)
def test_missing_optional_package_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, name: str, module: str, options: dict[str, Any], extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    sink = open_sink(name, **options)  # building the sink needs nothing optional
    with pytest.raises(MissingDependencyError, match=rf"edge-classify\[{extra}\]"):
        sink.open()


# -- pretty console ------------------------------------------------------------------------------
def test_event_and_summary_lines_say_what_matters() -> None:
    event = format_event(prediction(42, "stop", 0.934, event=True, truth="yield"), 3.25)
    assert "#42" in event and "-> stop" in event and "0.934" in event
    assert "truth yield (MISS)" in event and "6.0 ms" in event
    line = format_summary(
        elapsed_s=10,
        frames=300,
        fps=29.94,
        label="stop",
        score=0.9,
        accuracy=0.975,
        frames_with_truth=200,
        latency_ms={"total": 9.5, "queue": 1.0, "inference": 7.25, "capture": 0.5},
        source={"dropped": 4, "corrupt": 0},
    )
    assert "frames 300" in line and "29.9 fps" in line and "now stop 0.90" in line
    assert "accuracy 97.5% of 200" in line
    assert "ms: capture 0.5 inference 7.2 queue 1.0 total 9.5" in line
    assert "dropped 4" in line and "corrupt" not in line


def test_pretty_prints_events_and_periodic_summaries_not_every_frame() -> None:
    clock = FakeClock(start=0.0)
    out = io.StringIO()
    status = RuntimeStatus()
    status.set_source({"uri": "camera:0"}, lambda: {"dropped": 7})
    sink = PrettySink(stream=out, interval_s=1.0, clock=clock)
    sink.open(status.snapshot)
    labels = ["stop"] * 40 + ["yield"] * 40 + ["stop"] * 20
    for index, label in enumerate(labels):
        clock.advance(0.125)  # 8 frames per second, exact in binary
        changed = index == 0 or labels[index - 1] != label
        truth = "stop" if index < 50 else "yield"
        sink.emit(prediction(index, label, event=changed, truth=truth))
    sink.close()
    sink.close()
    lines = out.getvalue().splitlines()
    events = [line for line in lines if "->" in line]
    summaries = [line for line in lines if "fps" in line]
    assert len(events) == 3 and len(summaries) == 13  # one a second for 12.5 s, and the last
    assert len(lines) == 16  # for 100 frames
    assert "-> yield" in events[1] and "#40" in events[1]
    assert "8.0 fps" in summaries[0] and "dropped 7" in summaries[0]
    assert "ms: inference 4.0 total 6.0" in summaries[0]
    # Frames 40..49 were "yield" against a truth of "stop", and 80..99 "stop" against "yield".
    assert summaries[-1].lstrip().startswith("12.5s  done:  frames 100    8.0 fps")
    assert "accuracy 70.0% of 100" in summaries[-1]


def test_pretty_writes_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    sink = PrettySink(interval_s=0)
    sink.open()
    sink.emit(prediction(0, "stop", event=True))
    sink.close()
    out = capsys.readouterr().out
    assert "-> stop" in out and "done:" in out


# -- JSON lines ----------------------------------------------------------------------------------
def test_rotation_plan_names_and_order() -> None:
    path = Path("/data/out.jsonl")
    delete, renames = rotation_plan(path, 3)
    assert delete == Path("/data/out.jsonl.3")
    assert renames == [
        (Path("/data/out.jsonl.2"), Path("/data/out.jsonl.3")),
        (Path("/data/out.jsonl.1"), Path("/data/out.jsonl.2")),
        (Path("/data/out.jsonl"), Path("/data/out.jsonl.1")),
    ]
    assert rotation_plan(path, 0) == (path, [])
    assert needs_rotation(90, 20, 100) and not needs_rotation(80, 20, 100)
    assert not needs_rotation(0, 500, 100)  # an oversized line still goes into an empty file
    assert not needs_rotation(10**9, 20, 0)


def test_jsonl_to_stdout_is_one_object_per_frame(capsys: pytest.CaptureFixture[str]) -> None:
    sink = open_sink("jsonl")
    sink.open()
    sent = [prediction(i, "stop" if i < 2 else "yield", event=i == 2) for i in range(4)]
    for item in sent:
        sink.emit(item)
    sink.close()
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [item.to_dict() for item in sent]


def test_jsonl_file_rotates_by_size_and_keeps_n_files(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "predictions.jsonl"
    one_line = len(json.dumps(prediction(10).to_dict(), separators=(",", ":"))) + 1
    sink = JsonLinesSink(path, max_bytes=3 * one_line + 5, keep=2)
    sink.open()
    for index in range(10, 30):
        sink.emit(prediction(index))
    sink.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.2"]
    frames_in = {}
    for name in files:
        text = (path.parent / name).read_text()
        assert len(text.encode()) <= 3 * one_line + 5
        frames_in[name] = [json.loads(line)["frame"] for line in text.splitlines()]
    # 20 lines, 3 per file: the newest 2 in the current file, then 3 per older file.
    assert frames_in["predictions.jsonl"] == [28, 29]
    assert frames_in["predictions.jsonl.1"] == [25, 26, 27]
    assert frames_in["predictions.jsonl.2"] == [22, 23, 24]
    assert sink.rotations == 6 and sink.lines == 20


def test_jsonl_appends_and_can_send_events_only(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"earlier": true}\n')
    sink = JsonLinesSink(str(path), every_frame=False)
    sink.open()
    for index in range(5):
        sink.emit(prediction(index, event=index in (0, 3)))
    sink.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"earlier": True} and [d["frame"] for d in lines[1:]] == [0, 3]


def test_jsonl_unwritable_path_is_a_sink_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SinkError, match="cannot write predictions to"):
        JsonLinesSink(blocker / "out.jsonl").open()


# -- MQTT (a real mosquitto broker) ---------------------------------------------------------------
def test_broker_urls_and_default_topics() -> None:
    assert parse_broker_url("mqtt://broker.local") == parse_broker_url("broker.local:1883")
    secure = parse_broker_url("mqtts://dev%40site:p%3Ass@hub:8884")
    assert (secure.host, secure.port, secure.tls) == ("hub", 8884, True)
    assert (secure.username, secure.password) == ("dev@site", "p:ss")
    assert parse_broker_url("mqtts://hub").port == 8883
    with pytest.raises(ConfigError):
        parse_broker_url("http://hub")
    assert default_topic("predictions", "pi/4+") == "edge-classify/pi_4_/predictions"


@pytest.fixture
def broker_binary() -> str:
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return binary


def test_mqtt_publishes_events_and_a_retained_status(broker_binary: str, tmp_path: Path) -> None:
    with Mosquitto(tmp_path) as broker:
        sink = MqttSink(
            f"mqtt://127.0.0.1:{broker.port}",
            topic="test/predictions",
            status_topic="test/status",
            client_id="edge-test",
        )
        sink.open()
        assert sink.connected.wait(5)
        recorder = MqttRecorder(broker.port, ["test/predictions", "test/status"])
        try:
            assert wait_until(lambda: recorder.payloads("test/status") == ["online"])
            # A subscriber that comes later still learns the status: it is retained.
            late = MqttRecorder(broker.port, ["test/status"])
            assert wait_until(lambda: late.messages == [("test/status", "online", True)])
            late.close()
            for index in range(6):
                sink.emit(prediction(index, "counterfeit", event=index in (1, 4)))
            assert wait_until(lambda: len(recorder.payloads("test/predictions")) == 2)
            got = [json.loads(p) for p in recorder.payloads("test/predictions")]
            assert [g["frame"] for g in got] == [1, 4] and got[0]["label"] == "counterfeit"
            sink.close()
            assert wait_until(lambda: recorder.payloads("test/status")[-1:] == ["offline"])
        finally:
            recorder.close()
            sink.close()


def test_mqtt_never_blocks_without_a_broker_and_delivers_after_it_starts(
    broker_binary: str, tmp_path: Path
) -> None:
    with listening_socket() as port:
        sink = MqttSink(
            f"mqtt://127.0.0.1:{port}",
            topic="late/predictions",
            status_topic="late/status",
            every_frame=True,
            reconnect_min_s=0.1,
            reconnect_max_s=0.2,
        )
        # The port takes the connection but never answers it, as a broker that hangs: open()
        # and emit() must return all the same (a sink that waited for the broker would hang
        # here until the test's timeout). paho holds the messages, in its offline queue or on
        # the half-open connection, depending on how far its thread got: none is dropped.
        sink.open()
        for index in range(3):
            sink.emit(prediction(index))
        assert not sink.connected.is_set()
        assert sink.queued + sink.published == 3 and sink.dropped == 0
    with Mosquitto(tmp_path, port) as broker:
        assert sink.connected.wait(10)
        recorder = MqttRecorder(broker.port, ["late/#"])
        try:
            sink.emit(prediction(3))
            assert wait_until(lambda: len(recorder.payloads("late/predictions")) >= 1)
            assert json.loads(recorder.payloads("late/predictions")[-1])["frame"] == 3
        finally:
            recorder.close()
            sink.close()


def test_mqtt_last_will_and_reconnect_after_the_connection_drops(
    broker_binary: str, tmp_path: Path
) -> None:
    with Mosquitto(tmp_path) as broker:
        sink = MqttSink(
            f"127.0.0.1:{broker.port}",
            topic="drop/predictions",
            status_topic="drop/status",
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
        )
        sink.open()
        assert sink.connected.wait(5)
        recorder = MqttRecorder(broker.port, ["drop/status"])
        try:
            assert wait_until(lambda: recorder.payloads("drop/status") == ["online"])
            sock = sink._client.socket()  # an unclean loss, as when Wi-Fi drops
            sock.shutdown(2)
            # The broker announces the last will, then the sink reconnects and says online.
            assert wait_until(
                lambda: recorder.payloads("drop/status")[1:3] == ["offline", "online"], 10
            )
            assert sink.connects == 2
        finally:
            recorder.close()
            sink.close()


# -- webhook -------------------------------------------------------------------------------------
def test_drop_oldest_queue_and_retry_rules() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(3)
    assert [queue.put(i) for i in range(5)] == [False, False, False, True, True]
    assert queue.dropped == 2 and len(queue) == 3
    assert [queue.get(0), queue.get(0), queue.get(0), queue.get(0.01)] == [2, 3, 4, None]
    queue.close()
    assert queue.get() is None
    assert [retry_delay(n, 0.5, 3.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert is_retryable(None) and is_retryable(503) and is_retryable(429)
    assert not is_retryable(400) and not is_retryable(404)


def test_webhook_posts_events_and_retries_server_errors() -> None:
    sleeps: list[float] = []
    with WebhookReceiver(responses=[500, 503]) as receiver:
        sink = open_sink(
            "webhook", url=receiver.url, retry_delay_s=0.25, sleep=sleeps.append,
            headers={"Authorization": "Bearer t0ken"},
        )
        sink.open()
        for index in range(5):
            sink.emit(prediction(index, "stop", event=index in (1, 3)))
        sink.close()
        assert [body["frame"] for body in receiver.bodies] == [1, 3]
        assert receiver.bodies[0] == prediction(1, "stop", event=True).to_dict() | {
            "timestamp": receiver.bodies[0]["timestamp"]
        }
        assert receiver.statuses == [500, 503, 200, 200]
        assert sleeps == [0.25, 0.5]
        assert receiver.headers[0]["Authorization"] == "Bearer t0ken"
        assert receiver.headers[0]["Content-Type"] == "application/json"
        assert isinstance(sink, WebhookSink)
        assert sink.stats() == {"sent": 2, "failed": 0, "retried": 2, "dropped": 0, "queued": 0}


def test_webhook_gives_up_on_client_errors_and_unreachable_hosts() -> None:
    with WebhookReceiver(responses=[400]) as receiver:
        sink = WebhookSink(receiver.url, sleep=lambda s: None)
        sink.open()
        sink.emit(prediction(0, event=True))
        sink.close()
        assert receiver.statuses == [400] and sink.failed == 1 and sink.retried == 0
    sleeps: list[float] = []
    down = WebhookSink(f"http://127.0.0.1:{free_port()}/hook", retries=2, sleep=sleeps.append)
    # emit only queues: before open() there is no sender thread, so the message must wait.
    down.emit(prediction(0, event=True))
    assert down.stats() == {"sent": 0, "failed": 0, "retried": 0, "dropped": 0, "queued": 1}
    down.open()
    down.close()
    assert down.stats()["failed"] == 1 and sleeps == [0.5, 1.0]


def test_webhook_full_queue_drops_the_oldest() -> None:
    gate = threading.Event()
    with WebhookReceiver(gate=gate) as receiver:
        sink = WebhookSink(receiver.url, queue_size=3)
        sink.open()
        sink.emit(prediction(0, event=True))
        assert receiver.arrived.wait(5)  # frame 0 is in flight; the receiver is stuck
        for index in range(1, 10):
            sink.emit(prediction(index, event=True))
        assert sink.dropped == 6
        gate.set()
        sink.close()
        assert [body["frame"] for body in receiver.bodies] == [0, 7, 8, 9]
        assert sink.stats()["sent"] == 4


def test_webhook_rejects_non_http_urls() -> None:
    with pytest.raises(ConfigError, match="http:// or https://"):
        WebhookSink("ftp://example.org/hook")


# -- GPIO ----------------------------------------------------------------------------------------
def test_gate_logic_follows_the_event_label_and_holds() -> None:
    gate = GateLogic("counterfeit", hold_s=1.0)
    assert gate.update(prediction(0, "50-euro", event=True), 0.0) is False
    assert gate.update(prediction(1, "counterfeit", event=True), 1.0) is True
    # Non-event frames do not change the current label, whatever they say.
    assert gate.update(prediction(2, "50-euro"), 5.0) is True
    assert gate.update(prediction(3, "empty", event=True), 5.5) is True  # held for 1 s
    assert gate.release_at() == 6.5
    assert gate.update(None, 6.49) is True
    assert gate.update(None, 6.5) is False
    assert gate.update(prediction(4, "counterfeit", event=True), 7.0) is True
    assert gate.release_at() is None


@pytest.fixture
def mock_pins() -> Any:
    pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    yield factory
    factory.close()


def test_gpio_drives_the_pin_for_the_chosen_label(mock_pins: Any) -> None:
    clock = FakeClock(start=0.0)
    sink = open_sink(
        "gpio", pin=17, label="counterfeit", hold_s=0.5, pin_factory=mock_pins, clock=clock
    )
    sink.open()
    pin = mock_pins.pin(17)
    sink.emit(prediction(0, "10-euro", event=True))
    assert pin.state is False
    clock.advance(0.1)
    sink.emit(prediction(1, "counterfeit", event=True))
    assert pin.state is True
    clock.advance(2.0)
    sink.emit(prediction(2, "counterfeit"))
    assert pin.state is True
    sink.emit(prediction(3, "empty", event=True))
    assert pin.state is True
    clock.advance(0.6)
    sink.emit(prediction(4, "empty"))
    assert pin.state is False
    assert [s.state for s in pin.states] == [False, True, False]
    sink.close()


def test_gpio_hold_ends_even_when_frames_stop(mock_pins: Any) -> None:
    sink = GpioSink("GPIO27", "counterfeit", hold_s=0.1, active_high=False, pin_factory=mock_pins)
    sink.open()
    pin = mock_pins.pin(27)
    assert pin.state is True  # active low: off is a high level
    sink.emit(prediction(0, "counterfeit", event=True))
    sink.emit(prediction(1, "empty", event=True))
    assert pin.state is False and sink.is_on
    assert wait_until(lambda: pin.state is True, timeout=3)
    assert not sink.is_on
    sink.close()
