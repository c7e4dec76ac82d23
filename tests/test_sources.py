"""Frame sources: URI parsing, files, video, synthetic scenes, live capture machinery, cameras.

Hardware is faked only where needed (a camera behind cv2.VideoCapture, the picamera2 module); files,
videos, the MJPEG stream and the rendered scenes are real.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_runtime.errors import (
    ConfigError,
    MissingDependencyError,
    SourceError,
    UnknownComponentError,
)
from edge_runtime.scenes import SceneStream
from edge_runtime.sources import open_source, parse_source_uri, source_kind
from edge_runtime.sources.files import ImageFilesSource
from edge_runtime.sources.gstreamer import GStreamerSource, csi_pipeline, gstreamer_enabled
from edge_runtime.sources.live import LatestFrameBuffer, ReconnectPolicy, backoff_delay
from edge_runtime.sources.network import NetworkStreamSource
from edge_runtime.sources.opencv import OpenCVCameraSource, parse_camera_uri
from edge_runtime.sources.picamera2 import Picamera2Source
from edge_runtime.sources.synthetic import SyntheticSource
from edge_runtime.sources.video import VideoFileSource
from edge_runtime.types import Frame
from tests.fakes_io import (
    CAMERA_BGR,
    FakeCamera,
    FakeClock,
    MjpegServer,
    fake_picamera2_module,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

CAMERA_RGB = list(CAMERA_BGR[::-1])


def write_png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (12, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:] = rgb[::-1]  # cv2 writes BGR
    assert cv2.imwrite(str(path), image)


def frame(index: int = 0) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), index, time.monotonic())


def drain(source: object, timeout: float = 5.0) -> list[Frame]:
    frames = []
    while True:
        got = source.read(timeout=timeout)  # type: ignore[attr-defined]
        if got is None:
            return frames
        frames.append(got)


# -- choosing a source from a URI --------------------------------------------------------------
def test_scheme_uris_pick_their_registry_entry() -> None:
    assert source_kind("synthetic:traffic-signs") == "synthetic"
    assert source_kind("camera:0") == "camera"
    assert source_kind("v4l2:///dev/video0") == "v4l2"
    assert source_kind("csi://0") == "csi"
    assert source_kind("gst:videotestsrc ! appsink") == "gst"
    assert source_kind("rtsp://cam.local/stream") == "rtsp"
    assert source_kind("https://cam.local/mjpg") == "https"
    assert source_kind("picamera2:0") == "picamera2"


def test_paths_pick_images_or_video(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", (1, 2, 3))
    (tmp_path / "clip.MP4").write_bytes(b"not decoded here")
    (tmp_path / "notes.txt").write_text("x")
    assert source_kind(str(tmp_path)) == "images"
    assert source_kind(str(tmp_path / "a.png")) == "images"
    assert source_kind(str(tmp_path / "*.png")) == "images"
    assert source_kind(str(tmp_path / "clip.MP4")) == "video"
    with pytest.raises(SourceError, match="cannot tell how to read .*notes.txt"):
        source_kind(str(tmp_path / "notes.txt"))
    with pytest.raises(SourceError, match="no such file or folder: .*missing.png"):
        open_source(str(tmp_path / "missing.png"))


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(UnknownComponentError) as caught:
        open_source("ftp-cam:front")
    message = str(caught.value)
    assert "unknown source 'ftp-cam:'" in message
    for scheme in ("camera:", "csi:", "gst:", "picamera2:", "rtsp:", "synthetic:", "v4l2:"):
        assert scheme in message
    assert "\n" not in message


def test_query_options_reach_the_constructor_and_keywords_override_them() -> None:
    kind, uri, options = parse_source_uri("synthetic:banknotes?seed=3&fps=12.5&frames=4&x=yes")
    assert (kind, uri) == ("synthetic", "synthetic:banknotes")
    assert options == {"seed": 3, "fps": 12.5, "frames": 4, "x": True}
    source = open_source("synthetic:banknotes?seed=3&width=64&height=48", seed=5)
    assert isinstance(source, SyntheticSource)
    assert (source.seed, source.width, source.height) == (5, 64, 48)
    # A URL keeps its own query string.
    url = "http://cam/video.cgi?res=hi"
    assert parse_source_uri(url)[1:] == (url, {})


def test_unknown_option_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown option colour for a synthetic source.*seed"):
        open_source("synthetic:banknotes", colour="red")
    # Options of the shared live machinery are accepted by every live source.
    source = open_source("camera:0", give_up_after_s=3, width=320)
    assert isinstance(source, OpenCVCameraSource)
    assert source.policy.give_up_after_s == 3


def test_importing_sources_loads_no_implementation() -> None:
    code = (
        "import sys, edge_runtime.sources as s\n"
        "loaded = [m for m in sys.modules if m.startswith('edge_runtime.sources.')]\n"
        "print(sorted(loaded))\n"
        "s.open_source('synthetic:banknotes')\n"
        "print('edge_runtime.sources.synthetic' in sys.modules, 'picamera2' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "picamera2" not in out[0] and "opencv" not in out[0] and "synthetic" not in out[0]
    assert out[1] == "True False"


# -- image files ---------------------------------------------------------------------------------
def test_folder_of_class_folders_gives_every_image_once_in_order_with_truth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_png(tmp_path / "stop" / "b.png", (200, 0, 0))
    write_png(tmp_path / "stop" / "a.jpg", (0, 200, 0))
    write_png(tmp_path / "yield" / "c.png", (0, 0, 200))
    (tmp_path / "yield" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (tmp_path / "labels.txt").write_text("stop\nyield\n")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")

    source = open_source(str(tmp_path), truth_from_folder=True)
    assert isinstance(source, ImageFilesSource)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.sources.files"):
        with source:
            frames = drain(source)
            assert source.ended
    names = [Path(f.meta["path"]).name for f in frames]
    assert names == ["a.jpg", "b.png", "c.png"]
    assert [f.truth for f in frames] == ["stop", "stop", "yield"]
    assert [f.index for f in frames] == [0, 1, 2]
    # RGB order: b.png was written as pure red.
    assert frames[1].image[0, 0].tolist() == [200, 0, 0]
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (8, 12, 3)
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps)
    assert source.stats.corrupt == 2 and source.stats.delivered == 3
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 2
    assert any("broken.jpg" in line and "not a readable image" in line for line in skipped)
    assert any("labels.txt: not an image file" in line for line in skipped)
    assert all("\n" not in line for line in skipped)


def test_glob_single_file_and_loop(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / f"img{i}.png", (i * 50, 0, 0))
    write_png(tmp_path / "other.bmp", (1, 1, 1))
    globbed = drain(open_source(str(tmp_path / "img*.png")))
    assert [f.image[0, 0, 0] for f in globbed] == [0, 50, 100]
    single = drain(open_source(str(tmp_path / "other.bmp")))
    assert len(single) == 1 and single[0].truth is None
    looping = open_source(str(tmp_path / "img*.png"), loop=True)
    seven = [looping.read() for _ in range(7)]
    assert [f.image[0, 0, 0] for f in seven if f] == [0, 50, 100, 0, 50, 100, 0]
    assert [f.index for f in seven if f] == list(range(7))


def test_real_class_per_folder_photos_carry_their_folder_as_truth(testdata_dir: Path) -> None:
    pattern = testdata_dir / "gtsrb" / "1[34]_*" / "*.png"  # yield and stop: 100 real photos
    source = open_source(str(pattern), truth_from_folder=True)
    frames = drain(source)
    assert len(frames) == 100 and source.stats.corrupt == 0
    assert {f.truth for f in frames} == {"13_yield", "14_stop"}
    assert [f.truth for f in frames] == sorted(f.truth or "" for f in frames)
    assert all(f.image.dtype == np.uint8 and f.image.ndim == 3 for f in frames)
    assert all(f.image.shape[2] == 3 and min(f.image.shape[:2]) >= 15 for f in frames)


def test_no_readable_image_is_an_error_not_an_endless_loop(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"garbage")
    (tmp_path / "b.txt").write_text("text")
    source = open_source(str(tmp_path), loop=True)
    with pytest.raises(SourceError, match="no readable image in"):
        source.read()
    assert source.stats.corrupt == 2
    with pytest.raises(SourceError, match="no files match"):
        open_source(str(tmp_path / "*.png")).read()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no files in folder"):
        open_source(str(tmp_path / "empty")).read()


# -- video files ---------------------------------------------------------------------------------
def test_video_file_delivers_every_frame_in_order(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    colours_rgb = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220)]
    for rgb in colours_rgb:
        writer.write(np.full((48, 64, 3), rgb[::-1], np.uint8))
    writer.release()

    source = open_source(str(path))
    assert isinstance(source, VideoFileSource)
    with source:
        frames = drain(source)
        assert source.read() is None and source.ended
    assert len(frames) == len(colours_rgb)
    for got, rgb in zip(frames, colours_rgb):
        assert got.image.shape == (48, 64, 3)
        assert np.abs(got.image[24, 32].astype(int) - rgb).max() <= 12  # JPEG is lossy
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert [round(f.meta["position_ms"]) for f in frames] == [0, 100, 200, 300, 400]
    assert all(a.timestamp <= b.timestamp for a, b in zip(frames, frames[1:]))
    assert source.describe()["fps"] == pytest.approx(10.0)

    looped = open_source(str(path), loop=True)
    assert len([looped.read() for _ in range(12)]) == 12
    looped.close()


def test_broken_video_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(SourceError, match="cannot decode video .*broken.mp4") as caught:
        open_source(str(path)).open()
    assert "\n" not in str(caught.value)


# -- synthetic scenes ----------------------------------------------------------------------------
def test_synthetic_without_fps_is_every_frame_of_the_scene_in_order() -> None:
    source = open_source("synthetic:traffic-signs?seed=2&width=64&height=48&frames=6")
    frames = drain(source)
    assert source.ended and not source.live
    reference = SceneStream("traffic-signs", seed=2, width=64, height=48)
    assert [f.index for f in frames] == list(range(6))
    for got in frames:
        image, truth, meta = reference.frame(got.index)
        assert np.array_equal(got.image, image)
        assert got.truth == truth and got.meta == meta
        assert got.source == "synthetic:traffic-signs"
    assert source.stats.dropped == 0 and source.stats.delivered == 6


class GatedSleep:
    """A camera's frame pacing under the test's control: each wait for the next frame takes one
    permit (``allow``), and moves the fake clock by the wait. ``waiting`` tells when the
    capture thread is parked for its next permit, so the frames captured so far are known."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.permits = threading.Semaphore(0)
        self.waiting = threading.Event()

    def __call__(self, seconds: float) -> None:
        self.clock.sleep(seconds)
        self.waiting.set()
        self.permits.acquire()
        self.waiting.clear()

    def allow(self, frames: int) -> None:
        """Let the camera capture ``frames`` more frames, and wait until it has."""
        for _ in range(frames):
            self.waiting.clear()
            self.permits.release()
            assert wait_until(self.waiting.is_set)


