"""Decoding hostile images: sizes read from headers, decompression bombs refused before any
pixel memory is taken, OpenCV's own errors turned into the runtime's, and the same limit for
every source (image folders skip and count, videos and cameras refuse at open) and `classify`."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.errors import PreprocessError, SourceError
from edge_runtime.imageio import (
    DEFAULT_MAX_PIXELS,
    ImageHeader,
    decode_image,
    read_image,
    read_image_header,
)
from edge_runtime.sources import open_source
from tests.fakes_io import FakeCamera

pytestmark = pytest.mark.timeout(120)

IMAGE = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def encoded(suffix: str) -> bytes | None:
    """IMAGE encoded by OpenCV, or None where this OpenCV cannot write the format."""
    image: np.ndarray = IMAGE
    if suffix in (".pfm", ".hdr"):
        image = IMAGE.astype(np.float32) / 255
    elif suffix in (".pgm", ".pbm"):
        image = IMAGE[..., 0]
    try:
        ok, buffer = cv2.imencode(suffix, image)
    except cv2.error:
        return None
    return buffer.tobytes() if ok else None


@pytest.mark.parametrize(
    "suffix",
    [".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".pgm", ".pbm", ".pam", ".pfm"]
    + [".gif", ".hdr", ".ras", ".jp2", ".avif"],
)
def test_header_sizes_match_the_encoded_image(suffix: str) -> None:
    data = encoded(suffix)
    if data is None:
        pytest.skip(f"this OpenCV cannot write {suffix}")
    header = read_image_header(data)
    assert (header.width, header.height) == (53, 37)
    assert decode_image(data).shape == (37, 53, 3)


def test_header_sizes_of_jpeg_and_webp_variants() -> None:
    _, progressive = cv2.imencode(".jpg", IMAGE, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    _, lossless = cv2.imencode(".webp", IMAGE, [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert lossless.tobytes()[12:16] == b"VP8L"
    assert read_image_header(progressive.tobytes()) == ImageHeader("JPEG", 53, 37)
    assert read_image_header(lossless.tobytes()) == ImageHeader("WebP", 53, 37)


# -- bombs: small files that declare huge images -------------------------------------------------
def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of zeros: 30000x30000 is 109 KB and decodes to 2.7 GB of RGB."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    parts = [compressor.compress(row * 256) for _ in range(height // 256)]
    parts += [compressor.compress(row * (height % 256)), compressor.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def forged_png(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR (with a valid CRC) declares another size."""
    data = bytearray(encoded(".png") or b"")
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def forged(suffix: str, width: int, height: int) -> bytes:
    """A tiny real image of another format whose header declares ``width`` x ``height``."""
    data = bytearray(encoded(suffix) or b"")
    if suffix == ".jpg":
        at = data.find(b"\xff\xc0")
        data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    elif suffix == ".bmp":
        data[18:26] = struct.pack("<ii", width, height)
    elif suffix == ".gif":
        data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def test_bombs_are_refused_from_their_header() -> None:
    for data in (forged_png(30000, 30000), forged(".jpg", 60000, 60000)):
        with pytest.raises(PreprocessError, match=r"over the limit of 50 megapixels"):
            decode_image(data)
    with pytest.raises(PreprocessError, match=r"BMP image is 9000x9000 \(81.0 megapixels\)"):
        decode_image(forged(".bmp", 9000, -9000))  # negative: rows stored top-down
    with pytest.raises(PreprocessError, match="GIF image is 65535x65535"):
        decode_image(forged(".gif", 65535, 65535))
    # The limit is the caller's: a lower one refuses this ordinary picture.
    with pytest.raises(PreprocessError, match="over the limit of 0.001 megapixels"):
        decode_image(encoded(".png") or b"", max_pixels=1000)


def test_opencv_errors_become_preprocess_errors() -> None:
    # Over 2^30 pixels OpenCV refuses the image itself (cv2.error) when ours is switched off.
    with pytest.raises(PreprocessError, match="cannot decode the PNG image"):
        decode_image(forged_png(40000, 40000), max_pixels=None)
    truncated = (encoded(".png") or b"")[:60]
    with pytest.raises(PreprocessError, match="PNG"):
        decode_image(truncated)
    with pytest.raises(PreprocessError, match="not a readable image"):
        decode_image(b"GIF8 but no image at all")


REFUSE_WITHIN_MEMORY = textwrap.dedent(
    """
    import json, resource, sys
    from edge_runtime.errors import PreprocessError
    from edge_runtime.imageio import read_image
    # Room for 512 MB more than what the interpreter holds now: decoding the 30000x30000 bomb
    # needs 2.7 GB, so reaching the decoder fails here instead of taking the machine's memory.
    size_kb = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1])
    limit = size_kb * 1024 + (512 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        read_image(sys.argv[1])
        outcome = "decoded"
    except PreprocessError as exc:
        outcome = str(exc)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"outcome": outcome, "grown_kb": grown_kb}))
    """
)


