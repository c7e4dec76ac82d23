"""`edge-runtime run` and `check-config` end to end: real model, real sources, real sinks."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from contextlib import nullcontext
from pathlib import Path
from unittest.mock import patch

import cv2
import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.config import load_config, parse_config
from edge_runtime.errors import ConfigError
from edge_runtime.model import load_model
from edge_runtime.pipeline import Pipeline, RunSummary
from edge_runtime.preprocess import read_image
from tests.fakes_io import free_port, wait_until

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture
def colour_folder(tmp_path: Path) -> Path:
    root = tmp_path / "frames"
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(3):
            image = np.clip(np.array(rgb) + rng.integers(-20, 20, (24, 32, 3)), 0, 255)
            bgr = cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(root / name / f"{i}.png"), bgr)
    return root


def run_jsonl(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict]]:
    code = main(["run", *args, "--output", "jsonl"])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_run_over_a_folder_matches_classify(
    onnx_bundle: Path, colour_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, records = run_jsonl(["--model", str(onnx_bundle), "--source", str(colour_folder)], capsys)
    assert code == 0
    paths = sorted(colour_folder.rglob("*.png"))
    assert [r["frame"] for r in records] == list(range(len(paths)))
    with load_model(onnx_bundle) as model:
        for record, path in zip(records, paths):
            expected = model.classify(read_image(path), top_k=3)
            assert [c["label"] for c in record["top"]] == [c.label for c in expected]
            assert record["top"][0]["score"] == pytest.approx(expected[0].score, abs=1e-5)
            assert set(record["latency_ms"]) >= {"preprocess", "inference", "total"}


def test_config_file_with_overrides(
    onnx_bundle: Path, colour_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text(
        f'[model]\npath = "{onnx_bundle}"\n'
        f'[source]\nuri = "{colour_folder}"\noptions = {{ truth_from_folder = true }}\n'
        "[run]\nmax_frames = 100\n"
    )
    code, records = run_jsonl(["--config", str(config), "--max-frames", "4"], capsys)
    assert code == 0
    assert len(records) == 4, "the command line overrides the file"
    assert {r["truth"] for r in records} <= set(COLOURS)
    assert main(["check-config", str(config)]) == 0
    assert "ok" in capsys.readouterr().out


def test_synthetic_stream_pretty_console(onnx_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "run",
            "--model",
            str(onnx_bundle),
            "--source",
            "synthetic:traffic-signs?width=64&height=48",
            "--max-frames",
            "40",
            "--output",
            "pretty",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "colours v2" in out.splitlines()[0]
    assert "done:" in out and "frames 40" in out and "accuracy" in out


def test_live_stream_serves_status_while_running(onnx_bundle: Path) -> None:
    port = free_port()
    config_file = Path(onnx_bundle).parent / "runtime.toml"
    config_file.write_text(
        f'[model]\npath = "{onnx_bundle}"\n'
        '[source]\nuri = "synthetic:banknotes"\noptions = { fps = 30, width = 64, height = 48 }\n'
        f'[outputs]\nconsole = "none"\nhttp = "127.0.0.1:{port}"\n'
    )
    assert load_config(config_file).outputs.http == f"127.0.0.1:{port}"
    stopped = threading.Event()
    codes: list[int] = []

    def run() -> None:
        try:
            codes.append(main(["run", "--config", str(config_file)]))
        finally:
            stopped.set()

    # `run` handles signals on the main thread only, so here the command runs in a thread with
    # its signal handling replaced, and is stopped the way a handler would stop it.
    pipelines: list[Pipeline] = []
    original_run = Pipeline.run

    def tracked_run(self: Pipeline) -> RunSummary:
        pipelines.append(self)
        return original_run(self)

    with (
        patch.object(Pipeline, "run", tracked_run),
        patch("edge_runtime.service.signals.stop_on_signals", lambda target: nullcontext()),
    ):
        runner = threading.Thread(target=run)
        runner.start()
        try:
            url = f"http://127.0.0.1:{port}"
            assert wait_until(lambda: bool(pipelines), timeout=20)
            status: dict = {}

            def fetch() -> bool:
                nonlocal status
                with urllib.request.urlopen(url + "/status", timeout=5) as reply:
                    status = json.loads(reply.read())
                return status.get("frames", 0) >= 5

            assert wait_until(fetch, timeout=20)
            assert status["model"]["name"] == "colours" and status["model"]["version"] == 2
            assert status["state"] == "running" and status["source"]["live"] is True
            assert {"preprocess", "inference", "total"} <= set(status["latency_ms"])
            with urllib.request.urlopen(url + "/healthz", timeout=5) as reply:
                assert reply.status == 200
            with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
                assert "edge_classify_frames_total" in reply.read().decode()
        finally:
            if pipelines:
                pipelines[0].stop()
            runner.join(20)
    assert not runner.is_alive() and codes == [0]
    with pytest.raises(urllib.error.URLError):  # the server went with the command
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_reject_action_and_preview(
    onnx_bundle: Path, colour_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with load_model(onnx_bundle) as model:
        first_label = model.classify(read_image(sorted(colour_folder.rglob("*.png"))[0]))[0].label
    video = tmp_path / "preview.mp4"
    snapshots = tmp_path / "snaps"
    code = main(
        [
            "run",
            "--model",
            str(onnx_bundle),
            "--source",
            str(colour_folder),
            "--reject-label",
            first_label,
            "--debounce",
            "1",
            "--preview",
            str(video),
            "--snapshot-dir",
            str(snapshots),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f">>> REJECT frame #0: {first_label}" in out
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 9
    assert sorted(snapshots.iterdir())[0].name.startswith("0000000_")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "camera:0"], "no model"),
        (["--model", "MODEL"], "no source"),
        (["--model", "MODEL", "--source", "ftp://host/x"], "unknown source 'ftp:'"),
        (["--model", "MODEL", "--source", "/no/such/folder"], "no such file or folder"),
        (["--model", "/no/model.tflite", "--source", "synthetic:banknotes"], "model.tflite"),
        (
            ["--model", "MODEL", "--source", "synthetic:banknotes", "--http", "host:port"],
            "HOST:PORT",
        ),
        (["--model", "MODEL", "--source", "synthetic:banknotes", "--allow", "cat"], "cat"),
        (["--model", "MODEL", "--source", "synthetic:cats"], "cats"),
        (["--model", "MODEL", "--source", "synthetic:banknotes?speed=2"], "unknown option speed"),
        (
            ["--model", "MODEL", "--source", "synthetic:banknotes", "--gpio-pin", "17"],
            "--gpio-label",
        ),
    ],
)
def test_bad_input_is_one_line(
    onnx_bundle: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    args = [str(onnx_bundle) if a == "MODEL" else a for a in args]
    assert main(["run", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-runtime: error:") and len(err.splitlines()) == 1, err
    assert message in err


def test_unreachable_camera_is_one_line(
    onnx_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--model", str(onnx_bundle), "--source", "v4l2:///dev/video99"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "video99" in err, err


def test_config_validation(tmp_path: Path) -> None:
    good = {"model": {"path": "m.tflite"}, "source": {"uri": "camera:0"}}
    assert parse_config(good).postprocess.debounce is None  # decided by the source, below
    with pytest.raises(ConfigError, match="model.colour: unknown setting"):
        parse_config({**good, "model": {"path": "m", "colour": 1}})
    with pytest.raises(ConfigError, match="both allowed and denied: stop"):
        parse_config({**good, "postprocess": {"allow": ["stop"], "deny": ["stop"]}})
    with pytest.raises(ConfigError, match=r"source: is missing \(it is required\)"):
        parse_config({"model": {"path": "m"}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_check_config_reports_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text('[model]\npath = "/nowhere/model.tflite"\n[source]\nuri = "camera:0"\n')
    assert main(["check-config", str(config)]) == 1
    # The same words `run` uses: both ask edge_runtime.model.model_kind.
    assert "no model at /nowhere/model.tflite: no such file or directory" in capsys.readouterr().err
