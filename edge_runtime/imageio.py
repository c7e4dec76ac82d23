"""Decoding images to RGB: the one place where files and bytes become pixels.

Sources (image folders, video) and preprocessing (the exporter's training data) both decode through
here, so an image reads the same on the workstation and the device. Every image's header is read
first (:func:`read_image_header`, pure Python over the first bytes), so one declaring more pixels
than the limit is refused before the decoder allocates them.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.errors import PreprocessError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff"}
)

#: the largest image decoded unless told otherwise: 50 megapixels (8660x5773) is more than any
#: camera a device carries, and its RGB pixels take 150 MB; OpenCV's own limit (2^30 pixels,
#: 3 GB of RGB) would let a 100 KB file exhaust a Raspberry Pi's memory.
DEFAULT_MAX_PIXELS = 50_000_000
_METADATA_ALLOWANCE = 16 << 20
# Headers are found in the first megabyte (a JPEG's frame header may follow 64 KB EXIF blocks).
_HEADER_BYTES = 1 << 20


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in a suffix the decoder reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def to_rgb(image: np.ndarray, order: str = "BGR") -> np.ndarray:
    """Turn a decoded gray, BGR or BGRA (or RGB/RGBA with ``order='RGB'``) image into RGB uint8.

    Raises:
        PreprocessError: the array is not an 8-bit image with 1, 3 or 4 channels.
    """
    if image.dtype != np.uint8:
        raise PreprocessError(f"expected an 8-bit image, got dtype {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise PreprocessError(f"expected an image with 1, 3 or 4 channels, got shape {image.shape}")
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if order == "BGR" else cv2.COLOR_RGBA2RGB)
    if order == "BGR":
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header declares: its format and size in pixels."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _u16(data: bytes, at: int, order: str) -> int:
    return int(struct.unpack_from(f"{order}H", data, at)[0])


def _u32(data: bytes, at: int, order: str) -> int:
    return int(struct.unpack_from(f"{order}I", data, at)[0])


def _png(data: bytes) -> tuple[int, int]:
    # The IHDR chunk comes first: length, "IHDR", width, height (big-endian).
    if data[12:16] != b"IHDR":
        raise ValueError("no IHDR chunk")
    return _u32(data, 16, ">"), _u32(data, 20, ">")


# Start-of-frame markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) are no frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(data: bytes) -> tuple[int, int]:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ValueError("no marker where one was expected")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        length = _u16(data, at + 2, ">")
        if marker in _JPEG_SOF:
            height, width = _u16(data, at + 5, ">"), _u16(data, at + 7, ">")
            return width, height
        if marker == 0xDA or length < 2:  # entropy-coded data before any frame header
            break
        at += 2 + length
    raise ValueError("no frame header")


def _bmp(data: bytes) -> tuple[int, int]:
    if _u32(data, 14, "<") == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return _u16(data, 18, "<"), _u16(data, 20, "<")
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)  # a negative height means rows stored top-down


def _webp(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: 24-bit canvas size minus one
        width = int.from_bytes(data[24:27], "little") + 1
        return width, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, after the 0x2F signature
        bits = _u32(data, 21, "<")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":  # lossy: after the frame tag and the 9D 01 2A start code
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("no VP8 start code")
        return _u16(data, 26, "<") & 0x3FFF, _u16(data, 28, "<") & 0x3FFF
    raise ValueError("unknown WebP chunk")


def _tiff(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    big = _u16(data, 2, order) == 43  # BigTIFF: 64-bit offsets and counts
    if big:
        (ifd,) = struct.unpack_from(f"{order}Q", data, 8)
        (count,) = struct.unpack_from(f"{order}Q", data, ifd)
        entry_size, first = 20, ifd + 8
    else:
        ifd = _u32(data, 4, order)
        count, entry_size, first = _u16(data, ifd, order), 12, ifd + 2
    sizes: dict[int, int] = {}
    types = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
    for number in range(min(int(count), 4096)):
        at = first + number * entry_size
        tag, kind = struct.unpack_from(f"{order}HH", data, at)
        if tag in (256, 257) and kind in types:
            value_at = at + (12 if big else 8)
            (sizes[tag],) = struct.unpack_from(f"{order}{types[kind]}", data, value_at)
    if 256 not in sizes or 257 not in sizes:
        raise ValueError("no ImageWidth/ImageLength tags")
    return sizes[256], sizes[257]


def _pnm(data: bytes) -> tuple[int, int]:
    head = data[:4096]
    if head[:2] == b"P7":  # PAM: "WIDTH n" and "HEIGHT n" lines
        width = re.search(rb"^WIDTH\s+(\d+)", head, re.MULTILINE)
        height = re.search(rb"^HEIGHT\s+(\d+)", head, re.MULTILINE)
        if width is None or height is None:
            raise ValueError("no WIDTH/HEIGHT")
        return int(width[1]), int(height[1])
    # PBM/PGM/PPM/PFM: the magic, then width and height, with comments allowed in between.
    text = re.sub(rb"#[^\n]*", b" ", head[2:])
    fields = text.split()
    return int(fields[0]), int(fields[1])


def _gif(data: bytes) -> tuple[int, int]:
    width, height = _u16(data, 6, "<"), _u16(data, 8, "<")
    # The first image may be larger than the logical screen; the decoder sizes for both.
    flags, at = data[10], 13
    if flags & 0x80:
        at += 3 << ((flags & 7) + 1)  # global colour table
    while at < len(data):
        if data[at] == 0x21:  # extension: label, then sub-blocks up to an empty one
            at += 2
            while at < len(data) and data[at]:
                at += data[at] + 1
            at += 1
        elif data[at] == 0x2C:  # image descriptor: left, top, width, height
            left, top, w, h = struct.unpack_from("<HHHH", data, at + 1)
            return max(width, left + w), max(height, top + h)
        else:
            break
    return width, height


def _radiance(data: bytes) -> tuple[int, int]:
    # Header lines up to an empty one, then the resolution line: "-Y 480 +X 640" (or X first).
    match = re.search(rb"\n\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)", data[:65536])
    if match is None:
        raise ValueError("no resolution line")
    first, second = int(match[3]), int(match[6])
    return (second, first) if match[2] == b"Y" else (first, second)


def _sun_raster(data: bytes) -> tuple[int, int]:
    return _u32(data, 4, ">"), _u32(data, 8, ">")


def _boxes(data: bytes) -> tuple[int, int]:
    """JPEG 2000 (``ihdr`` box: height, width) and AVIF/HEIF (``ispe`` property: width, height
    after version and flags); a raw JPEG 2000 codestream's SIZ marker."""
    if data[:4] == b"\xff\x4f\xff\x51":  # codestream: SIZ gives grid size and image offset
        xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", data, 8)
        return xsiz - xo, ysiz - yo
    at = data.find(b"ihdr")
    if at >= 4:
        return _u32(data, at + 8, ">"), _u32(data, at + 4, ">")
    sizes = [
        (_u32(data, m.start() + 8, ">"), _u32(data, m.start() + 12, ">"))
        for m in re.finditer(b"ispe", data)
    ]
    if not sizes:
        raise ValueError("no image size property")
    return max(sizes, key=lambda size: size[0] * size[1])