def test_synthetic_with_fps_paces_like_a_camera_and_drops_for_a_slow_reader() -> None:
    clock = FakeClock(start=0.0)
    pacing = GatedSleep(clock)
    source = open_source(
        "synthetic:banknotes?fps=100&frames=30&width=64&height=48", clock=clock, sleep=pacing
    )
    assert source.live
    frames = []
    with source:
        assert wait_until(pacing.waiting.is_set)  # frame 0 is captured, frame 1 waits its turn
        while len(frames) < 9:
            got = source.read(timeout=5)
            assert got is not None
            frames.append(got)
            # A slow model: the camera captures three more frames while it works on this one.
            pacing.allow(3)
        # The reader always gets the newest frame captured, not the oldest one unread: a
        # buffer that queued frames would hand over frame 1, then 2, ... here.
        assert [f.index for f in frames] == [0, 3, 6, 9, 12, 15, 18, 21, 24]
        pacing.allow(1)  # frame 28
        pacing.permits.release()  # frame 29, after which the stream ends by design
        assert wait_until(lambda: source.stats_snapshot()["captured"] == 30)
        last = source.read(timeout=5)
        assert last is not None and last.index == 29
        assert source.read(timeout=5) is None and source.ended
    stats = source.stats
    assert stats.captured == 30 and stats.delivered == 10
    assert stats.dropped == 20 and stats.captured == stats.delivered + stats.dropped
    # 30 frames at 100 fps cannot arrive faster than the pace: 29 periods on the camera's clock.
    assert clock.now == pytest.approx(0.29) and clock.sleeps
    assert all(pause == pytest.approx(0.01) for pause in clock.sleeps)
    reference = SceneStream("banknotes", seed=0, width=64, height=48)
    assert all(f.truth == reference.frame(f.index)[1] for f in frames)


