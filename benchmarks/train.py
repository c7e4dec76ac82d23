"""Training benchmarks: cached bottleneck features against a naive fit, and real-photo accuracy.

Two measurements, each in one run on one machine:

``timing`` (the default): time per epoch of training the new head on cached bottleneck features
against ``model.fit`` of the whole classifier through the frozen backbone, on the same images
(a synthetic traffic-sign dataset rendered into a temporary folder). The backbone is frozen with
random weights (``--weights none``): ImageNet weights need the internet, and the timing does not
depend on the weight values. The first cached epoch includes computing the features; the ratio of
the later epochs is the figure of merit (target: at least 10x).

``accuracy`` (with ``--data``): ``edge-export train`` on a real photo dataset with a grouped split
(GTSRB: frames of one physical sign never straddle train and test), reporting float top-1 on the
held-out test split and the wall time; with the export stage installed, also int8 TFLite top-1.

``scaling`` (with ``--strategy mirrored|multi-worker``): ``edge-export train`` once on one replica
and once on ``--replicas`` of them (MirroredStrategy over the GPUs, or over the CPU split into
logical devices when there is none; or that many worker processes on loopback with
``TF_CONFIG``), from scratch and on a frozen backbone with fine-tuning, with the same batch per
replica; the one-replica run takes the same distributed code path (one logical device, or a
cluster of one worker). It reports each phase's training images per second (run.json, epochs
after the first), per replica, and the scaling ratio. On one machine the replicas share its
cores: the figures check that the distributed path works and what it costs, they are no
speed-up.

    python benchmarks/train.py                                   # timing, inception_v3 at 139
    python benchmarks/train.py --arch mobilenet_v2 --input-size 96
    python benchmarks/train.py --data ../shared/testdata/gtsrb   # accuracy, tiny_cnn at 32
    python benchmarks/train.py --strategy multi-worker           # scaling, 2 workers
    python benchmarks/train.py --strategy mirrored --replicas 2  # scaling, 2 devices
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edge_runtime.errors import EdgeRuntimeError  # noqa: E402
from edge_runtime.preprocess import PreprocessSpec  # noqa: E402
from exporter.errors import ExporterError  # noqa: E402
from exporter.progress import Progress  # noqa: E402

GTSRB_TRACKS = r"^(\d+_\d+)_"


def epoch_timer() -> Any:
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self.start = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.times.append(time.perf_counter() - self.start)

    return EpochTimer()


def timing(args: argparse.Namespace) -> dict[str, Any]:
    """Head on cached features against a naive fit through the frozen backbone."""
    import keras

    from exporter.backbones import WeightsChoice, build_backbone, build_classifier, build_head
    from exporter.dataset import model_input, prepare_dataset, synthesize_dataset
    from exporter.features import FeatureCache, compute_features

    say = Progress(quiet=args.quiet)
    keras.utils.set_random_seed(0)
    size = (args.input_size, args.input_size)
    with tempfile.TemporaryDirectory(prefix="edge-train-bench-") as tmp:
        work = Path(tmp)
        say.stage(f"rendering {args.per_class} synthetic traffic-sign images per class")
        synthesize_dataset(
            "traffic-signs", work / "data", per_class=args.per_class, size=args.input_size,
            seed=0, progress=say,
        )  # fmt: skip
        prepared = prepare_dataset(work / "data", PreprocessSpec(*size), progress=say)
        images, digests = prepared.images["train"], prepared.digests["train"]
        targets = prepared.splits.targets("train")
        labels = prepared.splits.labels
        say.stage(f"building a frozen {args.arch} at {size[0]}x{size[1]} (random weights)")
        backbone = build_backbone(args.arch, size, WeightsChoice("none"))
        classifier = build_classifier(args.arch, backbone, len(labels))
        backbone.trainable = False

        # Naive: every epoch pushes every image through the frozen backbone again.
        say.stage(f"naive fit through the frozen backbone: {args.naive_epochs} epochs")
        classifier.model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        naive = epoch_timer()
        classifier.model.fit(
            model_input(images), targets, batch_size=args.batch_size,
            epochs=args.naive_epochs, verbose=0, callbacks=[naive],
        )  # fmt: skip

        # Cached: features once (the first epoch pays for them), then the head alone.
        say.stage(f"head on cached features: {args.epochs} epochs")
        cache = FeatureCache(work / "cache", {"arch": args.arch, "input_size": list(size)})
        start = time.perf_counter()
        features = compute_features(
            classifier.features, images, digests, [0], cache, batch_size=64, progress=say
        )[0]
        extract_s = time.perf_counter() - start
        head = build_head(classifier.feature_dim, len(labels), 0.2)
        head.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        cached = epoch_timer()
        head.fit(
            features, targets, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
            callbacks=[cached],
        )  # fmt: skip

        start = time.perf_counter()
        warm = FeatureCache(work / "cache", {"arch": args.arch, "input_size": list(size)})
        compute_features(classifier.features, images, digests, [0], warm, batch_size=64)
        warm_s = time.perf_counter() - start
        assert warm.hits == len(images), "the second run must read every feature from the cache"

    naive_later = statistics.median(naive.times[1:] or naive.times)
    cached_later = statistics.median(cached.times[1:] or cached.times)
    return {
        "benchmark": "timing",
        "arch": args.arch,
        "input_size": list(size),
        "train_images": int(len(images)),
        "batch_size": args.batch_size,
        "naive_epoch_s": [round(t, 3) for t in naive.times],
        "cached_epoch_s": [round(t, 4) for t in cached.times],
        "feature_extraction_s": round(extract_s, 2),
        "warm_cache_load_s": round(warm_s, 3),
        "naive_first_epoch_s": round(naive.times[0], 2),
        "cached_first_epoch_s": round(extract_s + cached.times[0], 2),
        "naive_later_epoch_s": round(naive_later, 3),
        "cached_later_epoch_s": round(cached_later, 4),
        "speedup_later_epochs": round(naive_later / cached_later, 1),
    }


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Train on a real dataset with a grouped split; float (and int8) top-1 on the test split."""
    from exporter.train import TrainConfig, train

    say = Progress(quiet=args.quiet)
    with tempfile.TemporaryDirectory(prefix="edge-train-bench-") as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "run"
        config = TrainConfig(
            data=args.data, out=out, arch=args.arch, weights="none",
            input_size=(args.input_size, args.input_size), group_pattern=args.group_pattern or None,
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            patience=args.patience, seed=args.seed, force=bool(args.out), use_cache=False,
        )  # fmt: skip
        load_before = os.getloadavg()[0]
        cpu_before = time.process_time()
        start = time.perf_counter()
        result = train(config, progress=say)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_before
        load_after = os.getloadavg()[0]
        figures: dict[str, Any] = {
            "benchmark": "accuracy",
            "data": str(Path(args.data).resolve()),
            "arch": args.arch,
            "weights": "none",
            "input_size": [args.input_size, args.input_size],
            "group_pattern": args.group_pattern,
            "epochs": args.epochs,
            "epochs_run": sum(p["epochs_run"] for p in result.run.phases),
            "images": result.run.images,
            "float_top1_test": result.report["top1"],
            "float_top5_test": result.report["top5"],
            "float_top1_val": result.run.validation_accuracy,
            "train_wall_s": round(wall, 1),
            "train_cpu_s": round(cpu, 1),
            "cpu_count": os.cpu_count(),
            "load_average_1min": [round(load_before, 1), round(load_after, 1)],
        }
        if args.int8:
            figures.update(int8_top1(out, Path(tmp) / "bundle", say))
    return figures