_HEIF_BRANDS = (b"avif", b"avis", b"heic", b"mif1")
# (format name, test on the first bytes, size reader) for every format OpenCV may decode.
_FORMATS: tuple[tuple[str, Callable[[bytes], bool], Callable[[bytes], tuple[int, int]]], ...] = (
    ("PNG", lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", _png),
    ("JPEG", lambda d: d[:3] == b"\xff\xd8\xff", _jpeg),
    ("BMP", lambda d: d[:2] == b"BM", _bmp),
    ("WebP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", _webp),
    ("TIFF", lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), _tiff),
    ("PNM", lambda d: len(d) > 2 and d[0:1] == b"P" and d[1:2] in b"1234567Ff", _pnm),
    ("GIF", lambda d: d[:6] in (b"GIF87a", b"GIF89a"), _gif),
    ("Radiance HDR", lambda d: d[:10] == b"#?RADIANCE" or d[:6] == b"#?RGBE", _radiance),
    ("Sun raster", lambda d: d[:4] == b"\x59\xa6\x6a\x95", _sun_raster),
    (
        "JPEG 2000",
        lambda d: d[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or d[:4] == b"\xff\x4f\xff\x51",
        _boxes,
    ),
    ("AVIF", lambda d: d[4:8] == b"ftyp" and d[8:12] in _HEIF_BRANDS, _boxes),
)


def read_image_header(data: bytes | bytearray | memoryview | np.ndarray) -> ImageHeader:
    """The format and size an encoded image declares, read from its header without decoding it
    (microseconds, no pixel memory): JPEG, PNG, BMP, WebP, TIFF, PBM/PGM/PPM/PAM/PFM, GIF,
    Radiance HDR, Sun raster, JPEG 2000 and AVIF.

    Raises:
        PreprocessError: not one of these formats, or a header too short or corrupt to tell.
    """
    if isinstance(data, np.ndarray):
        head = data.reshape(-1)[:_HEADER_BYTES].tobytes()
    else:
        head = bytes(data[:_HEADER_BYTES])
    for name, matches, size_of in _FORMATS:
        if matches(head):
            try:
                width, height = size_of(head)
            except (ValueError, IndexError, struct.error) as exc:
                raise PreprocessError(
                    f"not a readable {name} image (corrupt header: {exc})"
                ) from None
            if width <= 0 or height <= 0:
                raise PreprocessError(
                    f"not a readable {name} image (its header declares {width}x{height})"
                )
            return ImageHeader(name, width, height)
    raise PreprocessError("not a readable image (unknown format or corrupt data)")


def check_pixel_limit(header: ImageHeader, max_pixels: int | None) -> None:
    """Refuse an image larger than ``max_pixels`` (None: no limit) before it is decoded: a small
    file can declare a size whose pixels take gigabytes (a decompression bomb).

    Raises:
        PreprocessError: the image is over the limit; the message names both sizes.
    """
    if max_pixels is not None and header.pixels > max_pixels:
        raise PreprocessError(
            f"the {header.format} image is {header.width}x{header.height} "
            f"({header.pixels / 1e6:.1f} megapixels), over the limit of "
            f"{max_pixels / 1e6:g} megapixels (max_pixels)"
        )


def decode_image(
    data: bytes | bytearray | memoryview | np.ndarray,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, PPM, WebP, TIFF, ...) into RGB uint8 HxWx3.

    The header is read first: an image over ``max_pixels`` pixels (None: no limit of ours) is
    refused before any pixel memory is taken.

    Raises:
        PreprocessError: the bytes are not an image the decoder understands, or the image is
            over ``max_pixels``.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buffer.size == 0:
        raise PreprocessError("cannot decode an empty file as an image")
    header = read_image_header(buffer)
    check_pixel_limit(header, max_pixels)
    try:
        decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV's own limits and allocation failures
        reason = str(getattr(exc, "err", "") or exc).strip().splitlines()[-1]
        raise PreprocessError(f"cannot decode the {header.format} image: {reason}") from None
    if decoded is None:
        raise PreprocessError(f"not a readable {header.format} image (corrupt data)")
    return to_rgb(decoded)


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Read and decode an image file into RGB uint8 HxWx3 (see :func:`decode_image`).

    Raises:
        PreprocessError: the file is missing, unreadable, not an image or over ``max_pixels``;
            the message names it.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            # No image within the limit needs more than 16 bytes a pixel (RGBA, 32-bit floats).
            if max_pixels is not None and size > 16 * max_pixels + _METADATA_ALLOWANCE:
                raise PreprocessError(
                    f"{path}: the file is {size / 1e6:.0f} MB, more than any image within the "
                    f"limit of {max_pixels / 1e6:g} megapixels (max_pixels) can take"
                )
            data = handle.read()
    except OSError as exc:
        raise PreprocessError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    try:
        return decode_image(data, max_pixels=max_pixels)
    except PreprocessError as exc:
        raise PreprocessError(f"{path}: {exc}") from exc
