"""A stream's password never leaves the process: one redaction for every place a URI is shown
(start-up banner, check-config, errors, log lines, a source's describe(), each frame's source in
JSON lines, /status, /latest, /metrics), while the source still opens the real URI."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from edge_runtime.cli import main
from edge_runtime.pipeline import Pipeline, PipelineOptions
from edge_runtime.redaction import RedactingFormatter, redact, redact_data
from edge_runtime.service.status_server import StatusServer
from edge_runtime.sinks.jsonl import JsonLinesSink
from edge_runtime.sources import open_source
from edge_runtime.sources.gstreamer import GStreamerSource
from edge_runtime.status import RuntimeStatus
from tests.fakes_io import FakeCamera, free_port
from tests.test_pipeline import EchoModel, TopOne

pytestmark = pytest.mark.timeout(120)

SECRET = "s3cret"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("rtsp://admin:s3cret@10.0.0.5:554/s1", "rtsp://admin:***@10.0.0.5:554/s1"),
        ("rtsp://admin:p@ss#1@cam/live", "rtsp://admin:***@cam/live"),  # unescaped @ and #
        ("mqtt://bob:s3cret@broker:1883", "mqtt://bob:***@broker:1883"),
        (
            "cannot open stream http://viewer:s3cret@cam.local/mjpg: no answer",
            "cannot open stream http://viewer:***@cam.local/mjpg: no answer",
        ),
        (
            "http://cam/snapshot.cgi?user=admin&password=s3cret&res=1",
            "http://cam/snapshot.cgi?user=admin&password=***&res=1",
        ),
        ("https://host/hook?token=s3cret", "https://host/hook?token=***"),
        (
            "gst:rtspsrc location=rtsp://cam/s user-id=admin user-pw=s3cret ! appsink",
            "gst:rtspsrc location=rtsp://cam/s user-id=admin user-pw=*** ! appsink",
        ),
        # Nothing secret: unchanged.
        ("rtsp://admin@cam/live", "rtsp://admin@cam/live"),
        ("http://cam.local:8080/stream.mjpg", "http://cam.local:8080/stream.mjpg"),
        ("synthetic:traffic-signs?seed=3&fps=30", "synthetic:traffic-signs?seed=3&fps=30"),
        ("/home/pi/images/*.jpg", "/home/pi/images/*.jpg"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_redact_data_and_log_lines() -> None:
    data = {"uri": "rtsp://a:s3cret@cam/x", "list": ["mqtt://b:s3cret@h"], "n": 3, "x": None}
    assert SECRET not in json.dumps(redact_data(data)) and redact_data(data)["n"] == 3
    record = logging.LogRecord(
        "t", logging.WARNING, __file__, 1, "lost %s", ("rtsp://a:s3cret@h",), None
    )
    assert RedactingFormatter("%(message)s").format(record) == "lost rtsp://a:***@h"


def test_sources_show_redacted_uris_but_open_the_real_one() -> None:
    camera = FakeCamera(sessions=(None,))
    url = "rtsp://admin:s3cret@cam.local:554/live"
    source = open_source(url, capture_factory=camera.factory)
    assert source.uri == "rtsp://admin:***@cam.local:554/live" and source.location == url
    with source:
        frame = source.read(timeout=5)
    assert frame is not None and frame.source == source.uri
    assert SECRET not in json.dumps(source.describe())
    assert camera.open_calls[0][0] == url  # FFmpeg gets the password

    pipeline = "rtspsrc location=rtsp://admin:s3cret@cam/s user-pw=s3cret ! decodebin ! appsink"
    gst = GStreamerSource(f"gst:{pipeline}", build_information="GStreamer: YES")
    assert gst.pipeline == pipeline  # what OpenCV is handed
    assert SECRET not in json.dumps(gst.describe()) and SECRET not in gst._unreachable()


def test_status_pages_and_json_lines_never_show_the_password() -> None:
    camera = FakeCamera(sessions=(None,))
    source = open_source("rtsp://admin:s3cret@cam.local/live", capture_factory=camera.factory)
    lines = io.StringIO()
    status = RuntimeStatus()
    with StatusServer(status, port=0, refresh_s=0) as server:
        model = EchoModel("m")
        pipeline = Pipeline(
            source,
            model,
            TopOne(),
            [JsonLinesSink(stream=lines)],
            status=status,
            options=PipelineOptions(max_frames=3),
        )
        pipeline.run()
        # A model description may carry a URI too (where an update came from).
        status.set_model({"name": "m", "origin": "https://ota:s3cret@updates.local/m.tar"})
        pages = {
            path: urllib.request.urlopen(server.url + path, timeout=5).read().decode()
            for path in ("/status", "/latest", "/metrics")
        }
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert len(records) == 3 and records[0]["source"] == "rtsp://admin:***@cam.local/live"
    assert "rtsp://admin:***@cam.local/live" in pages["/status"]
    assert json.loads(pages["/latest"])["source"] == "rtsp://admin:***@cam.local/live"
    assert "https://ota:***@updates.local/m.tar" in pages["/metrics"]  # the model_info labels
    for page in pages.values():
        assert SECRET not in page


def test_banner_and_error_line_of_run_are_redacted(onnx_bundle: Path) -> None:
    url = f"http://viewer:{SECRET}@127.0.0.1:{free_port()}/stream.mjpg"  # nobody listens
    result = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "run", "--model", str(onnx_bundle)]
        + ["--source", url, "--output", "pretty"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=onnx_bundle.parent,
    )
    assert result.returncode == 1
    banner = result.stdout.splitlines()[0]
    assert banner.endswith(f"<- http://viewer:***@127.0.0.1:{url.rsplit(':', 1)[1]}")
    error = [line for line in result.stderr.splitlines() if line.startswith("edge-runtime:")]
    assert len(error) == 1 and "http://viewer:***@127.0.0.1:" in error[0]
    assert SECRET not in result.stdout and SECRET not in result.stderr


def test_cli_log_lines_and_error_lines_are_redacted() -> None:
    # Any command's log line and error line pass the redaction, whatever the code logged.
    code = (
        "import argparse, logging\n"
        "from edge_runtime.cli import run_parser\n"
        "from edge_runtime.errors import SourceError\n"
        "def handler(args):\n"
        "    logging.getLogger('edge_runtime.x').warning('lost rtsp://admin:s3cret@cam/live')\n"
        "    raise SourceError('cannot open rtsp://admin:s3cret@cam/live')\n"
        "parser = argparse.ArgumentParser(prog='edge-runtime')\n"
        "parser.add_argument('-v', '--verbose', action='store_true')\n"
        "parser.set_defaults(handler=handler)\n"
        "raise SystemExit(run_parser(parser, []))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "edge-runtime: WARNING: lost rtsp://admin:***@cam/live" in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last == "edge-runtime: error: cannot open rtsp://admin:***@cam/live"
    assert SECRET not in result.stderr


def test_check_config_output_is_redacted(
    onnx_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text(
        f'[model]\npath = "{onnx_bundle}"\n\n'
        '[source]\nuri = "rtsp://admin:s3cret@cam.local:554/live"\n'
    )
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "rtsp://admin:***@cam.local:554/live" in out and SECRET not in out
    assert main(["check-config", str(config), "--json"]) == 0
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["source"]["uri"] == "rtsp://admin:***@cam.local:554/live"
