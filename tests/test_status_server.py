"""The status server against a real loopback client: health rules, status, latest, Prometheus
metrics fed by the runtime status, and a server that outlives pipeline runs and model swaps."""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request

import pytest

from edge_runtime.address import parse_address
from edge_runtime.errors import ConfigError, ServiceError
from edge_runtime.pipeline import Pipeline
from edge_runtime.service.status_server import StatusServer, health
from edge_runtime.status import RuntimeStatus
from tests.fakes_io import FakeClock, listening_socket, prediction, wait_until
from tests.test_pipeline import EchoModel, GatedSource, ListSink, ListSource, TopOne

pytestmark = pytest.mark.timeout(60)


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_parse_address_and_health_rules() -> None:
    assert parse_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_address(":0") == ("127.0.0.1", 0)
    assert parse_address("9000") == ("127.0.0.1", 9000)
    assert parse_address("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_address("localhost:http")
    assert health("running", 0.5, 5.0) == (True, "ok")
    assert health("running", None, 5.0) == (False, "no frame classified yet")
    assert health("running", 9.0, 5.0) == (False, "no frame classified for 9.0 s")
    assert health("failed", 0.1, 5.0, "camera lost") == (False, "pipeline is failed: camera lost")


def test_serves_health_status_latest_and_metrics() -> None:
    clock = FakeClock()
    status = RuntimeStatus(clock=clock)
    status.set_model({"name": "traffic-signs", "version": 3, "backend": "litert"})
    status.set_source({"uri": "camera:0", "live": True}, lambda: {"dropped": 5, "reconnects": 1})
    server = StatusServer.at("127.0.0.1:0", status, stale_after_s=2.0)
    with server:
        base = server.url
        assert server.port != 0
        code, kind, body = get(base + "/healthz")
        assert (code, json.loads(body)["reason"]) == (503, "pipeline is starting")
        assert get(base + "/latest")[0] == 404

        status.set_state("running")
        assert json.loads(get(base + "/healthz")[2])["reason"] == "no frame classified yet"
        sent = []
        for index in range(6):
            item = prediction(
                index,
                "unknown" if index == 4 else "stop",
                event=index in (0, 4),
                latency_ms={"preprocess": 1.0, "inference": 12.0, "total": 14.0},
            )
            status.record(item)  # what the pipeline does per frame: no sink involved
            sent.append(item)
        code, kind, body = get(base + "/healthz")
        assert code == 200 and kind == "application/json" and json.loads(body)["ok"] is True

        snapshot = json.loads(get(base + "/status")[2])
        assert snapshot["model"]["name"] == "traffic-signs" and snapshot["model"]["version"] == 3
        assert snapshot["frames"] == 6 and snapshot["source"]["dropped"] == 5
        assert snapshot["latency_ms"]["inference"]["p50"] == 12.0
        assert json.loads(get(base + "/latest")[2]) == sent[-1].to_dict()

        code, kind, text = get(base + "/metrics")
        assert code == 200 and kind.startswith("text/plain")
        samples = samples_of(text)
        assert samples[("edge_classify_frames_total", ())] == 6
        assert samples[("edge_classify_unknown_total", ())] == 1
        assert samples[("edge_classify_events_total", (("label", "stop"),))] == 1
        assert samples[("edge_classify_events_total", (("label", "unknown"),))] == 1
        assert samples[("edge_classify_predictions_total", (("label", "stop"),))] == 5
        inference = (("stage", "inference"),)
        assert samples[("edge_classify_stage_latency_seconds_count", inference)] == 6
        assert samples[("edge_classify_stage_latency_seconds_sum", inference)] == pytest.approx(
            0.072
        )
        le = (("le", "0.01"), ("stage", "inference"))
        assert samples[("edge_classify_stage_latency_seconds_bucket", le)] == 0
        assert samples[("edge_classify_running", ())] == 1
        assert ("edge_classify_fps", ()) in samples
        assert samples[("edge_classify_source_dropped_total", ())] == 5
        assert samples[("edge_classify_source_reconnects_total", ())] == 1
        model_key = (
            "edge_classify_model_info",
            (("backend", "litert"), ("name", "traffic-signs"), ("version", "3")),
        )
        assert samples[model_key] == 1

        clock.advance(2.5)  # frames stop flowing
        code, _, body = get(base + "/healthz")
        assert code == 503 and json.loads(body)["reason"] == "no frame classified for 2.5 s"
        status.set_state("failed", "camera lost")
        assert json.loads(get(base + "/healthz")[2])["reason"] == "pipeline is failed: camera lost"
        code, _, body = get(base + "/nope")
        assert code == 404 and "/metrics" in body
    server.close()  # twice is fine
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "/healthz", timeout=2)
    status.record(prediction(6))  # a closed server no longer observes the status
    assert server.metrics is not None
    assert samples_of(server.metrics.render()[0].decode())[("edge_classify_frames_total", ())] == 6


