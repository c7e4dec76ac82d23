"""The update agent end to end on a real repository made by the publisher (over ``file://``):
install, switch, rollback, every refusal of a bad release, a smoke test that fails, crashes or
hangs in its child process, SIGKILL at every install boundary and a disk that fills up while
unpacking. After each, a complete model is active (the old one, or the new one once switched)
and nothing is left in staging."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.config import UpdateConfig
from edge_runtime.ota.agent import STAGES, UpdateAgent
from edge_runtime.ota.errors import (
    BundleRefusedError,
    OtaError,
    SmokeTestFailedError,
    TargetRefusedError,
    UntrustedMetadataError,
)
from edge_runtime.ota.policy import in_rollout
from edge_runtime.ota.probe import run_probe
from edge_runtime.ota.store import MAX_INTERRUPTED_INSTALLS, ModelStore
from tests.tuf_repo import (
    ROOT,
    TufRepo,
    evil_tar,
    expire_timestamp,
    make_bundle,
    make_repo,
    publish_raw_tar,
    resign_targets_with_unknown_key,
    tamper_target,
)

FAULTY_PROBE = ROOT / "tests" / "ota_probe_faults.py"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bundles")
    made = {str(v): make_bundle(folder / f"v{v}", v) for v in (1, 2, 3)}
    made["pi5"] = make_bundle(folder / "pi5", 2, profiles=["raspberry-pi-5"])
    made["wrong"] = make_bundle(folder / "wrong", 2, wrong_labels=True)
    return made


@pytest.fixture
def repo(tmp_path: Path, bundles: dict[str, Path]) -> TufRepo:
    made = make_repo(tmp_path)
    made.publish(bundles["1"])
    return made


def section(repo: TufRepo, tmp_path: Path, **fields: Any) -> UpdateConfig:
    values: dict[str, Any] = {
        "url": repo.file_url,
        "root": str(repo.root_json),
        "name": "traffic-signs",
        "store": str(tmp_path / "store"),
        "device_id": "device-0001",
        "smoke_timeout_s": 60,
    }
    values.update(fields)
    return UpdateConfig.model_validate(values)


def agent(repo: TufRepo, tmp_path: Path, **options: Any) -> UpdateAgent:
    fields = options.pop("fields", {})
    return UpdateAgent(
        section(repo, tmp_path, **fields),
        profile=options.pop("profile", "raspberry-pi-4"),
        runtime_version="0.1.0",
        **options,
    )


def assert_serves(store: ModelStore, version: int) -> None:
    """``version`` is active and its slot is a complete bundle (every sha256 checked)."""
    state = store.load()
    assert state.active is not None and state.active.version == version, state
    path = store.active_path()
    assert path is not None
    with load_bundle(path) as opened:  # verifies every artifact's sha256
        assert opened.manifest.version == version
    assert not any(store.staging.iterdir()), list(store.staging.iterdir())
    assert not any(store.downloads.iterdir()), list(store.downloads.iterdir())


def test_install_switch_and_rollback(
    repo: TufRepo, bundles: dict[str, Path], tmp_path: Path
) -> None:
    device = agent(repo, tmp_path)
    first = device.check()
    assert (first.outcome, first.version, first.exit_code) == ("installed", 1, 10)
    assert_serves(device.store, 1)
    assert device.check().outcome == "up-to-date"

    repo.publish(bundles["2"])
    assert device.check().version == 2
    state = device.state()
    assert state.previous is not None and state.previous.version == 1
    assert state.probation is not None and state.probation.version == 2
    assert sorted(p.name for p in device.store.slots.iterdir()) == ["v1", "v2"]
    assert_serves(device.store, 2)

    repo.publish(bundles["3"])
    device.check()
    assert sorted(p.name for p in device.store.slots.iterdir()) == ["v2", "v3"]

    back = device.rollback("rolled back by the operator")
    assert back.version == 2
    assert_serves(device.store, 2)
    assert device.state().failed == {"3": "rolled back by the operator"}
    # v3 is never taken again; nothing newer: up to date on v2.
    again = device.check()
    assert again.outcome == "up-to-date" and "never retried" in again.detail


@pytest.mark.parametrize("kind", ["artifact", "manifest", "version", "dotdot", "absolute",
                                  "symlink", "hardlink", "extra"])
def test_a_bad_bundle_inside_a_signed_target_is_refused(
    repo: TufRepo, bundles: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    device = agent(repo, tmp_path)
    device.check()
    data, claimed = evil_tar(bundles["2"], kind)
    publish_raw_tar(repo, data, name="traffic-signs", version=2, manifest_sha256=claimed)
    with pytest.raises(BundleRefusedError) as caught:
        device.check()
    reason = caught.value.reason
    assert "traffic-signs v2" in reason and "\n" not in reason
    words = {
        "artifact": "does not match its sha256",
        "manifest": "not the one the signed target describes",
        "version": "its signed target another",
        "dotdot": "..",
        "absolute": "absolute",
        "symlink": "link",
        "hardlink": "link",
        "extra": "unexpected member",
    }[kind]
    assert words in reason
    assert_serves(device.store, 1)
    state = device.state()
    assert state.failed.keys() == {"2"} and state.last_error == reason
    assert not (tmp_path / "edge-classify-absolute.txt").exists()
    assert not (device.store.root / "escape.txt").exists()


@pytest.mark.parametrize("attack", ["unknown-key", "tampered", "rollback", "expired"])
def test_repository_attacks_are_refused_and_the_old_model_stays(
    repo: TufRepo, bundles: dict[str, Path], tmp_path: Path, attack: str
) -> None:
    device = agent(repo, tmp_path)
    device.check()
    old_timestamp = (repo.path / "metadata" / "timestamp.json").read_bytes()
    published = repo.publish(bundles["2"])
    error: type[OtaError] = UntrustedMetadataError
    if attack == "unknown-key":
        resign_targets_with_unknown_key(repo)
    elif attack == "tampered":
        tamper_target(repo, published.path)
        error = TargetRefusedError
    elif attack == "rollback":
        # The device saw v2's metadata; the server then offers the older state again.
        agent(repo, tmp_path / "peek", fields={"store": str(tmp_path / "store")}).client().refresh()
        (repo.path / "metadata" / "timestamp.json").write_bytes(old_timestamp)
    else:
        expire_timestamp(repo)
    with pytest.raises(error) as caught:
        device.check()
    assert_serves(device.store, 1)
    state = device.state()
    assert state.last_error == caught.value.reason
    assert state.failed == {}  # the release itself may be fine: tried again next time


def test_another_profile_or_outside_the_rollout_is_not_installed(
    repo: TufRepo, bundles: dict[str, Path], tmp_path: Path
) -> None:
    outside = next(f"d{i}" for i in range(1000) if not in_rollout(f"d{i}", "traffic-signs", 2, 25))
    device = agent(repo, tmp_path, fields={"device_id": outside})
    device.check()
    repo.publish(bundles["pi5"], rollout=100)
    result = device.check()
    assert result.outcome == "up-to-date" and "made for raspberry-pi-5" in result.detail
    assert_serves(device.store, 1)

    other = make_repo(tmp_path, "repo2")
    other.publish(bundles["1"])
    other.publish(bundles["2"], rollout=25)
    device = agent(other, tmp_path / "o", fields={"device_id": outside})
    device.check()
    result = device.check()
    assert "rolled out to 25%" in result.detail and "outside it" in result.detail
    assert_serves(device.store, 1)


def test_a_failing_smoke_test_bans_the_version(
    repo: TufRepo, bundles: dict[str, Path], tmp_path: Path
) -> None:
    device = agent(repo, tmp_path)
    device.check()
    repo.publish(bundles["wrong"])
    with pytest.raises(SmokeTestFailedError, match="failed its smoke test: .*samples right"):
        device.check()
    assert_serves(device.store, 1)
    assert "2" in device.state().failed
    assert "never retried" in device.check().detail


@pytest.mark.parametrize("mode, words", [("crash", "crashed (SIGSEGV)"), ("hang", "hangs")])
def test_a_model_that_crashes_or_hangs_its_child_is_refused(
    repo: TufRepo, bundles: dict[str, Path], tmp_path: Path, mode: str, words: str
) -> None:
    device = agent(repo, tmp_path)
    device.check()
    repo.publish(bundles["2"])
    faulty = functools.partial(run_probe, command=[sys.executable, str(FAULTY_PROBE), mode])
    device = agent(repo, tmp_path, probe=faulty, fields={"smoke_timeout_s": 2})
    with pytest.raises(SmokeTestFailedError, match=words.replace("(", r"\(").replace(")", r"\)")):
        device.check()
    assert_serves(device.store, 1)


def driver(config: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.ota_driver", str(config), *options],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def v2_published_over_v1(
    repo: TufRepo, bundles: dict[str, Path], tmp_path: Path
) -> tuple[UpdateAgent, Path]:
    """A device serving v1 with v2 just published, and the update section for the install
    driver (which runs the install in a subprocess, to be killed or starved of disk)."""
    device = agent(repo, tmp_path)
    device.check()
    repo.publish(bundles["2"])
    config = tmp_path / "update.json"
    config.write_text(json.dumps(section(repo, tmp_path).model_dump()))
    return device, config


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_at_every_install_boundary_leaves_a_complete_model(
    repo: TufRepo, bundles: dict[str, Path], tmp_path: Path, stage: str
) -> None:
    device, config = v2_published_over_v1(repo, bundles, tmp_path)
    killed = driver(config, "--kill-at", stage)
    assert killed.returncode == -9, killed.stderr
    # The restart: recovery, then the model the state names is complete.
    notes = device.recover()
    assert_serves(device.store, 2 if stage == "switched" else 1)
    if stage != "switched":
        assert any("interrupted after" in line for line in notes)
        assert (device.store.slots / "v2").exists() is False
        # The interrupted install is tried again and completes.
        assert device.check().version == 2
        assert_serves(device.store, 2)


def test_an_install_interrupted_again_and_again_is_given_up(
    repo: TufRepo, bundles: dict[str, Path], tmp_path: Path
) -> None:
    device, config = v2_published_over_v1(repo, bundles, tmp_path)
    for _ in range(MAX_INTERRUPTED_INSTALLS):
        assert driver(config, "--kill-at", "downloaded").returncode == -9
        device.recover()
    assert "interrupted 3 times" in device.state().failed["2"]
    assert device.check().outcome == "up-to-date"
    assert_serves(device.store, 1)


def test_a_disk_that_fills_up_while_unpacking(
    repo: TufRepo, bundles: dict[str, Path], tmp_path: Path
) -> None:
    device, config = v2_published_over_v1(repo, bundles, tmp_path)
    # The artifact is ~320 KB; samples, labels, manifest and state.json are far below 100 KB.
    full = driver(config, "--fsize-after-download", str(100 * 1024))
    assert full.returncode == 24, full.stderr
    assert "the store is full while unpacking" in full.stderr
    assert_serves(device.store, 1)
    assert device.state().failed == {}  # not the release's fault: tried again
    assert "store is full" in (device.state().last_error or "")
    assert device.check().version == 2


def test_doctor_checks_the_store_model_when_no_path_is_set(
    repo: TufRepo, tmp_path: Path
) -> None:
    from edge_runtime.config import parse_config
    from edge_runtime.doctor import check_model

    fields = section(repo, tmp_path).model_dump()
    config = parse_config({"source": {"uri": "synthetic:traffic-signs"}, "update": fields})
    (empty,) = check_model(config)
    assert empty.level == "info" and "no model installed yet" in empty.detail
    agent(repo, tmp_path).check()
    findings = check_model(config)
    assert [f.level for f in findings] == ["ok"], findings
    assert "slots/v1" in findings[0].detail or "traffic-signs" in findings[0].detail
