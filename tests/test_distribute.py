"""Training on several devices and hosts: TF_CONFIG, the input layout, shared features, and real
clusters of worker processes on loopback (MultiWorkerMirroredStrategy) and of logical CPU
devices (MirroredStrategy)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter.cli import main
from exporter.distribute import (
    Distribution,
    RowExchange,
    epoch_slots,
    learning_rate_factor,
    lost_worker_message,
    parse_tf_config,
    replica_rows,
    replica_share,
    steps_per_epoch,
)
from exporter.errors import TrainingError
from exporter.features import FeatureCache, compute_features
from exporter.train import Phase
from tests.exporter_fixtures import make_dataset, one_error_line

ROOT = Path(__file__).resolve().parents[1]
TWO = '{"cluster": {"worker": ["127.0.0.1:5000", "127.0.0.1:5001"]}, "task": %s}'


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three easy classes, 12 images each (24 train, 6 val, 6 test)."""
    return make_dataset(tmp_path_factory.mktemp("shapes"), {"a": 12, "b": 12, "c": 12}, size=24)


# ---------------------------------------------------------------------------------------------
# TF_CONFIG


def test_tf_config_names_the_chief_and_this_worker() -> None:
    cluster = parse_tf_config(TWO % '{"type": "worker", "index": 1}')
    assert (cluster.workers, cluster.rank, cluster.is_chief) == (2, 1, False)
    assert cluster.address == "127.0.0.1:5001" and cluster.name() == "worker 1"
    first = parse_tf_config(TWO % '{"type": "worker", "index": 0}')
    assert first.is_chief and first.rank == 0
    # With a chief job, the chief is rank 0 and the workers follow it, as in TensorFlow.
    text = json.dumps({
        "cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
        "task": {"type": "worker", "index": 0}, "environment": "cloud",
    })  # fmt: skip
    with_chief = parse_tf_config(text)
    assert (with_chief.workers, with_chief.rank, with_chief.is_chief) == (3, 1, False)
    assert parse_tf_config(text.replace('"worker", "index": 0', '"chief", "index": 0')).is_chief


BAD_TF_CONFIGS = [
    (None, "needs TF_CONFIG"),
    ("   ", "needs TF_CONFIG"),
    ("{oops", "TF_CONFIG is not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster" object'),
    ('{"cluster": {"worker": ["127.0.0.1:5000"]}}', 'no "task" object'),
    (TWO % '{"type": "worker", "index": 2}', "task worker 2 is not in its cluster"),
    (TWO % '{"type": "worker", "index": -1}', "task worker -1 is not in its cluster"),
    (TWO % '{"type": "worker", "index": "0"}', "task index must be an integer"),
    (TWO % '{"type": "chief", "index": 0}', 'task type "chief" is not a job of its cluster'),
    ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', 'job "ps" is not'),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "non-empty list"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', '"host:port"'),
    ('{"cluster": {"worker": ["a:0"]}, "task": {"type": "worker", "index": 0}}', "port 1-65535"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "twice"),
    ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}', "one"),
]


@pytest.mark.parametrize(("text", "message"), BAD_TF_CONFIGS)
def test_bad_tf_config_is_refused(text: str | None, message: str) -> None:
    with pytest.raises(TrainingError, match=message.replace("(", r"\(")):
        parse_tf_config(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "--strategy multi-worker needs TF_CONFIG"),
        ("{oops", "TF_CONFIG is not valid JSON"),
        (TWO % '{"type": "worker", "index": 7}', "task worker 7 is not in its cluster"),
        (
            '{"cluster": {"worker": ["nowhere.invalid:5000", "127.0.0.1:5001"]}, '
            '"task": {"type": "worker", "index": 1}}',
            "cannot resolve nowhere.invalid",
        ),
    ],
    ids=["missing", "malformed", "task-not-in-cluster", "unresolvable-peer"],
)
def test_bad_tf_config_is_one_line_before_any_work(
    shapes: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str | None,
    message: str,
) -> None:
    if text is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", text)
    out = tmp_path / "run"
    args = ["train", "--data", str(shapes), "--out", str(out), "--arch", "tiny_cnn",
            "--weights", "none", "--input-size", "16", "--strategy", "multi-worker"]  # fmt: skip
    assert main(args) == 1
    assert message in one_error_line(capsys)
    assert not out.exists()


