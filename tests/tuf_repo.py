"""A real TUF update repository for tests, and a real python-tuf client against it.

The repository is made by the publisher itself (:mod:`exporter.publish`), from small valid bundles
cut from the bundled traffic-sign model (one int8 artifact, a few samples: a real smoke test
passes on them). The client is python-tuf's own ``tuf.ngclient.Updater``, over ``file://`` (with
:class:`FileFetcher`) or over loopback HTTP (:func:`serving`, or ``edge-export serve`` in a
subprocess).

Typical use::

    repo = make_repo(tmp_path)
    repo.publish(make_bundle(tmp_path / "v1", 1), channel="stable")
    with serving(repo.path) as url:
        updater = repo.client(tmp_path / "device", url)
        updater.refresh()
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.ngclient import FetcherInterface, Updater

from edge_runtime.bundle import MANIFEST_NAME, write_bundle
from edge_runtime.ota.fetchers import FileFetcher
from edge_runtime.ota.policy import repository_urls
from exporter.publish import (
    InitResult,
    PublishedTarget,
    init_repository,
    make_server,
    publish_bundle,
    server_url,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCE_BUNDLE = ROOT / "models" / "traffic-signs"


def make_bundle(
    dest: Path,
    version: int,
    *,
    name: str = "traffic-signs",
    profiles: Sequence[str] = (),
    runtime: str = ">=0.1",
    samples: int = 4,
    source: Path = SOURCE_BUNDLE,
    wrong_labels: bool = False,
) -> Path:
    """A small valid bundle directory at ``dest``: ``source``'s int8 artifact and its first
    ``samples`` samples, as ``name`` ``version`` for ``profiles`` (empty: any).

    ``wrong_labels``: every sample expects the next label over, so the bundle is valid but its
    smoke test fails (a model that does not do what its samples say)."""
    manifest: dict[str, Any] = json.loads((source / MANIFEST_NAME).read_text(encoding="utf-8"))
    artifacts = [a for a in manifest["artifacts"] if a["precision"] == "int8"][:1]
    chosen = [dict(sample) for sample in manifest["samples"][:samples]]
    if wrong_labels:
        labels = manifest["labels"]
        for sample in chosen:
            sample["label"] = labels[(labels.index(sample["label"]) + 1) % len(labels)]
    manifest.update(
        name=name,
        version=version,
        artifacts=artifacts,
        samples=chosen,
        compatible={"runtime": runtime, "profiles": list(profiles)},
    )
    files: dict[str, Path | bytes] = {a["path"]: source / a["path"] for a in artifacts}
    files.update({s["path"]: source / s["path"] for s in manifest["samples"]})
    write_bundle(dest, manifest, files)
    return dest


@dataclass(frozen=True)
class TufRepo:
    """A repository made by ``edge-export repo init`` (here: :func:`init_repository`)."""

    path: Path
    init: InitResult

    @property
    def keys(self) -> Path:
        return self.init.keys

    @property
    def root_json(self) -> Path:
        """The root a device is provisioned with (the newest root of this repository)."""
        return self.init.root_json

    @property
    def file_url(self) -> str:
        """The repository as a ``file://`` URL (an air-gapped device's USB stick)."""
        return self.path.resolve().as_uri() + "/"

    def publish(
        self,
        bundle: Path,
        channel: str = "stable",
        *,
        rollout: int = 100,
        profiles: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> PublishedTarget:
        return publish_bundle(
            self.path, bundle, channel=channel, rollout=rollout, profiles=profiles, now=now
        )

    def client(
        self,
        cache: Path,
        url: str | None = None,
        *,
        trusted_root: Path | None = None,
        fetcher: FetcherInterface | None = None,
    ) -> Updater:
        """A fresh ``Updater`` with its metadata cache in ``cache/metadata`` and downloads in
        ``cache/targets``, trusting ``trusted_root`` (default: this repository's root now).

        ``url`` is the repository base (``http://...`` or ``file://...``; default: file).
        Reuse ``cache`` to play the same device again (it keeps the metadata it trusted).
        """
        base = url or self.file_url
        metadata_url, targets_url = repository_urls(base)
        if fetcher is None and base.startswith("file:"):
            fetcher = FileFetcher()
        metadata_dir = cache / "metadata"
        metadata_dir.mkdir(parents=True, exist_ok=True)
        trusted = metadata_dir / "root.json"
        if not trusted.exists():
            trusted.write_bytes((trusted_root or self.root_json).read_bytes())
        return Updater(
            metadata_dir=str(metadata_dir),
            metadata_base_url=metadata_url,
            target_dir=str(cache / "targets"),
            target_base_url=targets_url,
            fetcher=fetcher,
            bootstrap=None,  # the cached root.json: the one provisioned, or the newest trusted
        )


def make_repo(tmp_path: Path, name: str = "repo", **options: Any) -> TufRepo:
    """A new repository at ``tmp_path/name`` (options as :func:`init_repository`)."""
    path = tmp_path / name
    return TufRepo(path=path, init=init_repository(path, **options))


@contextlib.contextmanager
def serving(repo: Path, *, max_requests: int = 2000) -> Iterator[str]:
    """Serve ``repo`` over HTTP on a free loopback port in a thread; yields the base URL.

    The request loop is bounded: it ends after ``max_requests`` requests or when the block exits.
    """
    server = make_server(repo, "127.0.0.1", 0, quiet=True)
    server.timeout = 0.05  # handle_request() returns this often to look at ``stop``
    stop = threading.Event()
    handled = [0]
    process = server.process_request

    def counted(request: Any, address: Any) -> None:
        handled[0] += 1
        process(request, address)

    server.process_request = counted  # type: ignore[method-assign,assignment]

    def loop() -> None:
        while not stop.is_set() and handled[0] < max_requests:
            server.handle_request()

    thread = threading.Thread(target=loop, name="tuf-repo-server", daemon=True)
    thread.start()
    try:
        yield server_url(server)
    finally:
        stop.set()
        thread.join(timeout=10)
        server.server_close()


def no_proxy_for_loopback() -> dict[str, str]:
    """Environment entries that keep HTTP clients off any configured proxy for loopback."""
    entries = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    return {**os.environ, **entries}


# --------------------------------------------------------------------------------------------
# Attacks and accidents, for the tests that check that devices refuse them


def _stored_target(repo: TufRepo, target_path: str) -> Path:
    """The hash-prefixed file of a published target under ``targets/``."""
    parent, _, base = target_path.rpartition("/")
    matches = sorted((repo.path / "targets" / parent).glob(f"*.{base}"))
    assert len(matches) == 1, matches
    return matches[0]


def tamper_target(repo: TufRepo, target_path: str, *, offset: int = 600) -> Path:
    """Flip one byte of a published target's file (same length, other hash)."""
    stored = _stored_target(repo, target_path)
    data = bytearray(stored.read_bytes())
    data[offset] ^= 0xFF
    stored.write_bytes(bytes(data))
    return stored


def grow_target(repo: TufRepo, target_path: str, extra: int = 4096) -> Path:
    """Append bytes to a published target's file (longer than its signed length)."""
    stored = _stored_target(repo, target_path)
    with open(stored, "ab") as handle:
        handle.write(b"\0" * extra)
    return stored


def resign_targets_with_unknown_key(repo: TufRepo) -> None:
    """Replace the signature of the published targets metadata by one of a key that root does
    not list (an attacker who can write to the server, but holds no key)."""
    from securesystemslib.signer import CryptoSigner

    from exporter.publish import Repository

    repository = Repository(repo.path)
    timestamp = repository.timestamp_md()
    targets = repository.targets_md(repository.snapshot_md(timestamp))
    targets.sign(CryptoSigner.generate_ed25519())
    repository.write(targets, f"{targets.signed.version}.targets.json")


def expire_timestamp(repo: TufRepo, *, days_ago: float = 2) -> None:
    """Publish a new timestamp that has already expired (a freeze: old, signed metadata)."""
    from datetime import timedelta, timezone

    from exporter.publish import refresh_repository

    refresh_repository(repo.path, now=datetime.now(timezone.utc) - timedelta(days=days_ago))


def publish_raw_tar(
    repo: TufRepo,
    data: bytes,
    *,
    name: str,
    version: int,
    manifest_sha256: str,
    profiles: Sequence[str] = (),
    channel: str = "stable",
) -> str:
    """Sign arbitrary ``data`` as the bundle target ``name`` ``version`` (bypassing the
    publisher's checks): a correctly signed release whose contents are bad, as if the build
    machine were compromised. Returns the target path."""
    import hashlib
    from datetime import timezone

    from tuf.api.metadata import TargetFile

    from edge_runtime.ota.policy import Release, TargetFields
    from exporter.publish import Repository, target_path_for

    repository = Repository(repo.path)
    path = target_path_for(name, version)
    sha256 = hashlib.sha256(data).hexdigest()
    staged = repo.path / f".raw-{version}.tar"
    staged.write_bytes(data)
    fields = TargetFields(
        name=name,
        version=version,
        channels={channel: Release(rollout=100)},
        profiles=tuple(profiles),
        runtime="",
        manifest_sha256=manifest_sha256,
    )
    with repository.locked():
        root_md, timestamp, snapshot, targets = repository.published()
        repository.add_target_file(path, staged, sha256)
        targets.signed.targets[path] = TargetFile(
            length=len(data),
            hashes={"sha256": sha256},
            path=path,
            unrecognized_fields={"custom": fields.to_custom()},
        )
        repository.commit(
            root_md.signed, timestamp, snapshot, targets, now=datetime.now(timezone.utc)
        )
    staged.unlink()
    return path


def bundle_tar_members(bundle: Path) -> dict[str, bytes]:
    """The members a bundle directory packs into, by name."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text(encoding="utf-8"))
    names = [MANIFEST_NAME, "labels.txt"] + [a["path"] for a in manifest["artifacts"]]
    names += [s["path"] for s in manifest["samples"]]
    return {n: (bundle / n).read_bytes() for n in names}


def evil_tar(bundle: Path, kind: str) -> tuple[bytes, str]:
    """A ``.tar`` of ``bundle`` made bad in one way, and the sha256 of the manifest.json the
    signed target will claim (the bundle's own, so only the inside is wrong).

    ``kind``: ``artifact`` (one byte of the model flipped, same size), ``manifest`` (its
    threshold changed in manifest.json), ``dotdot`` / ``absolute`` (an extra member outside
    the bundle), ``symlink`` / ``hardlink`` (a link member), ``extra`` (a member the manifest
    does not name), ``version`` (the manifest says another version than the target).
    """
    import hashlib
    import io
    import tarfile

    members = bundle_tar_members(bundle)
    claimed = hashlib.sha256(members[MANIFEST_NAME]).hexdigest()
    manifest = json.loads(members[MANIFEST_NAME])
    artifact = manifest["artifacts"][0]["path"]
    links: list[tarfile.TarInfo] = []
    if kind == "artifact":
        data = bytearray(members[artifact])
        data[len(data) // 2] ^= 0xFF
        members[artifact] = bytes(data)
    elif kind in ("manifest", "version"):
        if kind == "manifest":
            # A valid change (lower confidence threshold) that only the signed sha256 reveals.
            manifest.setdefault("thresholds", {})["default"] = 0.0123
        else:
            manifest["version"] += 1
        members[MANIFEST_NAME] = json.dumps(manifest).encode()
        if kind == "version":
            claimed = hashlib.sha256(members[MANIFEST_NAME]).hexdigest()
    elif kind == "dotdot":
        members["../escape.txt"] = b"outside"
    elif kind == "absolute":
        members["/tmp/edge-classify-absolute.txt"] = b"outside"
    elif kind == "extra":
        members["extra.bin"] = b"not in the manifest"
    elif kind in ("symlink", "hardlink"):
        link = tarfile.TarInfo("samples/link.png")
        link.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        link.linkname = "/etc/passwd" if kind == "symlink" else artifact
        links.append(link)
    else:
        raise ValueError(kind)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for link in links:
            archive.addfile(link)
    return buffer.getvalue(), claimed


@contextlib.contextmanager
def edge_export_serve(repo: TufRepo, max_requests: int = 2000) -> Iterator[str]:
    """``edge-export serve REPO --port 0`` in a subprocess (bounded); yields its base URL."""
    import re
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", "serve", str(repo.path), "--port", "0",
         "--quiet", "--max-requests", str(max_requests)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert match, f"edge-export serve printed {line!r}"
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)