def test_synthetic_pacing_sleeps_one_period_per_frame() -> None:
    clock = FakeClock()
    source = SyntheticSource(
        "synthetic:traffic-signs", fps=25, frames=5, width=32, height=32,
        clock=clock, sleep=clock.sleep,
    )
    with source:
        assert wait_until(lambda: source.ended or source.stats.captured == 5)
    assert clock.sleeps == pytest.approx([0.04] * 4)


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(SourceError, match=r"unknown synthetic scenario 'cats' \(known: banknotes"):
        open_source("synthetic:cats").read()


# -- live machinery: back-off and the latest-frame buffer ----------------------------------------
@given(
    attempt=st.integers(0, 10_000),
    rand=st.floats(0, 1, exclude_max=True),
    initial=st.floats(0.01, 5),
    jitter=st.floats(0, 0.99),
)
def test_backoff_is_bounded_and_jittered_within_its_band(
    attempt: int, rand: float, initial: float, jitter: float
) -> None:
    policy = ReconnectPolicy(initial_s=initial, max_s=initial * 20, jitter=jitter)
    delay = backoff_delay(attempt, policy, rand)
    base = min(policy.max_s, initial * 2.0**min(attempt, 64))
    assert (1 - jitter) * base - 1e-9 <= delay <= base + 1e-9 <= policy.max_s + 1e-9
    if attempt > 0:
        assert backoff_delay(attempt, policy, 0.0) >= backoff_delay(attempt - 1, policy, 0.0)


