"""The status server against a real loopback client: health rules, status, latest, Prometheus
metrics fed by the runtime status, and a server that outlives pipeline runs and model swaps."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.address import parse_address
from edge_runtime.errors import ConfigError, ServiceError, install_command
from edge_runtime.pipeline import Pipeline
from edge_runtime.service.status_server import (
    ENDPOINTS,
    RateLimiter,
    RenderCache,
    StatusServer,
    health,
)
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
    # refresh_s=0: every request sees the status as it is now (the page cache has its own test).
    server = StatusServer.at("127.0.0.1:0", status, stale_after_s=2.0, refresh_s=0)
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
    with (
        StatusServer(first_status, port=0, refresh_s=0) as first,
        StatusServer(second_status, port=0, refresh_s=0) as second,
    ):
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
        assert code == 501 and install_command("metrics") in body
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
    with StatusServer(status, port=0, refresh_s=0) as server:
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


# -- limits: idle and slow clients, thread cap, page cache, rate ---------------------------------
def handler_threads() -> int:
    return sum(t.name.endswith("(process_request_thread)") for t in threading.enumerate())


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (bounded by ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)  # a socket with a timeout would wait for it first
    try:
        sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
        return False
    except BlockingIOError:
        return True


def test_idle_connections_cannot_lock_out_requests() -> None:
    status = RuntimeStatus()
    server = StatusServer(
        status, port=0, max_connections=3, request_timeout_s=30, max_requests_per_s=0
    )
    with server, contextlib.ExitStack() as stack:
        idle = [
            stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
            for _ in range(12)
        ]
        assert wait_until(lambda: server.active_connections == 3)
        # Each newcomer replaced the oldest idle one: the first nine are cut long before their
        # 30 s, the last three wait, one thread each.
        assert [read_all(sock) for sock in idle[:9]] == [b""] * 9
        assert all(still_open(sock) for sock in idle[9:])
        assert wait_until(lambda: handler_threads() <= 3)  # the cut ones' threads have ended
        # A client that asks gets its answer (the health verdict, not "too many connections").
        code, _, body = get(server.url + "/healthz")
        assert code == 503 and json.loads(body)["reason"] == "pipeline is starting"
        assert wait_until(lambda: handler_threads() <= 3)


def test_idle_connections_are_cut_after_the_request_timeout() -> None:
    status = RuntimeStatus()
    with StatusServer(status, port=0, max_connections=3, request_timeout_s=0.3) as server:
        with contextlib.ExitStack() as stack:
            idle = [
                stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
                for _ in range(3)
            ]
            assert wait_until(lambda: server.active_connections == 3)
            assert [read_all(sock) for sock in idle] == [b""] * 3
            assert wait_until(lambda: server.active_connections == 0 and handler_threads() == 0)


def test_a_new_connection_is_refused_while_every_slot_is_answering() -> None:
    status = RuntimeStatus()
    server = StatusServer(status, port=0, max_connections=2, refresh_s=0, max_requests_per_s=0)
    release = threading.Event()
    real_render = server._render

    def slow_render(path: str) -> tuple[Any, bytes, str]:
        release.wait(10)
        return real_render(path)

    server._render = slow_render  # type: ignore[method-assign]
    with server:
        answers: list[int] = []
        asking = [
            threading.Thread(target=lambda: answers.append(get(server.url + "/status")[0]))
            for _ in range(2)
        ]
        for thread in asking:
            thread.start()
        assert wait_until(
            lambda: server.active_connections == 2
            and not any(server._connections.values())  # both requests are in
        )
        with socket.create_connection(("127.0.0.1", server.port)) as extra:
            refused = read_all(extra)
        assert refused.startswith(b"HTTP/1.0 503 Service Unavailable\r\n")
        assert b"Retry-After: 1" in refused and b"Server: edge-runtime\r\n" in refused
        release.set()
        for thread in asking:
            thread.join(10)
        assert answers == [200, 200]


def test_a_request_trickled_byte_by_byte_is_cut_at_its_deadline() -> None:
    status = RuntimeStatus()
    with StatusServer(status, port=0, request_timeout_s=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            assert wait_until(lambda: server.active_connections == 1)
            request = b"GET /status HTTP/1.0\r\n" + b"X-Padding: " + b"a" * 10_000
            sent = 0
            try:
                # One byte every 20 ms would take 200 s; each byte is within any idle timeout.
                for byte in request:
                    sock.sendall(bytes([byte]))
                    sent += 1
                    time.sleep(0.02)
                    if server.active_connections == 0:
                        break
            except OSError:  # reset by the server
                pass
            # Cut after about 0.5 s of it: 25 bytes; the bound leaves room for a slow machine.
            assert 1 < sent < 2_000
            assert wait_until(lambda: server.active_connections == 0)


def test_pages_are_rendered_once_per_refresh_period_for_any_number_of_clients() -> None:
    clock = FakeClock()
    status = RuntimeStatus(clock=clock)
    snapshots = 0
    real_snapshot = status.snapshot

    def counting_snapshot() -> dict:
        nonlocal snapshots
        snapshots += 1
        return real_snapshot()

    status.snapshot = counting_snapshot  # type: ignore[method-assign]
    with StatusServer(status, port=0, refresh_s=1.0, clock=clock) as server:
        status.record(prediction(0))
        bodies = {get(server.url + "/metrics")[2] for _ in range(20)}
        assert len(bodies) == 1 and "edge_classify_frames_total 1.0" in bodies.pop()
        assert server.cache.renders == 1 and snapshots == 1  # 20 clients, one render
        status.record(prediction(1))
        clock.advance(0.5)
        assert "edge_classify_frames_total 1.0" in get(server.url + "/metrics")[2]  # cached
        clock.advance(0.6)
        assert "edge_classify_frames_total 2.0" in get(server.url + "/metrics")[2]
        assert server.cache.renders == 2
        for _ in range(5):  # each page is cached on its own
            get(server.url + "/status")
            get(server.url + "/healthz")
        assert server.cache.renders == 4


def test_render_cache_renders_once_for_concurrent_requests() -> None:
    clock = FakeClock()
    cache = RenderCache(1.0, clock)
    entered, release = threading.Event(), threading.Event()

    def slow_render() -> str:
        entered.set()
        release.wait(5)
        return "page"

    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(cache.get("/metrics", slow_render)))
    first.start()
    assert entered.wait(5)
    waiting = [
        threading.Thread(target=lambda: results.append(cache.get("/metrics", slow_render)))
        for _ in range(5)
    ]
    for thread in waiting:
        thread.start()
    release.set()
    for thread in [first, *waiting]:
        thread.join(5)
    assert results == ["page"] * 6 and cache.renders == 1


def test_rate_limiter_allows_a_burst_then_spaces_requests() -> None:
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(10.0, burst=3, clock=clock)
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert [round(limiter.reserve(), 6) for _ in range(2)] == [0.1, 0.2]
    clock.advance(10.0)  # idle for long: the bucket refills up to the burst, not beyond
    assert [round(limiter.reserve(), 6) for _ in range(4)] == [0.0, 0.0, 0.0, 0.1]
    assert RateLimiter(0, burst=1, clock=clock).reserve() == 0.0  # no limit


def test_the_accepting_thread_is_paced_by_the_rate_limit() -> None:
    status = RuntimeStatus()
    with StatusServer(status, port=0, max_requests_per_s=1000.0, refresh_s=0) as server:
        waits: list[float] = []
        server._limiter = RateLimiter(1.0, burst=1, clock=lambda: 0.0)  # frozen: always late
        real_wait = server._closing.wait
        server._closing.wait = lambda delay: waits.append(delay) or real_wait(0)  # type: ignore
        for _ in range(3):
            assert get(server.url + "/healthz")[0] == 503
        # The first had the burst's token; the others waited their turn (the test skips it).
        assert waits == [1.0, 2.0]


# -- what the server says ------------------------------------------------------------------------
def test_head_answers_like_get_without_a_body_and_other_methods_are_refused() -> None:
    status = RuntimeStatus()
    status.set_state("running")
    status.record(prediction(0))
    with StatusServer(status, port=0, refresh_s=0) as server:
        for path in ENDPOINTS:
            get_code, _, get_body = get(server.url + path)
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            connection.request("HEAD", path)
            response = connection.getresponse()
            assert response.status == get_code == 200
            assert response.read() == b""
            # The length of the GET body (the same page; /status differs only in its uptime).
            assert abs(int(response.headers["Content-Length"]) - len(get_body)) <= 4
            assert response.headers["Server"] == "edge-runtime"
            connection.close()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.request("POST", "/status", body=b"{}")
        response = connection.getresponse()
        assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"
        assert response.headers["Server"] == "edge-runtime"
        connection.close()


def test_status_shows_file_names_not_paths_unless_asked() -> None:
    home = str(Path.home())
    status = RuntimeStatus()
    status.set_model({"name": "signs", "path": f"{home}/models/signs.tar", "artifact": "m.tflite"})
    status.set_source({"uri": f"{home}/pictures/cameras", "live": False})
    status.set_state("failed", f"cannot read {home}/pictures/cameras/x.png")
    status.record(dataclasses.replace(prediction(0), source=f"{home}/pictures/cameras"))
    with StatusServer(status, port=0, refresh_s=0) as server:
        snapshot = json.loads(get(server.url + "/status")[2])
        assert snapshot["model"]["path"] == "signs.tar"
        assert snapshot["source"]["uri"] == "cameras"
        assert snapshot["latest"]["source"] == "cameras"
        assert snapshot["message"] == "cannot read ~/pictures/cameras/x.png"
        assert json.loads(get(server.url + "/latest")[2])["source"] == "cameras"
        if home != "/":
            assert home not in get(server.url + "/metrics")[2]
            assert home not in get(server.url + "/healthz")[2]
    with StatusServer(status, port=0, refresh_s=0, full_paths=True) as server:
        snapshot = json.loads(get(server.url + "/status")[2])
        assert snapshot["model"]["path"] == f"{home}/models/signs.tar"
