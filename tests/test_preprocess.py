"""The one preprocessing path: exact pixels for each resize mode, channel order, ROI, float path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.errors import PreprocessError
from edge_runtime.preprocess import (
    PreprocessSpec,
    Roi,
    center_crop_box,
    decode_image,
    letterbox_box,
    prepare,
    prepare_file,
    prepare_float,
    quantize_pixels,
    read_image,
)


def gray_ramp(height: int, width: int) -> np.ndarray:
    """An RGB image whose R channel numbers the pixels, G is R+1 and B is R+2 (all distinct)."""
    values = (np.arange(height * width, dtype=np.uint8) * 4).reshape(height, width)
    return np.stack([values, values + 1, values + 2], axis=-1)


def test_squash_nearest_picks_exact_pixels() -> None:
    image = gray_ramp(4, 4)
    out = prepare(image, PreprocessSpec(2, 2, "squash", "nearest"))
    np.testing.assert_array_equal(out, image[::2, ::2])


def test_squash_area_averages_blocks() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2, :2] = (10, 20, 30)
    image[:2, 2:] = (40, 50, 60)
    image[2:, :2] = (70, 80, 90)
    image[2:, 2:] = (100, 110, 120)
    image[0, 0] = (14, 24, 34)  # one brighter pixel: the block mean moves by exactly 1
    out = prepare(image, PreprocessSpec(2, 2, "squash", "area"))
    expected = np.array(
        [[(11, 21, 31), (40, 50, 60)], [(70, 80, 90), (100, 110, 120)]], dtype=np.uint8
    )
    np.testing.assert_array_equal(out, expected)


def test_squash_changes_aspect_ratio() -> None:
    image = gray_ramp(2, 6)
    out = prepare(image, PreprocessSpec(2, 3, "squash", "nearest"))
    np.testing.assert_array_equal(out, image[:, ::2])


def test_center_crop_keeps_the_middle() -> None:
    image = gray_ramp(2, 6)
    out = prepare(image, PreprocessSpec(2, 2, "center-crop", "nearest"))
    np.testing.assert_array_equal(out, image[:, 2:4])
    tall = gray_ramp(6, 2)
    np.testing.assert_array_equal(
        prepare(tall, PreprocessSpec(2, 2, "center-crop", "nearest")), tall[2:4, :]
    )


def test_center_crop_then_resize() -> None:
    image = gray_ramp(4, 8)  # wide: the centre 4x4 is kept, then halved
    out = prepare(image, PreprocessSpec(2, 2, "center-crop", "nearest"))
    np.testing.assert_array_equal(out, image[:, 2:6][::2, ::2])


def test_letterbox_pads_with_fill() -> None:
    image = gray_ramp(2, 4)
    out = prepare(image, PreprocessSpec(4, 4, "letterbox", "nearest", fill=7))
    assert (out[0] == 7).all() and (out[3] == 7).all()
    np.testing.assert_array_equal(out[1:3], image)


def test_letterbox_downscales_and_centres() -> None:
    image = np.full((4, 8, 3), 200, np.uint8)
    out = prepare(image, PreprocessSpec(4, 4, "letterbox", "area"))
    expected = np.zeros((4, 4, 3), np.uint8)
    expected[1:3] = 200
    np.testing.assert_array_equal(out, expected)
    tall = np.full((8, 2, 3), 50, np.uint8)
    out = prepare(tall, PreprocessSpec(4, 4, "letterbox", "area"))
    assert (out[:, :1] == 0).all() and (out[:, 1:2] == 50).all() and (out[:, 2:] == 0).all()


def test_geometry_helpers() -> None:
    assert center_crop_box(480, 640, 224, 224) == (80, 0, 560, 480)
    assert center_crop_box(640, 480, 224, 224) == (0, 80, 480, 560)
    assert letterbox_box(480, 640, 224, 224) == (0, 28, 224, 196)
    assert letterbox_box(100, 100, 50, 100) == (25, 0, 75, 50)


def test_roi_crop_before_resize() -> None:
    image = gray_ramp(4, 4)
    spec = PreprocessSpec(2, 2, "squash", "nearest", roi=Roi(0.5, 0.5, 0.5, 0.5))
    np.testing.assert_array_equal(prepare(image, spec), image[2:, 2:])
    assert Roi.parse("0.25,0,0.5,1").box(4, 4) == (1, 0, 3, 4)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "0.5,0.5,0.6,0.1", "0,0,0,1", "-0.1,0,1,1"])
def test_bad_roi(text: str) -> None:
    with pytest.raises(PreprocessError):
        Roi.parse(text)


def test_channel_order_rgb_and_bgr() -> None:
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    rgb = prepare(red, PreprocessSpec(2, 2))
    assert rgb[0, 0].tolist() == [255, 0, 0]
    bgr = prepare(red, PreprocessSpec(2, 2, channel_order="BGR"))
    assert bgr[0, 0].tolist() == [0, 0, 255]


def test_decoding_gives_rgb(tmp_path: Path) -> None:
    # A file with a red left half and a blue right half, as any camera or editor writes it.
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:, :2] = (255, 0, 0)
    rgb[:, 2:] = (0, 0, 255)
    path = tmp_path / "redblue.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image(path), rgb)
    np.testing.assert_array_equal(decode_image(path.read_bytes()), rgb)
    np.testing.assert_array_equal(prepare_file(path, PreprocessSpec(4, 4)), rgb)


def test_decoding_gray_and_alpha(tmp_path: Path) -> None:
    gray = np.full((3, 3), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert read_image(tmp_path / "g.png")[1, 1].tolist() == [77, 77, 77]
    bgra = np.zeros((3, 3, 4), np.uint8)
    bgra[..., 2] = 255  # red in BGRA order
    bgra[..., 3] = 255
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    assert read_image(tmp_path / "a.png")[0, 0].tolist() == [255, 0, 0]


def test_decode_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(PreprocessError, match="notes.txt: not a readable image"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(PreprocessError, match="cannot read image"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(PreprocessError, match="empty"):
        decode_image(b"")


@pytest.mark.parametrize("mode", ["squash", "center-crop", "letterbox"])
@pytest.mark.parametrize("interpolation", ["nearest", "linear", "area", "cubic", "lanczos"])
def test_float_path_equals_uint8_cast(mode: str, interpolation: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    spec = PreprocessSpec(16, 24, mode, interpolation)  # type: ignore[arg-type]
    as_uint8 = prepare(image, spec)
    as_float = prepare_float(image, spec)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, as_uint8.astype(np.float32))
    out = np.empty(spec.shape, np.float32)
    scratch = np.empty(spec.shape, np.uint8)
    assert prepare_float(image, spec, out=out, scratch=scratch) is out
    np.testing.assert_array_equal(out, as_float)


@pytest.mark.parametrize("mode", ["squash", "center-crop", "letterbox"])
def test_writes_into_preallocated_buffer(mode: str) -> None:
    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    spec = PreprocessSpec(8, 8, mode)  # type: ignore[arg-type]
    out = np.empty(spec.shape, np.uint8)
    result = prepare(image, spec, out=out)
    assert result is out
    np.testing.assert_array_equal(out, prepare(image, spec))
    with pytest.raises(PreprocessError, match="output buffer"):
        prepare(image, spec, out=np.empty((8, 8, 3), np.float32))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4, 3), np.float32),
        np.zeros((0, 4, 3), np.uint8),
    ],
)
def test_rejects_bad_frames(bad: np.ndarray) -> None:
    with pytest.raises(PreprocessError):
        prepare(bad, PreprocessSpec(2, 2))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 0, "width": 2},
        {"height": 2, "width": 2, "resize": "stretch"},
        {"height": 2, "width": 2, "interpolation": "bilinear"},
        {"height": 2, "width": 2, "fill": 300},
        {"height": 2, "width": 2, "channel_order": "RBG"},
    ],
)
def test_rejects_bad_specs(kwargs: dict) -> None:
    with pytest.raises(PreprocessError):
        PreprocessSpec(**kwargs)


def test_quantize_pixels() -> None:
    pixels = np.array([0, 1, 127, 128, 200, 255], np.uint8)
    np.testing.assert_array_equal(quantize_pixels(pixels, np.uint8, 1.0, 0), pixels)
    np.testing.assert_array_equal(
        quantize_pixels(pixels, np.int8, 1.0, -128), [-128, -127, -1, 0, 72, 127]
    )
    np.testing.assert_array_equal(
        quantize_pixels(pixels, np.uint8, 2.0, 10), [10, 10, 74, 74, 110, 138]
    )
    # A scale/zero point that pushes values out of range is clipped, never wrapped.
    np.testing.assert_array_equal(quantize_pixels(pixels, np.int8, 1.0, 0)[-1], 127)
    with pytest.raises(PreprocessError):
        quantize_pixels(pixels, np.float32, 1.0, 0)
    with pytest.raises(PreprocessError):
        quantize_pixels(pixels, np.uint8, 0.0, 0)


@settings(max_examples=60, deadline=None)
@given(
    src=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    dst=st.tuples(st.integers(1, 24), st.integers(1, 24)),
    mode=st.sampled_from(["squash", "center-crop", "letterbox"]),
    interpolation=st.sampled_from(["nearest", "linear", "area", "cubic", "lanczos"]),
)
def test_any_size_gives_the_model_shape(
    src: tuple[int, int], dst: tuple[int, int], mode: str, interpolation: str
) -> None:
    image = np.random.default_rng(src[0] * 41 + src[1]).integers(0, 256, (*src, 3), dtype=np.uint8)
    spec = PreprocessSpec(dst[0], dst[1], mode, interpolation)  # type: ignore[arg-type]
    out = prepare(image, spec)
    assert out.shape == (dst[0], dst[1], 3) and out.dtype == np.uint8
    if image.min() == image.max() and mode != "letterbox":
        assert (out == image[0, 0]).all()


# -- area downscaling through the integral image ---------------------------------------------
def exact_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Box means computed in float64 with the box-coverage weights OpenCV's INTER_AREA uses."""

    def weights(source: int, output: int) -> np.ndarray:
        edges = np.arange(output + 1) * (source / output)
        pixels = np.arange(source)
        overlap = np.minimum(edges[1:, None], pixels + 1) - np.maximum(edges[:-1, None], pixels)
        return np.clip(overlap, 0, None) / (source / output)

    wy, wx = weights(image.shape[0], height), weights(image.shape[1], width)
    rows = np.tensordot(wy, image.astype(np.float64), axes=(1, 0))  # (height, W, 3)
    return np.tensordot(rows, wx, axes=(1, 1)).transpose(0, 2, 1)  # (height, width, 3)