def test_backoff_schedule_without_jitter_doubles_up_to_the_cap() -> None:
    policy = ReconnectPolicy(initial_s=0.5, max_s=4.0, jitter=0.0)
    assert [backoff_delay(n, policy, 0.9) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    with pytest.raises(ConfigError):
        ReconnectPolicy(initial_s=2.0, max_s=1.0)
    with pytest.raises(ConfigError):
        ReconnectPolicy(jitter=1.0)


def test_latest_frame_buffer_keeps_only_the_newest() -> None:
    buffer = LatestFrameBuffer()
    assert buffer.get(timeout=0.01) is None
    assert buffer.put(frame(0)) is False
    assert buffer.put(frame(1)) is True  # frame 0 was never read: dropped
    got = buffer.get(timeout=0)
    assert got is not None and got.index == 1
    buffer.put(frame(2))
    buffer.finish()
    last = buffer.get()
    assert last is not None and last.index == 2 and buffer.get() is None and buffer.ended


def test_latest_frame_buffer_wakes_a_blocked_reader() -> None:
    buffer = LatestFrameBuffer()
    got: list[Frame | None] = []
    reader = threading.Thread(target=lambda: got.append(buffer.get()))
    reader.start()
    time.sleep(0.05)
    buffer.put(frame(7))
    reader.join(2)
    assert got and got[0] is not None and got[0].index == 7
    buffer.fail(SourceError("gone"))
    with pytest.raises(SourceError, match="gone"):
        buffer.get()


# -- OpenCV cameras (fake VideoCapture) ----------------------------------------------------------
def test_camera_uris() -> None:
    assert parse_camera_uri("camera:2") == (2, cv2.CAP_ANY)
    assert parse_camera_uri("v4l2:///dev/video1") == ("/dev/video1", cv2.CAP_V4L2)
    assert parse_camera_uri("v4l2:0") == (0, cv2.CAP_V4L2)
    with pytest.raises(ConfigError, match="camera:N"):
        parse_camera_uri("camera:front")


def test_camera_is_configured_and_frames_arrive_in_rgb_with_timestamps() -> None:
    camera = FakeCamera(sessions=(5,), outage_opens=0)
    source = open_source(
        "v4l2:///dev/video0?width=320&height=240&fps=15&fourcc=MJPG",
        capture_factory=camera.factory,
        give_up_after_s=0,
    )
    before = time.monotonic()
    with source:
        first = source.read(timeout=5)
        assert first is not None
        assert camera.open_calls[0] == ("/dev/video0", cv2.CAP_V4L2)
        set_order = camera.captures[0].set_order
        assert set_order[0] == cv2.CAP_PROP_FOURCC  # the pixel format before the size
        assert camera.captures[0].props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter.fourcc(*"MJPG")
        info = source.describe()
        assert (info["width"], info["height"], info["fps"]) == (320, 240, 15.0)
        with pytest.raises(SourceError, match="did not come back within 0 s"):
            drain(source)
    assert before <= first.timestamp <= time.monotonic()
    assert first.image[1, 1].tolist() == CAMERA_RGB  # BGR from the driver, RGB out
    assert first.image[0, 0].tolist()[0] == 200  # red of pixel (0, 0)
    assert first.source == "v4l2:///dev/video0"


def test_unreachable_camera_fails_at_open_with_one_line() -> None:
    camera = FakeCamera(sessions=())
    source = open_source("camera:3", capture_factory=camera.factory)
    with pytest.raises(SourceError) as caught:
        source.open()
    message = str(caught.value)
    assert message.startswith("cannot open camera camera:3") and "\n" not in message
    assert len(camera.open_calls) == 1  # no retry at open: a wrong address fails fast


def test_real_opencv_reports_a_missing_camera() -> None:
    with pytest.raises(SourceError, match="cannot open camera v4l2:///dev/video-missing"):
        open_source("v4l2:///dev/video-missing").open()


def test_camera_that_disconnects_and_comes_back_is_reopened_with_backoff() -> None:
    camera = FakeCamera(sessions=(3, 3), outage_opens=2, read_delay_s=0.005)
    clock = FakeClock()
    source = OpenCVCameraSource(
        "camera:0",
        capture_factory=camera.factory,
        reconnect_initial_s=0.5,
        reconnect_max_s=4.0,
        reconnect_jitter=0.25,
        give_up_after_s=10.0,
        clock=clock,
        sleep=clock.sleep,
        rand=lambda: 0.5,
    )
    frames: list[Frame] = []
    with source:
        with pytest.raises(SourceError) as caught:
            while (got := source.read(timeout=5)) is not None:
                frames.append(got)
    # Six frames over two connections: each delivered or dropped (latest frame wins), and the
    # last one of the second connection is delivered before the failure is raised.
    assert frames[-1].image[0, 0, 1] == 1
    assert source.stats.captured == 6
    assert source.stats.captured == source.stats.delivered + source.stats.dropped
    assert source.stats.reconnects == 1
    # Outage 1: two failed opens and one that works. Outage 2: the camera never returns and the
    # source gives up before its waits would pass 10 s. Each wait is 0.5 * 2**n, minus jitter.
    shrink = 1 - 0.25 * 0.5
    first_outage = [0.5 * shrink, 1.0 * shrink, 2.0 * shrink]
    second_outage = [0.5 * shrink, 1.0 * shrink, 2.0 * shrink, 4.0 * shrink]  # capped at 4 s
    assert clock.sleeps == pytest.approx(first_outage + second_outage)
    assert sum(second_outage) <= 10.0 < sum(second_outage) + 4.0 * shrink
    assert len(camera.open_calls) == 1 + 3 + 4
    message = str(caught.value)
    assert "camera:0: lost the device and it did not come back within 10 s" in message
    assert "(4 reconnect attempts)" in message and "\n" not in message
    assert camera.releases >= 2


def test_slow_reader_gets_the_newest_frame_and_drops_are_counted() -> None:
    gate = threading.Semaphore(30)  # the driver hands over exactly 30 frames, then waits
    camera = FakeCamera(sessions=(None,), gate=gate)
    source = open_source("camera:0", capture_factory=camera.factory)
    with source:
        assert wait_until(lambda: source.stats_snapshot()["captured"] == 30)
        # The newest of the 30, not the oldest unread one (a queue would hand over 0, or 26
        # for a queue of four that drops its oldest).
        newest = source.read(timeout=5)
        assert newest is not None and newest.index == 29
        gate.release(3)
        assert wait_until(lambda: source.stats_snapshot()["captured"] == 33)
        second = source.read(timeout=5)
        assert second is not None and second.index == 32
        gate.release(10**6)  # let the capture thread run, so that closing can stop it
    drain(source, timeout=0.5)  # whatever was captured before close
    stats = source.stats
    assert stats.dropped >= 30
    assert stats.captured == stats.delivered + stats.dropped
    assert source.read(timeout=0.1) is None and source.ended


def test_close_stops_a_source_blocked_in_reconnect_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    camera = FakeCamera(sessions=(1,), outage_opens=10**6)
    source = open_source(
        "camera:0",
        capture_factory=camera.factory,
        reconnect_initial_s=1000,
        reconnect_max_s=1000,
        give_up_after_s=10_000,
    )
    source.open()
    assert wait_until(lambda: camera.session == 1)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.sources.live"):
        source.close()
    # The reconnect wait is 1000 s: close() only returns with the thread gone (no warning that
    # it is still busy after close's 5 s join) when closing interrupts the wait.
    assert "still busy" not in caplog.text
    assert [f.index for f in drain(source, timeout=0.1)] == [0]
    assert source.ended


# -- network streams -----------------------------------------------------------------------------
def test_mjpeg_over_http_is_read_and_reconnected_after_the_server_hangs_up() -> None:
    with MjpegServer(frames_per_connection=10) as server:
        source = open_source(server.url, reconnect_initial_s=0.05, give_up_after_s=10)
        assert isinstance(source, NetworkStreamSource)
        frames = []
        with source:
            while len(frames) < 25:
                got = source.read(timeout=10)
                assert got is not None
                frames.append(got)
        assert server.connections >= 2 and source.stats.reconnects >= 1
    assert frames[0].image.shape == (48, 64, 3)
    assert frames[0].image[10, 10, 0] > 180 and frames[0].image[10, 10, 2] < 60  # red, in RGB


def test_unreachable_stream_fails_at_open_without_leaking_the_password() -> None:
    url = f"http://viewer:s3cret@127.0.0.1:{free_port()}/stream.mjpg"
    source = open_source(url, open_timeout_s=2)
    with pytest.raises(SourceError) as caught:
        source.open()
    message = str(caught.value)
    assert message.startswith("cannot open stream http://viewer:***@127.0.0.1:")
    assert "s3cret" not in message and "s3cret" not in source.describe()["uri"]


def test_rtsp_uses_tcp_and_ffmpeg_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    camera = FakeCamera(sessions=(2,))
    source = open_source(
        "rtsp://cam.local:554/live", capture_factory=camera.factory, open_timeout_s=3
    )
    with source:
        assert source.read(timeout=5) is not None
    target, api, params = camera.open_calls[0]
    assert (target, api) == ("rtsp://cam.local:554/live", cv2.CAP_FFMPEG)
    assert params[:2] == [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 3000]
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;tcp"


# -- GStreamer and Jetson CSI --------------------------------------------------------------------
def test_csi_pipeline_reads_nvargus_into_bgr_appsink() -> None:
    pipeline = csi_pipeline(1, width=1920, height=1080, fps=30, flip=2)
    assert pipeline.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "nvvidconv flip-method=2" in pipeline and "format=BGRx" in pipeline
    assert pipeline.endswith("videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")


def test_gstreamer_support_is_read_from_the_build_information() -> None:
    assert gstreamer_enabled("  Video I/O:\n    GStreamer:                   YES (1.20.3)\n")
    assert not gstreamer_enabled("  Video I/O:\n    GStreamer:                   NO\n")
    assert not gstreamer_enabled("")


def test_csi_camera_opens_through_gstreamer_when_opencv_has_it() -> None:
    camera = FakeCamera(sessions=(3,))
    source = open_source(
        "csi://0?width=640&height=480&fps=60",
        capture_factory=camera.factory,
        build_information="    GStreamer:   YES (1.20.3)\n",
    )
    assert isinstance(source, GStreamerSource)
    with source:
        got = source.read(timeout=5)
    assert got is not None and got.image[1, 1].tolist() == CAMERA_RGB
    target, api = camera.open_calls[0]
    assert api == cv2.CAP_GSTREAMER
    assert target == csi_pipeline(0, width=640, height=480, fps=60)


def test_gstreamer_without_support_names_the_fix() -> None:
    if gstreamer_enabled(cv2.getBuildInformation()):
        pytest.skip("this OpenCV has GStreamer; the missing-support message cannot be shown")
    with pytest.raises(SourceError) as caught:
        open_source("gst:videotestsrc ! videoconvert ! appsink").open()
    message = str(caught.value)
    assert "built without GStreamer" in message and "--system-site-packages" in message
    assert "\n" not in message


def test_gstreamer_pipeline_needs_an_appsink() -> None:
    with pytest.raises(ConfigError, match="must end in appsink"):
        open_source("gst:videotestsrc ! autovideosink")


# -- Raspberry Pi camera (fake picamera2 module) -------------------------------------------------
@pytest.fixture
def scene() -> np.ndarray:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0] = 250  # strongly red, a little green, no blue: a swap is obvious
    rgb[..., 1] = np.arange(64, dtype=np.uint8)[None, :]
    rgb[:24, :, 2] = 7
    return rgb


