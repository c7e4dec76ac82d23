"""Training speed on the GPUs of this machine against its CPU: run it where a GPU is.

    python tests/hardware/gpu_train.py                    # InceptionV3 299x299, random weights
    python tests/hardware/gpu_train.py --weights inception_v3.weights.h5 --require-gpu
    python tests/hardware/gpu_train.py --smoke            # a tiny configuration (the test suite)
    python tests/hardware/gpu_train.py --devices cpu      # the CPU half alone

It measures the two phases of ``edge-export train`` with a pretrained backbone, built by the
exporter's own code (``exporter.backbones``, ``exporter.distribute``, ``exporter.train``):

- **frozen backbone**: images per second through the frozen backbone, computing bottleneck
  features (one device, as training computes them);
- **fine-tuning**: training images per second with the top ``--fine-tune-layers`` layers
  trainable, ``model.fit`` under ``MirroredStrategy`` over every visible GPU (global batch =
  ``--batch-size`` per replica x GPUs), with mixed precision (float16 compute) on the GPU.

Each device runs in a process of its own (the CPU one with ``CUDA_VISIBLE_DEVICES=-1``), on the
same random images; the first steps (tracing, cuDNN autotuning) are left out. It prints a
Markdown table to paste into docs/benchmarks.md, naming the GPUs and the CPU. ImageNet weights
are not needed (speed does not depend on the weight values): ``--weights none`` (the default) or
a weights file saved from ``keras.applications.InceptionV3(include_top=False, ...)``;
``--weights imagenet`` needs the internet. Exit status 0 when every run worked (and, with
``--require-gpu``, a GPU was there and trained faster than the CPU).
Not collected by pytest (the file name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One device's figures (runs in the child process)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from exporter.backbones import (
        WeightsChoice,
        build_backbone,
        build_classifier,
        parse_weights,
        unfreeze_top_layers,
    )
    from exporter.distribute import make_distribution
    from exporter.errors import ExporterError
    from exporter.train import precision_policy

    gpus = tf.config.list_physical_devices("GPU")
    if args.device == "gpu" and not gpus:
        return {"device": "gpu", "available": False}
    mixed = {"on": True, "off": False}.get(args.mixed_precision, args.device == "gpu")
    names = [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        for gpu in gpus
    ]
    size = (args.input_size, args.input_size)
    try:
        weights = parse_weights(args.weights, "inception_v3")
        dist = make_distribution("mirrored")
        with precision_policy(mixed), dist.scope():
            backbone = build_backbone("inception_v3", size, weights)
            classifier = build_classifier("inception_v3", backbone, args.classes)
        with precision_policy(mixed):  # the extractor training uses: one device, no strategy
            plain = build_classifier(
                "inception_v3",
                build_backbone("inception_v3", size, WeightsChoice("none")),
                args.classes,
            ).features
    except ExporterError as exc:
        raise SystemExit(f"gpu_train: {exc}") from None
    plain.set_weights(classifier.features.get_weights())
    rng = np.random.default_rng(0)
    global_batch = args.batch_size * dist.replicas
    images = rng.integers(0, 256, (global_batch, *size, 3)).astype(np.float32)
    labels = rng.integers(0, args.classes, global_batch)
    steps = args.steps if args.device == "gpu" else args.cpu_steps

    # Frozen backbone: features of batches of images, one device.
    batch = images[: args.batch_size]
    for _ in range(args.warmup):
        plain.predict_on_batch(batch)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        np.asarray(plain.predict_on_batch(batch))
        times.append(time.perf_counter() - started)
    features_per_s = args.batch_size / statistics.median(times)

    # Fine-tuning: the top layers and the head train end-to-end under the strategy.
    import keras

    classifier.backbone.trainable = False
    unfreeze_top_layers(classifier.backbone, args.fine_tune_layers)
    with dist.scope():
        classifier.model.compile(
            optimizer=keras.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy"
        )
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()

    class Clock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epoch_s: list[float] = []
            self.started = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.epoch_s.append(time.perf_counter() - self.started)

    clock = Clock()
    # Epoch 1 is the warm-up (tracing, autotuning); epoch 2 is timed.
    classifier.model.fit(
        dataset, steps_per_epoch=steps, epochs=2, verbose=0,
        callbacks=[clock],
    )  # fmt: skip
    train_per_s = steps * global_batch / clock.epoch_s[-1]
    return {
        "device": args.device,
        "available": True,
        "names": names if args.device == "gpu" else [cpu_model()],
        "replicas": dist.replicas,
        "mixed_precision": mixed,
        "batch_per_replica": args.batch_size,
        "global_batch": global_batch,
        "steps": steps,
        "features_images_per_s": round(features_per_s, 2),
        "fine_tune_images_per_s": round(train_per_s, 2),
        "fine_tune_images_per_s_per_replica": round(train_per_s / dist.replicas, 2),
        "tensorflow": tf.__version__,
    }


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return f"{fields.get('Model name', 'unknown').strip()} ({', '.join(wanted) or 'no AVX2'}, " \
        f"{os.cpu_count()} CPUs)"  # fmt: skip


def run_child(device: str, argv: list[str], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", device]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"device": device, "available": True, "error": f"timed out after {timeout:g} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"device": device, "available": True, "error": last}
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(results: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    rows = [
        f"`{command}`",
        "",
        f"InceptionV3 at {args.input_size}x{args.input_size}, weights {args.weights}, top "
        f"{args.fine_tune_layers} layers fine-tuned, {args.batch_size} images per replica "
        "per step:",
        "",
        "| device | replicas | precision | frozen backbone (features) | fine-tuning "
        "| fine-tuning per replica |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for result in results:
        if not result.get("available"):
            rows.append(f"| {result['device'].upper()}: none visible | | | | | |")
            continue
        if "error" in result:
            rows.append(f"| {result['device'].upper()}: failed ({result['error']}) | | | | | |")
            continue
        rows.append(
            f"| {result['device'].upper()}: {', '.join(result['names'])} | {result['replicas']} "
            f"| {'mixed float16' if result['mixed_precision'] else 'float32'} "
            f"| {result['features_images_per_s']:.1f} img/s "
            f"| {result['fine_tune_images_per_s']:.1f} img/s "
            f"| {result['fine_tune_images_per_s_per_replica']:.1f} img/s |"
        )
    by_device = {r["device"]: r for r in results if r.get("available") and "error" not in r}
    if {"gpu", "cpu"} <= set(by_device):
        gpu, cpu = by_device["gpu"], by_device["cpu"]
        rows += [
            "",
            f"GPU over CPU: frozen backbone "
            f"{gpu['features_images_per_s'] / cpu['features_images_per_s']:.1f}x, fine-tuning "
            f"{gpu['fine_tune_images_per_s'] / cpu['fine_tune_images_per_s']:.1f}x "
            f"(TensorFlow {gpu['tensorflow']}).",
        ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default="none", help="none, imagenet or a weights file")
    parser.add_argument("--input-size", type=int, default=299)
    parser.add_argument("--batch-size", type=int, default=32, help="images per replica a step")
    parser.add_argument("--fine-tune-layers", type=int, default=60)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30, help="timed steps on the GPU")
    parser.add_argument("--cpu-steps", type=int, default=3, help="timed steps on the CPU")
    parser.add_argument("--warmup", type=int, default=3, help="untimed feature batches first")
    parser.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="auto",
                        help="auto: float16 compute on the GPU, float32 on the CPU")  # fmt: skip
    parser.add_argument("--devices", default="gpu,cpu", help="which runs (gpu,cpu)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per device")
    parser.add_argument("--require-gpu", action="store_true",
                        help="fail unless a GPU ran and trained faster than the CPU")  # fmt: skip
    parser.add_argument("--smoke", action="store_true",
                        help="tiny configuration: 75x75, batch 2, 2 steps")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", choices=("gpu", "cpu"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    raw = list(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.input_size, args.batch_size, args.fine_tune_layers = 75, 2, 10
        args.steps = args.cpu_steps = 2
        args.warmup = 1
    if args.child:
        args.device = args.child
        print(json.dumps(measure(args)))
        return 0
    results = [
        run_child(device, [a for a in raw if a != "--json"], args.timeout)
        for device in args.devices.split(",")
    ]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        command = "python tests/hardware/gpu_train.py " + " ".join(raw)
        print(markdown(results, args, command.strip()))
    failed = [r for r in results if "error" in r]
    if failed:
        return 1
    if args.require_gpu:
        by_device = {r["device"]: r for r in results if r.get("available")}
        gpu, cpu = by_device.get("gpu"), by_device.get("cpu")
        if gpu is None:
            print("gpu_train: no GPU visible", file=sys.stderr)
            return 1
        if cpu is not None and gpu["fine_tune_images_per_s"] <= cpu["fine_tune_images_per_s"]:
            print("gpu_train: the GPU did not train faster than the CPU", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
