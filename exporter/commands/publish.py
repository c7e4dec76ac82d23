"""``edge-export publish``, ``edge-export repo ...`` and ``edge-export serve``: the TUF repository
that devices update from (see :mod:`exporter.publish` and docs/updates.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

PUBLISH_EXAMPLE = """\
examples:
  edge-export publish bundles/signs --repo repo --channel stable
  edge-export publish bundles/signs.tar --repo repo --channel stable --rollout 25
  edge-export publish bundles/signs --repo repo --channel beta --profiles raspberry-pi-5

BUNDLE is a bundle directory or .tar; it is validated and published as NAME/NAME-VERSION.tar with
its name, version, channel, rollout percent, device profiles (default: the manifest's
compatible.profiles) and manifest sha256. The version must be above the newest of that model on
the channel; the same version may go on other channels. Change a rollout later with
`edge-export repo rollout`.
"""

REPO_EXAMPLE = """\
examples:
  edge-export repo init repo                          # keys in repo/keys/
  edge-export repo init repo --keys ~/signing-keys --expires-days timestamp=0.5
  edge-export repo status repo
  edge-export repo rollout repo traffic-signs 2 50    # raise v2 on its channel to 50%
  edge-export repo refresh repo                       # from cron, every few hours
  edge-export repo rotate-key repo timestamp
"""

SERVE_EXAMPLE = """\
examples:
  edge-export serve repo --port 8000                  # http://127.0.0.1:8000/
  edge-export serve repo --port 8000 --host 0.0.0.0   # reachable from devices on the LAN

