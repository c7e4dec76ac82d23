"""Writing the model's input tensor: prepared RGB pixels in, the tensor the model takes out.

How pixels enter the model (raw RGB 0..255 after resizing):

- **uint8 / int8 inputs** quantized in the pixel domain (scale about 1: our exports, whose graphs
  normalize) get ``round(pixel / scale + zero_point)`` (:func:`~edge_runtime.preprocess.
  quantize_pixels`), so our uint8 models take the frame as it is and int8 ones ``pixel - 128``.
  Integer inputs quantized in a *normalized* domain (e.g. MobileNet's scale 1/128 around 128) or
  not quantized at all take the pixels as they are (uint8) or shifted by 128 (int8): such models
  chose their quantization to absorb the normalization, and this is how the TFLite Task Library,
  MediaPipe and pycoral feed them.
- **float inputs** get ``(pixel - mean) / std`` with the normalization of the TFLite metadata,
  and the pixels as they are otherwise (our models normalize inside the graph).

Pure numpy over a :class:`~edge_runtime.types.TensorSpec`: nothing here knows which backend owns
the tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_runtime.errors import ModelError, PreprocessError
from edge_runtime.preprocess.ops import PreprocessSpec, prepare, prepare_float, quantize_pixels
from edge_runtime.types import TensorSpec

#: an integer input whose scale is at least this is quantized in the pixel domain (about 1 per
#: pixel level); normalized inputs have scales like 1/128 or 1/255
PIXEL_DOMAIN_MIN_SCALE = 0.25


def pixel_quantization(tensor: TensorSpec) -> tuple[float, int]:
    """Scale and zero point that express raw pixels in an integer input (see the module doc).

    Raises:
        ModelError: the input is not uint8 or int8.
    """
    dtype = np.dtype(tensor.dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.int8)):
        raise ModelError(f"unsupported integer model input type {dtype} (expected uint8 or int8)")
    if tensor.quantized and tensor.scale >= PIXEL_DOMAIN_MIN_SCALE:
        return tensor.scale, tensor.zero_point
    return 1.0, 0 if dtype == np.uint8 else -128


def channel_values(values: Sequence[float], what: str) -> np.ndarray:
    """Per-channel normalization values (``mean`` or ``std``) as three float32 numbers.

    Raises:
        ModelError: neither 1 nor 3 values.
    """
    array = np.asarray(list(values), dtype=np.float32)
    if array.size == 1:
        return np.repeat(array, 3)
    if array.size != 3:
        raise ModelError(f"the model's normalization {what} needs 1 or 3 values, got {array.size}")
    return array


class InputWriter:
    """Turns RGB frames into the model's input tensor, in buffers allocated once.

    Raises (constructor):
        ModelError: the input type or normalization is not one this runtime can feed.
    """

    def __init__(
        self,
        spec: PreprocessSpec,
        tensor: TensorSpec,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        target: np.ndarray | None = None,
    ) -> None:
        self.spec = spec
        self.tensor = tensor
        dtype = np.dtype(tensor.dtype)
        if target is None or target.shape != tensor.shape or target.dtype != dtype:
            target = np.zeros(tensor.shape, dtype=dtype)
        self.buffer = target
        self._nchw = tensor.layout == "NCHW"
        self._pixels = np.empty(spec.shape, dtype=np.uint8)
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        if dtype.kind in "iu":
            self.scale, self.zero_point = pixel_quantization(tensor)
            plain = dtype == np.uint8 and self.scale == 1.0 and self.zero_point == 0
            self.mode = "copy" if plain else "quantize"
            # int8 with scale 1 and zero point -128 is ``p - 128``, which in two's complement is
            # ``p ^ 0x80``: one pass over the pixels into the tensor, no widening and clipping.
            self._flip_sign = dtype == np.int8 and self.scale == 1.0 and self.zero_point == -128
            self._hwc = np.empty(spec.shape, dtype=dtype)
        elif dtype.kind == "f":
            self.mode = "float"
            self.scale, self.zero_point = 0.0, 0
            self._hwc = np.empty(spec.shape, dtype=np.float32)
            if mean is not None and std is not None:
                self._mean, self._std = channel_values(mean, "mean"), channel_values(std, "std")
                if np.any(self._std <= 0):
                    raise ModelError(f"the model's normalization std must be positive: {std}")
                if np.all(self._mean == 0) and np.all(self._std == 1):
                    self._mean = self._std = None
        else:
            raise ModelError(f"unsupported model input type {dtype}")

    @property
    def normalization(self) -> tuple[list[float], list[float]] | None:
        if self._mean is None or self._std is None:
            return None
        return self._mean.tolist(), self._std.tolist()

    def new_buffer(self) -> np.ndarray:
        """A fresh input tensor of the model's shape and dtype."""
        return np.zeros(self.tensor.shape, dtype=np.dtype(self.tensor.dtype))

    def write(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Prepare one RGB uint8 frame into ``out`` (default: the writer's own buffer, reused by
        the next call) and return it.

        The scratch buffers are the writer's own: one thread prepares frames at a time, while
        another may run inference on tensors prepared earlier into other ``out`` buffers.

        Raises:
            PreprocessError: the frame is not an RGB uint8 image, or ``out`` does not fit.
        """
        target = self.buffer if out is None else out
        if target.shape != self.buffer.shape or target.dtype != self.buffer.dtype:
            raise PreprocessError(
                f"the input buffer must have shape {self.buffer.shape} and dtype "
                f"{self.buffer.dtype}, got {target.shape} {target.dtype}"
            )
        image_slot = target[0]
        if self.mode == "copy":
            if not self._nchw:
                prepare(image, self.spec, out=image_slot)
                return target
            pixels = prepare(image, self.spec, out=self._pixels)
        elif self.mode == "quantize":
            prepare(image, self.spec, out=self._pixels)
            if self._flip_sign and not self._nchw:
                np.bitwise_xor(self._pixels, np.uint8(0x80), out=image_slot.view(np.uint8))
                return target
            pixels = quantize_pixels(
                self._pixels, self._hwc.dtype, self.scale, self.zero_point, out=self._hwc
            )
        else:
            pixels = prepare_float(image, self.spec, out=self._hwc, scratch=self._pixels)
            if self._mean is not None and self._std is not None:
                pixels -= self._mean
                pixels /= self._std
        np.copyto(image_slot, pixels.transpose(2, 0, 1) if self._nchw else pixels, casting="unsafe")
        return target


__all__ = ["PIXEL_DOMAIN_MIN_SCALE", "InputWriter", "channel_values", "pixel_quantization"]
