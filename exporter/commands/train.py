"""``edge-export train``: transfer learning from a class-per-folder dataset into a run directory."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from exporter.commands.dataset import add_split_options, parse_fractions
from exporter.distribute import DEFAULT_CLUSTER_TIMEOUT_S, LR_SCALING_CHOICES, STRATEGY_CHOICES
from exporter.errors import TrainingError

ARCH_CHOICES = (
    "inception_v3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "tiny_cnn",
)

EXAMPLES = """\
examples:
  # ImageNet weights (downloaded by Keras), frozen backbone, cached features, new head:
  edge-export train --data data/flowers --arch mobilenet_v3_small --weights imagenet \\
      --input-size 224 --out runs/flowers

  # then fine-tune the top 30 backbone layers:
  edge-export train --data data/flowers --arch mobilenet_v3_small --weights imagenet \\
      --fine-tune-layers 30 --fine-tune-epochs 5 --out runs/flowers-ft

  # offline, weights saved earlier with backbone.save_weights("mnv3s.weights.h5"):
  edge-export train --data data/flowers --arch mobilenet_v3_small --weights mnv3s.weights.h5 \\
      --out runs/flowers

  # no pretrained weights: the whole network is trained from scratch, with augmentation:
  edge-export train --data data/gtsrb --arch tiny_cnn --weights none --input-size 32 \\
      --group-pattern '^(\\d+_\\d+)_' --epochs 40 --learning-rate 0.002 --patience 0 \\
      --out runs/gtsrb

  # two hosts: the same command on each, TF_CONFIG naming both (index 0 on host-a, the chief,
  # which writes the run directory; index 1 on host-b):
  TF_CONFIG='{"cluster": {"worker": ["host-a:2222", "host-b:2222"]},
              "task": {"type": "worker", "index": 0}}' \\
  edge-export train --data data/flowers --arch mobilenet_v3_small --weights mnv3s.weights.h5 \\
      --strategy multi-worker --out runs/flowers