Serves REPO/metadata/ and REPO/targets/ only (never keys). A device is configured with the
printed URL; in production any static HTTP server, CDN or object store serves the same two folders.
"""


def register(subparsers: Any) -> None:
    _register_publish(subparsers)
    _register_repo(subparsers)
    _register_serve(subparsers)


def _keys_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keys",
        metavar="DIR",
        help="folder of the private keys (default: the one given at init, else REPO/keys)",
    )


def _register_publish(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="publish a bundle to a TUF repository on a channel, with a staged rollout",
        description="Add a model bundle to a TUF repository as a signed target on a channel.",
        epilog=PUBLISH_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar")
    parser.add_argument("--repo", required=True, metavar="REPO", help="the repository folder")
    parser.add_argument("--channel", required=True, help="channel name, e.g. stable or beta")
    parser.add_argument(
        "--rollout",
        type=int,
        default=100,
        metavar="PERCENT",
        help="share of the channel's devices that take it, 1..100 (default 100)",
    )
    parser.add_argument(
        "--profiles",
        metavar="A,B",
        help="device profiles it is for (default: the bundle's compatible.profiles; "
        "none = any device)",
    )
    parser.add_argument(
        "--custom-profiles",
        action="store_true",
        help="accept profile names that are not shipped profiles (devices with their own)",
    )
    _keys_option(parser)
    parser.add_argument("--json", action="store_true", help="print the target as JSON")
    parser.set_defaults(handler=run_publish)


def _register_repo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "repo",
        help="create, inspect, re-sign and rotate the keys of a TUF update repository",
        description="Manage the TUF repository that devices take model updates from.",
        epilog=REPO_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="repo_command", metavar="ACTION")
    parser.set_defaults(handler=lambda args: _help(parser))

    init = actions.add_parser(
        "init",
        help="create a repository with keys for root, targets, snapshot and timestamp",
        description="Create a TUF repository (consistent snapshots) and its signing keys. "
        "Private keys go to REPO/keys/ or --keys DIR, never under the served "
        "metadata/ or targets/. With EDGE_EXPORT_KEY_PASSPHRASE set, the root and targets "
        "keys are encrypted with it.",
        epilog=REPO_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("repo", metavar="REPO", help="a new or empty folder")
    _keys_option(init)
    init.add_argument(
        "--expires-days",
        action="append",
        default=[],
        metavar="ROLE=DAYS",
        help="expiry period of a role (repeatable; default root=365 targets=90 snapshot=30 "
        "timestamp=1)",
    )
    init.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="ROLE=N",
        help="signatures a role needs; that many keys are made (repeatable; default 1)",
    )
    init.add_argument("--json", action="store_true", help="print the result as JSON")
    init.set_defaults(handler=run_init)

    status = actions.add_parser(
        "status",
        help="roles, versions, expiry, key ids, and targets per channel with their rollout",
        description="Show the repository's roles and targets. Exits 1 when devices would "
        "refuse something (expired or badly signed metadata, a missing target file).",
    )
    status.add_argument("repo", metavar="REPO")
    _keys_option(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=run_status)

    rollout = actions.add_parser(
        "rollout",
        help="change the rollout percent of a published version",
        description="Change the share of devices that take a published version, on one of its "
        "channels. Raising it keeps the devices already in; lowering it stops further devices.",
    )
    rollout.add_argument("repo", metavar="REPO")
    rollout.add_argument("name", metavar="NAME", help="model name")
    rollout.add_argument("version", type=int, metavar="VERSION")
    rollout.add_argument("percent", type=int, metavar="PERCENT", help="1..100")
    rollout.add_argument("--channel", help="which channel (needed when it is on several)")
    _keys_option(rollout)
    rollout.set_defaults(handler=run_rollout)

    rotate = actions.add_parser(
        "rotate-key",
        help="replace a role's keys (signed into a new root version)",
        description="Replace the keys of ROLE. A new root version lists the new keys, signed by "
        "the current root keys (and the new ones, for root), so devices chain-verify it from "
        "the root they trust. Needs the root key.",
    )
    rotate.add_argument("repo", metavar="REPO")
    rotate.add_argument("role", choices=("root", "targets", "snapshot", "timestamp"))
    _keys_option(rotate)
    rotate.set_defaults(handler=run_rotate)

    refresh = actions.add_parser(
        "refresh",
        help="re-sign timestamp (and snapshot/targets near expiry); for cron",
        description="Re-sign the timestamp, and snapshot and targets when less than a third of "
        "their period is left. Run it several times per timestamp period (e.g. every 6 hours "
        "for the default 1 day): devices refuse an expired timestamp.",
    )
    refresh.add_argument("repo", metavar="REPO")
    refresh.add_argument(
        "--all", action="store_true", help="re-sign every role, root included (needs its key)"
    )
    _keys_option(refresh)
    refresh.set_defaults(handler=run_refresh)


def _register_serve(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a repository's metadata and targets over HTTP (for a lab)",
        description="Static HTTP of REPO/metadata and REPO/targets, never the keys.",
        epilog=SERVE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("repo", metavar="REPO")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument(
        "--max-requests",
        type=int,
        metavar="N",
        help="stop after N requests (default: serve until interrupted)",
    )
    parser.add_argument("--quiet", action="store_true", help="no request log on stderr")
    parser.set_defaults(handler=run_serve)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _pairs(items: list[str], option: str, kind: type) -> dict[str, Any]:
    from exporter.errors import PublishError

    out: dict[str, Any] = {}
    for item in items:
        role, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[role.strip()] = kind(value)
        except ValueError:
            raise PublishError(
                f"{option} takes ROLE=VALUE, e.g. timestamp=1, got '{item}'"
            ) from None
    return out


def run_init(args: argparse.Namespace) -> int:
    from exporter.publish import OFFLINE_ROLES, PASSPHRASE_ENV, init_repository

    result = init_repository(
        args.repo,
        keys=args.keys,
        expires_days=_pairs(args.expires_days, "--expires-days", float),
        thresholds=_pairs(args.threshold, "--threshold", int),
    )
    encrypted = bool(os.environ.get(PASSPHRASE_ENV))
    if args.json:
        print(
            json.dumps(
                {
                    "repo": str(result.repo),
                    "keys": str(result.keys),
                    "root_json": str(result.root_json),
                    "keyids": result.keyids,
                    "expires_days": result.expires_days,
                    "encrypted_roles": list(OFFLINE_ROLES) if encrypted else [],
                },
                indent=2,
            )
        )
        return 0
    days = ", ".join(f"{role} {value:g} d" for role, value in result.expires_days.items())
    protection = (
        f"root and targets keys encrypted with ${PASSPHRASE_ENV}"
        if encrypted
        else "not encrypted (mode 0600)"
    )
    print(f"created TUF repository {result.repo} (consistent snapshots)")
    print(f"  private keys: {result.keys} ({protection}); back them up, never serve them")
    print(f"  expiry: {days}")
    print(f"  serve {result.repo}/metadata and {result.repo}/targets; refresh by cron")
    print(f"provision devices with: {result.root_json}")
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from exporter.publish import publish_bundle

    profiles = None
    if args.profiles is not None:
        profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    target = publish_bundle(
        args.repo,
        args.bundle,
        channel=args.channel,
        rollout=args.rollout,
        profiles=profiles,
        custom_profiles=args.custom_profiles,
        keys=args.keys,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "path": target.path,
                    "length": target.length,
                    "hashes": {"sha256": target.sha256},
                    "custom": target.fields.to_custom(),
                    "versions": target.versions,
                },
                indent=2,
            )
        )
        return 0
    versions = ", ".join(f"{role} v{v}" for role, v in target.versions.items())
    print(f"published {target.describe(args.channel)}")
    print(f"  signed {versions}")
    return 0


def run_rollout(args: argparse.Namespace) -> int:
    from exporter.publish import set_rollout

    target = set_rollout(
        args.repo, args.name, args.version, args.percent, channel=args.channel, keys=args.keys
    )
    # Without --channel the version is on one channel only (set_rollout refuses otherwise).
    channel = args.channel or next(iter(target.fields.channels))
    print(f"rollout of {target.describe(channel)}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from exporter.publish import repository_status

    status = repository_status(args.repo, keys=args.keys)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
        return 1 if status.problems else 0
    print(f"repository {status.repo}" + (" (consistent snapshots)" if
                                         status.consistent_snapshot else ""))
    print(f"  {'role':<10} {'version':>7}  {'expires (UTC)':<19} {'left':>9}  threshold  keys")
    for role in status.roles:
        keys = ", ".join(k[:12] for k in role.keyids)
        here = f"{role.keys_here} of {len(role.keyids)} here"
        print(
            f"  {role.role:<10} {role.version:>7}  {role.expires[:19].replace('T', ' '):<19} "
            f"{role.expires_in_days:>7.1f} d  {role.threshold:>9}  {keys} ({here})"
        )
    channels = status.channels()
    if not channels:
        print("no targets published yet")
    for channel, models in channels.items():
        print(f"channel {channel}")
        for name, releases in models.items():
            for release in releases:
                target = next(
                    t for t in status.targets if t.name == name and t.version == release["version"]
                )
                profiles = ", ".join(target.profiles) or "any"
                print(
                    f"  {name} v{release['version']:<4} rollout {release['rollout']:>3}%  "
                    f"profiles {profiles}  {target.length} bytes  "
                    f"published {str(release.get('published', '?'))[:19].replace('T', ' ')}"
                )
    for problem in status.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if status.problems else 0


def run_rotate(args: argparse.Namespace) -> int:
    from exporter.publish import rotate_key

    result = rotate_key(args.repo, args.role, keys=args.keys)
    old = ", ".join(k[:12] for k in result.old_keyids)
    new = ", ".join(k[:12] for k in result.new_keyids)
    print(f"rotated {result.role} keys: {old} -> {new}; root is now v{result.root_version}")
    for path in result.retired:
        print(f"  old key moved to {path}")
    if result.role == "root":
        print("  back up the new root key; devices verify the new root with the old one")
    return 0


def run_refresh(args: argparse.Namespace) -> int:
    from exporter.publish import refresh_repository

    result = refresh_repository(args.repo, keys=args.keys, all_roles=args.all)
    print("re-signed " + ", ".join(f"{role} v{v}" for role, v in result.resigned.items()))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from exporter.publish import serve

    def announce(url: str) -> None:
        print(f"serving {args.repo} (metadata/ and targets/ only) at {url}", flush=True)
        print(f'devices: [update] url = "{url}"   (Ctrl-C or SIGTERM stops)', flush=True)

    result = serve(
        args.repo,
        args.host,
        args.port,
        max_requests=args.max_requests,
        quiet=args.quiet,
        announce=announce,
    )
    if result.signal is not None:
        why = f"on {result.signal}"
    else:
        why = f"after {args.max_requests} request{'' if args.max_requests == 1 else 's'}"
    print(f"stopped serving {args.repo} {why}", flush=True)
    return 0