def test_a_worker_whose_port_is_taken_is_one_line(
    shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv(
            "TF_CONFIG",
            json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}", "127.0.0.1:1"]},
                        "task": {"type": "worker", "index": 0}}),
        )  # fmt: skip
        args = ["train", "--data", str(shapes), "--out", str(tmp_path / "run"), "--arch",
                "tiny_cnn", "--weights", "none", "--input-size", "16", "--strategy",
                "multi-worker"]  # fmt: skip
        assert main(args) == 1
    assert f"cannot listen on port {port}" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cluster-timeout", "0"], "--cluster-timeout must be positive"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_distribution_options_are_one_line(
    shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra, message: str
) -> None:
    args = ["train", "--data", str(shapes), "--out", str(tmp_path / "run"), "--arch", "tiny_cnn",
            "--weights", "none", "--input-size", "16", *extra]  # fmt: skip
    assert main(args) == 1
    assert message in one_error_line(capsys)


# ---------------------------------------------------------------------------------------------
# Pure pieces: learning rate, input layout, messages, throughput


def test_learning_rate_scaling() -> None:
    assert learning_rate_factor("sqrt", 4) == 2.0
    assert learning_rate_factor("linear", 4) == 4.0
    assert learning_rate_factor("none", 4) == 1.0
    assert learning_rate_factor("sqrt", 1) == learning_rate_factor("linear", 1) == 1.0
    with pytest.raises(TrainingError, match="--scale-learning-rate"):
        learning_rate_factor("cubic", 2)


@pytest.mark.parametrize(("count", "per_replica", "replicas"), [(24, 4, 2), (37, 8, 3), (5, 4, 2)])
def test_every_replica_gets_a_full_batch_and_every_example_is_seen(
    count: int, per_replica: int, replicas: int
) -> None:
    global_batch = per_replica * replicas
    steps = steps_per_epoch(count, global_batch)
    assert steps * global_batch >= count > (steps - 1) * global_batch or steps == 1
    first = epoch_slots(count, global_batch, steps, seed=3, epoch=0)
    assert first.shape == (steps, global_batch)
    assert set(first.ravel()) == set(range(count))  # wrap-around repeats a few, drops none
    for step in first:
        parts = [replica_rows(step, r, per_replica) for r in range(replicas)]
        assert all(len(part) == per_replica for part in parts)
        np.testing.assert_array_equal(np.concatenate(parts), step)
    np.testing.assert_array_equal(first, epoch_slots(count, global_batch, steps, 3, 0))
    assert not np.array_equal(first, epoch_slots(count, global_batch, steps, 3, 1))


def test_replica_shares_partition_the_rows() -> None:
    shares = [replica_share(11, 3, r) for r in range(3)]
    assert sorted(np.concatenate(shares).tolist()) == list(range(11))
    assert [len(s) for s in shares] == [4, 4, 3]


def test_lost_worker_messages_name_the_worker() -> None:
    class Unhealthy(Exception):
        message = (
            "Collective ops is aborted by: Error reported from /job:worker/task:1: The following "
            "tasks are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\n"
            "The tasks have crashed."
        )

    assert lost_worker_message(Unhealthy()) == (
        "lost worker 1 during training: it stopped sending heartbeats (its own output says why)"
    )
    line = lost_worker_message(ConnectionResetError("recvmsg:Connection reset by peer"))
    assert line.startswith("lost the connection to another worker") and "\n" not in line


def test_phase_throughput_leaves_out_the_first_epoch() -> None:
    phase = Phase("head", 3, 1, {}, examples_per_epoch=100, epoch_s=[9.0, 2.0, 2.5])
    assert phase.images_per_second == pytest.approx(100 / 2.25, abs=0.01)
    data = phase.to_json()
    assert data["examples_per_epoch"] == 100 and data["epoch_s"] == [9.0, 2.0, 2.5]
    assert Phase("x", 1, 0, {}, examples_per_epoch=10, epoch_s=[4.0]).images_per_second == 2.5
    assert Phase("x", 0, 0, {}).images_per_second is None


