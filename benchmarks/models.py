"""Benchmark models built on the spot (random weights: no download), cached in a work folder.

Speed does not depend on the weight values, so the public architectures are built with
``weights=None`` and exported by the exporter's own converters (TFLite with metadata, ONNX with
``metadata_props``), which MediaPipe's ImageClassifier and the runtime both read:

- ``mobilenet_v2``: MobileNetV2 224x224, full-integer TFLite with a uint8 input (the layout of
  the public ImageNet models), calibrated on rendered scenes; and its fp32 ONNX.
- ``inception_v3``: InceptionV3 299x299, TFLite fp32 and int8, ONNX fp32 and int8 (QDQ, as
  ``edge-export export`` makes it).

Normalization is inside the graph (raw 0..255 pixels in), as for every model we export.

    python benchmarks/models.py --work /tmp/bench-models mobilenet_v2 inception_v3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = 14  # the traffic-sign scenario's labels: calibration images come from it
SPECS = {"mobilenet_v2": 224, "inception_v3": 299}


def _say(message: str) -> None:
    print(f"[models] {message}", file=sys.stderr, flush=True)


def calibration_images(size: int, count: int = 32, seed: int = 5) -> object:
    """Rendered traffic-sign scenes prepared at ``size`` by the runtime's preprocessing."""
    import numpy as np

    from edge_runtime.preprocess import PreprocessSpec, prepare
    from edge_runtime.scenes import SceneStream

    stream = SceneStream("traffic-signs", seed=seed, width=640, height=480)
    spec = PreprocessSpec(size, size)
    return np.stack([prepare(stream.frame(i * 7)[0], spec) for i in range(count)])


def keras_model(arch: str, size: int) -> object:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    builder = {
        "mobilenet_v2": keras.applications.MobileNetV2,
        "inception_v3": keras.applications.InceptionV3,
    }[arch]
    backbone = builder(
        input_shape=(size, size, 3), include_top=False, weights=None, pooling="avg"
    )
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(backbone(scaled))
    return keras.Model(inputs, outputs)


def build(arch: str, work: Path, formats: tuple[str, ...]) -> dict[str, Path]:
    """The model files of ``arch`` in ``work`` (built once): ``{"tflite-int8": path, ...}``."""
    size = SPECS[arch]
    folder = work / arch
    folder.mkdir(parents=True, exist_ok=True)
    paths = {key: folder / f"{arch}-{key}.{key.split('-')[0]}" for key in formats}
    missing = [key for key, path in paths.items() if not path.is_file()]
    if not missing:
        return paths
    from exporter.export.metadata import ModelFacts
    from exporter.export.onnx import export_onnx_fp32, export_onnx_int8
    from exporter.export.tflite import export_tflite

    labels = tuple(f"class-{i}" for i in range(CLASSES))
    facts = ModelFacts(arch, 1, labels, size, size, "squash", "area")
    model = keras_model(arch, size)
    calibration = calibration_images(size)
    for key in missing:
        start = time.perf_counter()
        fmt, precision = key.split("-")
        if fmt == "tflite":
            export_tflite(model, precision, facts, paths[key], calibration)
        elif precision == "fp32":
            export_onnx_fp32(model, facts, paths[key])
        else:
            fp32 = paths.get("onnx-fp32") or folder / f"{arch}-onnx-fp32.onnx"
            if not fp32.is_file():
                export_onnx_fp32(model, facts, fp32)
            export_onnx_int8(fp32, facts, paths[key], calibration.astype("float32"), folder)
        _say(f"{paths[key].name}: {time.perf_counter() - start:.0f} s")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arch", nargs="+", choices=sorted(SPECS))
    parser.add_argument("--work", type=Path, default=Path("build/bench-models"))
    parser.add_argument(
        "--formats", default="tflite-fp32,tflite-int8,onnx-fp32,onnx-int8",
        help="comma-separated format-precision keys",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for arch in args.arch:
        for key, path in build(arch, args.work, tuple(args.formats.split(","))).items():
            print(f"{arch} {key} {path} {path.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
