"""Training on several devices and hosts: ``tf.distribute`` strategies that work with Keras 3.

Three strategies (``--strategy``):

- ``none``: TensorFlow's default strategy, one device;
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over every GPU of this machine, else over every
  logical CPU device (one, unless the CPU was split with
  ``tf.config.set_logical_device_configuration``);
- ``multi-worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the workers that
  ``TF_CONFIG`` names, each with its GPUs (or its CPU).

What this module adds to TensorFlow's strategies:

- :func:`parse_tf_config` checks ``TF_CONFIG`` before TensorFlow starts, so a missing or malformed
  one, or a task that is not in its own cluster, is one clear line;
- a strategy class whose ``reduce`` accepts what Keras 3's TensorFlow trainer passes it (see
  :func:`multi_worker_strategy_class`): without it every ``model.fit`` under
  ``MultiWorkerMirroredStrategy`` dies before its first step;
- a bounded start: by default TensorFlow's coordination leader (the chief) waits forever for
  workers that never come, inside a C++ call that no signal interrupts; here every worker gives
  up after ``--cluster-timeout`` seconds with one line (a worker lost later in training is
  TensorFlow's heartbeat's to detect: it aborts the collectives, which is one line too);
- the input pipeline: :func:`distributed_batches` gives every replica its own slice of each global
  batch (``per-replica batch x replicas``), computed only by the worker that feeds that replica;
- :class:`RowExchange`: each replica's worker computes its share of the bottleneck features and
  all workers receive all of them, so the feature cache is filled once, without two workers
  writing the same file;
- :func:`agree`: the workers compare their options and dataset before training, instead of
  deadlocking on mismatched collectives.

TensorFlow is imported inside the functions that need it: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import numpy as np

from exporter.errors import TrainingError

STRATEGY_CHOICES = ("auto", "mirrored", "multi-worker", "none")
LR_SCALING_CHOICES = ("sqrt", "linear", "none")
TF_CONFIG_ENV = "TF_CONFIG"
DEFAULT_CLUSTER_TIMEOUT_S = 120.0
# The jobs MultiWorkerMirroredStrategy trains with; "ps" belongs to ParameterServerStrategy and
# an "evaluator" runs beside the training cluster, neither of which this trainer runs.
WORKER_JOBS = ("chief", "worker")
TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host-a:2222", "host-b:2222"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


# --------------------------------------------------------------------------------------------------
# TF_CONFIG (pure)


@dataclass(frozen=True)
class ClusterConfig:
    """The cluster ``TF_CONFIG`` describes and which task of it this process is."""

    jobs: Mapping[str, tuple[str, ...]]
    task_type: str
    task_index: int

    @property
    def workers(self) -> int:
        """Training processes in the cluster (the chief, if any, and the workers)."""
        return sum(len(self.jobs.get(job, ())) for job in WORKER_JOBS)

    @property
    def rank(self) -> int:
        """This worker's place among all of them: 0 is the chief, as in TensorFlow (the
        ``chief`` task when there is one, else worker 0)."""
        if self.task_type == "chief":
            return 0
        return self.task_index + len(self.jobs.get("chief", ()))

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def address(self) -> str:
        return self.jobs[self.task_type][self.task_index]

    def name(self) -> str:
        """``worker 1`` or ``chief``, as TF_CONFIG calls this task."""
        return "chief" if self.task_type == "chief" else f"worker {self.task_index}"

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": {job: list(addresses) for job, addresses in self.jobs.items()},
            "task": {"type": self.task_type, "index": self.task_index},
        }


def _address(text: object, where: str) -> str:
    """A ``host:port`` entry of the cluster, checked."""
    if not isinstance(text, str) or ":" not in text:
        raise TrainingError(f'TF_CONFIG {where} must be "host:port", got {json.dumps(text)}')
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TrainingError(
            f'TF_CONFIG {where} must be "host:port" with a port 1-65535, got {json.dumps(text)}'
        )
    return text


def parse_tf_config(text: str | None) -> ClusterConfig:
    """Check ``TF_CONFIG`` (the JSON text of the environment variable) for multi-worker training.

    Keys other than ``cluster`` and ``task`` (``environment``, ``rpc_layer``, what cluster
    managers add) are left to TensorFlow.

    Raises:
        TrainingError: it is missing or empty, is not JSON, has no cluster of ``chief`` and
            ``worker`` jobs of ``host:port`` addresses, or its task is not in its cluster.
    """
    if text is None or not text.strip():
        raise TrainingError(
            f"--strategy multi-worker needs {TF_CONFIG_ENV}: set it on every worker to the "
            f"cluster and that worker's task, e.g. {TF_CONFIG_EXAMPLE} (see docs/training.md)"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainingError(
            f"{TF_CONFIG_ENV} is not valid JSON ({exc.msg} at character {exc.pos}): it should "
            f"look like {TF_CONFIG_EXAMPLE}"
        ) from None
    if not isinstance(data, dict):
        raise TrainingError(f'{TF_CONFIG_ENV} must be a JSON object with "cluster" and "task"')
    cluster = data.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise TrainingError(
            f'{TF_CONFIG_ENV} has no "cluster" object (job name -> list of "host:port"), e.g. '
            f"{TF_CONFIG_EXAMPLE}"
        )
    jobs: dict[str, tuple[str, ...]] = {}
    seen: set[str] = set()
    for job, addresses in cluster.items():
        if job not in WORKER_JOBS:
            raise TrainingError(
                f'{TF_CONFIG_ENV} cluster job "{job}" is not supported: multi-worker training '
                'uses "worker" jobs (and optionally one "chief")'
            )
        if not isinstance(addresses, list) or not addresses:
            raise TrainingError(
                f'{TF_CONFIG_ENV} cluster job "{job}" must be a non-empty list of "host:port"'
            )
        checked = tuple(
            _address(entry, f'cluster "{job}" entry {i}') for i, entry in enumerate(addresses)
        )
        for address in checked:
            if address in seen:
                raise TrainingError(f"{TF_CONFIG_ENV} names {address} twice in its cluster")
            seen.add(address)
        jobs[job] = checked
    if len(jobs.get("chief", ())) > 1:
        raise TrainingError(f'{TF_CONFIG_ENV} may name one "chief", got {len(jobs["chief"])}')
    task = data.get("task")
    if not isinstance(task, dict):
        raise TrainingError(
            f'{TF_CONFIG_ENV} has no "task" object ({{"type": "worker", "index": N}}) saying '
            "which worker of the cluster this is"
        )
    task_type, index = task.get("type"), task.get("index")
    if not isinstance(task_type, str) or task_type not in jobs:
        raise TrainingError(
            f"{TF_CONFIG_ENV} task type {json.dumps(task_type)} is not a job of its cluster "
            f"({', '.join(jobs)})"
        )
    if isinstance(index, bool) or not isinstance(index, int):
        raise TrainingError(
            f"{TF_CONFIG_ENV} task index must be an integer, got {json.dumps(index)}"
        )
    if not 0 <= index < len(jobs[task_type]):
        raise TrainingError(
            f'{TF_CONFIG_ENV} task {task_type} {index} is not in its cluster: job "{task_type}" '
            f"has {len(jobs[task_type])} task(s), 0..{len(jobs[task_type]) - 1}"
        )
    return ClusterConfig(jobs=jobs, task_type=task_type, task_index=index)


def check_cluster_addresses(cluster: ClusterConfig) -> None:
    """Fail early, with one line, on what would make TensorFlow's start-up fail or hang: a host
    name that does not resolve, or this worker's own port already taken.

    Raises:
        TrainingError: an address does not resolve, or this worker cannot listen on its port.
    """
    for job, addresses in cluster.jobs.items():
        for index, address in enumerate(addresses):
            host, _, port = address.rpartition(":")
            try:
                socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
            except OSError as exc:
                raise TrainingError(
                    f"{TF_CONFIG_ENV} {job} {index} address {address}: cannot resolve "
                    f"{host} ({exc.strerror or exc})"
                ) from None
    own_port = int(cluster.address.rpartition(":")[2])
    # TensorFlow's server listens on every interface at this port; try the same first.
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("0.0.0.0", own_port))
    except OSError as exc:
        raise TrainingError(
            f"this worker ({cluster.name()} of {TF_CONFIG_ENV}, {cluster.address}) cannot listen "
            f"on port {own_port}: {exc.strerror or exc} (another process, or an earlier run still "
            "exiting?)"
        ) from None
    finally:
        probe.close()


def learning_rate_factor(scaling: str, replicas: int) -> float:
    """How much ``--scale-learning-rate`` multiplies the learning rates for ``replicas``.

    ``sqrt``: by the square root of the growth of the global batch (the rule for Adam, which
    every phase here uses); ``linear``: by the growth itself (the rule for plain SGD); ``none``.

    Raises:
        TrainingError: an unknown scaling.
    """
    if scaling == "sqrt":
        return math.sqrt(replicas)
    if scaling == "linear":
        return float(replicas)
    if scaling == "none":
        return 1.0
    raise TrainingError(f"--scale-learning-rate must be one of {', '.join(LR_SCALING_CHOICES)}")


# --------------------------------------------------------------------------------------------------
# Strategies


@lru_cache(maxsize=1)
def multi_worker_strategy_class() -> type:
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` accepts what Keras 3 hands it.

    Keras 3's TensorFlow trainer calls ``strategy.reduce`` in two ways that
    ``MirroredStrategy`` accepts and ``MultiWorkerMirroredStrategy`` refuses
    (https://github.com/keras-team/keras/issues/20585):

    - before the first step of ``fit`` and ``evaluate`` it reduces the first batch, a tuple
      ``(x, y, sample_weight)`` of per-replica values, to get its shapes; the multi-worker
      strategy passes the tuple whole to ``convert_to_tensor``: "Attempt to convert a value
      (PerReplica:{...}) with an unsupported type ... to a Tensor";
    - after every step it reduces each scalar metric with ``axis=0``: "Invalid reduction
      dimension 0 for input with 0 dimensions".

    This ``reduce`` maps over nested structures, as ``MirroredStrategy``'s does, and reduces
    scalars across replicas only.
    """
    import tensorflow as tf

    class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """MultiWorkerMirroredStrategy for Keras 3's ``fit`` (see the function's docstring)."""

        def reduce(self, reduce_op: Any, value: Any, axis: int | None) -> Any:
            parent: Any = super()

            def one(item: Any) -> Any:
                along = axis
                if along is not None:
                    local = self.experimental_local_results(item)[0]
                    if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                        along = None
                return parent.reduce(reduce_op, item, along)

            return tf.nest.map_structure(one, value)

    return KerasMultiWorkerMirroredStrategy


