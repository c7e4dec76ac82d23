"""``edge-runtime bench``: per-stage latency, FPS and memory for every artifact and backend."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.cli import main
from edge_runtime.errors import install_command
from edge_runtime.selection import TIE_TOLERANCE

STAGES = {"preprocess", "inference", "postprocess", "total"}


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["bench", *argv])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return code, records, captured.err


def runs_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-artifact records (the last line of a bundle's run is the auto choice)."""
    return [r for r in records if "auto_choice" not in r]


def check_figures(record: dict[str, Any], frames: int) -> None:
    assert record["frames"] == frames
    assert set(record["latency_ms"]) == STAGES
    for stage in STAGES:
        figures = record["latency_ms"][stage]
        assert 0 < figures["p50"] <= figures["p95"] <= figures["p99"]
    total, parts = record["latency_ms"]["total"], record["latency_ms"]
    assert total["mean"] >= parts["inference"]["mean"]
    assert record["fps"] > 0 and record["peak_rss_mb"] > 10


def test_bench_a_bare_model(imagenet_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, records, _ = bench(
        capsys,
        "--model",
        str(imagenet_model),
        "--frames",
        "12",
        "--warmup",
        "2",
        "--json",
        "--threads",
        "1",
        "--frame-size",
        "320x240",
    )
    assert code == 0 and len(records) == 1
    record = records[0]
    check_figures(record, 12)
    assert record["model"]["backend"] == "litert" and record["model"]["threads"] == 1
    assert (record["frame_size"], record["input"]) == ("320x240", "128x128")


def test_bench_every_artifact_of_a_bundle(
    onnx_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, records, _ = bench(
        capsys, "--model", str(onnx_bundle), "--frames", "5", "--json", "--live-frames", "8"
    )
    assert code == 0
    runs, choice = runs_of(records), records[-1]
    assert sorted((r["model"]["artifact"], r["model"]["backend"]) for r in runs) == [
        ("model_fp32.onnx", "onnxruntime"),
        ("model_int8.onnx", "onnxruntime"),
    ]
    for record in runs:
        check_figures(record, 5)
        assert record["model"]["name"] == "colours"
        # The live run: the pipelined runtime fed by a paced camera reports frame ages.
        live = record["live"]
        assert live["results"] == 8 and live["camera_fps"] == 100.0
        ages = live["age_at_inference_ms"], live["age_at_decision_ms"]
        assert 0 <= ages[0]["p50"] <= ages[1]["p50"]
    # The choice precision "auto" would make here: the faster inference p50 of the two (both
    # eligible; within TIE_TOLERANCE of the fastest, the profile's order wins), judged
    # on the p50s this run reports, so it holds whichever artifact this CPU runs faster.
    assert choice["auto_choice"] in {"model_fp32.onnx", "model_int8.onnx"}
    p50 = {r["model"]["artifact"]: r["latency_ms"]["inference"]["p50"] for r in runs}
    other = next(name for name in p50 if name != choice["auto_choice"])
    assert p50[choice["auto_choice"]] <= p50[other] * (1 + TIE_TOLERANCE)
    assert {row["artifact"] for row in choice["timings"]} == set(p50)
    code, records, _ = bench(
        capsys,
        "--model",
        str(onnx_bundle),
        "--frames",
        "3",
        "--json",
        "--artifact",
        "model_fp32.onnx",
    )
    assert code == 0 and [r["model"]["artifact"] for r in records] == ["model_fp32.onnx"]
    assert "auto_choice" not in records[-1]  # one artifact: nothing to choose
    code, records, _ = bench(
        capsys, "--model", str(onnx_bundle), "--frames", "3", "--json", "--precision", "int8"
    )
    assert [r["model"]["precision"] for r in records] == ["int8"]


def test_bench_human_output(
    onnx_classifier: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "--model", str(onnx_classifier().path), "--frames", "4"])
    out = capsys.readouterr().out
    assert code == 0
    for word in ("preprocess", "inference", "postprocess", "total", "fps", "peak RSS"):
        assert word in out
    assert "live camera 100 fps, pipelined:" in out and "frame age at inference p50" in out
    assert "model.onnx (onnx ?) on onnxruntime" in out


def test_bench_skips_a_backend_that_is_not_installed(
    onnx_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, records, err = bench(capsys, "--model", str(onnx_bundle), "--frames", "2", "--json")
    assert code == 1 and records == []
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert len(skipped) == 2 and all(install_command("onnx") in line for line in skipped)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--frame-size", "big"], "--frame-size must look like 640x480"),
        (["--frames", "0"], "--frames must be at least 1"),
        (["--backend", "litert"], "has no artifact matching"),
        (["--artifact", "model_fp32.onnx", "--backend", "litert"], "cannot run onnx"),
        (["--backend", "gpu"], "unknown backend 'gpu'"),
    ],
)
def test_bench_bad_options(
    onnx_bundle: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = bench(capsys, "--model", str(onnx_bundle), *argv)
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("edge-runtime")]
    assert len(lines) == 1 and message in lines[0], err


def test_bench_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = bench(capsys, "--model", str(tmp_path / "none.onnx"))
    assert code == 1 and "no model at" in err


def test_bench_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "edge-runtime bench --model" in capsys.readouterr().out
