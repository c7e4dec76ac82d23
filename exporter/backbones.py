"""Backbones and the classifier built on them.

The backbones are ``keras.applications`` networks without their top (InceptionV3, the default, is
the GoogLeNet-style network; MobileNet V2/V3 and EfficientNet-B0 are the phone-sized ones) plus
``tiny_cnn``, a small built-in CNN for training from scratch on small images. Every classifier
takes raw RGB pixels 0..255 as float32 and carries its normalization inside the graph, so the
device feeds camera pixels directly. The head is dropout + dense + softmax; the softmax runs in
float32 even under mixed precision.

TensorFlow and Keras are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from exporter.errors import TrainingError


@dataclass(frozen=True)
class BackboneInfo:
    """What the exporter knows about a backbone before building it.

    ``normalization`` is ``"minus_one_to_one"`` when the classifier adds a Rescaling layer to
    [-1, 1] in front of the backbone, or ``"inside"`` when the backbone carries its own.
    """

    name: str
    application: str | None
    default_size: int
    min_size: int
    normalization: Literal["minus_one_to_one", "inside"]
    imagenet: bool
    description: str


BACKBONES: dict[str, BackboneInfo] = {
    info.name: info
    for info in (
        BackboneInfo(
            "inception_v3",
            "InceptionV3",
            299,
            75,
            "minus_one_to_one",
            True,
            "Inception v3 (GoogLeNet family), 21.8 M parameters",
        ),
        BackboneInfo(
            "mobilenet_v2",
            "MobileNetV2",
            224,
            32,
            "minus_one_to_one",
            True,
            "MobileNet v2, 2.3 M parameters",
        ),
        BackboneInfo(
            "mobilenet_v3_small",
            "MobileNetV3Small",
            224,
            32,
            "inside",
            True,
            "MobileNet v3 small, 0.9 M parameters",
        ),
        BackboneInfo(
            "mobilenet_v3_large",
            "MobileNetV3Large",
            224,
            32,
            "inside",
            True,
            "MobileNet v3 large, 3.0 M parameters",
        ),
        BackboneInfo(
            "efficientnet_b0",
            "EfficientNetB0",
            224,
            32,
            "inside",
            True,
            "EfficientNet-B0, 4.0 M parameters",
        ),
        BackboneInfo(
            "tiny_cnn",
            None,
            32,
            16,
            "minus_one_to_one",
            False,
            "small built-in CNN for from-scratch training on small images, 0.3 M parameters",
        ),
    )
}


def backbone_info(arch: str) -> BackboneInfo:
    """The description of backbone ``arch``.

    Raises:
        TrainingError: unknown name.
    """
    try:
        return BACKBONES[arch]
    except KeyError:
        raise TrainingError(f"unknown backbone '{arch}' (choose {', '.join(BACKBONES)})") from None


def check_input_size(arch: str, size: tuple[int, int]) -> tuple[int, int]:
    """Refuse an input size the backbone cannot take, before any work.

    Raises:
        TrainingError: a side is below the backbone's minimum (e.g. 75 for inception_v3) or
            unreasonably large.
    """
    info = backbone_info(arch)
    height, width = size
    if min(height, width) < info.min_size:
        raise TrainingError(
            f"{arch} needs an input of at least {info.min_size}x{info.min_size} pixels, got "
            f"{height}x{width}: raise --input-size or choose a backbone for small inputs "
            "(mobilenet_v2, mobilenet_v3_*, efficientnet_b0: 32; tiny_cnn: 16)"
        )
    if max(height, width) > 1024:
        raise TrainingError(f"input size {height}x{width} is too large (at most 1024 a side)")
    return height, width


@dataclass(frozen=True)
class WeightsChoice:
    """``--weights``: ``imagenet``, ``none`` (random) or a weights file."""

    kind: Literal["imagenet", "none", "file"]
    path: Path | None = None

    @property
    def label(self) -> str:
        """What run.json records: ``imagenet``, ``none`` or the file name."""
        return self.path.name if self.path is not None else self.kind

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"

    def identity(self) -> str:
        """A string that changes whenever the weights may change (for the feature cache)."""
        if self.kind == "file" and self.path is not None:
            digest = hashlib.sha256()
            with self.path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            return f"file:{digest.hexdigest()}"
        if self.kind == "imagenet":
            import keras

            return f"imagenet:keras-{keras.__version__}"
        return "none"


def parse_weights(text: str, arch: str) -> WeightsChoice:
    """Parse ``--weights imagenet|none|PATH`` for backbone ``arch``.

    Raises:
        TrainingError: the file does not exist, or ``imagenet`` for a backbone without ImageNet
            weights.
    """
    info = backbone_info(arch)
    if text == "imagenet":
        if not info.imagenet:
            raise TrainingError(
                f"{arch} has no ImageNet weights: use --weights none (train from scratch) or "
                "--weights PATH"
            )
        return WeightsChoice("imagenet")
    if text == "none":
        return WeightsChoice("none")
    path = Path(text).expanduser()
    if not path.is_file():
        raise TrainingError(
            f"--weights: no file {path} (choose imagenet, none, or a weights file saved from "
            f"the {arch} backbone)"
        )
    return WeightsChoice("file", path.resolve())


def _build_tiny_cnn(input_shape: tuple[int, int, int], name: str) -> Any:
    import keras
    from keras import layers

    # The classifier scales pixels to [-1, 1] in front of this network. (Per-image
    # standardization was tried: it helps on dark photos in float, but its mean/variance/rsqrt
    # chain quantizes badly and cost a 96x96 model 17 points of int8 top-1.)
    inputs = keras.Input(input_shape, name="pixels")
    x = inputs
    if min(input_shape[:2]) >= 64:
        # Larger inputs get a strided stem: a quarter of the work for every block after it, so a
        # 96x96 model still runs in a few milliseconds on a Raspberry Pi.
        x = layers.Conv2D(24, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
        x = layers.ReLU(name="stem_relu")(x)
    for block, filters in enumerate((32, 64, 128), start=1):
        for conv in (1, 2):
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}"
            )(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name=name)


def _construct(info: BackboneInfo, shape: tuple[int, int, int], weights: str | None) -> Any:
    import keras

    if info.application is None:
        return _build_tiny_cnn(shape, info.name)
    factory = getattr(keras.applications, info.application)
    kwargs: dict[str, Any] = {
        "include_top": False,
        "weights": weights,
        "input_shape": shape,
        "pooling": "avg",
        "name": info.name,
    }
    if info.name.startswith("mobilenet_v3"):
        kwargs["include_preprocessing"] = True
    with warnings.catch_warnings():
        # Keras notes that ImageNet weights of the nearest size are used for other sizes.
        warnings.simplefilter("ignore", UserWarning)
        return factory(**kwargs)


def build_backbone(arch: str, size: tuple[int, int], weights: WeightsChoice) -> Any:
    """Build the backbone (no top, global average pooling) with the chosen weights.

    Raises:
        TrainingError: the input size is refused, ImageNet weights cannot be downloaded, or the
            weights file does not belong to this backbone.
    """
    info = backbone_info(arch)
    check_input_size(arch, size)
    shape = (size[0], size[1], 3)
    if weights.kind == "imagenet":
        try:
            return _construct(info, shape, "imagenet")
        except ValueError as exc:
            raise TrainingError(f"{arch}: {exc}") from exc
        # Keras raises a bare Exception ("URL fetch failure") when the download fails.
        except Exception as exc:
            raise TrainingError(
                f"cannot download the ImageNet weights of {arch} (no internet connection?): "
                "pass --weights PATH with a weights file saved from this backbone, or "
                "--weights none to train from scratch"
            ) from exc
    try:
        backbone = _construct(info, shape, None)
    except ValueError as exc:
        raise TrainingError(f"{arch}: {exc}") from exc
    if weights.kind == "file" and weights.path is not None:
        load_backbone_weights(backbone, weights.path, arch)
    return backbone


def load_backbone_weights(backbone: Any, path: Path, arch: str) -> None:
    """Load a weights file into a backbone.

    Raises:
        TrainingError: the file is not a Keras weights file or was saved from another network.
    """
    how = (
        f"save them with keras.applications.{backbone_info(arch).application}"
        f"(include_top=False, ...).save_weights('x.weights.h5')"
        if backbone_info(arch).application
        else "save them from a tiny_cnn backbone"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backbone.load_weights(os.fspath(path))
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise TrainingError(
            f"--weights {path.name} does not hold weights of the {arch} backbone ({how})"
        ) from exc


@dataclass
class Classifier:
    """A classifier and the parts training needs: the backbone, the feature extractor (image to
    pooled backbone features) and the head layers."""

    model: Any
    backbone: Any
    features: Any
    head_layers: tuple[Any, ...]
    feature_dim: int


HEAD_DENSE = "head_logits"
OUTPUT_NAME = "probabilities"


def build_classifier(
    arch: str,
    backbone: Any,
    num_classes: int,
    *,
    dropout: float = 0.2,
    freeze_batchnorm: bool = True,
) -> Classifier:
    """Put the normalization in front of a backbone and a new head on top of it.

    ``freeze_batchnorm`` calls the backbone in inference mode (BatchNorm statistics stay fixed),
    as transfer learning needs; from-scratch training passes False.
    """
    import keras
    from keras import layers

    info = backbone_info(arch)
    height, width = backbone.input_shape[1:3]
    inputs = keras.Input((height, width, 3), name="pixels", dtype="float32")
    x = inputs
    if info.normalization == "minus_one_to_one":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(x)
    features = backbone(x, training=False) if freeze_batchnorm else backbone(x)
    head = (
        layers.Dropout(dropout, name="head_dropout"),
        layers.Dense(num_classes, name=HEAD_DENSE),
        layers.Activation("softmax", dtype="float32", name=OUTPUT_NAME),
    )
    y = features
    for layer in head:
        y = layer(y)
    model = keras.Model(inputs, y, name=f"{arch}_classifier")
    feature_model = keras.Model(inputs, features, name=f"{arch}_features")
    return Classifier(
        model=model,
        backbone=backbone,
        features=feature_model,
        head_layers=head,
        feature_dim=int(features.shape[-1]),
    )


def build_head(feature_dim: int, num_classes: int, dropout: float) -> Any:
    """The head alone (features in, probabilities out), trained on cached features."""
    import keras
    from keras import layers

    inputs = keras.Input((feature_dim,), name="features")
    x = layers.Dropout(dropout, name="head_dropout")(inputs)
    x = layers.Dense(num_classes, name=HEAD_DENSE)(x)
    outputs = layers.Activation("softmax", dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name="head")


def quicken_batchnorm(backbone: Any, momentum: float = 0.9) -> int:
    """Let BatchNorm statistics follow the data faster, for training from scratch.

    Keras applications use momentum 0.99-0.999, tuned for ImageNet's millions of steps; in a short
    run the moving statistics would still be near their initial values and validation would suffer.
    Returns the number of BatchNorm layers changed.
    """
    from keras import layers

    changed = 0
    pending = list(backbone.layers)
    while pending:
        layer = pending.pop()
        pending.extend(getattr(layer, "layers", []))
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum
            changed += 1
    return changed


def unfreeze_top_layers(backbone: Any, count: int) -> int:
    """Make the top ``count`` layers of the backbone trainable, BatchNorm excepted.

    Returns the number of layers made trainable that hold weights.

    Raises:
        TrainingError: ``count`` exceeds the backbone's layer count.
    """
    from keras import layers

    total = len(backbone.layers)
    if count > total:
        raise TrainingError(
            f"--fine-tune-layers {count} exceeds the {total} layers of the backbone"
        )
    backbone.trainable = True
    trainable = 0
    for index, layer in enumerate(backbone.layers):
        train_it = index >= total - count and not isinstance(layer, layers.BatchNormalization)
        layer.trainable = train_it
        if train_it and layer.weights:
            trainable += 1
    return trainable