@dataclass
class Distribution:
    """The strategy of a run and where this process stands in it."""

    name: str
    strategy: Any
    replicas: int = 1
    workers: int = 1
    rank: int = 0
    cluster: ClusterConfig | None = None
    local_replica_ids: tuple[int, ...] = field(default=(0,))

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True under ``mirrored`` and ``multi-worker``: models hold distributed variables."""
        return self.name != "none"

    def scope(self) -> Any:
        return self.strategy.scope()

    def global_batch(self, per_replica: int) -> int:
        return per_replica * self.replicas

    def describe(self) -> str:
        """``multi-worker (2 workers, 2 replicas; this is worker 1)`` and the like."""
        plural = "s" if self.replicas != 1 else ""
        if self.cluster is None:
            return f"{self.name} ({self.replicas} replica{plural})"
        who = (
            "the chief, which writes the run"
            if self.is_chief
            else (f"{self.cluster.name()}; the chief writes the run")
        )
        return (
            f"{self.name} ({self.workers} workers, {self.replicas} replica{plural}; this is {who})"
        )


def _mirrored_devices() -> tuple[str, ...]:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return tuple(d.name for d in gpus or tf.config.list_logical_devices("CPU"))


# One strategy per process and device set: a second MirroredStrategy over the same devices
# numbers its collectives from the start again, and its all-reduces meet those of the first
# (on CPU devices: "Shape mismatch in the collective instance"), or wait for them for ever.
@cache
def _mirrored_strategy(devices: tuple[str, ...]) -> Any:
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(list(devices))


def _tf_version() -> str:
    import tensorflow as tf

    return str(tf.__version__)


def _bound_the_rendezvous(cluster: ClusterConfig, timeout: float) -> None:
    """Configure TensorFlow's coordination service as MultiWorkerMirroredStrategy would, plus
    a deadline for every task to register.

    Without ``cluster_register_with_barrier`` the leader (the chief) does not apply the
    deadline to itself and waits for missing workers forever.
    """
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    pb2: Any = None
    for module in (  # where the protobuf lives has moved between TensorFlow releases
        "tensorflow.compiler.xla.tsl.protobuf.coordination_config_pb2",
        "tsl.protobuf.coordination_config_pb2",
    ):
        try:
            pb2 = importlib.import_module(module)
            break
        except ImportError:
            continue
    if pb2 is None:
        raise TrainingError(
            f"TensorFlow {_tf_version()} has no coordination service configuration where this "
            "trainer looks for it: --strategy multi-worker was made with TensorFlow 2.21"
        )
    spec = multi_worker_util.normalize_cluster_spec(cluster.to_json()["cluster"])
    jobs = [
        pb2.CoordinatedJob(name=job, num_tasks=len(cluster.jobs[job]))
        for job in WORKER_JOBS
        if job in cluster.jobs
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=int(timeout * 1000),
    )
    config = context.context().coordination_service
    if "cluster_register_with_barrier" not in config.DESCRIPTOR.fields_by_name:
        raise TrainingError(
            f"TensorFlow {_tf_version()} cannot bound the wait for the other workers (its "
            "coordination service lacks cluster_register_with_barrier): --strategy multi-worker "
            "was made with TensorFlow 2.21"
        )
    config.cluster_register_with_barrier = True


def make_distribution(
    name: str,
    *,
    cluster: ClusterConfig | None = None,
    cluster_timeout: float = DEFAULT_CLUSTER_TIMEOUT_S,
) -> Distribution:
    """Create the strategy called ``name`` (``none``, ``mirrored`` or ``multi-worker``).

    ``multi-worker`` needs ``cluster`` (:func:`parse_tf_config` of the ``TF_CONFIG`` that
    TensorFlow reads too) and waits up to ``cluster_timeout`` seconds for every worker to join.

    Raises:
        TrainingError: an unknown strategy, a multi-worker run without a cluster, in a process
            where TensorFlow already ran, or whose workers did not all join in time.
    """
    import tensorflow as tf

    if name == "none":
        return Distribution("none", tf.distribute.get_strategy())
    if name == "mirrored":
        strategy = _mirrored_strategy(_mirrored_devices())
        replicas = int(strategy.num_replicas_in_sync)
        return Distribution(
            "mirrored", strategy, replicas=replicas, local_replica_ids=tuple(range(replicas))
        )
    if name != "multi-worker":
        raise TrainingError(f"unknown strategy '{name}'")
    if cluster is None:
        raise TrainingError("--strategy multi-worker needs a cluster (TF_CONFIG)")
    peers = [a for job in cluster.jobs.values() for a in job if a != cluster.address]
    _bound_the_rendezvous(cluster, cluster_timeout)
    try:
        strategy = multi_worker_strategy_class()()
    except tf.errors.DeadlineExceededError:
        raise TrainingError(
            f"not every worker of {TF_CONFIG_ENV} joined within {cluster_timeout:g} s (this is "
            f"{cluster.name()} at {cluster.address}; the others: {', '.join(peers)}): start the "
            "same command on every worker, check that they reach each other, or raise "
            "--cluster-timeout"
        ) from None
    except (tf.errors.OpError, RuntimeError) as exc:
        detail = (getattr(exc, "message", "") or str(exc)).strip().splitlines()
        if "startup" in str(exc):  # "Collective ops must be configured at program startup"
            raise TrainingError(
                "--strategy multi-worker must start in a fresh process: TensorFlow already ran "
                "in this one"
            ) from None
        raise TrainingError(
            f"cannot join the cluster of {TF_CONFIG_ENV}: {detail[0] if detail else exc}"
        ) from None
    ids: list[int] = []

    def local(context: Any) -> Any:
        ids.append(int(context.replica_id_in_sync_group))
        return tf.zeros(())

    strategy.experimental_distribute_values_from_function(local)
    return Distribution(
        "multi-worker",
        strategy,
        replicas=int(strategy.num_replicas_in_sync),
        workers=cluster.workers,
        rank=cluster.rank,
        cluster=cluster,
        local_replica_ids=tuple(ids),
    )


def cluster_errors() -> tuple[type[BaseException], ...]:
    """The TensorFlow errors a collective raises when a worker is lost."""
    import tensorflow as tf

    return (
        tf.errors.UnavailableError,
        tf.errors.AbortedError,
        tf.errors.CancelledError,
        tf.errors.DeadlineExceededError,
    )


_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


def lost_worker_message(error: BaseException) -> str:
    """One line for a collective that failed because a worker was lost (TensorFlow's message
    is a page of RPC detail; what matters is which worker, and that its own output says why)."""
    text = getattr(error, "message", "") or str(error)
    if "unhealthy" in text:
        lost = sorted({f"{job} {task}" for job, task in _TASK.findall(text.split("unhealthy")[1])})
        return (
            f"lost {', '.join(lost) or 'a worker'} during training: it stopped sending "
            "heartbeats (its own output says why)"
        )
    return (
        f"lost the connection to another worker during training ({type(error).__name__}): the "
        "worker that stopped first says why"
    )


def average_replica_state(dist: Distribution, variables: Sequence[Any]) -> int:
    """Set each variable that replicas update on their own to its mean over all replicas;
    returns how many were averaged.

    Keras 3 creates BatchNormalization's moving mean and variance without an aggregation, so
    under a strategy every replica keeps the statistics of its own slices of the batches, and
    the copies drift apart: reading one returns the first local replica's, a different model on
    every worker. Every worker must call this at the same point (it is a collective).
    """
    import tensorflow as tf

    if not dist.distributed or dist.replicas <= 1:
        return 0
    position = {replica: i for i, replica in enumerate(dist.local_replica_ids)}
    averaged = 0
    for variable in variables:
        value = getattr(variable, "value", variable)
        components = getattr(value, "values", None)
        aggregation = getattr(value, "aggregation", None)
        if (
            components is None
            or aggregation != tf.VariableAggregation.NONE
            or not value.dtype.is_floating
            or len(components) != len(position)
        ):
            continue
        per_replica = dist.strategy.experimental_distribute_values_from_function(
            lambda context, parts=components: tf.identity(
                parts[position[int(context.replica_id_in_sync_group)]]
            )
        )
        variable.assign(dist.strategy.reduce("MEAN", per_replica, axis=None))
        averaged += 1
    return averaged


def _digest64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def _gather_int64(dist: Distribution, values: Mapping[int, Sequence[int]]) -> np.ndarray:
    """Every replica's row of int64 ``values[replica]``, on every worker: ``(replicas, k)``."""
    import tensorflow as tf

    per_replica = dist.strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(
            [list(values[int(context.replica_id_in_sync_group)])], dtype=tf.int64
        )
    )
    return np.asarray(dist.strategy.gather(per_replica, axis=0))


