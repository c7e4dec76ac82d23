"""``edge-export train``: transfer learning from a class-per-folder dataset into a run directory.

The stages, in order:

1. check every option, the dataset folder and the run directory (cheap, before any work);
2. build the backbone with its weights (ImageNet, a weights file, or random);
3. read every image once through ``edge_runtime.preprocess`` at the model input size, skip
   unreadable files, split train/val/test (stratified, groups kept on one side);
4. with pretrained weights: compute the frozen backbone's features once (cached on disk, with
   augmented variants), train the new head on them, then optionally fine-tune the top layers
   end-to-end with augmentation and a low learning rate; with ``--weights none``: train the whole
   network from scratch with augmentation (frozen random features would be useless);
5. evaluate on the held-out test split and write the run directory (see docs/training.md):
   ``model.keras``, ``labels.txt``, ``run.json``, ``splits.json``, ``report.json`` and plots.

The run directory is written as ``RUN_DIR.partial`` and renamed at the end, so a failed run never
leaves a directory that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle import InputDescription
from edge_runtime.preprocess import PreprocessSpec
from edge_runtime.preprocess.ops import Interpolation, ResizeMode
from exporter.augment import AugmentPolicy, augment_image
from exporter.backbones import (
    HEAD_DENSE,
    Classifier,
    WeightsChoice,
    backbone_info,
    build_backbone,
    build_classifier,
    build_head,
    check_input_size,
    parse_weights,
    quicken_batchnorm,
    unfreeze_top_layers,
)
from exporter.dataset import (
    DEFAULT_FRACTIONS,
    DEFAULT_MIN_PER_CLASS,
    SPLIT_NAMES,
    PreparedDataset,
    Splits,
    check_fractions,
    compile_group_pattern,
    model_input,
    prepare_dataset,
    scan_dataset,
)
from exporter.distribute import (
    DEFAULT_CLUSTER_TIMEOUT_S,
    STRATEGY_CHOICES,
    TF_CONFIG_ENV,
    ClusterConfig,
    Distribution,
    RowExchange,
    agree,
    average_replica_state,
    check_cluster_addresses,
    cluster_errors,
    distributed_batches,
    learning_rate_factor,
    lost_worker_message,
    make_distribution,
    parse_tf_config,
    sum_over_workers,
    validation_dataset,
)
from exporter.errors import TrainingError
from exporter.features import FeatureCache, compute_features, default_cache_dir
from exporter.malloc import keep_freed_memory
from exporter.progress import QUIET, Progress
from exporter.report import evaluate, plot_confusion_matrix, plot_training_curves
from exporter.runinfo import RunInfo

MIXED_PRECISION_CHOICES = ("auto", "on", "off")
RUN_FILES = (
    "model.keras",
    "labels.txt",
    "run.json",
    "splits.json",
    "report.json",
    "confusion_matrix.png",
    "training_curves.png",
)


@dataclass
class TrainConfig:
    """Every setting of a training run (the command-line options of ``edge-export train``)."""

    data: str | os.PathLike[str]
    out: str | os.PathLike[str]
    arch: str = "inception_v3"
    weights: str = "imagenet"
    input_size: tuple[int, int] | None = None
    resize: ResizeMode = "squash"
    interpolation: Interpolation = "area"
    fractions: Sequence[float] = DEFAULT_FRACTIONS
    seed: int = 0
    group_pattern: str | None = None
    min_per_class: int = DEFAULT_MIN_PER_CLASS
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 10
    fine_tune_learning_rate: float = 1e-5
    dropout: float = 0.2
    patience: int = 5
    augment_variants: int = 2
    flip: bool = False
    class_weights: bool = True
    cache_dir: str | os.PathLike[str] | None = None
    use_cache: bool = True
    mixed_precision: str = "auto"
    strategy: str = "auto"
    scale_learning_rate: str = "sqrt"
    cluster_timeout: float = DEFAULT_CLUSTER_TIMEOUT_S
    workers: int | None = None
    force: bool = False


@dataclass(frozen=True)
class Plan:
    """A checked configuration with everything resolved."""

    config: TrainConfig
    data: Path
    out: Path
    size: tuple[int, int]
    spec: PreprocessSpec
    weights: WeightsChoice
    policy: AugmentPolicy
    cache_root: Path | None
    cluster: ClusterConfig | None = None


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise TrainingError(f"{name} must be positive, got {value}")


def check_out_dir(out: Path, data: Path, force: bool) -> None:
    """Refuse a run directory that would lose data or be mistaken for a dataset.

    Raises:
        TrainingError: ``out`` is a file, a non-empty folder without ``--force``, a folder that
            holds something other than a run (even with ``--force``), or lies inside the dataset.
    """
    resolved = out.resolve()
    if resolved == data or data in resolved.parents:
        raise TrainingError(
            f"--out {out} is inside the dataset {data}: it would be read as a class next time"
        )
    if not out.exists():
        return
    if not out.is_dir():
        raise TrainingError(f"--out {out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not force:
        raise TrainingError(
            f"run directory {out} is not empty: choose a new one or pass --force to replace it"
        )
    if not (out / "run.json").is_file():
        raise TrainingError(
            f"{out} is not empty and is not a run directory (no run.json): refusing to replace "
            "it, even with --force"
        )


def check_config(config: TrainConfig) -> Plan:
    """Check every option before any slow work.

    Raises:
        TrainingError: a bad option, a missing weights file, an input size the backbone refuses,
            a run directory that cannot be written, or (``--strategy multi-worker``) a missing
            or malformed ``TF_CONFIG``.
        DatasetError: bad split fractions or group pattern.
    """
    info = backbone_info(config.arch)
    size = config.input_size or (info.default_size, info.default_size)
    size = check_input_size(config.arch, (int(size[0]), int(size[1])))
    weights = parse_weights(config.weights, config.arch)
    if config.epochs < 1:
        raise TrainingError(f"--epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 1:
        raise TrainingError(f"--batch-size must be at least 1, got {config.batch_size}")
    _positive("--learning-rate", config.learning_rate)
    _positive("--fine-tune-learning-rate", config.fine_tune_learning_rate)
    if config.fine_tune_layers < 0 or config.fine_tune_epochs < 0:
        raise TrainingError("--fine-tune-layers and --fine-tune-epochs must not be negative")
    if not 0.0 <= config.dropout < 1.0:
        raise TrainingError(f"--dropout must be in 0..1 (excluding 1), got {config.dropout}")
    if config.patience < 0:
        raise TrainingError(f"--patience must not be negative, got {config.patience}")
    if not 0 <= config.augment_variants <= 50:
        raise TrainingError(f"--augment-variants must be 0..50, got {config.augment_variants}")
    if config.mixed_precision not in MIXED_PRECISION_CHOICES:
        raise TrainingError(
            f"--mixed-precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}"
        )
    if config.strategy not in STRATEGY_CHOICES:
        raise TrainingError(f"--strategy must be one of {', '.join(STRATEGY_CHOICES)}")
    learning_rate_factor(config.scale_learning_rate, 1)
    _positive("--cluster-timeout", config.cluster_timeout)
    if config.workers is not None and config.workers < 1:
        raise TrainingError(f"--workers must be at least 1, got {config.workers}")
    check_fractions(config.fractions)
    compile_group_pattern(config.group_pattern)
    spec = PreprocessSpec(size[0], size[1], config.resize, config.interpolation)
    cluster = None
    if config.strategy == "multi-worker":
        cluster = parse_tf_config(os.environ.get(TF_CONFIG_ENV))
    data = Path(config.data).expanduser()
    out = Path(config.out).expanduser()
    if data.is_dir() and (cluster is None or cluster.is_chief):
        check_out_dir(out, data.resolve(), config.force)
    cache_root = None
    if config.use_cache:
        cache_root = Path(config.cache_dir).expanduser() if config.cache_dir else None
        cache_root = cache_root or default_cache_dir()
    return Plan(
        config=config,
        data=data,
        out=out,
        size=size,
        spec=spec,
        weights=weights,
        policy=AugmentPolicy(flip=config.flip),
        cache_root=cache_root,
        cluster=cluster,
    )


# --------------------------------------------------------------------------------------------------
# Devices: mixed precision and tf.distribute


def resolve_mixed_precision(choice: str, gpus: int) -> bool:
    """``auto`` turns float16 compute on when a GPU is visible (CPUs gain nothing from it)."""
    if choice not in MIXED_PRECISION_CHOICES:
        raise TrainingError(
            f"--mixed-precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}"
        )
    return choice == "on" or (choice == "auto" and gpus > 0)


def resolve_strategy(choice: str, gpus: int) -> str:
    """``auto`` mirrors over the GPUs when there are several, else runs on the default device."""
    if choice not in STRATEGY_CHOICES:
        raise TrainingError(f"--strategy must be one of {', '.join(STRATEGY_CHOICES)}")
    if choice == "auto":
        return "mirrored" if gpus > 1 else "none"
    return choice


def visible_gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """Set Keras' global dtype policy for the models built inside, and restore it after."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# --------------------------------------------------------------------------------------------------
# Keras pieces (classes defined lazily: Keras is imported only when training runs)


