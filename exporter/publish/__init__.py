"""Publishing model bundles to devices through a TUF repository (python-tuf's Metadata API).

A repository is a folder::

    REPO/
      metadata/          served: N.root.json, root.json, N.targets.json, N.snapshot.json,
                         timestamp.json
      targets/           served: NAME/SHA256.NAME-VERSION.tar (hash-prefixed: consistent snapshots)
      keys/              NEVER served: ROLE-KEYID.pem private keys (mode 0600, folder 0700), or
                         wherever --keys put them; retired/ holds keys replaced by rotate-key
      repository.json    not served: expiry periods and where the keys are
      .lock              not served: one writer at a time

Only ``metadata/`` and ``targets/`` are meant for devices: any static HTTP server, CDN, object
store or USB stick serves them. Consistent snapshots are on, so every file but
``timestamp.json`` (and the ``root.json`` copy for provisioning) is written once under a name
that changes with its content: caches never serve a mix of old and new, and a device in the
middle of an update never sees a file change under it.

Every change writes its new files first and ``timestamp.json`` last, each atomically
(:mod:`edge_runtime.fsutil`): a crash leaves the previous published state intact (plus unused new
files), and a device only sees a new state once ``timestamp.json`` names it.

Keys are ed25519 (securesystemslib's ``CryptoSigner``), stored as PKCS#8 PEM. The offline roles'
keys (root, targets) are encrypted with the passphrase in ``EDGE_EXPORT_KEY_PASSPHRASE`` when that
variable is set as they are made; the online roles' keys (snapshot, timestamp) are never
encrypted, because ``repo refresh`` must sign with them from cron with nobody to type a passphrase.
See docs/updates.md for where each key should live.

Every function takes ``now`` (default: the current UTC time) so tests can sign metadata that is
already expired, and raises :class:`exporter.errors.PublishError` (one line) for bad input.

The modules, each above the ones it uses (an import-linter contract):

- :mod:`.release`: ``repo init``, ``publish`` and ``repo rollout``;
  :mod:`.maintain`: ``repo status``, ``repo rotate-key`` and ``repo refresh``;
  :mod:`.server`: ``serve``, the lab HTTP server;
- :mod:`.repository`: the repository on disk (settings, reading, signing, atomic writes, the
  write lock);
- :mod:`.keys`: the private keys (files, passphrase, where they may live, retiring them).
"""

from __future__ import annotations

from exporter.publish.keys import OFFLINE_ROLES, PASSPHRASE_ENV
from exporter.publish.maintain import (
    RefreshResult,
    RepositoryStatus,
    RoleStatus,
    RotationResult,
    TargetStatus,
    refresh_repository,
    repository_status,
    rotate_key,
)
from exporter.publish.release import (
    InitResult,
    PublishedTarget,
    init_repository,
    publish_bundle,
    set_rollout,
    target_path_for,
)
from exporter.publish.repository import DEFAULT_EXPIRES_DAYS, ROLES, Repository
from exporter.publish.server import ServeResult, make_server, serve, server_url

__all__ = [
    "DEFAULT_EXPIRES_DAYS",
    "OFFLINE_ROLES",
    "PASSPHRASE_ENV",
    "ROLES",
    "InitResult",
    "PublishedTarget",
    "RefreshResult",
    "Repository",
    "RepositoryStatus",
    "RoleStatus",
    "RotationResult",
    "ServeResult",
    "TargetStatus",
    "init_repository",
    "make_server",
    "publish_bundle",
    "refresh_repository",
    "repository_status",
    "rotate_key",
    "serve",
    "server_url",
    "set_rollout",
    "target_path_for",
]