def assert_box_means(ours: np.ndarray, image: np.ndarray) -> None:
    """``ours`` is the box mean of ``image`` rounded to the nearest level, and differs from
    OpenCV's INTER_AREA only at ties.

    Both area paths compute the sums in float32: within about 1e-5 of a level of the exact mean
    for these sizes (sums below 2**24, relative error ~1e-7 per step), so 1e-3 is a margin of
    100x, and a value can only round the other way when its mean is within that of x.5.
    """
    height, width = ours.shape[:2]
    exact = exact_area(image, height, width)
    assert np.abs(ours - exact).max() <= 0.5 + 1e-3
    opencv = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    difference = np.abs(ours.astype(int) - opencv.astype(int))
    assert difference.max() <= 1
    ties = np.isclose(exact - np.floor(exact), 0.5, atol=1e-3)
    assert np.all(ties[difference > 0])


@pytest.mark.parametrize(
    ("source", "output"),
    [
        ((720, 1280), (96, 96)),
        ((480, 640), (96, 96)),
        ((929, 512), (128, 128)),
        ((300, 500), (7, 13)),
    ],
)
def test_integral_area_is_correctly_rounded_and_matches_opencv(
    source: tuple[int, int], output: tuple[int, int]
) -> None:
    from edge_runtime.preprocess.area import area_downscale, plan_for

    rng = np.random.default_rng(sum(source))
    image = rng.integers(0, 256, (*source, 3), dtype=np.uint8)
    plan = plan_for(*source, *output)
    assert plan is not None
    ours = area_downscale(image, plan, np.empty((*output, 3), np.uint8))
    assert_box_means(ours, image)