# ---------------------------------------------------------------------------------------------
# Features computed once between workers (fakes for the backbone and the cluster)


class DoublingBackbone:
    """Features of an image: its mean pixel and twice it; counts the images it saw."""

    output_shape = (None, 2)

    def __init__(self) -> None:
        self.seen = 0

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        self.seen += len(batch)
        means = batch.reshape(len(batch), -1).mean(axis=1)
        return np.stack([means, 2 * means], axis=1)


class TwoWorkerCluster:
    """Two workers' :class:`RowExchange` in one process: worker ``w`` owns rows ``w::2``; the
    exchange is the concatenation the real all-gather does, made once both have arrived."""

    def __init__(self) -> None:
        self.sent: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def worker(self, rank: int) -> Any:
        cluster = self

        class Sharing:
            def rows(self, count: int) -> np.ndarray:
                return replica_share(count, 2, rank)

            def exchange(self, count: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
                cluster.sent[rank] = (rows, values)
                full = np.zeros((count, values.shape[1]), dtype=np.float32)
                for other_rows, other_values in cluster.sent.values():
                    full[other_rows] = other_values
                return full

        return Sharing()


def test_workers_compute_features_once_and_each_caches_its_own_share(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    images[4] = images[1]  # the same picture twice: computed once
    digests = [f"{i:064x}" for i in range(5)]
    digests[4] = digests[1]
    identity = {"arch": "fake", "input_size": [4, 4]}
    cluster = TwoWorkerCluster()
    backbones = [DoublingBackbone(), DoublingBackbone()]
    # Worker 1 runs first: its exchange sees only its rows, worker 0's sees both (the real
    # all-gather waits for both; this fake hands the first caller a partial answer).
    results = {}
    for rank in (1, 0):
        cache = FeatureCache(tmp_path / f"cache-{rank}", identity)
        results[rank] = compute_features(
            backbones[rank], images, digests, [0, 1], cache, sharing=cluster.worker(rank)
        )
        assert cache.misses == backbones[rank].seen
    # 4 distinct images x 2 variants = 8 entries, 4 each.
    assert [b.seen for b in backbones] == [4, 4]
    written = [sorted(p.name for p in (tmp_path / f"cache-{r}").rglob("*.npy")) for r in (0, 1)]
    assert len(written[0]) == len(written[1]) == 4 and not set(written[0]) & set(written[1])
    alone = compute_features(DoublingBackbone(), images, digests, [0, 1],
                             FeatureCache(None, identity))  # fmt: skip
    np.testing.assert_allclose(results[0], alone)
    np.testing.assert_array_equal(results[0][:, 4], results[0][:, 1])


@pytest.mark.tensorflow
def test_row_exchange_reassembles_every_replicas_rows() -> None:
    import tensorflow as tf

    class Context:
        def __init__(self, replica: int) -> None:
            self.replica_id_in_sync_group = replica

    class ThreeReplicaStrategy:
        """One worker holding all three replicas: gather concatenates in replica order."""

        def experimental_distribute_values_from_function(self, fn: Callable) -> list[Any]:
            return [fn(Context(r)) for r in range(3)]

        def gather(self, values: Sequence[Any], axis: int) -> Any:
            return tf.concat(list(values), axis=axis)

    dist = Distribution("mirrored", ThreeReplicaStrategy(), replicas=3,
                        local_replica_ids=(0, 1, 2))  # fmt: skip
    exchange = RowExchange(dist, chunk_bytes=16)  # 2 rows of 2 floats a chunk: several rounds
    rows = exchange.rows(11)
    np.testing.assert_array_equal(rows, np.arange(11))
    values = np.stack([rows * 10.0, rows * 10.0 + 1], axis=1)
    np.testing.assert_array_equal(exchange.exchange(11, rows, values), values)


# ---------------------------------------------------------------------------------------------
# Real clusters (TensorFlow, in fresh processes)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports: Sequence[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})  # fmt: skip


def worker_env(tmp: Path, config: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    if config is not None:
        env["TF_CONFIG"] = config
    return env


def run_cluster(
    work: Path, args_of: Callable[[int], list[str]], workers: int = 2, timeout: float = 240
) -> list[tuple[int, str, str]]:
    """Start ``workers`` edge-export processes on loopback; (exit code, stdout, stderr) each."""
    ports = free_ports(workers)
    scratch = work / "tmp"
    scratch.mkdir(exist_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", *args_of(i)],
            env=worker_env(scratch, tf_config(ports, i)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=work,
        )
        for i in range(workers)
    ]
    results = []
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert not list(scratch.iterdir()), "a worker left its temporary run directory behind"
    return results


def train_args(data: Path, out: str, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", out, "--arch", "tiny_cnn", "--input-size",
            "16", "--batch-size", "8", "--epochs", "1", "--strategy", "multi-worker", "--json",
            *extra]  # fmt: skip


@pytest.mark.tensorflow
def test_two_workers_train_from_scratch_into_one_run_that_exports(
    shapes: Path, tmp_path: Path
) -> None:
    results = run_cluster(tmp_path, lambda i: train_args(shapes, f"run-{i}", "--weights", "none"))
    for code, _, err in results:
        assert code == 0, err[-3000:]
    chief, other = (json.loads(out) for _, out, _ in results)
    # Exactly one run directory: the chief's. Worker 1's --out is never written.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-0", "tmp"]
    assert chief["run_dir"] == str(tmp_path / "run-0") and other["run_dir"] is None
    assert (chief["workers"], chief["replicas"], other["worker_rank"]) == (2, 2, 1)
    # Both workers end with the same weights (BatchNorm statistics, which each replica keeps for
    # itself, averaged too), so the chief's run is the model of the whole cluster.
    assert chief["weights_sha256"] == other["weights_sha256"] and chief["weights_sha256"]
    assert chief["test_accuracy"] == other["test_accuracy"]
    run = json.loads((tmp_path / "run-0" / "run.json").read_text())
    assert run["strategy"] == "multi-worker" and run["workers"] == 2 and run["replicas"] == 2
    assert run["batch_size"] == 8 and run["global_batch_size"] == 16
    assert run["learning_rate_scaling"] == "sqrt"
    assert run["learning_rate_factor"] == pytest.approx(2**0.5, abs=1e-6)
    (phase,) = run["phases"]
    # 24 training images in global batches of 16: 2 steps a epoch, 32 examples.
    assert phase["examples_per_epoch"] == 32 and phase["images_per_second"] > 0

    # The run exports and verifies like any run (one epoch of training: the gate may object).
    bundle = tmp_path / "bundle"
    export = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "export", str(tmp_path / "run-0"), "--out",
         str(bundle), "--name", "shapes", "--version", "1", "--formats", "tflite-fp32",
         "--allow-accuracy-drop", "--quiet"],
        capture_output=True, text=True, timeout=300, env=worker_env(tmp_path / "tmp", None),
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-3000:]
    verify = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "verify", str(bundle), "--data",
         str(tmp_path / "run-0"), "--allow-accuracy-drop", "--quiet", "--json"],
        capture_output=True, text=True, timeout=300, env=worker_env(tmp_path / "tmp", None),
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr[-3000:]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'pretrained' tiny_cnn backbone file (random weights, saved in a fresh process)."""
    path = tmp_path_factory.mktemp("weights") / "tiny.weights.h5"
    code = (
        "import sys; from exporter.backbones import WeightsChoice, build_backbone;"
        "build_backbone('tiny_cnn', (16, 16), WeightsChoice('none')).save_weights(sys.argv[1])"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=120, env=worker_env(path.parent, None))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return path


@pytest.mark.tensorflow
def test_two_workers_share_the_feature_cache_and_fine_tune(
    shapes: Path, tmp_path: Path, tiny_weights: Path
) -> None:
    cache = tmp_path / "cache"
    results = run_cluster(
        tmp_path,
        lambda i: train_args(shapes, f"run-{i}", "--weights", str(tiny_weights), "--cache-dir",
                             str(cache), "--augment-variants", "1", "--fine-tune-layers", "3",
                             "--fine-tune-epochs", "1"),
    )  # fmt: skip
    for code, _, err in results:
        assert code == 0, err[-3000:]
    chief, other = (json.loads(out) for _, out, _ in results)
    assert chief["weights_sha256"] == other["weights_sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run-0", "tmp"]
    run = json.loads((tmp_path / "run-0" / "run.json").read_text())
    assert run["training_mode"] == "frozen-features+fine-tune"
    assert [p["name"] for p in run["phases"]] == ["head", "fine-tune"]
    # 24 train images x 2 variants + 6 val = 54 features, computed once between the workers:
    # each wrote its own half of the cache, and run.json counts them all.
    assert run["feature_cache"]["misses"] == 54 and run["feature_cache"]["hits"] == 0
    assert len(list(cache.rglob("*.npy"))) == 54
    for _, _, err in results:
        assert "54 computed (27 of them by this worker)" in err


@pytest.mark.tensorflow
def test_workers_that_disagree_stop_with_one_line_each(shapes: Path, tmp_path: Path) -> None:
    results = run_cluster(
        tmp_path,
        lambda i: train_args(shapes, f"run-{i}", "--weights", "none", "--seed", str(i), "--quiet"),
    )
    for code, out, err in results:
        assert code == 1 and not out
        (line,) = err.strip().splitlines()
        assert line.startswith("edge-export: error: ")
        assert "different options than the chief" in line
    assert not (tmp_path / "run-0").exists()


@pytest.mark.tensorflow
@pytest.mark.parametrize("index", [0, 1], ids=["chief-alone", "worker-without-chief"])
def test_a_worker_that_cannot_reach_the_others_gives_up_with_one_line(
    shapes: Path, tmp_path: Path, index: int
) -> None:
    # The chief leads TensorFlow's coordination service, which by itself waits for ever; the
    # other worker cannot reach a chief that never started.
    ports = free_ports(2)
    (tmp_path / "tmp").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "exporter.cli",
         *train_args(shapes, "run", "--weights", "none", "--cluster-timeout", "2", "--quiet")],
        env=worker_env(tmp_path / "tmp", tf_config(ports, index)), capture_output=True,
        text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1 and not done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("edge-export: error: not every worker of TF_CONFIG joined within 2 s")
    assert f"127.0.0.1:{ports[1 - index]}" in line and "--cluster-timeout" in line
    assert not (tmp_path / "run").exists()


MIRRORED = """
import sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from exporter.cli import main

