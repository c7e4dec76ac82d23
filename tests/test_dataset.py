"""Datasets: scanning, grouped stratified splits, given split folders, reports, loading, synth."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.preprocess import PreprocessSpec
from exporter.cli import main
from exporter.dataset import (
    SPLIT_NAMES,
    Sample,
    Splits,
    compile_group_pattern,
    load_images,
    make_splits,
    prepare_dataset,
    read_images,
    scan_dataset,
    split_samples,
    synthesize_dataset,
)
from exporter.errors import DatasetError
from tests.exporter_fixtures import make_dataset, one_error_line, scenes_module, write_image

GTSRB_PATTERN = r"^(\d+_\d+)_"


# ---------------------------------------------------------------------------------------------
# Scanning and errors


def test_scan_lists_classes_in_sorted_order_and_ignores_other_files(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"zebra": 3, "apple": 2}, size=16)
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / "apple" / "labels.csv").write_text("x")
    (tmp_path / ".cache").mkdir()
    write_image(tmp_path / "apple" / "nested" / "deep.jpg", np.zeros((8, 8, 3), np.uint8))
    scanned = scan_dataset(tmp_path)
    assert scanned.labels == ("apple", "zebra")
    assert Counter(s.label for s in scanned.samples) == {"apple": 3, "zebra": 3}
    assert Sample("apple/nested/deep.jpg", "apple") in scanned.samples
    assert set(scanned.ignored) == {"README.md", "apple/labels.csv"}
    assert scanned.given is None


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "no images found"),
        (lambda root: make_dataset(root, {"only": 3}, size=8), "only one class"),
        (
            lambda root: (make_dataset(root, {"a": 2, "b": 2}, size=8), (root / "c").mkdir()),
            "class folder 'c'",
        ),
    ],
    ids=["missing", "no-images", "single-class", "empty-class"],
)
def test_bad_dataset_folders_are_clear_errors(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetError, match=message):
        scan_dataset(root)


def test_bad_dataset_is_one_line_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "b").mkdir()
    assert main(["dataset", "report", str(tmp_path / "data")]) == 1
    assert "holds no images" in one_error_line(capsys)


# ---------------------------------------------------------------------------------------------
# Splits


def samples_for(counts: dict[str, int], name: str = "{label}_{i:04d}.png") -> list[Sample]:
    return [
        Sample(f"{label}/{name.format(label=label, i=i)}", label)
        for label, n in counts.items()
        for i in range(n)
    ]


def test_split_is_stratified_per_class() -> None:
    counts = {"a": 100, "b": 40, "c": 20}
    parts = split_samples(samples_for(counts), sorted(counts), (0.7, 0.15, 0.15), seed=3)
    for label, total in counts.items():
        got = {name: sum(s.label == label for s in parts[name]) for name in SPLIT_NAMES}
        assert sum(got.values()) == total
        assert abs(got["train"] - 0.7 * total) <= 1
        assert abs(got["val"] - 0.15 * total) <= 1
        assert abs(got["test"] - 0.15 * total) <= 1


def test_split_is_deterministic_and_depends_on_the_seed() -> None:
    samples = samples_for({"a": 30, "b": 30})
    first = split_samples(samples, ["a", "b"], (0.6, 0.2, 0.2), seed=7)
    again = split_samples(list(reversed(samples)), ["a", "b"], (0.6, 0.2, 0.2), seed=7)
    other = split_samples(samples, ["a", "b"], (0.6, 0.2, 0.2), seed=8)
    assert first == again
    assert first["test"] != other["test"]


def test_zero_fraction_leaves_a_split_empty() -> None:
    parts = split_samples(samples_for({"a": 10, "b": 10}), ["a", "b"], (0.8, 0.2, 0.0), seed=0)
    assert parts["test"] == [] and len(parts["val"]) == 4


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 9), st.integers(1, 6)),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 2**16),
)
def test_groups_never_straddle_splits(groups: list[tuple[int, int, int]], seed: int) -> None:
    # (class, track, frames): frames of one track of one class share the group key.
    samples = []
    for cls, track, frames in groups:
        for frame in range(frames):
            samples.append(Sample(f"c{cls}/{cls:05d}_{track:05d}_{frame:05d}.png", f"c{cls}"))
    samples = sorted(set(samples))
    labels = sorted({s.label for s in samples})
    pattern = compile_group_pattern(GTSRB_PATTERN)
    parts = split_samples(samples, labels, (0.7, 0.15, 0.15), seed, pattern)
    assert sorted(s for part in parts.values() for s in part) == samples
    side: dict[str, str] = {}
    for name, part in parts.items():
        for sample in part:
            key = re.match(GTSRB_PATTERN, sample.path.split("/")[1]).group(1)  # type: ignore[union-attr]
            assert side.setdefault(key, name) == name, f"group {key} is in {side[key]} and {name}"
    assert parts == split_samples(samples, labels, (0.7, 0.15, 0.15), seed, pattern)


def test_equal_tracks_fill_every_split(tmp_path: Path) -> None:
    # 7 tracks of 7 frames, like GTSRB's rarest classes: each split gets whole tracks.
    for label, cls in (("a", 0), ("b", 1)):
        for track in range(7):
            for frame in range(7):
                path = tmp_path / label / f"{cls:05d}_{track:05d}_{frame:05d}.png"
                write_image(path, np.full((8, 8, 3), cls * 100, np.uint8))
    splits = make_splits(scan_dataset(tmp_path), group_pattern=GTSRB_PATTERN, seed=1)
    for name in SPLIT_NAMES:
        per_class = Counter(s.label for s in splits.get(name))
        assert all(n % 7 == 0 and n > 0 for n in per_class.values()), (name, per_class)
    assert Counter(s.label for s in splits.train) == {"a": 35, "b": 35}


def test_group_pattern_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"a": 4, "b": 4}, size=8)
    with pytest.raises(DatasetError, match="matches none of the 8 file names"):
        make_splits(scan_dataset(tmp_path), group_pattern=GTSRB_PATTERN)
    with pytest.raises(DatasetError, match="not a valid regular expression"):
        make_splits(scan_dataset(tmp_path), group_pattern="(unclosed")


def test_too_few_images_for_a_test_split_is_an_error(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"a": 1, "b": 1}, size=8)
    with pytest.raises(DatasetError, match="split is empty"):
        make_splits(scan_dataset(tmp_path))


@pytest.mark.parametrize("fractions", [(0.5, 0.2, 0.2), (0.0, 0.5, 0.5), (0.7, 0.3)])
def test_bad_fractions_are_errors(tmp_path: Path, fractions) -> None:
    make_dataset(tmp_path, {"a": 4, "b": 4}, size=8)
    with pytest.raises(DatasetError, match="fractions|train fraction"):
        make_splits(scan_dataset(tmp_path), fractions)


def test_given_split_folders_are_used_as_they_are(tmp_path: Path) -> None:
    make_dataset(tmp_path / "train", {"cat": 6, "dog": 5}, size=8)
    make_dataset(tmp_path / "val", {"cat": 2, "dog": 2}, size=8, seed=1)
    make_dataset(tmp_path / "test", {"cat": 3, "dog": 1}, size=8, seed=2)
    scanned = scan_dataset(tmp_path)
    assert scanned.given is not None and scanned.labels == ("cat", "dog")
    splits = make_splits(scanned, seed=5)
    assert len(splits.train) == 11 and len(splits.val) == 4 and len(splits.test) == 4
    assert all(s.path.startswith("test/") for s in splits.test)


def test_missing_val_folder_is_carved_from_train_without_splitting_groups(tmp_path: Path) -> None:
    make_dataset(tmp_path / "train", {"a": 40, "b": 40}, size=8, name="{cls}_{index:04d}_x")
    make_dataset(tmp_path / "test", {"a": 3, "b": 3}, size=8)
    splits = make_splits(scan_dataset(tmp_path), group_pattern=r"^(\d+_\d\d\d)", seed=0)
    assert len(splits.test) == 6
    assert splits.val and all(s.path.startswith("train/") for s in splits.val)
    train_groups = {s.path.split("/")[-1][:5] for s in splits.train}
    val_groups = {s.path.split("/")[-1][:5] for s in splits.val}
    assert not train_groups & val_groups


def test_given_splits_with_an_unknown_test_class_is_an_error(tmp_path: Path) -> None:
    make_dataset(tmp_path / "train", {"a": 2, "b": 2}, size=8)
    make_dataset(tmp_path / "test", {"c": 2}, size=8)
    with pytest.raises(DatasetError, match="class 'c'"):
        scan_dataset(tmp_path)


def test_splits_round_trip_through_json(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data", {"a": 8, "b": 8}, size=8)
    splits = make_splits(scan_dataset(tmp_path / "data"), seed=2)
    splits.save(tmp_path / "splits.json")
    data = json.loads((tmp_path / "splits.json").read_text())
    assert data["root"] == str((tmp_path / "data").resolve())
    assert data["test"][0] == [splits.test[0].path, splits.test[0].label]
    loaded = Splits.load(tmp_path / "splits.json")
    assert loaded == splits
    assert loaded.paths("val")[0].is_file()
    assert list(loaded.targets("train")) == [splits.labels.index(s.label) for s in splits.train]


# ---------------------------------------------------------------------------------------------
# Loading, corrupt files and the report


def test_corrupt_files_are_listed_and_skipped(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"a": 10, "b": 10}, size=16)
    good = (tmp_path / "a" / "a_0000.png").read_bytes()
    (tmp_path / "a" / "truncated.png").write_bytes(good[: len(good) // 3])
    (tmp_path / "b" / "text.jpg").write_text("not an image")
    (tmp_path / "b" / "empty.png").write_bytes(b"")
    prepared = prepare_dataset(tmp_path, PreprocessSpec(12, 12), seed=0)
    corrupt = dict(prepared.report.corrupt)
    assert set(corrupt) == {"a/truncated.png", "b/text.jpg", "b/empty.png"}
    every = {s.path for name in SPLIT_NAMES for s in prepared.splits.get(name)}
    assert len(every) == 20 and not every & set(corrupt)
    assert prepared.images["train"].shape == (len(prepared.splits.train), 12, 12, 3)
    assert prepared.report.counts == {"a": 10, "b": 10}
    text = prepared.report.to_text()
    assert "unreadable files skipped: 3" in text and "b/text.jpg" in text


def test_read_images_never_raises_and_load_images_does(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.png", np.full((10, 14, 3), 200, np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    missing = tmp_path / "missing.png"
    spec = PreprocessSpec(8, 8)
    loaded = read_images([good, bad, missing], spec, workers=2)
    assert list(loaded.ok) == [True, False, False]
    assert "cannot read" in loaded.errors[2]
    assert (loaded.images[0] == 200).all() and loaded.digests[1] and not loaded.digests[2]
    with pytest.raises(DatasetError, match=r"2 of 3 images cannot be read, e\.g\. .*bad\.png"):
        load_images([good, bad, missing], spec)
    assert load_images([good], spec).shape == (1, 8, 8, 3)


def test_report_counts_imbalance_and_small_classes(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"big": 30, "mid": 12, "tiny": 5}, size=8)
    prepared = prepare_dataset(tmp_path, None, min_per_class=10)
    report = prepared.report
    assert prepared.images == {}
    assert report.counts == {"big": 30, "mid": 12, "tiny": 5}
    assert report.imbalance_ratio == pytest.approx(6.0)
    assert report.below_minimum == ["tiny"]
    data = report.to_json()
    assert data["images"] == 47 and data["imbalance_ratio"] == 6.0
    assert sum(data["split_totals"].values()) == 47
    lines = report.to_text().splitlines()
    assert [line.split()[0] for line in lines if line.endswith("< minimum")] == ["tiny"]
    assert "classes below 10 images: tiny" in lines


def test_fingerprint_changes_when_a_file_changes(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"a": 4, "b": 4}, size=8)
    first = prepare_dataset(tmp_path, None, fractions=(0.5, 0.25, 0.25)).fingerprint
    assert prepare_dataset(tmp_path, None, fractions=(0.5, 0.25, 0.25)).fingerprint == first
    write_image(tmp_path / "a" / "a_0000.png", np.ones((8, 8, 3), np.uint8))
    assert prepare_dataset(tmp_path, None, fractions=(0.5, 0.25, 0.25)).fingerprint != first


def test_report_command_prints_json_with_groups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_dataset(tmp_path, {"a": 12, "b": 12}, size=8, name="{cls:05d}_{index:05d}_00000")
    # tracks 0..11 of one frame each, plus a second frame for track 0 of class a
    write_image(tmp_path / "a" / "00000_00000_00001.png", np.zeros((8, 8, 3), np.uint8))
    code = main(["dataset", "report", str(tmp_path), "--group-pattern", GTSRB_PATTERN, "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["groups"] == 24 and data["images"] == 25 and data["leaking_groups"] == []
    assert len(data["dataset_fingerprint"]) == 64


def test_report_command_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(tmp_path, {"a": 12, "b": 6}, size=8)
    assert main(["dataset", "report", str(tmp_path), "--quiet", "--split", "0.5,0.25,0.25"]) == 0
    out = capsys.readouterr().out
    assert "18 images in 2 classes" in out and "imbalance (largest/smallest class): 2.00" in out
    assert "classes below 10 images: b" in out


# ---------------------------------------------------------------------------------------------
# Synthetic scenario datasets


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.*"))}


def test_synth_is_deterministic_whatever_the_thread_count(tmp_path: Path) -> None:
    scenes = scenes_module()
    one = synthesize_dataset(
        "traffic-signs", tmp_path / "one", per_class=3, size=24, seed=5, workers=1, scenes=scenes
    )
    synthesize_dataset(
        "traffic-signs", tmp_path / "two", per_class=3, size=24, seed=5, workers=4, scenes=scenes
    )
    synthesize_dataset(
        "traffic-signs", tmp_path / "three", per_class=3, size=24, seed=6, scenes=scenes
    )
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")
    assert folder_bytes(tmp_path / "one") != folder_bytes(tmp_path / "three")
    assert one.images == 3 * len(one.labels)
    scanned = scan_dataset(tmp_path / "one")
    assert scanned.labels == tuple(sorted(scenes.class_names("traffic-signs")))
    assert all(n == 3 for n in Counter(s.label for s in scanned.samples).values())


def test_synth_refuses_a_non_empty_folder_unless_forced(tmp_path: Path) -> None:
    scenes = scenes_module()
    classes = len(scenes.class_names("banknotes"))
    out = tmp_path / "out"
    synthesize_dataset("banknotes", out, per_class=4, size=16, scenes=scenes)
    with pytest.raises(DatasetError, match="not empty"):
        synthesize_dataset("banknotes", out, per_class=2, size=16, scenes=scenes)
    (out / "notes.txt").write_text("kept")
    synthesize_dataset("banknotes", out, per_class=2, size=16, scenes=scenes, force=True)
    assert len(list(out.rglob("*.png"))) == 2 * classes  # no stale images from the first run
    assert (out / "notes.txt").exists()


def test_synth_writes_jpeg_when_asked(tmp_path: Path) -> None:
    summary = synthesize_dataset(
        "banknotes", tmp_path, per_class=2, size=16, jpeg_quality=70, scenes=scenes_module()
    )
    files = sorted(tmp_path.rglob("*.jpg"))
    assert len(files) == summary.images == 2 * len(summary.labels)
    assert files[0].read_bytes()[:2] == b"\xff\xd8"


def test_synth_rejects_bad_options(tmp_path: Path) -> None:
    scenes = scenes_module()
    with pytest.raises(DatasetError, match="unknown scenario 'cats'"):
        synthesize_dataset("cats", tmp_path, per_class=1, size=16, scenes=scenes)
    with pytest.raises(DatasetError, match="--per-class"):
        synthesize_dataset("banknotes", tmp_path, per_class=0, size=16, scenes=scenes)
    with pytest.raises(DatasetError, match="--jpeg-quality"):
        synthesize_dataset(
            "banknotes", tmp_path, per_class=1, size=16, jpeg_quality=0, scenes=scenes
        )


def test_synth_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("edge_runtime.scenes", reason="the runtime's scene renderer is not here")
    out = tmp_path / "signs"
    args = [
        "dataset",
        "synth",
        "--scenario",
        "traffic-signs",
        "--out",
        str(out),
        "--per-class",
        "2",
        "--size",
        "32",
        "--quiet",
    ]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(args) == 1
    assert "not empty" in one_error_line(capsys)