@pytest.mark.parametrize("kind", ["valid bomb", "forged header"])
def test_a_bomb_is_refused_without_taking_its_memory(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(30000, 30000) if kind == "valid bomb" else forged_png(30000, 30000))
    if kind == "valid bomb":
        assert path.stat().st_size < 120_000
    result = subprocess.run(
        [sys.executable, "-c", REFUSE_WITHIN_MEMORY, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "30000x30000 (900.0 megapixels), over the limit" in report["outcome"]
    assert report["grown_kb"] < 32 * 1024  # the peak memory barely moved


def test_a_file_too_large_for_the_limit_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    with open(path, "wb") as handle:  # sparse: no disk space taken
        handle.write(forged_png(10, 10))
        handle.truncate(16 * 1000 + (16 << 20) + 1)
    with pytest.raises(PreprocessError, match="huge.png: the file is 17 MB, more than any image"):
        read_image(path, max_pixels=1000)


# -- every way in: folder sources, classify, run, videos, cameras --------------------------------
@pytest.fixture
def folder_with_a_bomb(tmp_path: Path) -> Path:
    root = tmp_path / "frames"
    root.mkdir()
    for name in ("a.png", "c.png", "e.png"):
        cv2.imwrite(str(root / name), IMAGE)
    (root / "b.png").write_bytes(bomb_png(30000, 30000))
    (root / "d.png").write_bytes(forged_png(40000, 40000))  # over OpenCV's own 2^30 too
    return root


def test_a_folder_source_skips_and_counts_bombs(
    folder_with_a_bomb: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = open_source(str(folder_with_a_bomb))
    with source:
        frames = list(source)
    assert [Path(f.meta["path"]).name for f in frames] == ["a.png", "c.png", "e.png"]
    assert source.stats.corrupt == 2
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 2 and all("over the limit" in line for line in skipped)


def test_run_and_classify_go_on_past_bombs(
    onnx_bundle: Path, folder_with_a_bomb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--model", str(onnx_bundle), "--source", str(folder_with_a_bomb)]
                + ["--output", "jsonl"])
    out = capsys.readouterr().out
    assert code == 0 and len([line for line in out.splitlines() if line.startswith("{")]) == 3

    images = [str(folder_with_a_bomb / name) for name in ("a.png", "b.png", "d.png", "e.png")]
    code = main(["classify", *images, "--model", str(onnx_bundle), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert [json.loads(line)["image"] for line in captured.out.splitlines()] == [
        images[0],
        images[3],
    ]
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("edge-runtime: error: ") for line in errors)
    assert "b.png: the PNG image is 30000x30000" in errors[0]
    # An explicit limit of our own, lower than the default.
    code = main(["classify", images[0], "--model", str(onnx_bundle), "--max-pixels", "100"])
    assert code == 1 and "over the limit of 0.0001 megapixels" in capsys.readouterr().err


class FakeVideo:
    """cv2.VideoCapture of a video declaring ``width`` x ``height`` frames."""

    def __init__(self, width: int, height: int) -> None:
        self.size = {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height}
        self.released = False

    def __call__(self, *args: Any) -> FakeVideo:
        return self

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return float(self.size.get(prop, 0))

    def release(self) -> None:
        self.released = True


def test_videos_and_cameras_with_huge_frames_are_refused_at_open(tmp_path: Path) -> None:
    video = tmp_path / "bomb.mp4"
    video.write_bytes(b"\x00" * 64)
    capture = FakeVideo(20000, 20000)
    source = open_source(str(video), capture_factory=capture)
    with pytest.raises(SourceError) as caught:
        source.open()
    message = str(caught.value)
    assert message.endswith(
        "has 20000x20000 frames (400.0 megapixels), over the limit of 50 megapixels "
        "(option max_pixels)"
    )
    assert "\n" not in message and capture.released
    fine = open_source(str(video), capture_factory=FakeVideo(640, 480))
    fine.open()
    fine.close()

    camera = FakeCamera(width=9000, height=6000)
    with pytest.raises(SourceError, match="9000x6000 frames"):
        open_source("camera:0", capture_factory=camera.factory).open()
    # The limit is an option of the source, from a URI's query like any other.
    small = open_source("camera:0?max_pixels=500", capture_factory=FakeCamera().factory)
    with pytest.raises(SourceError, match="32x24 frames .* over the limit of 0.0005 megapixels"):
        small.open()
    assert DEFAULT_MAX_PIXELS == 50_000_000