"""


def parse_input_size(text: str | None) -> tuple[int, int] | None:
    """Parse ``--input-size 96`` or ``--input-size 96x128`` (height x width).

    Raises:
        TrainingError: not one or two positive integers.
    """
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or any(v <= 0 for v in values):
        raise TrainingError(
            f"--input-size must be like 96 or 96x128 (height x width), got '{text}'"
        )
    return (values[0], values[-1])


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a classifier (transfer learning) into a run directory",
        description="Train an image classifier on a class-per-folder dataset and write a run "
        "directory (model.keras, labels.txt, run.json, splits.json, report.json, plots) for "
        "`edge-export export`. With a pretrained backbone, bottleneck features are computed once "
        "and cached, and only the new head trains (optionally followed by fine-tuning the top "
        "layers); with --weights none the whole network trains from scratch.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    parser.add_argument(
        "--arch",
        default="inception_v3",
        choices=ARCH_CHOICES,
        metavar="ARCH",
        help=f"backbone: {', '.join(ARCH_CHOICES)} (default inception_v3); tiny_cnn is a small "
        "built-in CNN for from-scratch training on small images",
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        metavar="imagenet|none|PATH",
        help="backbone weights: imagenet (downloaded by Keras, needs the internet), none (random: "
        "trains the whole network), or a weights file saved from the same backbone "
        "(default imagenet)",
    )
    parser.add_argument(
        "--input-size",
        metavar="S|HxW",
        help="model input size in pixels (default: the backbone's native size)",
    )
    parser.add_argument(
        "--resize",
        default="squash",
        choices=("squash", "center-crop", "letterbox"),
        help="how images are fitted to the input size, on the device too (default squash)",
    )
    parser.add_argument(
        "--interpolation",
        default="area",
        choices=("nearest", "linear", "area", "cubic", "lanczos"),
        help="resize interpolation (default area)",
    )
    add_split_options(
        parser, seed_help="random seed of the split, augmentation and training (default 0)"
    )
    group = parser.add_argument_group("training")
    group.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        default=20,
        help="epochs of head (or from-scratch) training (default 20)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=32,
        metavar="N",
        help="batch size per replica (device); a step trains on N x replicas examples (default 32)",
    )
    group.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        metavar="LR",
        help="learning rate of head or from-scratch training (default 0.001)",
    )
    group.add_argument(
        "--fine-tune-layers",
        type=int,
        default=0,
        metavar="N",
        help="after head training, train the top N backbone layers too "
        "(BatchNorm stays frozen; default 0: no fine-tuning)",
    )
    group.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=10,
        metavar="N",
        help="epochs of fine-tuning (default 10)",
    )
    group.add_argument(
        "--fine-tune-learning-rate",
        type=float,
        default=1e-5,
        metavar="LR",
        help="learning rate of fine-tuning (default 0.00001)",
    )
    group.add_argument(
        "--dropout",
        type=float,
        metavar="RATE",
        default=0.2,
        help="dropout before the new classification layer (default 0.2)",
    )
    group.add_argument(
        "--patience",
        type=int,
        default=5,
        metavar="N",
        help="stop after N epochs without a better validation accuracy "
        "(default 5; 0 disables early stopping)",
    )
    group.add_argument(
        "--augment-variants",
        type=int,
        default=2,
        metavar="N",
        help="augmented copies of each training image whose features are cached "
        "next to the original (default 2)",
    )
    group.add_argument(
        "--flip",
        action="store_true",
        help="also mirror images left-right when augmenting (not for signs or text)",
    )
    group.add_argument(
        "--no-class-weights",
        action="store_true",
        help="do not weight classes by their inverse frequency",
    )
    group = parser.add_argument_group("caching and hardware")
    group.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="bottleneck feature cache (default $EDGE_CLASSIFY_FEATURE_CACHE or "
        "~/.cache/edge-classify/features)",
    )
    group.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    group.add_argument(
        "--mixed-precision",
        default="auto",
        choices=("auto", "on", "off"),
        help="float16 compute (auto: on when a GPU is visible)",
    )
    group.add_argument(
        "--strategy",
        default="auto",
        choices=STRATEGY_CHOICES,
        help="tf.distribute strategy (auto: mirrored over all GPUs when there are "
        "several, else none; multi-worker trains with the cluster TF_CONFIG names)",
    )
    group.add_argument(
        "--scale-learning-rate",
        default="sqrt",
        choices=LR_SCALING_CHOICES,
        help="with several replicas, multiply the learning rates by sqrt(replicas), by "
        "replicas (linear), or leave them (none); default sqrt",
    )
    group.add_argument(
        "--cluster-timeout",
        type=float,
        default=DEFAULT_CLUSTER_TIMEOUT_S,
        metavar="S",
        help="multi-worker: give up, with exit code 1, when the other workers cannot be "
        f"reached or make no progress for S seconds (default {DEFAULT_CLUSTER_TIMEOUT_S:g})",
    )
    group.add_argument("--workers", type=int, metavar="N", help="threads decoding images")
    parser.add_argument(
        "--force", action="store_true", help="replace RUN_DIR when it already holds a run"
    )
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.strategy == "multi-worker" and not getattr(args, "verbose", False):
        # When a cluster fails, TensorFlow's C++ log repeats in pages of RPC detail what the
        # one-line error says; `edge-export -v train ...` keeps it.
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "2":
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from exporter.progress import Progress
    from exporter.train import TrainConfig, train

    config = TrainConfig(
        data=args.data,
        out=args.out,
        arch=args.arch,
        weights=args.weights,
        input_size=parse_input_size(args.input_size),
        resize=args.resize,
        interpolation=args.interpolation,
        fractions=parse_fractions(args.split),
        seed=args.seed,
        group_pattern=args.group_pattern,
        min_per_class=args.min_per_class,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        fine_tune_layers=args.fine_tune_layers,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        dropout=args.dropout,
        patience=args.patience,
        augment_variants=args.augment_variants,
        flip=args.flip,
        class_weights=not args.no_class_weights,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        mixed_precision=args.mixed_precision,
        strategy=args.strategy,
        scale_learning_rate=args.scale_learning_rate,
        cluster_timeout=args.cluster_timeout,
        workers=args.workers,
        force=args.force,
    )
    result = train(config, progress=Progress(quiet=args.quiet))
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        print(result.summary_text())
    return 0
