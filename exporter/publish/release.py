"""Putting models out: create a repository, publish a bundle on a channel, change a rollout.

A bundle becomes the target ``NAME/NAME-VERSION.tar`` (:func:`target_path_for`), a reproducible
``.tar`` with its name, version, channels and their rollout, device profiles, runtime range and
manifest sha256 in the target's custom fields (:class:`edge_runtime.ota.policy.TargetFields`,
the one definition the device reads back). A version names one bundle, and the versions on a
channel only grow.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from devices import list_profiles
from edge_runtime.bundle import MANIFEST_NAME, load_bundle, pack_bundle, sha256_file
from edge_runtime.fsutil import fsync_directory, fsync_tree, write_file
from edge_runtime.ota.policy import (
    CHANNEL_PATTERN,
    CUSTOM_KEY,
    METADATA_DIR,
    TARGETS_DIR,
    Release,
    TargetFields,
    TargetFieldsError,
    read_target_fields,
)
from exporter.errors import PublishError
from exporter.publish.keys import KEYS_DIR, check_keys_location, new_key
from exporter.publish.repository import (
    CONFIG_NAME,
    ROLES,
    SERIALIZER,
    Repository,
    check_role,
    encode_config,
    parse_expires_days,
    utc_now,
)

_PROFILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class InitResult:
    """A new repository."""

    repo: Path
    keys: Path
    #: the file to provision devices with (pinned as their trust root)
    root_json: Path
    keyids: dict[str, list[str]]
    expires_days: dict[str, float]


def init_repository(
    repo: str | os.PathLike[str],
    *,
    keys: str | os.PathLike[str] | None = None,
    expires_days: Mapping[str, float] | None = None,
    thresholds: Mapping[str, int] | None = None,
    now: datetime | None = None,
) -> InitResult:
    """Create a repository: keys for the four roles, and their first signed metadata.

    ``thresholds``: signatures each role needs (default 1); that many keys are made for it.
    ``keys``: where the private keys go (default ``REPO/keys``); never inside ``metadata/`` or
    ``targets/``. Everything inside ``REPO`` appears at once (built beside it, then renamed).

    Raises:
        PublishError: ``repo`` is not empty, the keys folder would be served, or an expiry or
            threshold is invalid.
    """
    root_dir = Path(repo)
    moment = utc_now(now)
    days = parse_expires_days(expires_days)
    counts = {role: 1 for role in ROLES}
    for role, value in (thresholds or {}).items():
        check_role(role)
        if not isinstance(value, int) or not 1 <= value <= 9:
            raise PublishError(f"threshold of {role} must be 1..9, got {value}")
        counts[role] = value
    if root_dir.exists() and (not root_dir.is_dir() or any(root_dir.iterdir())):
        what = "a repository" if (root_dir / CONFIG_NAME).exists() else "files"
        raise PublishError(f"{root_dir} already holds {what}; choose a new or empty folder")
    keys_dir = Path(keys) if keys is not None else root_dir / KEYS_DIR
    check_keys_location(root_dir, keys_dir)
    keys_inside = keys_dir.resolve() == (root_dir / KEYS_DIR).resolve()

    root_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{root_dir.name}.", suffix=".partial", dir=root_dir.parent)
    )
    try:
        stage_keys = staging / KEYS_DIR if keys_inside else keys_dir
        signers = {role: [new_key(stage_keys, role) for _ in range(counts[role])]
                   for role in ROLES}
        expiry = {role: moment + timedelta(days=days[role]) for role in ROLES}
        root = Root(expires=expiry["root"], consistent_snapshot=True)
        for role in ROLES:
            root.roles[role] = Role([], counts[role])
            for signer in signers[role]:
                root.add_key(signer.public_key, role)
        targets = Targets(expires=expiry["targets"])
        snapshot = Snapshot(expires=expiry["snapshot"])
        snapshot.meta["targets.json"] = MetaFile(version=targets.version)
        timestamp = Timestamp(expires=expiry["timestamp"])
        timestamp.snapshot_meta = MetaFile(version=snapshot.version)

        metadata = staging / METADATA_DIR
        (staging / TARGETS_DIR).mkdir()
        files: dict[str, Metadata[Any]] = {
            "1.root.json": Metadata(root),
            "1.targets.json": Metadata(targets),
            "1.snapshot.json": Metadata(snapshot),
            "timestamp.json": Metadata(timestamp),
        }
        for (name, md), role in zip(files.items(), ROLES):
            for signer in signers[role]:
                md.sign(signer, append=True)
            write_file(metadata / name, md.to_bytes(SERIALIZER))
        write_file(metadata / "root.json", (metadata / "1.root.json").read_bytes())
        stored_keys = None if keys_inside else str(keys_dir.resolve())
        write_file(staging / CONFIG_NAME, encode_config(days, stored_keys))
        fsync_tree(staging)
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; a web server must reach metadata/
        if root_dir.exists():
            root_dir.rmdir()  # empty, checked above
        os.rename(staging, root_dir)
        fsync_directory(root_dir.parent)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise PublishError(f"cannot create the repository {root_dir}: {exc}") from exc
        raise
    return InitResult(
        repo=root_dir,
        keys=root_dir / KEYS_DIR if keys_inside else keys_dir,
        root_json=root_dir / METADATA_DIR / "root.json",
        keyids={role: [s.public_key.keyid for s in signers[role]] for role in ROLES},
        expires_days=days,
    )


@dataclass(frozen=True)
class PublishedTarget:
    """A bundle target as published."""

    path: str
    length: int
    sha256: str
    fields: TargetFields
    #: the metadata versions written
    versions: dict[str, int]

    def describe(self, channel: str) -> str:
        release = self.fields.channels[channel]
        profiles = ", ".join(self.fields.profiles) or "any"
        return (
            f"{self.fields.name} v{self.fields.version} on {channel} to {release.rollout}% of "
            f"devices (profiles: {profiles}); target {self.path}, {self.length} bytes"
        )


def target_path_for(name: str, version: int) -> str:
    """The TUF target path of a bundle: ``NAME/NAME-VERSION.tar``."""
    return f"{name}/{name}-{version}.tar"


def _bundle_fields(target: TargetFile) -> TargetFields:
    try:
        return read_target_fields(target.custom, where=f"target {target.path}")
    except TargetFieldsError as exc:
        raise PublishError(str(exc)) from exc


def _check_rollout(percent: int) -> None:
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        raise PublishError(f"rollout must be a whole percent 1..100, got {percent}")


def _with_release(fields: TargetFields, channel: str, release: Release) -> TargetFields:
    """``fields`` with ``channel`` set to ``release`` (added or replaced)."""
    return fields.model_copy(update={"channels": {**fields.channels, channel: release}})


def _newest_on(targets: Targets, name: str, channel: str) -> int | None:
    versions = []
    for target in targets.targets.values():
        if not isinstance(target.custom, dict) or CUSTOM_KEY not in target.custom:
            continue
        fields = _bundle_fields(target)
        if fields.name == name and channel in fields.channels:
            versions.append(fields.version)
    return max(versions, default=None)


def _check_profiles(
    profiles: Sequence[str], allowed: Sequence[str], *, custom_profiles: bool
) -> None:
    shipped = set(list_profiles())
    for profile in profiles:
        if not _PROFILE.match(profile):
            raise PublishError(f"'{profile}' is not a device profile name")
        if profile not in shipped and not custom_profiles:
            raise PublishError(
                f"unknown device profile '{profile}' (shipped: {', '.join(sorted(shipped))}); "
                "pass --custom-profiles for devices with a profile file of their own"
            )
    if allowed and not profiles:
        raise PublishError(
            f"the bundle is made for the profiles {', '.join(allowed)}: a target for any device "
            "would be downloaded and then refused by the others"
        )
    outside = [p for p in profiles if allowed and p not in allowed]
    if outside:
        raise PublishError(
            f"the bundle's compatible.profiles ({', '.join(allowed)}) does not include "
            f"{', '.join(outside)}: devices would download it and then refuse it"
        )


def publish_bundle(
    repo: str | os.PathLike[str],
    bundle: str | os.PathLike[str],
    *,
    channel: str,
    rollout: int = 100,
    profiles: Sequence[str] | None = None,
    custom_profiles: bool = False,
    keys: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
) -> PublishedTarget:
    """Add a bundle (directory or ``.tar``) as a target on ``channel`` and re-sign.

    The bundle is validated (manifest, labels, every artifact's sha256) and packed as a
    reproducible ``.tar``, so a directory and its ``.tar`` publish the same bytes. ``profiles``
    defaults to the manifest's ``compatible.profiles`` (empty: any device). A version already
    published on another channel is added to this one (the same bytes only).

    Raises:
        PublishError: a bad channel, rollout or profile, or a version not above the newest of
            this model on this channel, or different bytes under a published version.
        BundleError: the bundle is invalid.
    """
    moment = utc_now(now)
    if not re.match(CHANNEL_PATTERN, channel):
        raise PublishError(
            f"channel '{channel}' must be lower-case letters, digits, '.', '_' or '-' "
            "(e.g. stable, beta)"
        )
    _check_rollout(rollout)
    repository = Repository(repo, keys)

    with contextlib.ExitStack() as stack:
        loaded = stack.enter_context(load_bundle(bundle))
        manifest = loaded.manifest
        chosen = list(profiles) if profiles is not None else list(manifest.compatible.profiles)
        _check_profiles(chosen, manifest.compatible.profiles, custom_profiles=custom_profiles)
        staging = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix=".publish-", dir=repository.root)))
        tar = pack_bundle(loaded.root, staging / "bundle.tar")
        sha256 = sha256_file(tar)
        manifest_sha = sha256_file(loaded.root / MANIFEST_NAME)
        path = target_path_for(manifest.name, manifest.version)

        with repository.locked():
            root_md, timestamp, snapshot, targets = repository.published()
            label = f"{manifest.name} v{manifest.version}"
            existing = targets.signed.targets.get(path)
            fields: TargetFields | None = None
            if existing is not None:
                fields = _bundle_fields(existing)
                if existing.hashes.get("sha256") != sha256:
                    raise PublishError(
                        f"{label} is already published with other contents (sha256 "
                        f"{existing.hashes.get('sha256', '?')[:12]}, this bundle {sha256[:12]}): "
                        "a version number names one bundle; export it as a new version"
                    )
                if channel in fields.channels:
                    raise PublishError(
                        f"{label} is already on {channel}; change its rollout with "
                        f"`edge-export repo rollout {repository.root} {manifest.name} "
                        f"{manifest.version} PERCENT --channel {channel}`"
                    )
                if profiles is not None and tuple(chosen) != fields.profiles:
                    raise PublishError(
                        f"{label} is published for the profiles "
                        f"{', '.join(fields.profiles) or 'any'}; one version has one profile "
                        "list on every channel"
                    )
            newest = _newest_on(targets.signed, manifest.name, channel)
            if newest is not None and manifest.version <= newest:
                raise PublishError(
                    f"{label} is not newer than v{newest}, the newest {manifest.name} on "
                    f"{channel}: versions on a channel only grow"
                )
            release = Release(rollout=rollout, published=moment)
            if fields is not None:
                fields = _with_release(fields, channel, release)
            else:
                fields = TargetFields(
                    name=manifest.name,
                    version=manifest.version,
                    channels={channel: release},
                    profiles=tuple(chosen),
                    runtime=manifest.compatible.runtime,
                    manifest_sha256=manifest_sha,
                    created=manifest.created,
                )
            others = existing.custom if existing is not None else None
            info = TargetFile(
                length=tar.stat().st_size,
                hashes={"sha256": sha256},
                path=path,
                unrecognized_fields={"custom": {**(others or {}), **fields.to_custom()}},
            )
            repository.add_target_file(path, tar, sha256)
            targets.signed.targets[path] = info
            versions = repository.commit(root_md.signed, timestamp, snapshot, targets, now=moment)
    return PublishedTarget(path, info.length, sha256, fields, versions)


def set_rollout(
    repo: str | os.PathLike[str],
    name: str,
    version: int,
    percent: int,
    *,
    channel: str | None = None,
    keys: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
) -> PublishedTarget:
    """Change the rollout percent of a published version on one of its channels, and re-sign.

    ``channel`` may be left out when the version is on one channel only. Lowering a rollout stops
    further devices from taking the version; devices that took it keep it.

    Raises:
        PublishError: no such version or channel, or a percent outside 1..100.
    """
    moment = utc_now(now)
    _check_rollout(percent)
    repository = Repository(repo, keys)
    path = target_path_for(name, version)
    with repository.locked():
        root_md, timestamp, snapshot, targets = repository.published()
        existing = targets.signed.targets.get(path)
        if existing is None:
            raise PublishError(f"{name} v{version} is not published in {repository.root}")
        fields = _bundle_fields(existing)
        if channel is None:
            if len(fields.channels) > 1:
                raise PublishError(
                    f"{name} v{version} is on {', '.join(sorted(fields.channels))}: "
                    "say which with --channel"
                )
            channel = next(iter(fields.channels))
        if channel not in fields.channels:
            raise PublishError(
                f"{name} v{version} is not on {channel} (it is on "
                f"{', '.join(sorted(fields.channels))})"
            )
        release = fields.channels[channel].model_copy(update={"rollout": percent})
        fields = _with_release(fields, channel, release)
        existing.unrecognized_fields["custom"] = {
            **(existing.custom or {}),
            **fields.to_custom(),
        }
        versions = repository.commit(root_md.signed, timestamp, snapshot, targets, now=moment)
    sha256 = existing.hashes.get("sha256", "")
    return PublishedTarget(path, existing.length, sha256, fields, versions)


__all__ = [
    "InitResult",
    "PublishedTarget",
    "init_repository",
    "publish_bundle",
    "set_rollout",
    "target_path_for",
]
