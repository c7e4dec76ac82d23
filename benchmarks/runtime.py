"""Runtime throughput: raw invoke() against the full pipeline, pipelined against sequential.

Measured in one run on the same machine, so the ratios hold even on a noisy machine:

- ``invoke``: median time of the backend's run alone, on a prepared tensor;
- ``preprocess``: median time to turn a synthetic 640x480 frame into the input tensor;
- sequential pipeline FPS: source -> preprocess -> inference -> postprocess in one thread;
- pipelined FPS: the producer thread renders and prepares the next frame while the backend runs;
- backend busy share: the time the backend spent inferring over the wall time of the pipelined
  run (1.0 = it never waited for a frame), and pipelined FPS over 1 / mean invoke time.

The target is a busy share of at least 0.9 for a model whose invoke time exceeds the
preprocessing time. Without ``--model`` the script builds such a model once with TensorFlow (a
MobileNetV2 at 224x224, random weights, float32 TFLite) and caches it.

    python benchmarks/runtime.py                       # the built-in heavy model
    python benchmarks/runtime.py --model models/traffic-signs --threads 1
    python benchmarks/runtime.py --json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime.model import load_model, options_from_profile  # noqa: E402
from edge_runtime.pipeline import Pipeline, PipelineOptions  # noqa: E402
from edge_runtime.sources import open_source  # noqa: E402


def heavy_model(cache: Path) -> Path:
    """A float32 MobileNetV2 224x224 TFLite file with labels, built once (needs TensorFlow)."""
    path = cache / "mobilenet_v2_224_fp32.tflite"
    labels = cache / "labels.txt"
    if path.exists() and labels.exists():
        return path
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    backbone = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), include_top=False, weights=None, pooling="avg"
    )
    outputs = keras.layers.Dense(14, activation="softmax")(backbone(x))
    model = keras.Model(inputs, outputs)
    cache.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints the saved graph
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    labels.write_text("".join(f"class-{i}\n" for i in range(14)))
    return path


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def measure(model_path: Path, labels: Path | None, frames: int, threads: int, uri: str) -> dict:
    options = options_from_profile(None, threads=threads)
    model = load_model(model_path, labels=labels, options=options)
    source = open_source(uri, frames=frames)
    source.open()
    images = [source.read().image for _ in range(8)]  # type: ignore[union-attr]
    source.close()

    prepare_times, invoke_times = [], []
    tensor = model.new_input()
    for i in range(max(30, frames // 4)):
        start = time.perf_counter()
        model.prepare(images[i % len(images)], out=tensor)
        prepare_times.append(time.perf_counter() - start)
    for _ in range(max(30, frames // 4)):
        start = time.perf_counter()
        model.run(tensor)
        invoke_times.append(time.perf_counter() - start)

    results: dict[str, Any] = {
        "model": str(model_path),
        "input": model.info["input"],
        "backend": model.info.get("backend"),
        "threads": threads,
        "invoke_ms": median_ms(invoke_times),
        "invoke_mean_ms": statistics.fmean(invoke_times) * 1e3,
        "preprocess_ms": median_ms(prepare_times),
    }
    # Alternate the two modes so a change in machine load hits both alike.
    fps: dict[str, list[float]] = {"sequential": [], "pipelined": []}
    busy: list[float] = []
    for _ in range(2):
        for mode, pipelined in (("sequential", False), ("pipelined", True)):
            pipeline = Pipeline(
                open_source(uri, frames=frames // 2),
                model,
                model.postprocessor(),
                [],
                options=PipelineOptions(pipelined=pipelined),
            )
            summary = pipeline.run()
            fps[mode].append(summary.frames / summary.seconds)
            if pipelined:
                # Time the backend spent inferring, over the wall time of the run.
                inference = summary.status["latency_ms"]["inference"]["mean"] / 1e3
                busy.append(inference * summary.frames / summary.seconds)
    results["sequential_fps"] = statistics.fmean(fps["sequential"])
    results["pipelined_fps"] = statistics.fmean(fps["pipelined"])
    results["raw_invoke_fps"] = 1e3 / results["invoke_mean_ms"]
    results["busy_share"] = statistics.fmean(busy)
    results["pipelined_over_raw_invoke"] = results["pipelined_fps"] / results["raw_invoke_fps"]
    results["pipelined_over_sequential"] = results["pipelined_fps"] / results["sequential_fps"]
    model.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="bundle, .tflite or .onnx (default: built-in)")
    parser.add_argument("--labels", type=Path, help="labels for a bare model")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--source", default="synthetic:traffic-signs")
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "edge-classify" / "bench"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    model_path, labels = args.model, args.labels
    if model_path is None:
        model_path = heavy_model(args.cache)
        labels = args.cache / "labels.txt"
    result = measure(model_path, labels, args.frames, args.threads, args.source)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"model {result['model']} ({result['backend']}, {args.threads} thread(s))")
        print(f"  invoke        {result['invoke_ms']:7.2f} ms median")
        print(f"  preprocess    {result['preprocess_ms']:7.2f} ms median (640x480 frame)")
        print(f"  raw invoke    {result['raw_invoke_fps']:7.1f} FPS (1 / mean invoke)")
        print(f"  sequential    {result['sequential_fps']:7.1f} FPS")
        print(f"  pipelined     {result['pipelined_fps']:7.1f} FPS")
        print(f"  backend busy  {result['busy_share']:7.2f} (inference / wall time, pipelined)")
        print(f"  pipelined / raw invoke  {result['pipelined_over_raw_invoke']:.2f}x")
        print(f"  pipelined / sequential  {result['pipelined_over_sequential']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
