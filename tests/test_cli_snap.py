"""`edge-runtime snap`: one fresh frame, classified, written with its label drawn on."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import edge_runtime as er
from edge_runtime.cli import main
from edge_runtime.commands.snap import take_snap
from edge_runtime.sources.opencv import OpenCVCameraSource

ROOT = Path(__file__).resolve().parents[1]
SIGNS = ROOT / "models" / "traffic-signs"

needs_models = pytest.mark.skipif(
    not (SIGNS / "manifest.json").is_file(), reason="the bundled models are not built"
)


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@needs_models
def test_snap_writes_the_frame_with_its_label_drawn_on_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "snap.jpg"
    code = main(
        ["snap", "--source", "synthetic:traffic-signs?seed=4", "--model", str(SIGNS),
         "--out", str(out), "--json"]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == str(out)
    written = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    # The same seed renders the same first frame: the picture before it was annotated.
    frame = er.open_source("synthetic:traffic-signs?seed=4").snapshot()
    assert written.shape == frame.image.shape
    prediction = er.Prediction(
        frame_index=frame.index,
        timestamp=0.0,
        label=record["label"],
        score=record["score"],
        top=tuple(er.Classification(t["index"], t["label"], t["score"]) for t in record["top"]),
    )
    drawn = er.annotate(frame, prediction).image
    wrong = er.annotate(frame, prediction.__class__(**{**prediction.__dict__, "label": "yield"}))
    banner = slice(0, 40)  # the title line: the label and its score
    # JPEG changes pixels a little; the title changes them a lot: the file carries the drawn
    # label (it is far nearer to the frame drawn with its label than to the plain frame or to
    # the frame drawn with another label).
    to_drawn = mean_difference(written[banner], drawn[banner])
    assert to_drawn < 0.5 * mean_difference(written[banner], frame.image[banner])
    assert to_drawn < mean_difference(written[banner], wrong.image[banner])
    below = slice(written.shape[0] // 2, None)  # the picture itself is untouched below the bars
    assert mean_difference(written[below], frame.image[below]) < 4


class StaleFirstCamera:
    """A V4L2 device whose first ``stale`` buffers hold a dark picture taken before anyone
    asked (as a driver hands out its queue after opening); the frames after are bright."""

    def __init__(self, stale: int = 4) -> None:
        self.stale = stale
        self.reads = 0
        self.lock = threading.Lock()

    def __call__(self, *args: object) -> StaleFirstCamera:
        return self

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        with self.lock:
            self.reads += 1
            value = 10 if self.reads <= self.stale else 240
        image = np.full((240, 320, 3), value, np.uint8)
        return True, image

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: 320.0, cv2.CAP_PROP_FRAME_HEIGHT: 240.0}.get(prop, 0.0)

    def release(self) -> None:
        pass


def test_snapshot_skips_the_stale_buffers_a_v4l2_device_hands_out_first(
    onnx_bundle: Path, tmp_path: Path
) -> None:
    fake = StaleFirstCamera(stale=4)
    camera = OpenCVCameraSource("v4l2:///dev/video0", capture_factory=fake)
    with camera, er.load_model(onnx_bundle) as model:
        snap = take_snap(camera, model, tmp_path / "door.png")
    picture = cv2.imread(str(snap.path))
    assert fake.reads > 4
    # Below the title and the bars, right of the frame number, the frame is untouched: bright,
    # not the dark stale picture.
    assert picture[-40:, 160:].mean() > 200
    assert snap.prediction.frame_index >= 4


def test_snapshot_never_returns_the_frame_waiting_in_the_latest_slot(onnx_bundle: Path) -> None:
    fake = StaleFirstCamera(stale=0)
    with OpenCVCameraSource("camera:0", capture_factory=fake, stale_frames=0) as camera:
        first = camera.snapshot()
        second = camera.snapshot()
    assert second.index > first.index and second.timestamp >= first.timestamp


@needs_models
def test_snap_show_without_a_display_says_so_and_keeps_the_picture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "snap.png"
    code = main(
        ["snap", "--source", "synthetic:banknotes", "--model", str(ROOT / "models" / "banknotes"),
         "--out", str(out), "--show"]
    )
    captured = capsys.readouterr()
    assert code == 0 and out.is_file()
    assert captured.out.startswith(f"{out}: ")
    assert captured.err.strip().splitlines() == [
        f"edge-runtime: no window: there is no display here (DISPLAY is not set); "
        f"the picture is in {out}"
    ]


def test_snap_with_a_display_but_no_window_support_says_so(
    onnx_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPLAY", ":99")

    def no_gui(*args: object) -> None:
        raise cv2.error("The function is not implemented")

    monkeypatch.setattr(cv2, "imshow", no_gui)
    image = tmp_path / "red.png"
    cv2.imwrite(str(image), np.full((16, 16, 3), (30, 30, 220), np.uint8))
    code = main(
        ["snap", "--source", str(image), "--model", str(onnx_bundle), "--out",
         str(tmp_path / "s.jpg"), "--show"]
    )
    assert code == 0
    assert "no window support" in capsys.readouterr().err