@pytest.mark.parametrize(
    ("source", "output"),
    [
        ((720, 1280), (96, 96)),  # 2 row residues, the default camera into the bundled models
        ((720, 1280), (224, 224)),  # 14 residues
        ((480, 640), (128, 128)),
        ((1080, 1920), (160, 160)),
        ((160, 160), (96, 96)),  # 1.7x: boxes of two rows, one of them partial
        ((100, 100), (80, 91)),  # 1.25x: boxes with no whole row at all
        ((97, 61), (13, 7)),  # odd sizes, 97 = 7 * 13 + 6
        ((5, 7), (3, 2)),  # a tiny frame
        ((470, 640), (96, 640)),  # rows only, 48 residues
        ((64, 1280), (64, 96)),  # columns only (no row reduction)
        ((400, 36), (12, 36)),  # whole rows per box, whole columns
    ],
)
def test_separable_area_is_the_box_mean(source: tuple[int, int], output: tuple[int, int]) -> None:
    from edge_runtime.preprocess.separable import separable_downscale, separable_plan

    rng = np.random.default_rng(sum(source) + sum(output))
    image = rng.integers(0, 256, (*source, 3), dtype=np.uint8)
    plan = separable_plan(*source, *output)
    assert plan is not None
    ours = separable_downscale(image, plan, np.empty((*output, 3), np.uint8))
    assert_box_means(ours, image)
    # Sharp edges (the case that separates an area filter from a cascade of cheaper ones):
    # a checkerboard of 0 and 255 with an odd cell size.
    board = ((np.indices(source).sum(axis=0) // 3) % 2 * 255).astype(np.uint8)
    board = np.repeat(board[..., None], 3, axis=2)
    assert_box_means(separable_downscale(board, plan, np.empty((*output, 3), np.uint8)), board)
    # prepare runs this path for it
    assert np.array_equal(prepare(image, PreprocessSpec(*output)), ours)


def test_separable_area_on_views() -> None:
    """Row-strided views (crops) run in place; other layouts are packed first; same means."""
    from edge_runtime.preprocess.separable import separable_downscale, separable_plan

    rng = np.random.default_rng(11)
    frame = rng.integers(0, 256, (720, 1300, 3), dtype=np.uint8)
    plan = separable_plan(720, 640, 96, 96)
    assert plan is not None
    views = {
        "crop": frame[:, 17:657],
        "every other column": frame[:, ::2][:, :640],
        "channels reversed": frame[:, :640, ::-1],
        "fortran order": np.asfortranarray(frame[:, :640]),
    }
    for name, view in views.items():
        ours = separable_downscale(view, plan, np.empty((96, 96, 3), np.uint8))
        packed = np.ascontiguousarray(view)
        assert np.array_equal(ours, separable_downscale(packed, plan, np.empty_like(ours))), name
        assert_box_means(ours, packed)


def test_separable_area_only_where_it_applies() -> None:
    from edge_runtime.preprocess.separable import MAX_RESIDUES, separable_plan

    assert separable_plan(720, 1280, 72, 128) is None  # whole factors: OpenCV's fast path
    assert separable_plan(96, 96, 224, 224) is None  # an upscale
    assert separable_plan(96, 200, 48, 224) is None  # an upscale on one axis
    assert separable_plan(720, 1280, 299, 299) is None  # 299 residues > MAX_RESIDUES
    assert MAX_RESIDUES < 299
    assert separable_plan(720, 1280, 96, 96) is not None


def test_integral_area_only_where_it_pays() -> None:
    from edge_runtime.preprocess.area import plan_for

    assert plan_for(720, 1280, 72, 128) is None  # an integer factor: OpenCV's fast path
    assert plan_for(160, 160, 96, 96) is None  # a small reduction
    assert plan_for(96, 96, 224, 224) is None  # an upscale
    assert plan_for(4000, 6000, 96, 96) is None  # its integral would be too large to keep


def test_integral_area_on_cropped_views_and_in_threads() -> None:
    import threading

    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    # center-crop hands a strided view (the middle 720x720) to the resize
    spec = PreprocessSpec(96, 96, resize="center-crop")
    expected = cv2.resize(frame[:, 280:1000], (96, 96), interpolation=cv2.INTER_AREA)
    assert np.abs(prepare(frame, spec).astype(int) - expected.astype(int)).max() <= 1
    # Each thread keeps its own scratch buffers: concurrent sizes do not mix.
    sizes = [(96, 96), (64, 112), (40, 40), (96, 96)]
    results: dict[int, bool] = {}

    def work(number: int, size: tuple[int, int]) -> None:
        ok = True
        for _ in range(20):
            got = prepare(frame, PreprocessSpec(*size))
            reference = cv2.resize(frame, size[::-1], interpolation=cv2.INTER_AREA)
            ok &= bool(np.abs(got.astype(int) - reference.astype(int)).max() <= 1)
        results[number] = ok

    threads = [threading.Thread(target=work, args=(n, s)) for n, s in enumerate(sizes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == dict.fromkeys(range(len(sizes)), True)