data, weights, cache = sys.argv[1:4]
common = ["--data", data, "--arch", "tiny_cnn", "--input-size", "16", "--batch-size", "8",
          "--epochs", "1", "--strategy", "mirrored", "--quiet"]
codes = [
    main(["train", *common, "--out", "scratch", "--weights", "none"]),
    main(["train", *common, "--out", "features", "--weights", weights, "--cache-dir", cache,
          "--fine-tune-layers", "3", "--fine-tune-epochs", "1"]),
]

# Statistics each replica keeps for itself (BatchNorm's) are set to their mean over replicas.
import keras
import numpy as np
from exporter.distribute import average_replica_state, make_distribution

dist = make_distribution("mirrored")
with dist.scope():
    layer = keras.layers.BatchNormalization()
    layer.build((None, 3))
parts = layer.moving_mean.value.values
for i, part in enumerate(parts):
    part.assign([float(i)] * 3)
assert average_replica_state(dist, layer.non_trainable_weights) == 2
assert all(np.allclose(part.numpy(), 0.5) for part in parts), [p.numpy() for p in parts]
sys.exit(max(codes))
"""


@pytest.mark.tensorflow
def test_mirrored_over_two_logical_cpu_devices_in_both_modes(
    shapes: Path, tmp_path: Path, tiny_weights: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(shapes), str(tiny_weights), str(tmp_path / "cache")],
        env=worker_env(tmp_path, None), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    scratch = json.loads((tmp_path / "scratch" / "run.json").read_text())
    features = json.loads((tmp_path / "features" / "run.json").read_text())
    for run in (scratch, features):
        assert run["strategy"] == "mirrored" and run["replicas"] == 2 and run["workers"] == 1
        assert run["global_batch_size"] == 16
    assert scratch["training_mode"] == "end-to-end"
    assert features["training_mode"] == "frozen-features+fine-tune"
    # One worker computes every feature: 24 x 3 variants (the default 2 augmented) + 6.
    assert features["feature_cache"]["misses"] == 24 * 3 + 6
    assert [p["examples_per_epoch"] for p in features["phases"]] == [80, 32]
