"""Keeping a repository alive: what it publishes and what devices would refuse, replacing a
role's keys, and re-signing metadata before it expires.

Devices refuse expired metadata, so ``repo refresh`` runs from cron several times per
timestamp period; it needs only the online keys (snapshot, timestamp) unless targets or root
are due. A key rotation writes a new root version that devices verify with the root they trust.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata

from edge_runtime.ota.policy import TargetFieldsError, read_target_fields
from exporter.errors import PublishError
from exporter.publish.keys import key_file, new_key, retire_keys
from exporter.publish.repository import Repository, check_role, utc_now

#: refresh re-signs snapshot and targets when less than this share of their period is left
RESIGN_SHARE_LEFT = 1 / 3
#: refresh warns about root this many days before it expires (or a third of its period)
ROOT_WARNING_DAYS = 30


@dataclass(frozen=True)
class RoleStatus:
    """One role's metadata as published."""

    role: str
    version: int
    expires: str
    expires_in_days: float
    threshold: int
    keyids: list[str]
    #: how many of its private keys are in the keys folder
    keys_here: int
    signed: bool


@dataclass(frozen=True)
class TargetStatus:
    """One published bundle target."""

    path: str
    name: str
    version: int
    length: int
    sha256: str
    profiles: list[str]
    runtime: str
    channels: dict[str, dict[str, Any]]
    file_present: bool