@pytest.mark.parametrize("pixel_format", ["RGB888", "BGR888", "XRGB8888", "XBGR8888"])
def test_picamera2_frames_arrive_in_rgb_order_for_every_format(
    monkeypatch: pytest.MonkeyPatch, scene: np.ndarray, pixel_format: str
) -> None:
    module = fake_picamera2_module(scene)
    monkeypatch.setitem(sys.modules, "picamera2", module)
    source = open_source(
        f"picamera2:0?width=64&height=48&fps=30&pixel_format={pixel_format}",
    )
    assert isinstance(source, Picamera2Source)
    with source:
        got = source.read(timeout=5)
        camera = module.Picamera2.instances[0]  # type: ignore[attr-defined]
        assert camera.config["main"] == {"size": (64, 48), "format": pixel_format}
        assert camera.config["controls"] == {"FrameRate": 30.0}
    assert got is not None
    assert np.array_equal(got.image, scene)
    assert camera.closed and not camera.started


def test_picamera2_default_format_is_rgb888_converted_once(
    monkeypatch: pytest.MonkeyPatch, scene: np.ndarray
) -> None:
    module = fake_picamera2_module(scene)
    monkeypatch.setitem(sys.modules, "picamera2", module)
    source = open_source("picamera2:0", width=64, height=48)
    with source:
        got = source.read(timeout=5)
    assert module.Picamera2.instances[0].config["main"]["format"] == "RGB888"  # type: ignore[attr-defined]
    assert got is not None and got.image[0, 5].tolist() == [250, 5, 7]


def test_picamera2_missing_camera_and_missing_package(
    monkeypatch: pytest.MonkeyPatch, scene: np.ndarray
) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2_module(scene, cameras=1))
    with pytest.raises(SourceError, match=r"no Raspberry Pi camera 1 \(found 1\)"):
        open_source("picamera2:1").open()
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(MissingDependencyError, match=r"edge-classify\[rpi\]"):
        open_source("picamera2:0").open()
    with pytest.raises(ConfigError, match="not supported"):
        open_source("picamera2:0", pixel_format="YUV420")


def test_paced_frames_cycle_through_their_pictures_and_refuse_nothing_to_show() -> None:
    from edge_runtime.errors import ConfigError
    from edge_runtime.sources.live import PacedFrames

    pictures = [np.full((4, 4, 3), value, np.uint8) for value in (10, 20)]
    camera = PacedFrames(pictures, fps=1e6)
    taken = [int(camera._capture().image[0, 0, 0]) for _ in range(4)]
    assert taken == [20, 10, 20, 10]
    with pytest.raises(ConfigError):
        PacedFrames([], fps=30)
    with pytest.raises(ConfigError):
        PacedFrames(pictures, fps=0)