def agree(dist: Distribution, what: str, text: str) -> None:
    """Check that every worker has the same ``text`` (its options, its dataset).

    Workers that train on different data or options would issue different collectives and
    wait for each other forever; comparing a hash first turns that into one line on each.

    Raises:
        TrainingError: a worker's ``text`` differs from the chief's.
    """
    if dist.workers <= 1:
        return
    mine = _digest64(text)
    rows = _gather_int64(dist, {r: [mine] for r in dist.local_replica_ids})[:, 0]
    per_worker = max(1, dist.replicas // dist.workers)
    for replica, value in enumerate(rows):
        if int(value) != int(rows[0]):
            rank = replica // per_worker
            who = "this worker" if rank == dist.rank else f"the worker of rank {rank}"
            raise TrainingError(
                f"{who} has different {what} than the chief: every worker must run the same "
                "command on the same dataset"
            )


def sum_over_workers(dist: Distribution, values: Sequence[int]) -> list[int]:
    """The sums of each worker's ``values`` (counts), on every worker."""
    if dist.workers <= 1:
        return [int(v) for v in values]
    first = min(dist.local_replica_ids)
    rows = _gather_int64(
        dist,
        {r: (list(values) if r == first else [0] * len(values)) for r in dist.local_replica_ids},
    )
    return [int(v) for v in rows.sum(axis=0)]


# --------------------------------------------------------------------------------------------------
# Input pipeline (the layout is pure numpy; the tf.data part is at the edge)


def steps_per_epoch(count: int, global_batch: int) -> int:
    """Steps that show every example at least once per epoch."""
    return max(1, math.ceil(count / global_batch))


def epoch_slots(count: int, global_batch: int, steps: int, seed: int, epoch: int) -> np.ndarray:
    """The examples of epoch ``epoch``: ``(steps, global_batch)`` indices into ``count``.

    A permutation from ``(seed, epoch)``, wrapped around to fill the last global batch, so every
    replica gets a full batch on every step (a replica that ran out of data first would leave
    the others waiting in the gradient all-reduce).
    """
    order = np.random.default_rng([seed, epoch]).permutation(count)
    return np.resize(order, steps * global_batch).reshape(steps, global_batch)


def replica_rows(slots: np.ndarray, replica: int, per_replica: int) -> np.ndarray:
    """The slice of one global batch (a row of :func:`epoch_slots`) that ``replica`` trains on."""
    return slots[replica * per_replica : (replica + 1) * per_replica]


def distributed_batches(
    dist: Distribution,
    count: int,
    per_replica: int,
    seed: int,
    make_batch: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, ...]],
    signature: Sequence[tuple[tuple[int, ...], str]],
) -> tuple[Any, int]:
    """An endless per-replica input pipeline for ``model.fit(..., steps_per_epoch=steps)``.

    Each worker's pipeline yields, step after step, the batches of its own replicas only:
    ``make_batch(rows, rng)`` of :func:`replica_rows`, with an ``rng`` drawn from
    ``(seed, epoch, step, replica)`` (the augmentation of a batch does not depend on the cluster
    layout). ``signature`` is the shape (without the batch axis) and dtype of each array
    ``make_batch`` returns. Returns the distributed dataset and the steps per epoch.
    """
    import tensorflow as tf

    global_batch = dist.global_batch(per_replica)
    steps = steps_per_epoch(count, global_batch)
    spec = tuple(
        tf.TensorSpec((per_replica, *shape), tf.as_dtype(dtype)) for shape, dtype in signature
    )

    def dataset_fn(context: Any) -> Any:
        local = dist.replicas // context.num_input_pipelines
        mine = [context.input_pipeline_id * local + j for j in range(local)]

        def batches() -> Iterator[tuple[np.ndarray, ...]]:
            epoch = 0
            while True:
                slots = epoch_slots(count, global_batch, steps, seed, epoch)
                for step in range(steps):
                    for replica in mine:
                        rows = replica_rows(slots[step], replica, per_replica)
                        rng = np.random.default_rng([seed, epoch, step, replica, 1])
                        yield make_batch(rows, rng)
                epoch += 1

        dataset = tf.data.Dataset.from_generator(batches, output_signature=spec)
        return dataset.prefetch(2)

    return dist.strategy.distribute_datasets_from_function(dataset_fn), steps


