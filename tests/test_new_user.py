"""The command line as a new user meets it: each item found by trying the README on a fresh
clone, each pinned here. Failing commands run as real processes, so that what native libraries
write to file descriptor 2 is seen too."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.errors import install_command

ROOT = Path(__file__).resolve().parents[1]
SIGNS = ROOT / "models" / "traffic-signs"
RUNTIME = [sys.executable, "-m", "edge_runtime.cli"]

needs_models = pytest.mark.skipif(
    not (SIGNS / "manifest.json").is_file(), reason="the bundled models are not built"
)


def cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCV_", "TF_CPP"))}
    return subprocess.run(
        [*RUNTIME, *argv], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )


def refused_port() -> int:
    with socket.socket() as probe:  # bound, then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_failing_commands_print_exactly_one_line(imagenet_model: Path, tmp_path: Path) -> None:
    port = refused_port()
    cases = {
        "camera": (["run", "--model", str(imagenet_model), "--source", "camera:42"], "camera:42"),
        "model": (["classify", "x.jpg", "--model", str(tmp_path / "no.tflite")], "no model"),
        "rtsp": (
            ["run", "--model", str(imagenet_model), "--source", f"rtsp://127.0.0.1:{port}/s"],
            "refused",
        ),
        "threads": (
            ["run", "--model", str(imagenet_model), "--source", "x.jpg", "--threads", "-1"],
            "threads must be 0 (all cores) or more, got -1",
        ),
    }
    for name, (argv, expected) in cases.items():
        result = cli(*argv)
        lines = result.stderr.splitlines()
        assert result.returncode == 1, name
        assert len(lines) == 1 and expected in lines[0], (name, result.stderr)
        assert lines[0].startswith("edge-runtime: error: ")
    verbose = cli("-v", *cases["camera"][0])
    assert len(verbose.stderr.splitlines()) > 1  # the native lines are there with --verbose
    assert "XNNPACK" in verbose.stderr


def test_bench_quiet_prints_no_native_line(imagenet_model: Path) -> None:
    result = cli("bench", "--model", str(imagenet_model), "--frames", "3", "--quiet")
    assert result.returncode == 0
    assert "XNNPACK" not in result.stderr and "INFO" not in result.stderr


def test_the_same_words_in_run_and_classify_and_did_you_mean(
    imagenet_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    words = "threads must be 0 (all cores) or more, got -1"
    for argv in (
        ["run", "--model", str(imagenet_model), "--source", str(image), "--threads", "-1"],
        ["classify", str(image), "--model", str(imagenet_model), "--threads", "-1"],
    ):
        assert main(argv) == 1
        assert words in capsys.readouterr().err
    config = tmp_path / "c.toml"
    config.write_text(
        f'[model]\npath = "{imagenet_model}"\nthreds = 2\n[source]\nuri = "{image}"\n'
    )
    assert main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "model.threds: unknown setting; did you mean 'threads'?" in err
    assert "Extra inputs" not in err and "Input should" not in err


def test_an_unknown_flag_shows_the_subcommands_usage() -> None:
    result = cli("run", "--model", "m.tflite", "--bogus")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: edge-runtime run ")
    assert "edge-runtime run: error: unrecognized arguments: --bogus" in result.stderr
    nested = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "dataset", "report", "d", "--bogus"],
        capture_output=True, text=True, timeout=120,
    )
    assert nested.stderr.startswith("usage: edge-export dataset report ")


def test_rtsp_options_in_the_uri_work_and_unknown_ones_are_refused() -> None:
    from edge_runtime.sources import open_source, parse_source_uri

    kind, uri, options = parse_source_uri("rtsp://cam/live?channel=1&open_timeout_s=2")
    assert (kind, uri, options) == ("rtsp", "rtsp://cam/live?channel=1", {"open_timeout_s": 2})
    source = open_source("rtsp://cam/live?open_timeout_s=2")
    assert source.open_timeout_s == 2  # type: ignore[attr-defined]
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean open_timeout_s"):
        open_source("rtsp://cam/live?open_timout_s=2")


def test_a_refused_rtsp_connection_says_refused() -> None:
    from edge_runtime.errors import SourceError
    from edge_runtime.sources import open_source

    source = open_source(f"rtsp://127.0.0.1:{refused_port()}/live")
    with pytest.raises(SourceError, match="refused the connection"):
        source.open()
    source.close()


def test_install_hints_name_the_checkout_form() -> None:
    assert install_command("mqtt").startswith("pip install -e '.[mqtt]'")  # run in a checkout


def test_dataset_help_has_examples() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "dataset", "--help"],
        capture_output=True, text=True, timeout=120,
    )
    assert "examples:" in result.stdout and "edge-export dataset import" in result.stdout


def test_readme_outputs_are_ignored_by_git() -> None:
    for name in ("data/notes/x.png", "bundles/notes/manifest.json", "results.jsonl", "snap.jpg"):
        result = subprocess.run(
            ["git", "check-ignore", "-q", name], cwd=ROOT, capture_output=True, timeout=30
        )
        if result.returncode == 128:
            pytest.skip("not a git checkout")
        assert result.returncode == 0, name


@needs_models
def test_a_single_photo_with_snapshot_dir_gives_one_annotated_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = next((SIGNS / "samples").glob("*stop*.png"))
    code = main(["run", "--model", str(SIGNS), "--source", str(photo), "--snapshot-dir",
                 str(tmp_path / "snaps")])
    assert code == 0
    snaps = list((tmp_path / "snaps").glob("*.jpg"))
    assert len(snaps) == 1 and "stop" in snaps[0].name
    assert "-> stop" in capsys.readouterr().out
    # Two photos of the same class: each its own decision, each its own snapshot.
    both = sorted((SIGNS / "samples").glob("*stop*.png"))
    assert len(both) == 2
    code = main(["run", "--model", str(SIGNS), "--source", str(SIGNS / "samples" / "*stop*"),
                 "--snapshot-dir", str(tmp_path / "two")])
    assert code == 0 and len(list((tmp_path / "two").glob("*.jpg"))) == 2


@needs_models
def test_json_lines_of_a_folder_run_name_their_files(
    capsys: pytest.CaptureFixture[str],
) -> None:
    samples = SIGNS / "samples"
    assert main(["run", "--model", str(SIGNS), "--source", str(samples / "*.png"),
                 "--output", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["source"] for r in records] == [str(p) for p in sorted(samples.glob("*.png"))]


@needs_models
def test_classify_takes_a_folder_and_saves_annotated_copies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = SIGNS / "samples"
    assert main(["classify", str(samples), "--model", str(SIGNS), "--save",
                 str(tmp_path / "out"), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == len(list(samples.glob("*.png")))
    assert len(list((tmp_path / "out").glob("*.jpg"))) == len(records)


def test_a_bare_model_says_no_threshold_applies(
    imagenet_model: Path, imagenet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--model", str(imagenet_model), "--source",
                 str(imagenet_dir / "parrot.jpg")]) == 0
    banner = capsys.readouterr().out.splitlines()[0]
    assert "; no threshold: never 'unknown', --threshold T sets one] <- " in banner
