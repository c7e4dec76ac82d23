"""Field data: the collect sink, `--collect` on run and daemon, `edge-export dataset import`."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.config import parse_config
from edge_runtime.sinks import collect as collect_module
from edge_runtime.sinks.collect import CollectSink, TokenBucket, collect_reason
from edge_runtime.types import Classification, Frame, Prediction

ROOT = Path(__file__).resolve().parents[1]
BANKNOTES = ROOT / "models" / "banknotes"

needs_models = pytest.mark.skipif(
    not (BANKNOTES / "manifest.json").is_file(), reason="the bundled models are not built"
)


def prediction(label: str, *scores: tuple[str, float], index: int = 0) -> Prediction:
    top = tuple(Classification(i, name, score) for i, (name, score) in enumerate(scores))
    score = top[0].score if label != "unknown" else top[0].score
    return Prediction(frame_index=index, timestamp=0.0, label=label, score=score, top=top)


def frame(index: int = 0) -> Frame:
    image = np.full((60, 80, 3), index % 256, np.uint8)
    return Frame(image, index, 0.0, source="synthetic:banknotes")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_reasons_a_frame_is_saved() -> None:
    rules = {"margin": 0.2, "unknown": True, "disagree": True}
    assert collect_reason(prediction("unknown", ("a", 0.4), ("b", 0.1)), **rules) == "unknown"
    assert collect_reason(prediction("a", ("a", 0.5), ("b", 0.4)), **rules) == "margin"
    assert collect_reason(prediction("a", ("b", 0.9), ("a", 0.1)), **rules) == "disagrees"
    assert collect_reason(prediction("a", ("a", 0.9), ("b", 0.05)), **rules) is None
    off = {"margin": 0.0, "unknown": False, "disagree": False}
    assert collect_reason(prediction("unknown", ("a", 0.4), ("b", 0.35)), **off) is None


def test_the_token_bucket_allows_bursts_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_minute=6, burst=2, clock=clock)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 9.9
    assert not bucket.take()
    clock.now += 0.2  # 10 s: one more token at 6 a minute
    assert bucket.take() and not bucket.take()


def test_the_sink_names_files_by_label_time_and_score_with_a_sidecar(tmp_path: Path) -> None:
    clock = Clock()
    sink = CollectSink(tmp_path / "field", clock=clock, wall=lambda: 1_700_000_000.25)
    sink.open(lambda: {"model": {"name": "banknotes", "version": 3, "artifact": "m.tflite"}})
    sink.emit(prediction("unknown", ("empty", 0.45), ("genuine-10", 0.4), index=7), frame(7))
    sink.emit(prediction("empty", ("empty", 0.99), ("genuine-10", 0.01), index=8), frame(8))
    saved = sorted((tmp_path / "field").rglob("*.jpg"))
    assert [p.relative_to(tmp_path / "field").as_posix() for p in saved] == [
        "unknown/20231114T221320.250Z_0.450.jpg"
    ]
    sidecar = json.loads(saved[0].with_suffix(".json").read_text())
    assert sidecar["reason"] == "unknown" and sidecar["frame"] == 7
    assert sidecar["model"] == {"name": "banknotes", "version": 3, "artifact": "m.tflite"}
    assert sidecar["source"] == "synthetic:banknotes"
    assert [t["label"] for t in sidecar["top"]] == ["empty", "genuine-10"]
    assert sidecar["group"] == "20231114T221320250Z"


def test_the_cap_drops_the_oldest_frames_first(tmp_path: Path) -> None:
    clock = Clock()
    wall = Clock()
    sink = CollectSink(
        tmp_path, max_mb=0.05, max_per_minute=600, burst=100, clock=clock, wall=wall
    )
    sink.open()
    rng = np.random.default_rng(0)
    for index in range(12):
        wall.now += 1
        noisy = Frame(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), index, 0.0)
        sink.emit(prediction("unknown", ("a", 0.3), ("b", 0.2), index=index), noisy)
    files = sorted(tmp_path.rglob("*.jpg"))
    total = sum(p.stat().st_size + p.with_suffix(".json").stat().st_size for p in files)
    assert 0 < total <= 50_000 and sink.dropped > 0
    frames = [json.loads(p.with_suffix(".json").read_text())["frame"] for p in files]
    assert frames == list(range(12 - len(frames), 12))  # the newest stay
    # A new sink over the same folder counts what is there against the cap.
    again = CollectSink(tmp_path, max_mb=0.001)
    again.open()
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) <= 1000


def test_groups_are_frames_saved_close_together(tmp_path: Path) -> None:
    clock, wall = Clock(), Clock()
    sink = CollectSink(tmp_path, group_gap_s=5, max_per_minute=600, clock=clock, wall=wall)
    sink.open()
    for step in (0, 2, 4, 20, 21):
        clock.now = wall.now = 1000.0 + step
        sink.emit(prediction("unknown", ("a", 0.3), ("b", 0.2), index=step), frame(step))
    groups = [json.loads(p.read_text())["group"] for p in sorted(tmp_path.rglob("*.json"))]
    assert len(groups) == 5 and len(set(groups[:3])) == 1 and len(set(groups[3:])) == 1
    assert groups[0] != groups[3]


def test_a_folder_that_cannot_be_made_never_stops_the_sink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    sink = CollectSink(blocker / "field")
    with caplog.at_level(logging.WARNING):
        sink.open()  # logs, does not raise
    assert "cannot create" in caplog.text
    with pytest.raises(Exception, match="cannot save a frame") as raised:
        sink.emit(prediction("unknown", ("a", 0.3), ("b", 0.2)), frame())
    assert len(str(raised.value).splitlines()) == 1
    assert sink.failed == 1


@needs_models
def test_a_full_or_read_only_folder_is_counted_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(collect_module, "_write_whole", full)
    config = tmp_path / "run.toml"
    config.write_text(
        f'[model]\npath = "{BANKNOTES}"\n[source]\nuri = "synthetic:banknotes?seed=2"\n'
        f'[collect]\ndir = "{tmp_path / "field"}"\nmargin = 1.0\nmax_per_minute = 6000\n'
        "[outputs]\nconsole = \"jsonl\"\n[run]\nmax_frames = 40\n"
    )
    with caplog.at_level(logging.WARNING):
        code = main(
            ["run", "--config", str(config), "--jsonl-file", str(tmp_path / "out.jsonl")]
        )
    assert code == 0
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 40  # nothing lost
    failures = [r.getMessage() for r in caplog.records if "sink collect" in r.getMessage()]
    assert failures and all("No space left on device" in line for line in failures)
    assert all(len(line.splitlines()) == 1 for line in failures)
    assert not list((tmp_path / "field").rglob("*.jpg"))


@needs_models
def test_the_errors_count_in_the_status(tmp_path: Path) -> None:
    from edge_runtime.wiring import build_pipeline

    blocker = tmp_path / "ro"
    blocker.write_text("")
    config = parse_config(
        {
            "model": {"path": str(BANKNOTES)},
            "source": {"uri": "synthetic:banknotes?seed=1"},
            "collect": {"dir": str(blocker / "field"), "margin": 1.0, "max_per_minute": 6000},
            "outputs": {"console": "none"},
            "run": {"max_frames": 20},
        }
    )
    pipeline = build_pipeline(config)
    try:
        summary = pipeline.run()
    finally:
        pipeline.model.close()
    assert summary.frames == 20
    assert summary.status["errors"]["sink_collect"] >= 1


def collect_run(tmp_path: Path, name: str, extra: str) -> tuple[dict[int, dict], list[Path]]:
    field = tmp_path / name
    config = tmp_path / f"{name}.toml"
    # A wide margin, so that a short run has frames worth saving.
    config.write_text(
        f'[model]\npath = "{BANKNOTES}"\n[source]\nuri = "synthetic:banknotes?seed=3"\n'
        f'[collect]\ndir = "{field}"\nmargin = 0.6\nmax_per_minute = 60\nburst = 4\n{extra}'
    )
    out = tmp_path / f"{name}.jsonl"
    code = main(
        ["run", "--config", str(config), "--max-frames", "300", "--output", "none",
         "--jsonl-file", str(out), "--smooth", "3"]
    )
    assert code == 0
    records = {r["frame"]: r for r in map(json.loads, out.read_text().splitlines())}
    return records, sorted(field.rglob("*.jpg"))


@needs_models
def test_a_banknote_run_saves_only_qualifying_frames_at_the_rate(tmp_path: Path) -> None:
    records, saved = collect_run(tmp_path, "field", "")
    assert saved, "the run saved nothing"
    sidecars = [json.loads(p.with_suffix(".json").read_text()) for p in saved]
    qualifying = 0
    for record in records.values():
        top = [(t["label"], t["score"]) for t in record["top"]]
        why = collect_reason(
            prediction(record["label"], *top), margin=0.6, unknown=True, disagree=True
        )
        qualifying += why is not None
        record["why"] = why
    for path, sidecar in zip(saved, sidecars):
        record = records[sidecar["frame"]]
        assert path.parent.name == record["label"]
        assert record["why"] is not None and record["why"] == sidecar["reason"]
        assert sidecar["model"]["name"] == "banknotes" and sidecar["model"]["version"] == 1
    # The bucket: 4 at once, then 60 a minute (one a second) over the run's capture times.
    stamps = [r["timestamp"] for r in records.values()]
    assert len(saved) <= 4 + (max(stamps) - min(stamps)) + 1
    assert qualifying > len(saved)  # the rate, not a lack of candidates, kept the others out


@needs_models
def test_a_banknote_run_keeps_the_collect_folder_under_its_cap(tmp_path: Path) -> None:
    _, saved = collect_run(tmp_path, "capped", "max_mb = 0.2\n")
    # A frame is about 75 kB: at most two fit, and they are the newest saved.
    total = sum(p.stat().st_size + p.with_suffix(".json").stat().st_size for p in saved)
    assert 1 <= len(saved) <= 2 and total <= 200_000


def test_run_and_daemon_take_collect(tmp_path: Path) -> None:
    from edge_runtime.commands.run import config_from_args
    from edge_runtime.service.daemon import Daemon

    config = tmp_path / "c.toml"
    config.write_text(
        f'[model]\npath = "{ROOT / "models" / "traffic-signs"}"\n'
        '[source]\nuri = "synthetic:traffic-signs"\n'
        '[collect]\ndir = "from-file"\nmargin = 0.3\n'
    )
    from edge_runtime.cli import build_parser

    args = build_parser().parse_args(["run", "--config", str(config), "--collect", "from-flag"])
    settings = config_from_args(args).outputs.get("collect")
    assert settings is not None and (settings.dir, settings.margin) == ("from-flag", 0.3)
    daemon = Daemon(
        config, signals=False, configure_logging=False,
        overrides={"outputs": {"collect": {"dir": str(tmp_path / "d")}}},
    )
    if (ROOT / "models" / "traffic-signs" / "manifest.json").is_file():
        loaded = daemon.read_config().outputs.get("collect")
        assert loaded is not None and loaded.dir == str(tmp_path / "d")
    with pytest.raises(Exception, match="collect"):
        parse_config(
            {"model": {"path": "m.tflite"}, "source": {"uri": "camera:0"},
             "collect": {"dir": "x", "no_such": 1}}
        )


# ------------------------------------------------------------------------------------------------
# edge-export dataset import


def write_collected(root: Path, label: str, group: str, count: int, start: int = 0) -> None:
    import cv2

    folder = root / label
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        stem = f"20250101T0000{i:02d}.000Z_0.4{i % 10}"
        cv2.imwrite(str(folder / f"{stem}.jpg"), np.full((32, 32, 3), 40 + i, np.uint8))
        (folder / f"{stem}.json").write_text(json.dumps({"group": group, "label": label}))


def make_classes(root: Path, classes: list[str], splits: bool = False) -> None:
    import cv2

    for split in ("train", "val", "test") if splits else ("",):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            cv2.imwrite(str(folder / "seed.png"), np.zeros((32, 32, 3), np.uint8))


def test_import_keeps_capture_groups_in_one_split(tmp_path: Path) -> None:
    from exporter.field import import_field_frames

    field, data = tmp_path / "field", tmp_path / "data"
    make_classes(data, ["empty", "counterfeit"], splits=True)
    for g in range(12):
        write_collected(field, "empty" if g % 2 else "counterfeit", f"g{g}", 3, start=g * 3)
    write_collected(field, "unknown", "gx", 2, start=50)
    summary = import_field_frames(field, data)
    assert summary.imported == 36 and summary.groups == 12 and summary.skipped_unsorted == 2
    seen: dict[str, set[str]] = {}
    for path in data.glob("*/*/field-*.jpg"):
        group = path.name.split("_")[0]
        seen.setdefault(group, set()).add(path.parts[-3])
    assert len(seen) == 12 and all(len(splits) == 1 for splits in seen.values())
    assert len(list((data / ".field").rglob("*.json"))) == 36
    again = import_field_frames(field, data)  # importing twice adds nothing
    assert again.imported == 0 and again.skipped_existing == 36


def test_import_refuses_folders_that_are_no_class_and_maps_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.cli import main as export_main

    field, data = tmp_path / "field", tmp_path / "data"
    make_classes(data, ["empty", "counterfeit"])
    write_collected(field, "fake", "g1", 2)
    write_collected(field, "blurry", "g2", 2, start=5)
    write_collected(field, "unknown", "g3", 2, start=9)
    code = export_main(["dataset", "import", str(field), "--into", str(data)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "blurry (2), fake (2)" in err[0]
    code = export_main(
        ["dataset", "import", str(field), "--into", str(data),
         "--label-map", "fake=counterfeit,blurry=,unknown=empty"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "imported 4 frames in 2 capture groups" in out
    assert "--group-pattern '^field-([^_]+)_'" in out and "skipped 2 dropped" in out
    assert len(list((data / "counterfeit").glob("field-g1_*.jpg"))) == 2


@pytest.mark.tensorflow
@needs_models
def test_collected_frames_imported_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.cli import main as export_main

    field = tmp_path / "field"
    # A threshold no frame of this model reaches makes every decision "unknown", so the first
    # inferred frames qualify whatever artifact `precision = "auto"` picks on this CPU and
    # whichever live frames the pipeline skips; the token bucket lets its burst through at once.
    code = main(
        ["run", "--model", str(BANKNOTES), "--source", "synthetic:banknotes?seed=4",
         "--max-frames", "200", "--output", "none", "--threshold", "0.999",
         "--collect", str(field)]
    )
    assert code == 0 and list(field.rglob("*.jpg"))
    data = tmp_path / "notes"
    assert export_main(
        ["dataset", "synth", "--scenario", "banknotes", "--out", str(data), "--per-class", "6",
         "--size", "32", "--quiet"]
    ) == 0
    # The review: what the device could not decide is sorted as empty here (a person would
    # look at each); every other folder is already a class of the dataset.
    assert export_main(
        ["dataset", "import", str(field), "--into", str(data), "--label-map", "unknown=empty"]
    ) == 0
    capsys.readouterr()
    assert list(data.glob("*/field-*.jpg"))
    code = export_main(
        ["train", "--data", str(data), "--arch", "tiny_cnn", "--weights", "none",
         "--input-size", "32", "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet",
         "--group-pattern", "^field-([^_]+)_", "--no-cache"]
    )
    assert code == 0
    assert (tmp_path / "run").is_dir()
