"""Training-time augmentation of prepared uint8 model inputs (numpy and OpenCV).

Augmentation works on the pixels the device would feed the model (after ``edge_runtime.preprocess``)
and returns uint8 again, so an augmented image is still a possible camera frame. Every draw comes
from the generator passed in: the same generator state gives the same image, which lets augmented
copies be cached as feature variants.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import cv2
import numpy as np

#: bump when the augmentation code changes, so cached feature variants are recomputed
POLICY_VERSION = 1


@dataclass(frozen=True)
class AugmentPolicy:
    """Ranges of the random transforms (each drawn uniformly in +-range).

    ``rotation`` in degrees; ``zoom``, ``shift`` as fractions of the image; ``brightness`` and
    ``contrast`` as relative gains. ``flip`` mirrors half of the images left-right, which is wrong
    for signs, digits and text, so it is off unless asked for.
    """

    rotation: float = 12.0
    zoom: float = 0.12
    shift: float = 0.1
    brightness: float = 0.3
    contrast: float = 0.3
    flip: bool = False

    def key(self) -> str:
        """A stable description of the policy for cache keys."""
        return json.dumps({"version": POLICY_VERSION, **asdict(self)}, sort_keys=True)


def augment_image(image: np.ndarray, rng: np.random.Generator, policy: AugmentPolicy) -> np.ndarray:
    """One random affine + photometric variant of an HxWx3 uint8 image (a new array)."""
    height, width = image.shape[:2]
    # Draw every value every time so the stream stays aligned whatever the policy.
    angle, zoom, shift_x, shift_y, gain, contrast, flip = rng.uniform(-1.0, 1.0, 7)
    matrix = cv2.getRotationMatrix2D(
        (width / 2.0, height / 2.0), angle * policy.rotation, 1.0 + zoom * policy.zoom
    )
    matrix[0, 2] += shift_x * policy.shift * width
    matrix[1, 2] += shift_y * policy.shift * height
    out = cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    if policy.flip and flip > 0:
        out = out[:, ::-1]
    pixels = out.astype(np.float32)
    mean = float(pixels.mean())
    pixels = (pixels - mean) * (1.0 + contrast * policy.contrast) + mean * (
        1.0 + gain * policy.brightness
    )
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def augment_batch(
    images: np.ndarray, rngs: list[np.random.Generator], policy: AugmentPolicy
) -> np.ndarray:
    """Augment each image with its own generator."""
    out = np.empty_like(images)
    for i, (image, rng) in enumerate(zip(images, rngs)):
        out[i] = augment_image(image, rng, policy)
    return out


def variant_rng(digest: str, variant: int) -> np.random.Generator:
    """The generator of augmented copy ``variant`` of the image whose content hash is ``digest``."""
    return np.random.default_rng([variant, int(digest[:16] or "0", 16)])
