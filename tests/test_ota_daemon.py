"""Over-the-air updates inside the running daemon (on a thread here, as in test_daemon.py),
against a real repository served by ``edge-export serve`` on loopback: v1 installed at start-up
into an empty store, v2 hot-swapped in between two frames without a restart, rollback by the
operator, a refused release with the old model serving and the reason in /status, probation
rollbacks (inference errors, shadow disagreement, a crash loop across restarts)."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.errors import BackendError
from edge_runtime.service.daemon import Daemon
from edge_runtime.serving import ServingModel, load_serving_model
from edge_runtime.types import Prediction
from tests.fakes_io import free_port, wait_until
from tests.tuf_repo import (
    TufRepo,
    edge_export_serve,
    evil_tar,
    make_bundle,
    make_repo,
    publish_raw_tar,
)

# Not paced: every frame in order, so a dropped frame shows as a gap in the frame indices.
SOURCE = "synthetic:traffic-signs?width=96&height=72"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("bundles")
    return {v: make_bundle(folder / f"v{v}", v) for v in (1, 2, 3)}


@pytest.fixture
def repo(tmp_path: Path, bundles: dict[int, Path]) -> TufRepo:
    made = make_repo(tmp_path)
    made.publish(bundles[1])
    return made


def write_config(tmp_path: Path, repo: TufRepo, url: str, **update: Any) -> Path:
    fields = {
        "url": url, "root": str(repo.root_json), "name": "traffic-signs",
        "store": str(tmp_path / "store"), "interval_s": 1, "jitter": 0.0,
        "device_id": "device-0001", "probation_frames": 30, "smoke_timeout_s": 60,
        **update,
    }
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in fields.items())
    path = tmp_path / "config.toml"
    path.write_text(
        f'[source]\nuri = "{SOURCE}"\n[service]\nhttp = "127.0.0.1:{free_port()}"\n'
        f"stale_after_s = 30\n[update]\n{body}\n"
    )
    return path


class Running:
    """A daemon on a thread, recording every frame index; stopped and joined at the end."""

    def __init__(self, config: Path, **options: Any) -> None:
        self.daemon = Daemon(
            config, environ={}, signals=False, configure_logging=False, update_poll_s=0.05,
            **options,
        )
        self.indices: list[int] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert wait_until(lambda: self.daemon.started.is_set() or self.error, 120), "no start"
        assert self.error is None, self.error
        self.daemon.status.add_observer(self._record)

    def _record(self, prediction: Prediction) -> None:
        self.indices.append(prediction.frame_index)

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.error = exc

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.daemon.server_url}/status", timeout=10) as answer:
            return dict(json.loads(answer.read()))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.daemon.server_url}/metrics", timeout=10) as answer:
            return str(answer.read().decode())

    def version(self) -> int | None:
        return self.status().get("model", {}).get("version")

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the daemon did not stop"
        assert self.error is None, self.error


@pytest.fixture
def served(repo: TufRepo) -> Iterator[str]:
    with edge_export_serve(repo) as url:
        yield url


def test_v1_at_start_then_v2_hot_swapped_without_restart_then_rolled_back(
    repo: TufRepo, bundles: dict[int, Path], served: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, repo, served)
    running = Running(config)
    try:
        # An empty store and no [model] path: v1 was installed before the first frame.
        assert running.version() == 1
        pid = running.status()["service"]["pid"]
        repo.publish(bundles[2])
        assert wait_until(lambda: running.version() == 2, 120), running.status()["update"]
        status = running.status()
        update = status["update"]
        assert update["active"]["version"] == 2 and update["previous"]["version"] == 1
        assert update["serving"].endswith("/slots/v2")
        assert status["service"]["pid"] == pid  # no restart
        assert any(r["detail"] == "update: v2 swapped in" for r in status["service"]["reloads"])
        assert wait_until(lambda: len(running.indices) > 50, 60)
        # Frames are numbered in order: across the swap at most one may be missing.
        gaps = np.diff(np.asarray(running.indices[:]))
        assert gaps.min() >= 1 and int((gaps - 1).sum()) <= 1, gaps
        metrics = running.metrics()
        assert "edge_classify_update_active_version 2.0" in metrics
        assert "edge_classify_update_previous_version 1.0" in metrics

        assert main(["models", "rollback", "--config", str(config)]) == 0
        assert wait_until(lambda: running.version() == 1, 60)
        update = running.status()["update"]
        assert update["active"]["version"] == 1 and "2" in {str(k) for k in update["failed"]}
    finally:
        running.stop()


def test_a_refused_release_keeps_the_old_model_and_says_why(
    repo: TufRepo, bundles: dict[int, Path], served: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="edge_runtime.ota")
    running = Running(write_config(tmp_path, repo, served))
    try:
        data, claimed = evil_tar(bundles[2], "artifact")
        publish_raw_tar(repo, data, name="traffic-signs", version=2, manifest_sha256=claimed)
        assert wait_until(lambda: running.status()["update"].get("last_error"), 60)
        status = running.status()
        assert "does not match its sha256" in status["update"]["last_error"]
        assert status["model"]["version"] == 1 and status["state"] == "running"
        assert "edge_classify_update_error 1.0" in running.metrics()
        assert any("does not match its sha256" in r.getMessage() for r in caplog.records)
        # A good newer release still gets in.
        repo.publish(bundles[3])
        assert wait_until(lambda: running.version() == 3, 120)
    finally:
        running.stop()


class FailingV2:
    """A loader whose v2 model fails every inference (BackendError), as a model that passed its
    smoke test but cannot cope with live frames; or (``disagree``) gives another label."""

    def __init__(self, disagree: bool = False) -> None:
        self.disagree = disagree

    def __call__(self, config: Any, **options: Any) -> ServingModel:
        serving = load_serving_model(config, **options)
        if serving.model.info.get("version") != 2:
            return serving
        return ServingModel(Broken(serving.model, self.disagree), serving.postprocessor)  # type: ignore[arg-type]


class Broken:
    def __init__(self, inner: Any, disagree: bool) -> None:
        self.inner, self.disagree = inner, disagree

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        if not self.disagree:
            raise BackendError("the interpreter failed")
        return np.roll(self.inner.infer(tensor), 1)  # always a neighbouring label

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("disagree", [False, True], ids=["errors", "shadow"])
def test_probation_rolls_a_bad_model_back(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path, disagree: bool
) -> None:
    # file:// this time: the air-gapped device.
    options = {"shadow": True, "shadow_interval_s": 0.001, "probation_frames": 100}
    config = write_config(tmp_path, repo, repo.file_url, **(options if disagree else {}))
    running = Running(config, loader=FailingV2(disagree))
    try:
        repo.publish(bundles[2])
        assert wait_until(lambda: running.status()["update"].get("rollbacks") == 1, 180)
        assert wait_until(lambda: running.version() == 1, 60)
        update = running.status()["update"]
        reason = update["failed"].get("2") or update["failed"].get(2)
        words = "shadow agreement" if disagree else "inference errors"
        assert words in reason, reason
        assert running.status()["state"] == "running"
    finally:
        running.stop()


def test_a_crash_loop_on_probation_is_rolled_back_at_start_up(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path
) -> None:
    from edge_runtime.config import load_config
    from edge_runtime.ota.agent import agent_for_config

    config = write_config(tmp_path, repo, repo.file_url)
    agent = agent_for_config(load_config(config))
    agent.check()
    repo.publish(bundles[2])
    agent.check()
    # Two starts that never stopped cleanly (killed, power cut) while v2 was on probation.
    for _ in range(2):
        assert agent.start_probation() is not None
    running = Running(config)
    try:
        assert running.version() == 1
        assert "crash loop" in running.status()["update"]["failed"]["2"]
    finally:
        running.stop()
