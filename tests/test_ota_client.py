"""The update client (python-tuf's ngclient under our store and fetchers) against real
repositories made by the publisher, over ``file://`` and loopback HTTP: what it lists, what it
downloads, and the one-line error each refusal or fault becomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.ota.client import UpdateClient
from edge_runtime.ota.errors import (
    RepositoryUnavailableError,
    TargetRefusedError,
    UntrustedMetadataError,
)
from edge_runtime.ota.fetchers import DeadlineFetcher, FileFetcher, fetcher_for
from tests.fakes_io import free_port
from tests.ota_faults import faulty_server
from tests.tuf_repo import (
    TufRepo,
    expire_timestamp,
    grow_target,
    make_bundle,
    make_repo,
    resign_targets_with_unknown_key,
    serving,
    tamper_target,
)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("bundles")
    return {v: make_bundle(folder / f"v{v}", v) for v in (1, 2)}


@pytest.fixture
def repo(tmp_path: Path, bundles: dict[int, Path]) -> TufRepo:
    made = make_repo(tmp_path)
    made.publish(bundles[1])
    return made


def client(repo: TufRepo, device: Path, url: str | None = None, **options: float) -> UpdateClient:
    base = url or repo.file_url
    fetcher = fetcher_for(
        base,
        timeout_s=options.get("timeout_s", 5.0),
        max_download_s=options.get("max_download_s", 60.0),
    )
    return UpdateClient(
        base, repo.root_json, device, fetcher=fetcher, max_bundle_bytes=int(options.get("cap", 1e9))
    )


def test_lists_and_downloads_over_file_and_http(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path
) -> None:
    listing = client(repo, tmp_path / "usb").refresh()
    assert [(c.name, c.version, c.channel) for c in listing.candidates] == [
        ("traffic-signs", 1, "stable")
    ]
    assert listing.problems == () and listing.root_version == 1
    repo.publish(bundles[2], rollout=25)
    with serving(repo.path) as url:
        device = client(repo, tmp_path / "net", url)
        listing = device.refresh()
        newest = max(listing.candidates, key=lambda c: c.version)
        assert (newest.version, newest.rollout) == (2, 25)
        path = device.download(newest, tmp_path / "dl" / "v2.tar")
        assert path.stat().st_size == newest.length


def test_the_pinned_root_is_copied_once_and_rotations_carry_over(
    repo: TufRepo, tmp_path: Path
) -> None:
    from exporter.publish import rotate_key

    device = tmp_path / "device"
    client(repo, device).refresh()
    rotate_key(repo.path, "root")
    assert client(repo, device).refresh().root_version == 2
    # The provisioned file is no longer read: the cache holds the newest trusted root.
    assert client(repo, device).refresh().root_version == 2


@pytest.mark.parametrize(
    "attack, error, words",
    [
        ("unknown-key", UntrustedMetadataError, "not signed by the keys the pinned root trusts"),
        ("expired", UntrustedMetadataError, "freeze attack"),
        ("rollback", UntrustedMetadataError, "rollback attack"),
    ],
)
def test_metadata_attacks_are_refused_with_one_line(
    repo: TufRepo, bundles: dict[int, Path], tmp_path: Path, attack: str,
    error: type[Exception], words: str,
) -> None:
    device = tmp_path / "device"
    old_timestamp = (repo.path / "metadata" / "timestamp.json").read_bytes()
    repo.publish(bundles[2])
    client(repo, device).refresh()
    if attack == "unknown-key":
        resign_targets_with_unknown_key(repo)
        device = tmp_path / "fresh"
    elif attack == "expired":
        expire_timestamp(repo)
    else:
        (repo.path / "metadata" / "timestamp.json").write_bytes(old_timestamp)
    with pytest.raises(error, match=words) as caught:
        client(repo, device).refresh()
    assert "\n" not in str(caught.value)


def test_a_tampered_or_grown_target_is_refused(repo: TufRepo, tmp_path: Path) -> None:
    device = client(repo, tmp_path / "d")
    (candidate,) = device.refresh().candidates
    tamper_target(repo, candidate.path)
    with pytest.raises(TargetRefusedError, match="does not match its signed length and sha256"):
        device.download(candidate, tmp_path / "t.tar")
    grow_target(repo, candidate.path)
    with serving(repo.path) as url:
        device = client(repo, tmp_path / "d2", url)
        device.refresh()
        with pytest.raises(TargetRefusedError, match="longer than its signed length"):
            device.download(candidate, tmp_path / "t.tar")


def test_a_target_above_the_device_cap_is_not_downloaded(repo: TufRepo, tmp_path: Path) -> None:
    device = client(repo, tmp_path / "d", cap=1000)
    (candidate,) = device.refresh().candidates
    with pytest.raises(TargetRefusedError, match="more than this device accepts"):
        device.download(candidate, tmp_path / "t.tar")
    assert not (tmp_path / "t.tar").exists()


def test_no_server_is_unavailable(repo: TufRepo, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(RepositoryUnavailableError, match="cannot connect .*refused"):
        client(repo, tmp_path / "d", url).refresh()


@pytest.mark.parametrize(
    "mode, match, stage, error, words",
    [
        ("cut", ".tar", "download", RepositoryUnavailableError, "download failed"),
        ("stall", ".tar", "download", RepositoryUnavailableError, "too slowly"),
        ("down", "timestamp", "refresh", RepositoryUnavailableError, "download failed"),
        ("garbage", "timestamp", "refresh", UntrustedMetadataError, "metadata is invalid"),
        ("garbage", ".tar", "download", TargetRefusedError, "signed length and sha256"),
    ],
)
def test_server_faults(
    repo: TufRepo, tmp_path: Path, mode: str, match: str, stage: str,
    error: type[Exception], words: str,
) -> None:
    with faulty_server(repo.path, mode="ok", match=match, stall_s=2.0) as (url, settings):
        device = client(repo, tmp_path / "d", url, timeout_s=0.5)
        listing = None
        if stage == "download":
            listing = device.refresh()
        settings["mode"] = mode
        with pytest.raises(error, match=words):
            if listing is None:
                device.refresh()
            else:
                device.download(listing.candidates[0], tmp_path / "t.tar")
        assert settings["hits"] >= 1


class Ticking:
    """A clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_a_whole_download_is_bounded_on_the_injected_clock(repo: TufRepo, tmp_path: Path) -> None:
    fetcher = DeadlineFetcher(FileFetcher(), max_seconds=3, clock=Ticking())
    device = UpdateClient(
        repo.file_url, repo.root_json, tmp_path / "d", fetcher=fetcher, max_bundle_bytes=10**9
    )
    with pytest.raises(RepositoryUnavailableError, match="took more than 3 s"):
        (candidate,) = device.refresh().candidates
        device.download(candidate, tmp_path / "t.tar")
