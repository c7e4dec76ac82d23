"""The live view: frames encoded only while someone watches, at a capped rate, off the frame
thread; the page in a real headless Chromium (Debian's package; skipped where it is missing)."""

from __future__ import annotations

import io
import json
import threading
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.service.live_view import LatencyHistory, LiveView, encode_frame, page
from edge_runtime.types import Frame
from tests.browser import Browser, chromium_path
from tests.fakes_io import FakeClock, free_port, prediction, wait_until
from tests.fakes_service import MODEL, notify_socket, write_config
from tests.test_daemon import Running, config_text


def frame(index: int) -> Frame:
    return Frame(np.full((120, 160, 3), index % 255, np.uint8), index, 0.0, "test")


def test_nothing_is_encoded_while_nobody_watches() -> None:
    clock = FakeClock()
    view = LiveView(fps=50, watch_window_s=5.0, clock=clock)
    view.open()
    try:
        for index in range(20):
            view.emit(prediction(index), frame(index))
        assert view.encodes == 0 and not view.watched
        encoded = view.latest(wait_s=5.0)  # a viewer arrives: the next frame is encoded
        assert encoded is None  # no frame came since
        view.emit(prediction(20), frame(20))
        assert wait_until(lambda: view.encodes == 1, 5)
        latest = view.latest(wait_s=0)
        assert latest is not None and latest.frame_index == 20
        image = cv2.imdecode(np.frombuffer(latest.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == (120, 160)
        clock.advance(6.0)  # the viewer left: frames are no longer kept or encoded
        assert not view.watched
        view.emit(prediction(21), frame(21))
        assert view.encodes == 1
    finally:
        view.shutdown()


def test_encoding_is_capped_and_never_runs_on_the_frame_thread() -> None:
    encoded_on: list[str] = []
    real = encode_frame

    def spy(*args: object) -> bytes:
        encoded_on.append(threading.current_thread().name)
        return real(*args)  # type: ignore[arg-type]

    import edge_runtime.service.live_view as module

    view = LiveView(fps=5.0)
    module_encode, module.encode_frame = module.encode_frame, spy  # type: ignore[assignment]
    view.open()
    try:
        view.latest(wait_s=0)
        stop = threading.Event()
        sent = 0

        def frames() -> None:
            nonlocal sent
            while not stop.is_set():
                view.emit(prediction(sent), frame(sent))
                view.latest(wait_s=0)  # the viewer keeps watching
                sent += 1
                stop.wait(0.002)

        producer = threading.Thread(target=frames, name="frame thread")
        producer.start()
        # 1 s of frames at up to 500 a second: at 5 encodes a second, a handful are encoded.
        assert wait_until(lambda: view.encodes >= 3, 10)
        stop.set()
        producer.join()
        assert sent > 3 * view.encodes
        assert set(encoded_on) == {"live view"}
    finally:
        module.encode_frame = module_encode  # type: ignore[assignment]
        view.shutdown()


def test_the_history_keeps_per_stage_means_per_step() -> None:
    history = LatencyHistory(step_s=1.0, keep_s=3.0)
    for t in range(10):
        history.add({"inference": float(t)}, t * 0.5)
    points = history.points()
    assert len(points) == 3  # kept: the last 3 s
    assert points[-1]["ms"]["inference"] == pytest.approx(6.5)
    assert points[-1]["fps"] == pytest.approx(2.0)


def test_the_page_is_self_contained() -> None:
    text = page().decode()
    assert "<script" in text and "<style" in text
    # nothing from elsewhere: no external script, style sheet, font or image
    for needle in ('src="http', 'href="http', "@import", "url(http", "//cdn"):
        assert needle not in text


def _png_pixels(png: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.mark.skipif(
    chromium_path() is None, reason="Chromium is not installed (.ci/run installs it)"
)
@pytest.mark.skipif(not (MODEL / "manifest.json").exists(), reason="bundled models not built")
def test_the_live_view_in_a_real_browser(tmp_path: Path) -> None:
    from edge_runtime.service.daemon import Daemon

    path = write_config(tmp_path / "config.toml", config_text(free_port()))
    with notify_socket(abstract=True) as notify:
        daemon = Daemon(path, environ=notify.env(), signals=False, configure_logging=False)
        running = Running(daemon)
        try:
            assert wait_until(lambda: daemon.started.is_set(), 60)
            executable = chromium_path()
            assert executable is not None
            with Browser(executable) as browser:
                browser.open(daemon.server_url + "/")
                shown = "document.getElementById('index').textContent"
                assert wait_until(lambda: (browser.evaluate(shown) or "-") != "-", 30)
                first = int(browser.evaluate(shown))
                # The frame changes over time, and the current label is on the page.
                assert wait_until(lambda: int(browser.evaluate(shown) or 0) > first, 30)
                label = browser.evaluate("document.getElementById('label').textContent")
                labels = json.loads((MODEL / "manifest.json").read_text())["labels"]
                assert label in [*labels, "unknown"]
                # the index comes from /live.json, the picture from its own fetch: on a busy
                # machine the first JPEG may still be decoding when the index first changes
                assert wait_until(
                    lambda: browser.evaluate("document.getElementById('frame').naturalWidth") > 0,
                    30,
                ), "no frame shown"
                assert wait_until(
                    lambda: (
                        browser.evaluate("document.querySelectorAll('#chart polyline').length") > 0
                    ),
                    30,
                ), "no latency chart"
                pixels = _png_pixels(browser.screenshot())
                browser.pump(0.5)
                errors = browser.console_errors()
            assert errors == []
            assert pixels.shape[0] > 100 and pixels.shape[1] > 100
            # not blank: the frame and the text make many distinct colours, far apart
            assert float(pixels.std()) > 10.0
            assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
            with urllib.request.urlopen(daemon.server_url + "/live.json", timeout=10) as answer:
                live = json.load(io.TextIOWrapper(answer))
            assert live["view"]["watched"] is True and live["view"]["encoded_frames"] > 0
        finally:
            running.stop()