# The CPU split into logical devices before TensorFlow starts, so MirroredStrategy has replicas
# to mirror over on a machine without GPUs.
SPLIT_CPU = """
import sys
import tensorflow as tf

count = int(sys.argv[1])
if not tf.config.list_physical_devices("GPU"):
    cpu = tf.config.list_physical_devices("CPU")[0]
    devices = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    tf.config.set_logical_device_configuration(cpu, devices)
from exporter.cli import main

sys.exit(main(sys.argv[2:]))
"""


def cpu_description() -> dict[str, Any]:
    """The processor the figures were measured on (``lscpu``): model and the SIMD flags that
    matter for TensorFlow's kernels."""
    import subprocess

    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"model": "unknown (no lscpu)", "flags": [], "cpus": os.cpu_count()}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
    return {
        "model": fields.get("Model name", "unknown").strip(),
        "flags": [f for f in wanted if f in flags],
        "cpus": os.cpu_count(),
    }


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for item in sockets:
            item.bind(("127.0.0.1", 0))
        return [item.getsockname()[1] for item in sockets]
    finally:
        for item in sockets:
            item.close()


def run_training(
    strategy: str, replicas: int, train_args: list[str], out: Path, timeout: float
) -> dict[str, Any]:
    """``edge-export train`` on ``replicas`` replicas with ``strategy`` (``none``: one); returns
    the chief's run.json."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cli = [sys.executable, "-m", "exporter.cli"]
    args = ["train", *train_args, "--out", str(out), "--strategy", strategy, "--quiet"]
    if strategy == "multi-worker":
        ports = free_ports(replicas)
        commands = []
        for index in range(replicas):
            config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                      "task": {"type": "worker", "index": index}}  # fmt: skip
            worker_args = [*args]
            worker_args[worker_args.index("--out") + 1] = str(out) + ("" if index == 0 else
                                                                      f"-w{index}")  # fmt: skip
            commands.append(([*cli, *worker_args], {**env, "TF_CONFIG": json.dumps(config)}))
    elif strategy == "mirrored":
        commands = [([sys.executable, "-c", SPLIT_CPU, str(replicas), *args], env)]
    else:
        commands = [([*cli, *args], env)]
    procs = [subprocess.Popen(c, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for c, e in commands]  # fmt: skip
    errors = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=timeout)
            if proc.returncode:
                errors.append(err.strip().splitlines()[-1:] or ["(no output)"])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    if errors:
        raise SystemExit(f"{strategy} x{replicas} failed: {errors}")
    return json.loads((out / "run.json").read_text())


def scaling(args: argparse.Namespace) -> dict[str, Any]:
    """One replica against ``--replicas`` under ``--strategy``, from scratch and on a frozen
    backbone with fine-tuning, same batch per replica."""
    import subprocess

    from exporter.dataset import synthesize_dataset

    say = Progress(quiet=args.quiet)
    with tempfile.TemporaryDirectory(prefix="edge-train-scaling-") as tmp:
        work = Path(tmp)
        say.stage(f"rendering {args.per_class} synthetic traffic-sign images per class")
        synthesize_dataset(
            "traffic-signs", work / "data", per_class=args.per_class, size=args.input_size,
            seed=0, progress=say,
        )  # fmt: skip
        weights = work / f"{args.arch}.weights.h5"
        code = (
            "import sys; from exporter.backbones import WeightsChoice, build_backbone;"
            "build_backbone(sys.argv[1], (int(sys.argv[2]),) * 2, WeightsChoice('none'))"
            ".save_weights(sys.argv[3])"
        )
        subprocess.run([sys.executable, "-c", code, args.arch, str(args.input_size),
                        str(weights)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        common = ["--data", str(work / "data"), "--arch", args.arch, "--input-size",
                  str(args.input_size), "--batch-size", str(args.batch_size), "--epochs",
                  str(args.epochs), "--patience", "0", "--no-cache"]  # fmt: skip
        modes = {
            "from scratch": ["--weights", "none"],
            "frozen backbone + fine-tuning": ["--weights", str(weights), "--augment-variants",
                                              "1", "--fine-tune-layers", "10",
                                              "--fine-tune-epochs", str(args.epochs)],
        }  # fmt: skip
        rows = []
        for number, (mode, extra) in enumerate(modes.items()):
            runs = {}
            # The baseline runs the same distributed code path on one replica, so the ratio
            # measures the replicas and not the input pipeline.
            for strategy, replicas in ((args.strategy, 1), (args.strategy, args.replicas)):
                say.stage(f"{mode}: {strategy} x{replicas}")
                out = work / f"run-{number}-{strategy}-{replicas}"
                runs[replicas] = run_training(
                    strategy, replicas, [*common, *extra], out, args.timeout
                )
            one, many = runs[1], runs[args.replicas]
            for base, scaled in zip(one["phases"], many["phases"], strict=True):
                single = base["images_per_second"]
                total = scaled["images_per_second"]
                rows.append({
                    "mode": mode,
                    "phase": base["name"],
                    "global_batch": [one["global_batch_size"], many["global_batch_size"]],
                    "one_replica_images_per_s": single,
                    "images_per_s": total,
                    "per_replica_images_per_s": round(total / args.replicas, 2),
                    "scaling": round(total / single, 3),
                    "efficiency": round(total / single / args.replicas, 3),
                })  # fmt: skip
    return {
        "benchmark": "scaling",
        "strategy": args.strategy,
        "replicas": args.replicas,
        "arch": args.arch,
        "input_size": [args.input_size, args.input_size],
        "per_class": args.per_class,
        "batch_per_replica": args.batch_size,
        "epochs": args.epochs,
        "cpu": cpu_description(),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "rows": rows,
    }


def int8_top1(run_dir: Path, bundle: Path, say: Progress) -> dict[str, Any]:
    """Export the run as full-integer TFLite and verify it on the test split, when the export
    stage is installed."""
    try:
        from exporter.export.pipeline import ExportOptions, export_run
    except ImportError as exc:
        return {"int8_top1_test": None, "int8_note": f"export stage not available: {exc}"}
    try:
        start = time.perf_counter()
        exported = export_run(
            run_dir,
            ExportOptions(out=bundle, name="gtsrb", version=1, formats=("tflite-int8",),
                          allow_accuracy_drop=True),
            progress=say,
        )  # fmt: skip
    except (ExporterError, EdgeRuntimeError) as exc:
        return {"int8_top1_test": None, "int8_note": f"export failed: {exc}"}
    row = exported.rows()[0]
    return {
        "int8_top1_test": row["accuracy"],
        "int8_agreement_with_float": row["agreement_with_float"],
        "int8_export_s": round(time.perf_counter() - start, 1),
    }


def markdown(figures: dict[str, Any], command: str) -> str:
    if figures["benchmark"] == "scaling":
        cpu = figures["cpu"]
        lines = [
            f"`{command}`",
            "",
            f"{figures['arch']} at {figures['input_size'][0]}x{figures['input_size'][1]}, "
            f"{figures['batch_per_replica']} images per replica per step, {figures['epochs']} "
            f"epochs a phase; {cpu['model']} ({', '.join(cpu['flags']) or 'no AVX2'}), "
            f"{cpu['cpus']} CPUs, 1-minute load average {figures['load_average_1min']} at the "
            "end:",
            "",
            f"| mode | phase | {figures['strategy']} x1 "
            f"| {figures['strategy']} x{figures['replicas']} "
            "| per replica | scaling | efficiency |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in figures["rows"]:
            lines.append(
                f"| {row['mode']} | {row['phase']} | {row['one_replica_images_per_s']:.1f} img/s "
                f"| {row['images_per_s']:.1f} img/s | {row['per_replica_images_per_s']:.1f} "
                f"img/s | {row['scaling']:.2f}x | {row['efficiency']:.0%} |"
            )
        return "\n".join(lines)
    if figures["benchmark"] == "timing":
        return "\n".join([
            f"`{command}`",
            "",
            f"{figures['arch']} at {figures['input_size'][0]}x{figures['input_size'][1]}, "
            f"frozen (random weights), {figures['train_images']} training images, "
            f"batch {figures['batch_size']}:",
            "",
            "| | first epoch | later epochs (median) |",
            "| --- | ---: | ---: |",
            f"| naive `model.fit` through the frozen backbone | {figures['naive_first_epoch_s']} s "
            f"| {figures['naive_later_epoch_s']} s |",
            f"| head on cached features | {figures['cached_first_epoch_s']} s (features: "
            f"{figures['feature_extraction_s']} s) | {figures['cached_later_epoch_s']} s |",
            "",
            f"Later epochs: **{figures['speedup_later_epochs']}x** faster. A second run reads "
            f"the features from the cache in {figures['warm_cache_load_s']} s instead of "
            f"{figures['feature_extraction_s']} s.",
        ])  # fmt: skip
    int8 = figures.get("int8_top1_test")
    return "\n".join([
        f"`{command}`",
        "",
        f"{figures['arch']}, --weights none, {figures['input_size'][0]}x"
        f"{figures['input_size'][1]}, split by '{figures['group_pattern']}': "
        f"{figures['images']['train']} train / {figures['images']['val']} val / "
        f"{figures['images']['test']} test images, {figures['epochs_run']} epochs, "
        f"{figures['cpu_count']} CPU cores (1-minute load average "
        f"{figures['load_average_1min'][0]} at the start, {figures['load_average_1min'][1]} "
        "at the end).",
        "",
        "| float top-1 (test) | top-5 | val top-1 | int8 TFLite top-1 (test) | train wall time "
        "| train CPU time |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {figures['float_top1_test']:.1%} | {figures['float_top5_test']:.1%} | "
        f"{figures['float_top1_val']:.1%} | "
        f"{'not measured' if int8 is None else f'{int8:.1%}'} | "
        f"{figures['train_wall_s'] / 60:.1f} min | {figures['train_cpu_s'] / 60:.1f} min |",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="real dataset: run the accuracy benchmark on it")
    parser.add_argument("--arch", help="backbone (timing: inception_v3; accuracy: tiny_cnn)")
    parser.add_argument("--input-size", type=int, help="side (timing: 139; accuracy: 32)")
    parser.add_argument(
        "--epochs", type=int, help="epochs (timing: 10 head; accuracy: 40; scaling: 4)"
    )
    parser.add_argument("--naive-epochs", type=int, default=3, help="timing: naive epochs")
    parser.add_argument(
        "--per-class", type=int, help="images per class (timing: 20; scaling: 150)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.002, help="accuracy: peak LR")
    parser.add_argument("--patience", type=int, default=0, help="accuracy: early stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--group-pattern", default=GTSRB_TRACKS, help="accuracy: grouping ('' for none)"
    )
    parser.add_argument("--out", help="accuracy: keep the run directory here")
    parser.add_argument("--no-int8", dest="int8", action="store_false",
                        help="accuracy: skip the int8 export")  # fmt: skip
    parser.add_argument(
        "--strategy", choices=("mirrored", "multi-worker"),
        help="scaling: compare one replica with --replicas under this strategy",
    )  # fmt: skip
    parser.add_argument("--replicas", type=int, default=2, help="scaling: replicas (workers)")
    parser.add_argument("--timeout", type=float, default=1800, help="scaling: seconds a run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.strategy:
        args.arch = args.arch or "tiny_cnn"
        args.input_size = args.input_size or 32
        args.epochs = args.epochs or 4
        args.per_class = args.per_class or 150
        figures = scaling(args)
    elif args.data:
        args.arch = args.arch or "tiny_cnn"
        args.input_size = args.input_size or 32
        args.epochs = args.epochs or 40
        figures = accuracy(args)
    else:
        args.arch = args.arch or "inception_v3"
        args.input_size = args.input_size or 139
        args.epochs = args.epochs or 10
        args.per_class = args.per_class or 20
        figures = timing(args)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        command = "python benchmarks/train.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        print(markdown(figures, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
