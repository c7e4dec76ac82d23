"""The one preprocessing path, shared by training (the exporter) and serving (the device).

Pure numpy/cv2 functions over RGB uint8 frames (:mod:`.ops`), and the writer that turns them into
the tensor a model takes (:mod:`.input`). Normalization is not done here for our own models: every
model we export carries it inside its graph and takes raw RGB pixels 0..255.
"""

from edge_runtime.imageio import decode_image, read_image
from edge_runtime.preprocess.input import PIXEL_DOMAIN_MIN_SCALE, InputWriter, pixel_quantization
from edge_runtime.preprocess.ops import (
    INTERPOLATIONS,
    RESIZE_MODES,
    PreprocessSpec,
    Roi,
    center_crop_box,
    crop_roi,
    letterbox_box,
    prepare,
    prepare_file,
    prepare_float,
    quantize_pixels,
)

__all__ = [
    "INTERPOLATIONS",
    "PIXEL_DOMAIN_MIN_SCALE",
    "RESIZE_MODES",
    "InputWriter",
    "PreprocessSpec",
    "Roi",
    "center_crop_box",
    "crop_roi",
    "decode_image",
    "letterbox_box",
    "pixel_quantization",
    "prepare",
    "prepare_file",
    "prepare_float",
    "quantize_pixels",
    "read_image",
]