def _class_weights(targets: np.ndarray, num_classes: int, enabled: bool) -> np.ndarray:
    """Per-class weights ``n / (classes * count)``: each class weighs the same in the loss."""
    if not enabled:
        return np.ones(num_classes, dtype=np.float32)
    counts = np.bincount(targets, minlength=num_classes).astype(np.float32)
    weights = len(targets) / (num_classes * np.maximum(counts, 1.0))
    return weights.astype(np.float32)


def _callbacks(
    patience: int,
    progress: Progress,
    desc: str,
    epochs: int,
    steps: int,
    clock: Callable[[], float] = time.perf_counter,
    synchronize: Callable[[Any], None] = lambda model: None,
) -> tuple[Any, Any, Any]:
    """An early-stopping callback that restores the best epoch, a tqdm progress callback, and
    one that times the training part of each epoch. ``synchronize(model)`` runs at the end of
    every epoch, before the weights are judged (on every worker alike)."""
    import keras

    class BestEpoch(keras.callbacks.Callback):
        """Keeps the weights of the epoch with the best validation accuracy (lower validation
        loss breaks ties) and stops after ``patience`` epochs without one (0: never stops)."""

        def __init__(self) -> None:
            super().__init__()
            self.best: tuple[float, float] | None = None
            self.best_weights: list[np.ndarray] | None = None
            self.best_epoch = -1
            self.waited = 0

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            synchronize(self.model)
            logs = logs or {}
            score = (float(logs.get("val_accuracy", 0.0)), -float(logs.get("val_loss", 0.0)))
            if self.best is None or score > self.best:
                self.best, self.best_epoch, self.waited = score, epoch, 0
                self.best_weights = self.model.get_weights()
                return
            self.waited += 1
            if patience and self.waited >= patience:
                self.model.stop_training = True

        def on_train_end(self, logs: dict[str, float] | None = None) -> None:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    class Bar(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.bar: Any = None

        def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
            self.bar = progress.bar(epochs * steps, desc, unit="step")

        def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
            self.bar.update(1)

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            progress.note(
                f"epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.4f} "
                f"acc {logs.get('accuracy', float('nan')):.4f}  "
                f"val_loss {logs.get('val_loss', float('nan')):.4f} "
                f"val_acc {logs.get('val_accuracy', float('nan')):.4f}"
            )

        def on_train_end(self, logs: dict[str, float] | None = None) -> None:
            if self.bar is not None:
                self.bar.close()

    class Clock(keras.callbacks.Callback):
        """Seconds from the start of each epoch to its last training step (validation
        excluded)."""

        def __init__(self) -> None:
            super().__init__()
            self.epoch_s: list[float] = []
            self.started = self.last = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.started = self.last = clock()

        def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
            self.last = clock()

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.epoch_s.append(self.last - self.started)

    return BestEpoch(), Bar(), Clock()


def augmented_batches(
    images: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    batch_size: int,
    seed: int,
    policy: AugmentPolicy,
) -> Any:
    """A ``keras.utils.PyDataset`` of shuffled, augmented (x float32, y, sample weight) batches.

    Epoch ``e``'s order and augmentations come from ``(seed, e)``, so a run is repeatable.
    """
    import keras

    class AugmentedBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self.order = np.random.default_rng([seed, 0]).permutation(len(images))

        def __len__(self) -> int:
            return math.ceil(len(images) / batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            rows = self.order[index * batch_size : (index + 1) * batch_size]
            rng = np.random.default_rng([seed, self.epoch, index, 1])
            batch = np.empty((len(rows), *images.shape[1:]), dtype=np.uint8)
            for out_row, row in enumerate(rows):
                batch[out_row] = augment_image(images[row], rng, policy)
            batch = model_input(batch)
            labels = targets[rows]
            return batch, labels, weights[labels]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = np.random.default_rng([seed, self.epoch]).permutation(len(images))

    return AugmentedBatches()


@dataclass
class Phase:
    """One training phase: its name, the epochs it ran, the best one, the Keras history, and
    how fast it trained (examples per epoch, seconds of training per epoch)."""

    name: str
    epochs_run: int
    best_epoch: int
    history: dict[str, list[float]] = field(default_factory=dict)
    examples_per_epoch: int = 0
    epoch_s: list[float] = field(default_factory=list)

    @property
    def images_per_second(self) -> float | None:
        """Examples trained per second, over the epochs after the first (which also traces and
        compiles the step), or the first when it is the only one."""
        later = self.epoch_s[1:] or self.epoch_s
        seconds = statistics.median(later) if later else 0.0
        return round(self.examples_per_epoch / seconds, 2) if seconds > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch + 1,
            "examples_per_epoch": self.examples_per_epoch,
            "epoch_s": [round(t, 4) for t in self.epoch_s],
            "images_per_second": self.images_per_second,
            "history": {k: [round(float(v), 6) for v in vs] for k, vs in self.history.items()},
        }


@dataclass
class TrainInput:
    """What ``model.fit`` trains on: the data and its keyword arguments, the steps of an epoch
    and the examples they hold (all replicas together)."""

    data: Any
    steps: int
    examples: int
    fit_kwargs: dict[str, Any] = field(default_factory=dict)


def array_input(
    dist: Distribution,
    x: np.ndarray,
    targets: np.ndarray,
    sample_weight: np.ndarray,
    per_replica: int,
    seed: int,
) -> TrainInput:
    """In-memory examples (cached features): Keras batches and shuffles them itself on one
    device; under a distribution strategy each replica gets its slice of every global batch."""
    if not dist.distributed:
        return TrainInput(
            x,
            steps=math.ceil(len(x) / per_replica),
            examples=len(x),
            fit_kwargs={
                "y": targets,
                "sample_weight": sample_weight,
                "batch_size": per_replica,
                "shuffle": True,
            },
        )

    def make_batch(rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        return x[rows], targets[rows], sample_weight[rows]

    signature = [(tuple(x.shape[1:]), "float32"), ((), "int64"), ((), "float32")]
    dataset, steps = distributed_batches(dist, len(x), per_replica, seed, make_batch, signature)
    return TrainInput(
        dataset,
        steps=steps,
        examples=steps * dist.global_batch(per_replica),
        fit_kwargs={"steps_per_epoch": steps},
    )


def augmented_input(
    dist: Distribution,
    images: np.ndarray,
    targets: np.ndarray,
    class_weights: np.ndarray,
    per_replica: int,
    seed: int,
    policy: AugmentPolicy,
) -> TrainInput:
    """Augmented image batches: a ``PyDataset`` on one device; under a distribution strategy a
    per-replica pipeline, so each worker augments only the images its replicas train on."""
    if not dist.distributed:
        batches = augmented_batches(images, targets, class_weights, per_replica, seed, policy)
        return TrainInput(batches, steps=len(batches), examples=len(images))

    def make_batch(rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        batch = np.empty((len(rows), *images.shape[1:]), dtype=np.uint8)
        for out_row, row in enumerate(rows):
            batch[out_row] = augment_image(images[row], rng, policy)
        labels = targets[rows]
        return model_input(batch), labels, class_weights[labels]

    signature = [(tuple(images.shape[1:]), "float32"), ((), "int64"), ((), "float32")]
    dataset, steps = distributed_batches(
        dist, len(images), per_replica, seed, make_batch, signature
    )
    return TrainInput(
        dataset,
        steps=steps,
        examples=steps * dist.global_batch(per_replica),
        fit_kwargs={"steps_per_epoch": steps},
    )


def fit_phase(
    name: str,
    model: Any,
    train_input: TrainInput,
    validation: Any,
    *,
    epochs: int,
    patience: int,
    progress: Progress,
    validation_batch_size: int | None,
    dist: Distribution | None = None,
) -> Phase:
    """Fit ``model`` on ``train_input``; keep the best epoch.

    ``validation`` is an ``(x, y)`` pair of arrays, batched by ``validation_batch_size``, or a
    dataset (then ``validation_batch_size`` is None). Under a distribution strategy ``dist``,
    the statistics every replica keeps for itself are averaged at the end of every epoch.
    """

    def synchronize(trained: Any) -> None:
        if dist is not None:
            average_replica_state(dist, trained.non_trainable_weights)

    best, bar, clock = _callbacks(
        patience, progress, name, epochs, train_input.steps, synchronize=synchronize
    )
    with warnings.catch_warnings():
        # fit's default shuffle=True does not apply to a dataset, which shuffles itself.
        warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        history = model.fit(
            train_input.data,
            validation_data=validation,
            validation_batch_size=validation_batch_size,
            epochs=epochs,
            verbose=0,
            callbacks=[best, bar, clock],
            **train_input.fit_kwargs,
        )
    phase = Phase(
        name,
        len(history.history.get("loss", [])),
        best.best_epoch,
        history.history,
        examples_per_epoch=train_input.examples,
        epoch_s=list(clock.epoch_s),
    )
    speed = phase.images_per_second
    progress.note(
        f"{name}: best epoch {phase.best_epoch + 1} of {phase.epochs_run}, "
        f"val_acc {history.history['val_accuracy'][phase.best_epoch]:.4f}"
        + (f"; {speed:.1f} examples/s" if speed else "")
    )
    return phase


# --------------------------------------------------------------------------------------------------
# The run


@dataclass
class TrainResult:
    """A finished run: where it is, and what run.json and report.json say.

    ``run_dir`` is None on a worker other than the chief of a multi-worker run: the chief alone
    writes the run directory.
    """

    run_dir: Path | None
    run: RunInfo
    report: dict[str, Any]
    rank: int = 0
    weights_sha256: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
            "arch": self.run.arch,
            "weights": self.run.weights,
            "input_size": [self.run.input.height, self.run.input.width],
            "training_mode": self.run.training_mode,
            "classes": len(self.run.labels),
            "images": self.run.images,
            "validation_accuracy": self.run.validation_accuracy,
            "test_accuracy": self.run.test_accuracy,
            "test_top5": self.report["top5"],
            "duration_s": self.run.duration_s,
            "strategy": self.run.strategy,
            "workers": self.run.workers,
            "replicas": self.run.replicas,
            "worker_rank": self.rank,
            "weights_sha256": self.weights_sha256,
        }

    def summary_text(self) -> str:
        s = self.summary()
        where = (
            f"-> {s['run_dir']}"
            if self.run_dir is not None
            else f"(worker rank {self.rank} of {s['workers']}: the chief wrote the run directory)"
        )
        return (
            f"trained {s['arch']} (weights: {s['weights']}, {s['training_mode']}) on "
            f"{s['images']['train']} images of {s['classes']} classes in {s['duration_s']:.0f} s: "
            f"val top-1 {s['validation_accuracy']:.1%}, test top-1 {s['test_accuracy']:.1%}, "
            f"top-{self.report['top5_k']} {s['test_top5']:.1%} {where}"
        )


def _versions() -> dict[str, str]:
    import cv2
    import keras
    import tensorflow as tf

    from edge_runtime import __version__

    return {
        "edge_classify": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
    }


def _export_copy(plan: Plan, trained: Any, num_classes: int) -> Any:
    """The trained model rebuilt in float32 outside any distribution strategy, for saving.

    A model trained under mixed precision or MirroredStrategy carries float16 layer policies or
    distributed variables; the saved model must be plain float32 for conversion to TFLite/ONNX.
    """
    with precision_policy(False):
        backbone = build_backbone(plan.config.arch, plan.size, WeightsChoice("none"))
        copy = build_classifier(
            plan.config.arch, backbone, num_classes, dropout=plan.config.dropout
        ).model
    copy.set_weights(trained.get_weights())
    return copy


def weights_digest(model: Any) -> str:
    """SHA-256 over a model's weight arrays in order: equal on every worker of one run."""
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def _publish(partial: Path, out: Path) -> None:
    """Move the finished ``RUN_DIR.partial`` into place (replacing an earlier run)."""
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(partial, out)
    if old.exists():
        shutil.rmtree(old)


@dataclass
class TrainingData:
    """Prepared uint8 images and class indices of the train and val splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_weights: np.ndarray
    train_digests: list[str]
    val_digests: list[str]

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        return model_input(self.x_val), self.y_val


def _compile(model: Any, learning_rate: Any) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


@dataclass(frozen=True)
class Hyper:
    """The batch and learning rates training uses, after scaling for the replicas."""

    per_replica_batch: int
    global_batch: int
    learning_rate: float
    fine_tune_learning_rate: float
    factor: float


def _hyper(config: TrainConfig, dist: Distribution) -> Hyper:
    factor = learning_rate_factor(config.scale_learning_rate, dist.replicas)
    return Hyper(
        per_replica_batch=config.batch_size,
        global_batch=dist.global_batch(config.batch_size),
        learning_rate=config.learning_rate * factor,
        fine_tune_learning_rate=config.fine_tune_learning_rate * factor,
        factor=factor,
    )


def _validation(
    x: np.ndarray, y: np.ndarray, dist: Distribution, batch: int
) -> tuple[Any, int | None]:
    """The validation data for ``fit`` and its batch size (None: the dataset is batched)."""
    if not dist.distributed:
        return (model_input(x), y), batch
    return validation_dataset(x, y, batch), None


def _plain_feature_model(plan: Plan, classifier: Classifier, num_classes: int) -> Any:
    """The feature extractor rebuilt outside the distribution strategy, with the same weights.

    Keras' ``predict_on_batch`` on a model with distributed variables runs the batch on every
    replica (under MirroredStrategy it returns each row once per replica) and, across workers,
    gathers every worker's rows into each answer; features are computed one worker at a time.
    """
    backbone = build_backbone(plan.config.arch, plan.size, WeightsChoice("none"))
    plain = build_classifier(
        plan.config.arch, backbone, num_classes, dropout=plan.config.dropout
    ).features
    plain.set_weights(classifier.features.get_weights())
    return plain


def _train_on_features(
    plan: Plan,
    classifier: Classifier,
    data: TrainingData,
    mixed: bool,
    progress: Progress,
    dist: Distribution,
) -> tuple[str, list[Phase], dict[str, Any]]:
    """Frozen backbone: cached features, the new head on them, then optional fine-tuning."""
    config = plan.config
    hyper = _hyper(config, dist)
    fine_tune = bool(config.fine_tune_layers and config.fine_tune_epochs)
    classifier.backbone.trainable = False
    cache = FeatureCache(
        plan.cache_root,
        {
            "arch": config.arch,
            "weights": plan.weights.identity(),
            "input_size": list(plan.size),
            "resize": config.resize,
            "interpolation": config.interpolation,
            "precision": "mixed_float16" if mixed else "float32",
            "augment": plan.policy.key(),
        },
    )
    variants = list(range(config.augment_variants + 1))
    sharing = RowExchange(dist) if dist.workers > 1 else None
    progress.stage(
        f"computing bottleneck features of the frozen {config.arch}: {len(data.x_train)} train "
        f"images x {len(variants)} variants + {len(data.x_val)} val "
        f"(cache: {cache.folder or 'off'})"
        + (f"; this worker computes its share of {dist.workers}" if sharing else "")
    )
    extractor = (
        _plain_feature_model(plan, classifier, len(data.class_weights))
        if dist.distributed
        else classifier.features
    )
    extract_batch = max(config.batch_size, 32)
    train_features = compute_features(
        extractor, data.x_train, data.train_digests, variants, cache, policy=plan.policy,
        batch_size=extract_batch, progress=progress, desc="train features", sharing=sharing,
    )  # fmt: skip
    val_features = compute_features(
        extractor, data.x_val, data.val_digests, [0], cache, batch_size=extract_batch,
        progress=progress, desc="val features", sharing=sharing,
    )[0]  # fmt: skip
    hits, misses = sum_over_workers(dist, [cache.hits, cache.misses])
    folder = str(cache.folder) if cache.folder else None
    cache_info = {"dir": folder, "hits": hits, "misses": misses}
    progress.note(
        f"features: {hits} from the cache, {misses} computed"
        + (f" ({cache.misses} of them by this worker)" if sharing else "")
    )

    with dist.scope():
        head = build_head(classifier.feature_dim, len(data.class_weights), config.dropout)
        _compile(head, hyper.learning_rate)
    features = train_features.reshape(-1, classifier.feature_dim)
    targets = np.tile(data.y_train, len(variants))
    train_input = array_input(
        dist, features, targets, data.class_weights[targets], hyper.per_replica_batch,
        config.seed,
    )  # fmt: skip
    validation, validation_batch = _validation(val_features, data.y_val, dist, hyper.global_batch)
    progress.stage(
        f"training the new head on cached features: up to {config.epochs} epochs, "
        f"{len(features)} examples, learning rate {hyper.learning_rate:g}"
    )
    phases = [
        fit_phase(
            "head", head, train_input, validation, epochs=config.epochs,
            patience=config.patience, progress=progress, validation_batch_size=validation_batch,
            dist=dist,
        )
    ]  # fmt: skip
    classifier.model.get_layer(HEAD_DENSE).set_weights(head.get_layer(HEAD_DENSE).get_weights())
    if not fine_tune:
        return "frozen-features", phases, cache_info

    count = unfreeze_top_layers(classifier.backbone, config.fine_tune_layers)
    progress.stage(
        f"fine-tuning the top {config.fine_tune_layers} layers of {config.arch} ({count} with "
        f"weights; BatchNorm frozen) end-to-end with augmentation: up to "
        f"{config.fine_tune_epochs} epochs, learning rate {hyper.fine_tune_learning_rate:g}"
    )
    with dist.scope():
        _compile(classifier.model, hyper.fine_tune_learning_rate)
    train_input = augmented_input(
        dist, data.x_train, data.y_train, data.class_weights, hyper.per_replica_batch,
        config.seed, plan.policy,
    )  # fmt: skip
    validation, validation_batch = _validation(data.x_val, data.y_val, dist, hyper.global_batch)
    phases.append(
        fit_phase(
            "fine-tune", classifier.model, train_input, validation,
            epochs=config.fine_tune_epochs, patience=config.patience, progress=progress,
            validation_batch_size=validation_batch, dist=dist,
        )
    )  # fmt: skip
    return "frozen-features+fine-tune", phases, cache_info


def _train_from_scratch(
    plan: Plan,
    classifier: Classifier,
    data: TrainingData,
    progress: Progress,
    dist: Distribution,
) -> tuple[str, list[Phase], dict[str, Any]]:
    """Random weights: the whole network trains end-to-end with augmentation."""
    import keras

    config = plan.config
    hyper = _hyper(config, dist)
    quicken_batchnorm(classifier.backbone)
    if config.fine_tune_layers:
        progress.note("--fine-tune-layers is ignored with --weights none: all layers train")
    train_input = augmented_input(
        dist, data.x_train, data.y_train, data.class_weights, hyper.per_replica_batch,
        config.seed, plan.policy,
    )  # fmt: skip
    with dist.scope():
        schedule = keras.optimizers.schedules.CosineDecay(
            hyper.learning_rate, decay_steps=max(1, config.epochs * train_input.steps), alpha=0.02
        )
        _compile(classifier.model, schedule)
    progress.stage(
        f"training the whole {config.arch} from scratch with augmentation (--weights none: "
        f"frozen random features would be useless): up to {config.epochs} epochs, learning "
        f"rate {hyper.learning_rate:g} (cosine decay)"
    )
    validation, validation_batch = _validation(data.x_val, data.y_val, dist, hyper.global_batch)
    phase = fit_phase(
        "end-to-end", classifier.model, train_input, validation, epochs=config.epochs,
        patience=config.patience, progress=progress, validation_batch_size=validation_batch,
        dist=dist,
    )  # fmt: skip
    return "end-to-end", [phase], {}


def _evaluate(
    model: Any, data: TrainingData, prepared: PreparedDataset, batch: int, progress: Progress
) -> tuple[float, dict[str, Any]]:
    """Validation top-1 and the test-split report of the model that is saved."""
    splits = prepared.splits
    x_test, y_test = prepared.images["test"], splits.targets("test")
    progress.stage(f"evaluating on the held-out test split ({len(x_test)} images)")
    val_probabilities = model.predict(data.validation[0], batch_size=batch, verbose=0)
    test_probabilities = model.predict(model_input(x_test), batch_size=batch, verbose=0)
    val_accuracy = float(np.mean(np.argmax(val_probabilities, axis=1) == data.y_val))
    evaluation = evaluate(
        np.asarray(test_probabilities, dtype=np.float64),
        y_test,
        list(splits.labels),
        paths=[s.path for s in splits.test],
    )
    evaluation["split"] = "test"
    evaluation["counts"] = prepared.report.to_json()["split_counts"]
    evaluation["corrupt_skipped"] = [{"path": p, "reason": r} for p, r in prepared.report.corrupt]
    progress.note(
        f"test top-1 {evaluation['top1']:.2%}, top-{evaluation['top5_k']} "
        f"{evaluation['top5']:.2%}; validation top-1 {val_accuracy:.2%}"
    )
    return val_accuracy, evaluation


def _write_run(
    plan: Plan,
    model: Any,
    splits: Splits,
    evaluation: dict[str, Any],
    phases: list[Phase],
    run: RunInfo,
    started: float,
    progress: Progress,
    out: Path,
) -> RunInfo:
    """Write every file into ``OUT.partial``, then move it into place; on failure remove it."""
    progress.stage(f"writing {out}")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        model.save(partial / "model.keras")
        (partial / "labels.txt").write_text("\n".join(splits.labels) + "\n", encoding="utf-8")
        splits.save(partial / "splits.json")
        _write_json(partial / "report.json", evaluation)
        plot_confusion_matrix(
            evaluation["confusion_matrix"],
            splits.labels,
            partial / "confusion_matrix.png",
            f"{plan.config.arch}: test top-1 {evaluation['top1']:.1%} "
            f"({evaluation['images']} images)",
        )
        plot_training_curves([(p.name, p.history) for p in phases], partial / "training_curves.png")
        run = run.model_copy(update={"duration_s": round(time.perf_counter() - started, 1)})
        run.write(partial / "run.json")
        _publish(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return run


def _config_identity(plan: Plan) -> str:
    """What must be the same on every worker of a cluster: every option that shapes training
    (paths may differ between hosts, threads and caches do not change the model)."""
    config = plan.config
    same = {
        key: value
        for key, value in config.__dict__.items()
        if key not in ("data", "out", "cache_dir", "use_cache", "workers", "force", "weights")
    }
    same["weights"] = plan.weights.identity()
    same["input_size"] = list(plan.size)
    return json.dumps(same, sort_keys=True, default=list)


def train(config: TrainConfig, progress: Progress = QUIET) -> TrainResult:
    """Train a classifier and write its run directory.

    Under ``--strategy multi-worker`` every worker of ``TF_CONFIG`` runs this with the same
    options, in a process of its own where TensorFlow has not run yet; the chief writes the run
    directory, the others write theirs to a temporary folder that is removed at the end.

    Raises:
        TrainingError: bad options, weights, input size or ``TF_CONFIG``, a run directory that
            cannot be written, workers that disagree or lose each other, or training failed.
        DatasetError: the dataset folder is unusable (no images, a single class, ...).
    """
    started = time.perf_counter()
    plan = check_config(config)
    scanned = scan_dataset(plan.data)  # the cheap dataset errors come before any TensorFlow work
    chief = plan.cluster is None or plan.cluster.is_chief
    if chief:
        check_out_dir(plan.out, scanned.root, config.force)
    if plan.cluster is not None:
        check_cluster_addresses(plan.cluster)
    keep_freed_memory()  # a third of CPU training time went to the kernel without it

    import keras

    gpus = visible_gpus()
    mixed = resolve_mixed_precision(config.mixed_precision, gpus)
    strategy_name = resolve_strategy(config.strategy, gpus)
    if strategy_name != "multi-worker" and os.environ.get(TF_CONFIG_ENV):
        progress.warn(
            f"{TF_CONFIG_ENV} is set but --strategy is {config.strategy}: this machine trains "
            "alone (pass --strategy multi-worker to train with the cluster)"
        )
    keras.utils.set_random_seed(config.seed)
    dist = make_distribution(
        strategy_name, cluster=plan.cluster, cluster_timeout=config.cluster_timeout
    )
    quiet = _QuietRetracing()
    logging.getLogger("tensorflow").addFilter(quiet)
    try:
        return _train(plan, scanned, dist, mixed, gpus, started, progress)
    except cluster_errors() as exc:
        if dist.workers <= 1:
            raise
        raise TrainingError(lost_worker_message(exc)) from None
    finally:
        logging.getLogger("tensorflow").removeFilter(quiet)


class _QuietRetracing(logging.Filter):
    """Every phase builds new models and so new step functions, traced once each; TensorFlow
    counts them as one function retraced too often and says so in a paragraph."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _train(
    plan: Plan,
    scanned: Any,
    dist: Distribution,
    mixed: bool,
    gpus: int,
    started: float,
    progress: Progress,
) -> TrainResult:
    config = plan.config
    hyper = _hyper(config, dist)
    progress.stage(
        f"devices: {gpus} GPU(s) visible; mixed precision {'on' if mixed else 'off'}; "
        f"strategy {dist.describe()}"
    )
    if dist.distributed:
        scaled = (
            f"learning rates x{hyper.factor:.3g} (--scale-learning-rate "
            f"{config.scale_learning_rate})"
        )
        progress.note(
            f"global batch {hyper.global_batch} = {hyper.per_replica_batch} per replica x "
            f"{dist.replicas}; {scaled}"
        )
    agree(dist, "options", _config_identity(plan))

    size_text = f"{plan.size[0]}x{plan.size[1]}"
    origin = {"imagenet": "ImageNet weights", "none": "random weights (--weights none)"}
    progress.stage(
        f"building {config.arch} at {size_text} with "
        + origin.get(plan.weights.kind, f"the weights of {plan.weights.label}")
    )
    with precision_policy(mixed), dist.scope():
        backbone = build_backbone(config.arch, plan.size, plan.weights)
    if config.fine_tune_layers > len(backbone.layers):
        raise TrainingError(
            f"--fine-tune-layers {config.fine_tune_layers} exceeds the {len(backbone.layers)} "
            f"layers of {config.arch}"
        )

    progress.stage(
        f"reading {len(scanned.samples)} images of {len(scanned.labels)} classes at {size_text} "
        f"({config.resize}, {config.interpolation}) with the device's preprocessing"
    )
    prepared = prepare_dataset(
        plan.data,
        plan.spec,
        fractions=config.fractions,
        seed=config.seed,
        group_pattern=config.group_pattern,
        min_per_class=config.min_per_class,
        workers=config.workers,
        progress=progress,
    )
    report = prepared.report
    splits = prepared.splits
    if report.corrupt:
        progress.note(f"skipped {len(report.corrupt)} unreadable files (listed in report.json)")
    progress.note(
        f"split: {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} test"
        + (f"; groups by '{config.group_pattern}'" if config.group_pattern else "")
    )
    if report.imbalance_ratio > 1.5:
        progress.note(
            f"class imbalance {report.imbalance_ratio:.1f} (largest/smallest)"
            + ("; class weights on" if config.class_weights else "")
        )

    labels = list(splits.labels)
    num_classes = len(labels)
    y_train = splits.targets("train")
    data = TrainingData(
        x_train=prepared.images["train"],
        y_train=y_train,
        x_val=prepared.images["val"],
        y_val=splits.targets("val"),
        class_weights=_class_weights(y_train, num_classes, config.class_weights),
        train_digests=prepared.digests["train"],
        val_digests=prepared.digests["val"],
    )
    with precision_policy(mixed):
        counts = [len(splits.get(name)) for name in SPLIT_NAMES]
        agree(dist, "dataset", json.dumps([prepared.fingerprint, labels, counts]))
        if plan.weights.pretrained:
            with dist.scope():
                classifier = build_classifier(
                    config.arch, backbone, num_classes, dropout=config.dropout
                )
            mode, phases, cache_info = _train_on_features(
                plan, classifier, data, mixed, progress, dist
            )
        else:
            with dist.scope():
                classifier = build_classifier(
                    config.arch, backbone, num_classes, dropout=config.dropout,
                    freeze_batchnorm=False,
                )  # fmt: skip
            mode, phases, cache_info = _train_from_scratch(plan, classifier, data, progress, dist)

    model = _export_copy(plan, classifier.model, num_classes)
    digest = weights_digest(model)
    val_accuracy, evaluation = _evaluate(model, data, prepared, config.batch_size, progress)

    fine_tuned = mode.endswith("fine-tune")
    run = RunInfo(
        arch=config.arch,
        weights=plan.weights.label,
        weights_identity=plan.weights.identity(),
        input=InputDescription(
            height=plan.size[0],
            width=plan.size[1],
            resize=config.resize,
            interpolation=config.interpolation,
        ),
        labels=labels,
        data=str(scanned.root),
        dataset_fingerprint=prepared.fingerprint,
        training_mode=mode,
        epochs=config.epochs,
        fine_tune_layers=config.fine_tune_layers if fine_tuned else 0,
        fine_tune_epochs=config.fine_tune_epochs if fine_tuned else 0,
        batch_size=config.batch_size,
        global_batch_size=hyper.global_batch,
        learning_rate=config.learning_rate,
        fine_tune_learning_rate=config.fine_tune_learning_rate,
        learning_rate_scaling=config.scale_learning_rate,
        learning_rate_factor=round(hyper.factor, 6),
        dropout=config.dropout,
        patience=config.patience,
        augment_variants=config.augment_variants if plan.weights.pretrained else 0,
        augmentation=json.loads(plan.policy.key()),
        class_weights=config.class_weights,
        seed=config.seed,
        split_fractions=list(check_fractions(config.fractions)),
        given_splits=scanned.given is not None,
        group_pattern=config.group_pattern or None,
        images={n: len(splits.get(n)) for n in SPLIT_NAMES},
        corrupt_skipped=len(report.corrupt),
        validation_accuracy=round(val_accuracy, 6),
        test_accuracy=evaluation["top1"],
        test_top5=evaluation["top5"],
        mixed_precision=mixed,
        strategy=dist.name,
        workers=dist.workers,
        replicas=dist.replicas,
        feature_cache=cache_info or None,
        phases=[phase.to_json() for phase in phases],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=_versions(),
    )
    if dist.is_chief:
        run = _write_run(plan, model, splits, evaluation, phases, run, started, progress, plan.out)
        return TrainResult(
            run_dir=plan.out.resolve(), run=run, report=evaluation, weights_sha256=digest
        )
    # The other workers go through the same steps into a folder of their own, then drop it.
    scratch = Path(tempfile.mkdtemp(prefix=f"edge-export-worker{dist.rank}-"))
    try:
        run = _write_run(
            plan, model, splits, evaluation, phases, run, started, progress, scratch / "run"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return TrainResult(
        run_dir=None, run=run, report=evaluation, rank=dist.rank, weights_sha256=digest
    )
