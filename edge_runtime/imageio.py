"""Decoding images to RGB: the one place where files and bytes become pixels.

Sources (image folders, video) and preprocessing (the exporter's training data) both decode through
here, so an image reads the same on the workstation and the device.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.errors import PreprocessError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff"}
)


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


def decode_image(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, PPM, WebP, TIFF) into RGB uint8 HxWx3.

    Raises:
        PreprocessError: the bytes are not an image the decoder understands.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buffer.size == 0:
        raise PreprocessError("cannot decode an empty file as an image")
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if decoded is None:
        raise PreprocessError("not a readable image (unknown format or corrupt data)")
    return to_rgb(decoded)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read and decode an image file into RGB uint8 HxWx3.

    Raises:
        PreprocessError: the file is missing, unreadable or not an image; the message names it.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PreprocessError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    try:
        return decode_image(data)
    except PreprocessError as exc:
        raise PreprocessError(f"{path}: {exc}") from exc