def validation_dataset(images: np.ndarray, targets: np.ndarray, global_batch: int) -> Any:
    """Prepared uint8 validation images as a dataset of float32 batches that ``tf.distribute``
    shards by element (``DATA``): each worker evaluates its share and Keras adds up the metrics.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(global_batch)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# --------------------------------------------------------------------------------------------------
# Sharing computed rows between workers


def replica_share(count: int, replicas: int, replica: int) -> np.ndarray:
    """The rows replica ``replica`` computes: ``replica, replica + replicas, ...``."""
    return np.arange(replica, count, replicas)


class RowExchange:
    """Shares rows (bottleneck features) that each worker computes for its own replicas.

    Row ``i`` belongs to replica ``i % replicas``; a worker computes the rows of its local
    replicas (:meth:`rows`) and :meth:`exchange` gives every worker every row, in chunks of at
    most ``chunk_bytes`` per replica so the collectives stay small.
    """

    def __init__(self, dist: Distribution, chunk_bytes: int = 32 << 20) -> None:
        self.dist = dist
        self.chunk_bytes = chunk_bytes

    def rows(self, count: int) -> np.ndarray:
        """The rows this worker computes, in increasing order."""
        shares = [replica_share(count, self.dist.replicas, r) for r in self.dist.local_replica_ids]
        return np.sort(np.concatenate(shares)) if shares else np.zeros(0, dtype=np.int64)

    def exchange(self, count: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """All ``count`` rows, given this worker's ``values`` of ``rows`` (from :meth:`rows`).

        Every worker must call it with the same ``count`` and row width.
        """
        import tensorflow as tf

        replicas = self.dist.replicas
        width = int(np.prod(values.shape[1:]))
        flat = values.reshape(len(rows), width).astype(np.float32, copy=False)
        position = {int(row): i for i, row in enumerate(rows)}
        share = math.ceil(count / replicas)
        chunk = max(1, min(share, self.chunk_bytes // max(1, 4 * width)))
        result = np.zeros((count, width), dtype=np.float32)
        for start in range(0, share, chunk):
            size = min(chunk, share - start)
            blocks: dict[int, np.ndarray] = {}
            for replica in self.dist.local_replica_ids:
                block = np.zeros((size, width), dtype=np.float32)
                owned = replica_share(count, replicas, replica)[start : start + size]
                block[: len(owned)] = flat[[position[int(r)] for r in owned]]
                blocks[replica] = block
            per_replica = self.dist.strategy.experimental_distribute_values_from_function(
                lambda context, blocks=blocks: tf.constant(
                    blocks[int(context.replica_id_in_sync_group)]
                )
            )
            gathered = np.asarray(self.dist.strategy.gather(per_replica, axis=0))
            for replica in range(replicas):
                owned = replica_share(count, replicas, replica)[start : start + size]
                result[owned] = gathered[replica * size : replica * size + len(owned)]
        return result.reshape((count, *values.shape[1:]))
