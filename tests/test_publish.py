"""The publisher: a TUF repository made by ``edge-export repo init``, bundles published into it,
and python-tuf's real client (``tuf.ngclient.Updater``) reading it over loopback HTTP and
``file://``."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import Metadata

from edge_runtime.bundle import pack_bundle
from edge_runtime.errors import BundleError
from edge_runtime.ota.policy import CUSTOM_KEY, candidates_from_target, candidates_from_targets
from exporter.cli import main as export_main
from exporter.errors import PublishError
from exporter.publish import (
    DEFAULT_EXPIRES_DAYS,
    PASSPHRASE_ENV,
    Repository,
    init_repository,
    publish_bundle,
    refresh_repository,
    repository_status,
    rotate_key,
    serve,
    set_rollout,
)
from tests.tuf_repo import (
    ROOT,
    TufRepo,
    expire_timestamp,
    grow_target,
    make_bundle,
    make_repo,
    resign_targets_with_unknown_key,
    serving,
    tamper_target,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _no_proxy_and_no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """traffic-signs v1..v3 as bundle directories (small: one int8 artifact, four samples)."""
    folder = tmp_path_factory.mktemp("bundles")
    return {v: make_bundle(folder / f"v{v}", v) for v in (1, 2, 3)}


@pytest.fixture
def repo(tmp_path: Path) -> TufRepo:
    return make_repo(tmp_path)


def cli(*argv: object) -> int:
    return export_main([str(a) for a in argv])


def metadata(repo: TufRepo, name: str) -> Metadata:
    return Metadata.from_file(str(repo.path / "metadata" / name))


# --------------------------------------------------------------------------------------------
# init


def test_init_makes_signed_metadata_and_private_keys_outside_the_served_folders(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path, now=NOW)
    files = sorted(p.name for p in (repo.path / "metadata").iterdir())
    assert files == ["1.root.json", "1.snapshot.json", "1.targets.json", "root.json",
                     "timestamp.json"]
    root = metadata(repo, "1.root.json")
    assert root.signed.consistent_snapshot is True
    assert (repo.path / "metadata" / "root.json").read_bytes() == (
        repo.path / "metadata" / "1.root.json").read_bytes()
    for role in ("root", "targets", "snapshot", "timestamp"):
        assert root.signed.roles[role].threshold == 1
        [keyid] = root.signed.roles[role].keyids
        key_file = repo.path / "keys" / f"{role}-{keyid}.pem"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert b"BEGIN PRIVATE KEY" in key_file.read_bytes()
    assert stat.S_IMODE((repo.path / "keys").stat().st_mode) == 0o700
    # A web server running as another user must read what is served.
    assert stat.S_IMODE(repo.path.stat().st_mode) == 0o755
    assert stat.S_IMODE((repo.path / "metadata" / "timestamp.json").stat().st_mode) & 0o044
    for name, role in (("1.root.json", "root"), ("1.targets.json", "targets"),
                       ("1.snapshot.json", "snapshot"), ("timestamp.json", "timestamp")):
        md = metadata(repo, name)
        root.signed.verify_delegate(role, md.signed_bytes, md.signatures)
        assert md.signed.expires == NOW + timedelta(days=DEFAULT_EXPIRES_DAYS[role])
    assert not list((repo.path / "targets").iterdir())


def test_init_thresholds_and_expiry_are_configurable(tmp_path: Path) -> None:
    code = cli("repo", "init", tmp_path / "repo", "--threshold", "root=2", "--threshold",
               "targets=2", "--expires-days", "timestamp=0.5", "--expires-days", "root=730")
    assert code == 0
    root = Metadata.from_file(str(tmp_path / "repo" / "metadata" / "1.root.json")).signed
    assert root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 2
    assert root.roles["targets"].threshold == 2
    config = json.loads((tmp_path / "repo" / "repository.json").read_text())
    assert config["expires_days"]["timestamp"] == 0.5
    assert config["expires_days"]["root"] == 730
    # Both targets keys sign: a publish meets the threshold of 2.
    target = publish_bundle(tmp_path / "repo", make_bundle(tmp_path / "b", 1), channel="stable")
    assert target.versions["targets"] == 2
    targets = Metadata.from_file(str(tmp_path / "repo" / "metadata" / "2.targets.json"))
    assert len(targets.signatures) == 2
    root.verify_delegate("targets", targets.signed_bytes, targets.signatures)


def test_cli_init_prints_the_root_to_provision_devices_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("repo", "init", tmp_path / "repo") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"provision devices with: {tmp_path / 'repo'}/metadata/root.json"
    assert "not encrypted" in out


def test_keys_may_live_outside_and_are_remembered(tmp_path: Path) -> None:
    keys = tmp_path / "offline-keys"
    init_repository(tmp_path / "repo", keys=keys)
    assert not (tmp_path / "repo" / "keys").exists()
    assert len(list(keys.glob("*.pem"))) == 4
    publish_bundle(tmp_path / "repo", make_bundle(tmp_path / "b", 1), channel="stable")


@pytest.mark.parametrize("where", ["metadata", "metadata/keys", "targets", "targets/x", "."])
def test_keys_inside_or_around_the_served_folders_are_refused(
    tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    assert cli("repo", "init", repo, "--keys", repo / where) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "served folder" in err
    assert not repo.exists()  # nothing was written


def test_init_refuses_an_existing_repository_or_a_non_empty_folder(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (repo.path / "metadata" / "1.root.json").read_bytes()
    assert cli("repo", "init", repo.path) == 1
    assert "already holds a repository" in capsys.readouterr().err
    assert (repo.path / "metadata" / "1.root.json").read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(PublishError, match="already holds files"):
        init_repository(other)
    init_repository(tmp_path / "empty-but-there")  # an empty folder is fine
    with pytest.raises(PublishError, match="threshold of root must be 1..9"):
        init_repository(tmp_path / "t", thresholds={"root": 0})
    with pytest.raises(PublishError, match="unknown role 'mirror'"):
        init_repository(tmp_path / "t", expires_days={"mirror": 1})
    assert cli("repo", "init", tmp_path / "t", "--expires-days", "timestamp") == 1
    assert "takes ROLE=VALUE" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# publish


def test_publish_v1_and_v2_with_custom_fields(repo: TufRepo, bundles: dict[int, Path]) -> None:
    first = repo.publish(bundles[1], rollout=25, now=NOW)
    assert first.path == "traffic-signs/traffic-signs-1.tar"
    assert first.versions == {"targets": 2, "snapshot": 2, "timestamp": 2}
    second = repo.publish(bundles[2], now=NOW)
    assert second.versions == {"targets": 3, "snapshot": 3, "timestamp": 3}

    targets = metadata(repo, "3.targets.json").signed.targets
    assert sorted(targets) == ["traffic-signs/traffic-signs-1.tar",
                               "traffic-signs/traffic-signs-2.tar"]
    info = targets["traffic-signs/traffic-signs-1.tar"]
    custom = info.custom[CUSTOM_KEY]
    manifest_sha = __import__("hashlib").sha256(
        (bundles[1] / "manifest.json").read_bytes()).hexdigest()
    assert custom == {
        "schema": 1,
        "name": "traffic-signs",
        "version": 1,
        "channels": {"stable": {"rollout": 25, "published": "2030-01-01T12:00:00Z"}},
        "profiles": [],
        "runtime": ">=0.1",
        "manifest_sha256": manifest_sha,
        "created": custom["created"],
    }
    [candidate] = candidates_from_target(info.path, info.length, info.custom)
    assert (candidate.version, candidate.channel, candidate.rollout) == (1, "stable", 25)
    stored = repo.path / "targets" / "traffic-signs" / (
        f"{info.hashes['sha256']}.traffic-signs-1.tar")
    assert stored.stat().st_size == info.length
    assert stat.S_IMODE(stored.stat().st_mode) == 0o644
    # Old versions stay: a device in the middle of an update still finds what it started with.
    assert (repo.path / "metadata" / "2.targets.json").exists()


def test_a_directory_and_its_tar_publish_the_same_bytes(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path
) -> None:
    from_dir = repo.publish(bundles[1], channel="stable")
    tar = pack_bundle(bundles[1], tmp_path / "signs-1.tar")
    from_tar = repo.publish(tar, channel="beta")
    assert from_tar.sha256 == from_dir.sha256
    assert sorted(from_tar.fields.channels) == ["beta", "stable"]
    assert len(list((repo.path / "targets" / "traffic-signs").iterdir())) == 1


def test_publish_refuses_a_version_not_above_the_channels_newest(
    repo: TufRepo, bundles: dict[int, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo.publish(bundles[2])
    before = (repo.path / "metadata" / "timestamp.json").read_bytes()
    assert cli("publish", bundles[1], "--repo", repo.path, "--channel", "stable") == 1
    err = capsys.readouterr().err.strip()
    assert err == ("edge-export: error: traffic-signs v1 is not newer than v2, the newest "
                   "traffic-signs on stable: versions on a channel only grow")
    assert cli("publish", bundles[2], "--repo", repo.path, "--channel", "stable") == 1
    assert "already on stable; change its rollout with `edge-export repo rollout" in (
        capsys.readouterr().err)
    assert (repo.path / "metadata" / "timestamp.json").read_bytes() == before
    # Another channel has its own newest: v1 may go to beta.
    assert cli("publish", bundles[1], "--repo", repo.path, "--channel", "beta") == 0


def test_one_version_names_one_bundle(repo: TufRepo, bundles: dict[int, Path],
                                      tmp_path: Path) -> None:
    repo.publish(bundles[1])
    other = make_bundle(tmp_path / "other-1", 1, samples=2)
    with pytest.raises(PublishError, match="already published with other contents"):
        repo.publish(other, channel="beta")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--channel", "Stable!"], "channel 'Stable!' must be lower-case"),
        (["--channel", "stable", "--rollout", "0"], "rollout must be a whole percent 1..100"),
        (["--channel", "stable", "--rollout", "101"], "rollout must be a whole percent 1..100"),
        (["--channel", "stable", "--profiles", "raspbery-pi-4"],
         "unknown device profile 'raspbery-pi-4'"),
    ],
)
def test_bad_publish_options_are_one_line(
    repo: TufRepo, bundles: dict[int, Path], argv: list[str], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli("publish", bundles[1], "--repo", repo.path, *argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_profiles_default_to_the_manifest_and_must_fit_it(repo: TufRepo, tmp_path: Path) -> None:
    pi_only = make_bundle(tmp_path / "pi", 1, profiles=["raspberry-pi-4", "raspberry-pi-5"])
    target = repo.publish(pi_only)
    assert target.fields.profiles == ("raspberry-pi-4", "raspberry-pi-5")
    narrower = make_bundle(tmp_path / "pi2", 2, profiles=["raspberry-pi-4", "raspberry-pi-5"])
    assert repo.publish(narrower, profiles=["raspberry-pi-5"]).fields.profiles == (
        "raspberry-pi-5",)
    wrong = make_bundle(tmp_path / "pi3", 3, profiles=["raspberry-pi-4"])
    with pytest.raises(PublishError, match="does not include jetson-nano"):
        repo.publish(wrong, profiles=["jetson-nano"])
    with pytest.raises(PublishError, match="a target for any device"):
        repo.publish(wrong, profiles=[])
    custom = publish_bundle(repo.path, make_bundle(tmp_path / "any", 4), channel="stable",
                            profiles=["kiosk-v2"], custom_profiles=True)
    assert custom.fields.profiles == ("kiosk-v2",)


def test_a_bad_bundle_is_refused_and_nothing_is_published(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = make_bundle(tmp_path / "bad", 1)
    artifact = next(bad.glob("*.tflite"))
    data = bytearray(artifact.read_bytes())
    data[100] ^= 1
    artifact.write_bytes(bytes(data))
    assert cli("publish", bad, "--repo", repo.path, "--channel", "stable") == 1
    err = capsys.readouterr().err
    assert "does not match its sha256" in err and len(err.strip().splitlines()) == 1
    assert cli("publish", tmp_path / "nothing", "--repo", repo.path, "--channel", "stable") == 1
    assert "no bundle at" in capsys.readouterr().err
    assert metadata(repo, "timestamp.json").signed.version == 1
    assert not list((repo.path / "targets").iterdir())
    with pytest.raises(BundleError):
        repo.publish(tmp_path / "nothing")


def test_a_missing_repository_is_one_line(
    tmp_path: Path, bundles: dict[int, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    for argv in (
        ["publish", bundles[1], "--repo", missing, "--channel", "stable"],
        ["repo", "status", missing],
        ["repo", "refresh", missing],
        ["repo", "rotate-key", missing, "timestamp"],
        ["repo", "rollout", missing, "traffic-signs", "1", "50"],
        ["serve", missing, "--port", "0"],
    ):
        assert cli(*argv) == 1
        err = capsys.readouterr().err
        assert err.strip() == (
            f"edge-export: error: no repository at {missing}: run `edge-export repo init "
            f"{missing}` first"
        )


def test_a_failed_write_leaves_the_published_state(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.publish.repository as on_disk

    repo.publish(bundles[1])
    device = repo.client(tmp_path / "device")
    device.refresh()
    real = on_disk._write_public

    def failing(path: Path, source: bytes | Path) -> None:
        if path.name == "timestamp.json":
            raise PublishError("disk full (injected)")
        real(path, source)

    monkeypatch.setattr(on_disk, "_write_public", failing)
    with pytest.raises(PublishError, match="injected"):
        repo.publish(bundles[2])
    monkeypatch.setattr(on_disk, "_write_public", real)
    # Devices still see v1 only; new files were written but nothing names them.
    again = repo.client(tmp_path / "device")
    again.refresh()
    assert again.get_targetinfo("traffic-signs/traffic-signs-2.tar") is None
    assert repo.publish(bundles[2]).versions["timestamp"] == 3


def test_writers_take_turns(repo: TufRepo) -> None:
    with Repository(repo.path).locked(), pytest.raises(PublishError, match="is busy"):
        with Repository(repo.path).locked(timeout_s=0.2):
            pass


# --------------------------------------------------------------------------------------------
# rollout and status


def test_rollout_can_be_raised_and_needs_a_channel_when_ambiguous(
    repo: TufRepo, bundles: dict[int, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo.publish(bundles[1], rollout=10)
    assert cli("repo", "rollout", repo.path, "traffic-signs", "1", "50") == 0
    assert "rollout of traffic-signs v1 on stable to 50%" in capsys.readouterr().out
    repo.publish(bundles[1], channel="beta")
    assert cli("repo", "rollout", repo.path, "traffic-signs", "1", "75") == 1
    assert "on beta, stable: say which with --channel" in capsys.readouterr().err
    target = set_rollout(repo.path, "traffic-signs", 1, 75, channel="stable")
    assert {c: r.rollout for c, r in target.fields.channels.items()} == {"beta": 100,
                                                                       "stable": 75}
    with pytest.raises(PublishError, match="is not published"):
        set_rollout(repo.path, "traffic-signs", 9, 50)
    with pytest.raises(PublishError, match="is not on edge"):
        set_rollout(repo.path, "traffic-signs", 1, 50, channel="edge")
    with pytest.raises(PublishError, match="1..100"):
        set_rollout(repo.path, "traffic-signs", 1, 0, channel="stable")


def test_status_shows_roles_and_targets_per_channel(
    tmp_path: Path, bundles: dict[int, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path, now=NOW)
    repo.publish(bundles[1], now=NOW)
    repo.publish(bundles[2], rollout=25, now=NOW)
    repo.publish(bundles[2], channel="beta", now=NOW)
    status = repository_status(repo.path, now=NOW)
    assert [r.role for r in status.roles] == ["root", "targets", "snapshot", "timestamp"]
    assert [r.version for r in status.roles] == [1, 4, 4, 4]
    assert all(r.signed and r.keys_here == 1 for r in status.roles)
    assert status.problems == []
    channels = status.channels()
    assert [(e["version"], e["rollout"]) for e in channels["stable"]["traffic-signs"]] == [
        (2, 25), (1, 100)]
    assert [e["version"] for e in channels["beta"]["traffic-signs"]] == [2]

    assert cli("repo", "status", repo.path, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["roles"]["timestamp"]["version"] == 4
    assert shown["channels"]["stable"]["traffic-signs"][0]["rollout"] == 25
    assert cli("repo", "status", repo.path) == 0
    text = capsys.readouterr().out
    assert "channel stable" in text and "traffic-signs v2" in text and "rollout  25%" in text


def test_status_reports_what_devices_would_refuse(
    repo: TufRepo, bundles: dict[int, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target = repo.publish(bundles[1])
    later = datetime.now(timezone.utc) + timedelta(days=2)
    status = repository_status(repo.path, now=later)
    assert any(p.startswith("timestamp v2 expired") for p in status.problems)
    tamper_target(repo, target.path)  # same size: status does not hash, devices do
    grow_target(repo, target.path)
    assert cli("repo", "status", repo.path) == 1
    assert "is missing or not" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# refresh


def test_refresh_resigns_timestamp_and_what_is_near_expiry(
    repo: TufRepo, bundles: dict[int, Path]
) -> None:
    start = datetime.now(timezone.utc)
    repo.publish(bundles[1], now=start)
    assert refresh_repository(repo.path, now=start).resigned == {"timestamp": 3}
    # 25 days on: the 30-day snapshot has 5 left (< a third), the 90-day targets 65.
    result = refresh_repository(repo.path, now=start + timedelta(days=25))
    assert result.resigned == {"snapshot": 3, "timestamp": 4}
    # 70 days on: targets has 20 left (< 30).
    result = refresh_repository(repo.path, now=start + timedelta(days=70))
    assert result.resigned == {"targets": 3, "snapshot": 4, "timestamp": 5}
    assert result.warnings == []
    result = refresh_repository(repo.path, now=start + timedelta(days=340))
    assert result.warnings and result.warnings[0].startswith("root expires in 25.0 days")
    result = refresh_repository(repo.path, now=start + timedelta(days=340), all_roles=True)
    assert result.resigned["root"] == 2
    assert metadata(repo, "2.root.json").signed.expires > start + timedelta(days=700)
    # Every refresh keeps the repository readable by a device that trusts the first root.
    status = repository_status(repo.path, now=start + timedelta(days=340))
    assert status.problems == []


def test_refresh_signs_what_it_can_when_a_key_is_missing(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo.publish(bundles[1])
    for key in repo.keys.glob("targets-*.pem"):
        key.rename(tmp_path / key.name)  # the targets key went offline
    later = datetime.now(timezone.utc) + timedelta(days=70)
    with pytest.raises(PublishError, match=r"re-signed snapshot v3, timestamp v3; but targets "
                                           r"expires in 20.0 days and was not re-signed"):
        refresh_repository(repo.path, now=later)
    assert cli("repo", "refresh", repo.path) == 0  # not due yet: only timestamp
    assert capsys.readouterr().out.strip() == "re-signed timestamp v4"


# --------------------------------------------------------------------------------------------
# encrypted keys


def test_offline_keys_are_encrypted_with_the_passphrase(
    tmp_path: Path, bundles: dict[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    repo = make_repo(tmp_path)
    heads = {p.name.split("-")[0]: p.read_bytes().split(b"\n")[0] for p in repo.keys.iterdir()}
    assert heads["root"] == heads["targets"] == b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
    assert heads["snapshot"] == heads["timestamp"] == b"-----BEGIN PRIVATE KEY-----"
    repo.publish(bundles[1])

    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(PublishError, match=f"is encrypted: set {PASSPHRASE_ENV}"):
        repo.publish(bundles[2])
    assert refresh_repository(repo.path).resigned == {"timestamp": 3}  # cron needs no secret
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(PublishError, match="wrong passphrase"):
        repo.publish(bundles[2])


# --------------------------------------------------------------------------------------------
# The real client


def test_a_device_updates_over_file_url(repo: TufRepo, bundles: dict[int, Path],
                                        tmp_path: Path) -> None:
    published = repo.publish(bundles[1], rollout=30)
    device = repo.client(tmp_path / "usb-device")
    device.refresh()
    info = device.get_targetinfo(published.path)
    assert info is not None and info.length == published.length
    assert info.custom[CUSTOM_KEY]["channels"]["stable"]["rollout"] == 30
    downloaded = Path(device.download_target(info))
    stored = next((repo.path / "targets" / "traffic-signs").iterdir())
    assert downloaded.read_bytes() == stored.read_bytes()


def test_a_device_lists_candidates_from_the_targets_its_client_verified(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path
) -> None:
    # python-tuf's client looks targets up by path and has no listing; after refresh() it keeps
    # the targets metadata it verified in its cache, which is where a device finds every version.
    repo.publish(bundles[1])
    repo.publish(bundles[2], rollout=10)
    repo.publish(bundles[2], channel="beta")
    device = repo.client(tmp_path / "d")
    device.refresh()
    cached = json.loads((tmp_path / "d" / "metadata" / "targets.json").read_bytes())
    found, problems = candidates_from_targets(cached["signed"]["targets"])
    assert problems == ()
    assert [(c.version, c.channel, c.rollout) for c in found] == [
        (1, "stable", 100), (2, "beta", 100), (2, "stable", 10)]
    assert device.get_targetinfo(found[-1].path) is not None


def start_serve(repo: TufRepo, *options: str) -> tuple[subprocess.Popen[str], str]:
    """``edge-export serve REPO --port 0 --quiet OPTIONS`` in a subprocess, and its URL once it
    listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", "serve", str(repo.path), "--port", "0",
         "--quiet", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
    if not match:
        process.kill()
        process.wait(timeout=10)
    assert match, f"edge-export serve printed {line!r}"
    return process, match.group(1)