def test_two_servers_keep_separate_metrics() -> None:
    first_status, second_status = RuntimeStatus(), RuntimeStatus()
    with StatusServer(first_status, port=0) as first, StatusServer(second_status, port=0) as second:
        first_status.record(prediction(0))
        assert "edge_classify_frames_total 1.0" in get(first.url + "/metrics")[2]
        assert "edge_classify_frames_total 0.0" in get(second.url + "/metrics")[2]
        assert json.loads(get(first.url + "/status")[2])["frames"] == 1


def test_metrics_without_prometheus_client_is_501_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    status = RuntimeStatus()
    with StatusServer(status, port=0) as server:
        status.record(prediction(0))
        code, _, body = get(server.url + "/metrics")
        assert code == 501 and "edge-classify[metrics]" in body
        assert get(server.url + "/latest")[0] == 200


def test_port_in_use_is_one_line_service_error() -> None:
    with listening_socket() as port:
        with pytest.raises(ServiceError) as caught:
            StatusServer(RuntimeStatus(), port=port).start()
    message = str(caught.value)
    assert f"cannot serve HTTP on 127.0.0.1:{port}: the port is already in use" in message
    assert "\n" not in message


def test_the_server_outlives_pipeline_runs_and_model_swaps() -> None:
    status = RuntimeStatus()
    status.set_section("update", {"state": "idle", "active": 1})
    with StatusServer(status, port=0) as server:
        # Before any pipeline (a slow model load): the server answers, not healthy yet.
        assert json.loads(get(server.url + "/healthz")[2])["reason"] == "pipeline is starting"

        gate = threading.Event()
        source = GatedSource(list(range(1, 9)), gate_at=4, gate=gate)
        pipeline = Pipeline(source, EchoModel("v1"), TopOne(), [ListSink()], status=status)
        runner = threading.Thread(target=pipeline.run)
        runner.start()
        assert source.reached.wait(5)
        assert wait_until(lambda: status.frames == 4)  # the frames before the gate are out
        assert get(server.url + "/healthz")[0] == 200
        assert json.loads(get(server.url + "/status")[2])["model"] == {"name": "v1"}
        pipeline.swap_model(EchoModel("v2"), TopOne())
        status.set_section("update", {"state": "swapped", "active": 2, "previous": 1})
        gate.set()
        runner.join(10)
        assert not runner.is_alive()

        snapshot = json.loads(get(server.url + "/status")[2])
        assert snapshot["model"] == {"name": "v2"} and snapshot["state"] == "stopped"
        assert snapshot["update"] == {"state": "swapped", "active": 2, "previous": 1}
        assert get(server.url + "/healthz")[0] == 503

        # A second run on the same status (a restart after a reload) keeps counting.
        Pipeline(ListSource([1, 2]), EchoModel("v2"), TopOne(), status=status).run()
        samples = samples_of(get(server.url + "/metrics")[2])
        assert samples[("edge_classify_frames_total", ())] == 10
        assert json.loads(get(server.url + "/status")[2])["frames"] == 10