@dataclass(frozen=True)
class RepositoryStatus:
    """What ``repo status`` shows."""

    repo: str
    consistent_snapshot: bool
    roles: list[RoleStatus]
    targets: list[TargetStatus]
    problems: list[str]

    def channels(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """channel -> model name -> its versions on that channel (newest first)."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for target in sorted(self.targets, key=lambda t: (t.name, -t.version)):
            for channel, release in target.channels.items():
                entry = {"version": target.version, **release}
                out.setdefault(channel, {}).setdefault(target.name, []).append(entry)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "consistent_snapshot": self.consistent_snapshot,
            "roles": {r.role: {k: v for k, v in asdict(r).items() if k != "role"} for r in
                      self.roles},
            "targets": [asdict(t) for t in self.targets],
            "channels": self.channels(),
            "problems": list(self.problems),
        }


def repository_status(
    repo: str | os.PathLike[str],
    *,
    keys: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
) -> RepositoryStatus:
    """Roles (version, expiry, threshold, key ids, signatures), targets and channels.

    ``problems`` lists what devices would refuse: expired or badly signed metadata, or a target
    file that is missing or of the wrong size.

    Raises:
        PublishError: no repository at ``repo``, or its metadata cannot be read.
    """
    moment = utc_now(now)
    repository = Repository(repo, keys)
    root_md, timestamp, snapshot, targets = repository.published()
    root = root_md.signed
    problems: list[str] = []
    roles: list[RoleStatus] = []
    for role, md in (("root", root_md), ("targets", targets), ("snapshot", snapshot),
                     ("timestamp", timestamp)):
        spec = root.roles[role]
        try:
            root.verify_delegate(role, md.signed_bytes, md.signatures)
            signed = True
        except UnsignedMetadataError:
            signed = False
            problems.append(f"{role} v{md.signed.version} is not signed by its keys in root")
        left = (md.signed.expires - moment).total_seconds() / 86400
        if left <= 0:
            fix = " --all" if role == "root" else ""
            problems.append(
                f"{role} v{md.signed.version} expired {md.signed.expires:%Y-%m-%d %H:%M} UTC: "
                f"run `edge-export repo refresh {repository.root}{fix}`"
            )
        here = sum(
            key_file(repository.keys, role, keyid).is_file() for keyid in spec.keyids
        )
        roles.append(
            RoleStatus(
                role=role,
                version=md.signed.version,
                expires=md.signed.expires.isoformat(),
                expires_in_days=round(left, 2),
                threshold=spec.threshold,
                keyids=list(spec.keyids),
                keys_here=here,
                signed=signed,
            )
        )
    rows: list[TargetStatus] = []
    for path, target in sorted(targets.signed.targets.items()):
        try:
            fields = read_target_fields(target.custom, where=f"target {path}")
        except TargetFieldsError as exc:
            problems.append(str(exc))
            continue
        sha256 = target.hashes.get("sha256", "")
        stored = repository.target_file(path, sha256)
        present = stored.is_file() and stored.stat().st_size == target.length
        if not present:
            problems.append(f"target file {stored} is missing or not {target.length} bytes")
        rows.append(
            TargetStatus(
                path=path,
                name=fields.name,
                version=fields.version,
                length=target.length,
                sha256=sha256,
                profiles=list(fields.profiles),
                runtime=fields.runtime,
                channels={
                    c: r.model_dump(mode="json", exclude_none=True)
                    for c, r in sorted(fields.channels.items())
                },
                file_present=present,
            )
        )
    return RepositoryStatus(
        repo=str(repository.root),
        consistent_snapshot=bool(root.consistent_snapshot),
        roles=roles,
        targets=rows,
        problems=problems,
    )


@dataclass(frozen=True)
class RotationResult:
    """A role's keys replaced."""

    role: str
    old_keyids: list[str]
    new_keyids: list[str]
    root_version: int
    retired: list[Path]


def rotate_key(
    repo: str | os.PathLike[str],
    role: str,
    *,
    keys: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
) -> RotationResult:
    """Replace every key of ``role`` with a new one, in a new root version.

    The new root is signed by the current root keys (and, for root itself, by the new ones
    too), so devices verify the chain from the root they trust. For targets, snapshot and
    timestamp, the role's metadata is re-signed with the new key (and the old one, when it is
    here, so it verifies under the old root and the new one alike) before the new root is
    written. The old private keys move to ``keys/retired/``.

    Raises:
        PublishError: an unknown role, or the root keys (always needed) are not here.
    """
    check_role(role)
    moment = utc_now(now)
    repository = Repository(repo, keys)
    with repository.locked():
        root_md = repository.root_md()
        root_signers = repository.signers(root_md.signed, "root")
        old_keyids = list(root_md.signed.roles[role].keyids)
        count = max(len(old_keyids), root_md.signed.roles[role].threshold)
        old_signers = repository.signers(root_md.signed, role, required=False)
        new_signers = [new_key(repository.keys, role) for _ in range(count)]

        new_root_md = copy.deepcopy(root_md)
        new_root = new_root_md.signed
        for keyid in old_keyids:
            new_root.revoke_key(keyid, role)
        for signer in new_signers:
            new_root.add_key(signer.public_key, role)
        repository.bump(new_root, "root", moment)

        if role != "root":
            # Signed by old and new keys: valid under the root devices have and the new one.
            timestamp = repository.timestamp_md()
            snapshot = repository.snapshot_md(timestamp)
            targets = repository.targets_md(snapshot) if role == "targets" else None
            repository.commit(
                root_md.signed,
                timestamp,
                snapshot,
                targets,
                now=moment,
                resign_snapshot=role == "snapshot",
                signers_for={role: [*new_signers, *old_signers]},
            )
            repository.sign(new_root_md, root_signers)
        else:
            repository.sign(new_root_md, root_signers + new_signers)
        repository.write_root(new_root_md)
        retired = retire_keys(repository.keys, role, old_keyids, moment)
    return RotationResult(
        role=role,
        old_keyids=old_keyids,
        new_keyids=[s.public_key.keyid for s in new_signers],
        root_version=new_root.version,
        retired=retired,
    )


@dataclass(frozen=True)
class RefreshResult:
    """What ``repo refresh`` re-signed."""

    resigned: dict[str, int]
    warnings: list[str] = field(default_factory=list)


def refresh_repository(
    repo: str | os.PathLike[str],
    *,
    keys: str | os.PathLike[str] | None = None,
    all_roles: bool = False,
    now: datetime | None = None,
) -> RefreshResult:
    """Re-sign what is close to expiry; meant for cron.

    Timestamp is always re-signed (new version, new expiry). Snapshot and targets are re-signed
    when less than a third of their period is left (or with ``all_roles``); root only with
    ``all_roles`` (it needs the offline root key), and a warning says when it is due. Run it
    several times per timestamp period (e.g. every 6 hours for the default one day).

    Raises:
        PublishError: a key that is needed is not here; what could be signed was signed and
            written first, and the message says what is left.
    """
    moment = utc_now(now)
    repository = Repository(repo, keys)
    warnings: list[str] = []
    resigned: dict[str, int] = {}
    with repository.locked():
        root_md, timestamp, snapshot, targets = repository.published()
        root = root_md.signed

        def due(role: str, md: Metadata[Any]) -> bool:
            left = md.signed.expires - moment
            return all_roles or left < timedelta(
                days=repository.expires_days[role] * RESIGN_SHARE_LEFT
            )

        root_signers = repository.signers(root, "root") if all_roles else []
        failure = None
        resign_targets = due("targets", targets)
        if resign_targets:
            try:
                repository.signers(root, "targets")
            except PublishError as exc:
                days_left = (targets.signed.expires - moment).total_seconds() / 86400
                failure = f"targets expires in {days_left:.1f} days and was not re-signed: {exc}"
                resign_targets = False
        resigned.update(
            repository.commit(
                root,
                timestamp,
                snapshot,
                targets if resign_targets else None,
                now=moment,
                resign_snapshot=due("snapshot", snapshot),
            )
        )
        if all_roles:
            repository.bump(root, "root", moment)
            repository.sign(root_md, root_signers)
            repository.write_root(root_md)
            resigned["root"] = root.version
        else:
            root_left = root.expires - moment
            warn_at = min(ROOT_WARNING_DAYS, repository.expires_days["root"] * RESIGN_SHARE_LEFT)
            if root_left < timedelta(days=warn_at):
                warnings.append(
                    f"root expires in {root_left.total_seconds() / 86400:.1f} days: run "
                    f"`edge-export repo refresh {repository.root} --all` with the root key"
                )
    if failure:
        done = ", ".join(f"{role} v{v}" for role, v in resigned.items())
        raise PublishError(f"re-signed {done}; but {failure}")
    return RefreshResult(resigned=resigned, warnings=warnings)


__all__ = [
    "RefreshResult",
    "RepositoryStatus",
    "RoleStatus",
    "RotationResult",
    "TargetStatus",
    "refresh_repository",
    "repository_status",
    "rotate_key",
]