@pytest.fixture
def served(repo: TufRepo) -> Iterator[str]:
    """``edge-export serve REPO --port 0`` in a subprocess; yields its URL."""
    process, url = start_serve(repo, "--max-requests", "500")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_device_updates_over_http_from_edge_export_serve(
    repo: TufRepo, bundles: dict[int, Path], served: str, tmp_path: Path
) -> None:
    repo.publish(bundles[1])
    device = tmp_path / "device"
    first = repo.client(device, served)
    first.refresh()
    info = first.get_targetinfo("traffic-signs/traffic-signs-1.tar")
    assert info is not None
    first.download_target(info)

    repo.publish(bundles[2], rollout=25, profiles=["raspberry-pi-5"], )
    again = repo.client(device, served)
    again.refresh()
    newer = again.get_targetinfo("traffic-signs/traffic-signs-2.tar")
    assert newer is not None
    fields = newer.custom[CUSTOM_KEY]
    assert (fields["name"], fields["version"], fields["profiles"]) == (
        "traffic-signs", 2, ["raspberry-pi-5"])
    assert fields["channels"]["stable"]["rollout"] == 25
    path = Path(again.download_target(newer))
    assert path.stat().st_size == newer.length


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", "root"])
def test_after_rotate_key_devices_still_update(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path, role: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    original_root = tmp_path / "provisioned-root.json"
    original_root.write_bytes(repo.root_json.read_bytes())
    repo.publish(bundles[1])
    seasoned = tmp_path / "seasoned"  # a device that updated before the rotation
    repo.client(seasoned).refresh()

    assert cli("repo", "rotate-key", repo.path, role) == 0
    out = capsys.readouterr().out
    assert f"rotated {role} keys" in out and "root is now v2" in out
    root2 = metadata(repo, "2.root.json").signed
    root1 = Metadata.from_file(str(original_root)).signed
    assert set(root2.roles[role].keyids).isdisjoint(root1.roles[role].keyids)
    if role != "root":
        # Re-signed by the old and the new key: valid under either root, so a device that has
        # not fetched root v2 yet is not locked out in between.
        current = {
            "timestamp": "timestamp.json",
            "snapshot": f"{metadata(repo, 'timestamp.json').signed.snapshot_meta.version}"
            ".snapshot.json",
        }
        if role == "targets":
            snapshot = metadata(repo, current["snapshot"])
            current["targets"] = f"{snapshot.signed.meta['targets.json'].version}.targets.json"
        md = metadata(repo, current[role])
        root1.verify_delegate(role, md.signed_bytes, md.signatures)
        root2.verify_delegate(role, md.signed_bytes, md.signatures)
    assert list((repo.keys / "retired").glob(f"*-{role}-*.pem"))
    assert (repo.path / "metadata" / "root.json").read_bytes() == (
        repo.path / "metadata" / "2.root.json").read_bytes()

    repo.publish(bundles[2])  # signed with the new key from now on
    with serving(repo.path) as url:
        for cache in (seasoned, tmp_path / "new-device"):
            device = repo.client(cache, url, trusted_root=original_root)
            device.refresh()
            info = device.get_targetinfo("traffic-signs/traffic-signs-2.tar")
            assert info is not None
            device.download_target(info)
            assert device._trusted_set.root.version == 2
    assert repository_status(repo.path).problems == []


def test_rotating_twice_chains(repo: TufRepo, bundles: dict[int, Path], tmp_path: Path) -> None:
    original = tmp_path / "root-v1.json"
    original.write_bytes(repo.root_json.read_bytes())
    rotate_key(repo.path, "root")
    rotate_key(repo.path, "targets")
    rotate_key(repo.path, "root")
    repo.publish(bundles[1])
    device = repo.client(tmp_path / "d", trusted_root=original)
    device.refresh()
    assert device._trusted_set.root.version == 4
    assert device.get_targetinfo("traffic-signs/traffic-signs-1.tar") is not None


def test_rotate_key_needs_the_root_key(repo: TufRepo, tmp_path: Path) -> None:
    for key in repo.keys.glob("root-*.pem"):
        key.rename(tmp_path / key.name)
    with pytest.raises(PublishError, match="cannot sign root: the root key .* is not in"):
        rotate_key(repo.path, "timestamp")
    assert not (repo.path / "metadata" / "2.root.json").exists()
    with pytest.raises(PublishError, match="unknown role"):
        rotate_key(repo.path, "mirror")


def test_the_client_refuses_an_expired_timestamp(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path
) -> None:
    repo.publish(bundles[1])
    expire_timestamp(repo)
    with pytest.raises(tuf_exceptions.ExpiredMetadataError):
        repo.client(tmp_path / "d").refresh()


def test_the_client_refuses_an_old_timestamp_replayed(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path
) -> None:
    repo.publish(bundles[1])
    old = (repo.path / "metadata" / "timestamp.json").read_bytes()
    repo.publish(bundles[2])
    device = tmp_path / "d"
    repo.client(device).refresh()
    (repo.path / "metadata" / "timestamp.json").write_bytes(old)  # a rollback attack
    with pytest.raises(tuf_exceptions.BadVersionNumberError):
        repo.client(device).refresh()


def test_the_client_refuses_a_tampered_or_oversized_target(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path
) -> None:
    published = repo.publish(bundles[1])
    tamper_target(repo, published.path)
    device = repo.client(tmp_path / "d")
    info = device.get_targetinfo(published.path)
    assert info is not None
    with pytest.raises(tuf_exceptions.LengthOrHashMismatchError):
        device.download_target(info)
    grow_target(repo, published.path)
    with serving(repo.path) as url:
        device = repo.client(tmp_path / "d2", url)
        info = device.get_targetinfo(published.path)
        assert info is not None
        with pytest.raises(tuf_exceptions.DownloadLengthMismatchError):
            device.download_target(info)


def test_the_client_refuses_targets_signed_by_an_unknown_key(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path
) -> None:
    repo.publish(bundles[1])
    resign_targets_with_unknown_key(repo)
    with pytest.raises(tuf_exceptions.UnsignedMetadataError):
        repo.client(tmp_path / "d").refresh()


# --------------------------------------------------------------------------------------------
# serve


def get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, b"", dict(error.headers)


def test_serve_never_serves_keys_settings_or_listings(repo: TufRepo,
                                                      bundles: dict[int, Path]) -> None:
    repo.publish(bundles[1])
    key = next(repo.keys.glob("targets-*.pem"))
    os.symlink(key, repo.path / "targets" / "traffic-signs" / "leak.pem")
    with serving(repo.path) as url:
        status, body, headers = get(url + "metadata/timestamp.json")
        assert status == 200 and json.loads(body)["signed"]["_type"] == "timestamp"
        assert headers["Cache-Control"] == "no-cache"
        status, _, headers = get(url + "metadata/2.targets.json")
        assert status == 200 and "immutable" in headers["Cache-Control"]
        status, _, headers = get(url + "metadata/3.root.json")
        assert status == 404 and headers["Cache-Control"] == "no-store"
        for path in (
            f"keys/{key.name}",
            f"metadata/../keys/{key.name}",
            f"metadata/%2e%2e/keys/{key.name}",
            "repository.json",
            ".lock",
            "targets/traffic-signs/leak.pem",
            "targets/",
            "metadata/",
            "",
        ):
            status, body, _ = get(url + path)
            assert status == 404, path
            assert b"PRIVATE KEY" not in body


def test_serve_prints_its_url_and_binds_loopback_by_default(
    repo: TufRepo, served: str
) -> None:
    assert served.startswith("http://127.0.0.1:")
    status, body, _ = get(served + "metadata/1.root.json")
    assert status == 200 and body == (repo.path / "metadata" / "1.root.json").read_bytes()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_exits_0_with_one_line_on_sigterm_and_sigint(repo: TufRepo, signum: int) -> None:
    # No --max-requests: only the signal ends it (what systemd's stop and Ctrl-C send).
    process, url = start_serve(repo)
    try:
        assert get(url + "metadata/timestamp.json")[0] == 200
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    name = signal.Signals(signum).name
    assert process.returncode == 0, err
    assert err == ""
    assert out.splitlines()[-1] == f"stopped serving {repo.path} on {name}"


def test_serve_says_goodbye_after_its_last_request(repo: TufRepo) -> None:
    process, url = start_serve(repo, "--max-requests", "1")
    try:
        assert get(url + "metadata/root.json")[0] == 200
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, err
    assert err == ""
    assert out.splitlines()[-1] == f"stopped serving {repo.path} after 1 request"


def test_serve_restores_the_signal_handlers_and_runs_off_the_main_thread(repo: TufRepo) -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    # The handler runs on this (main) thread right after announce returns.
    result = serve(repo.path, port=0, announce=lambda url: os.kill(os.getpid(), signal.SIGTERM))
    assert result.signal == "SIGTERM" and result.url.startswith("http://127.0.0.1:")
    assert {signum: signal.getsignal(signum) for signum in before} == before

    # Off the main thread no handler can be installed; it serves until max_requests.
    results: list[object] = []
    urls: list[str] = []
    ready = threading.Event()

    def announce(url: str) -> None:
        urls.append(url)
        ready.set()

    thread = threading.Thread(
        target=lambda: results.append(serve(repo.path, port=0, max_requests=1, announce=announce))
    )
    thread.start()
    assert ready.wait(timeout=10)
    assert get(urls[0] + "metadata/1.root.json")[0] == 200
    thread.join(timeout=10)
    assert [getattr(r, "signal", "missing") for r in results] == [None]
