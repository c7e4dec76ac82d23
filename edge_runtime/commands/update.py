"""``edge-runtime update`` and ``edge-runtime models``: over-the-air updates by hand."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

UPDATE_EXAMPLES = """\
examples:
  edge-runtime update --config /etc/edge-runtime/config.toml
  edge-runtime update --config config.toml --version 7     # that version, even outside rollout
  edge-runtime update --config config.toml --json

Checks the repository in [update] once and installs the newest version this device may take:
download (verified by TUF against the pinned root), unpack into a fresh slot, check the manifest
against the signed target, smoke-test in a child process, switch atomically. A running daemon
picks the new model up between two frames. The model that serves is never touched by a refusal.

exit status:
  0   up to date: nothing newer that this device may take (the reason is printed)
  10  a new version was installed and is now active
  1   bad command line or config
  20  the repository is unreachable, too slow, or a download broke off (try again later)
  21  the repository's metadata was refused: unknown key, bad signature, rollback or freeze
      (expired) attack, or garbage
  22  the release was refused: not the file its metadata signs, too large, unsafe or tampered
      contents, not the name or version signed, or not for this runtime or device profile
  23  the new model failed its smoke test, or crashed or hung the child process running it
  24  the model store cannot be written (disk full, permissions) or read
A version refused for 22 (contents) or 23 is never installed again on this device.
"""

MODELS_EXAMPLES = """\
examples:
  edge-runtime models list --config /etc/edge-runtime/config.toml
  edge-runtime models list --config config.toml --json
  edge-runtime models rollback --config config.toml

list: the active and previous models, an install in progress, versions that failed here (and
why), probation, and the last update error. rollback: the previous model becomes active again (a
running daemon swaps it in between two frames) and the one rolled back from is never installed
again; publish a newer version to move on.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "update",
        help="check for a new model once and install it (over-the-air updates)",
        description="Check the update repository once and install the newest eligible model.",
        epilog=UPDATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", metavar="FILE", required=True, help="the runtime TOML")
    parser.add_argument(
        "--version", type=int, metavar="N", help="install version N (ignores the rollout)"
    )
    parser.add_argument("--json", action="store_true", help="the outcome as JSON")
    parser.set_defaults(handler=run_update)

    models = subparsers.add_parser(
        "models",
        help="list the installed models, or roll back to the previous one",
        description="The models in the update store.",
        epilog=MODELS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = models.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="active, previous, failed and pending versions")
    listing.add_argument("--config", "-c", metavar="FILE", required=True)
    listing.add_argument("--json", action="store_true", help="the store's state as JSON")
    listing.set_defaults(handler=run_list)
    back = actions.add_parser("rollback", help="make the previous model active again")
    back.add_argument("--config", "-c", metavar="FILE", required=True)
    back.set_defaults(handler=run_rollback)


def _agent(path: str) -> Any:
    from edge_runtime.config import load_config
    from edge_runtime.ota.agent import agent_for_config

    return agent_for_config(load_config(path))


def run_update(args: argparse.Namespace) -> int:
    """One check; the exit status says what happened (see the epilog)."""
    from edge_runtime.ota.errors import OtaError
    from edge_runtime.terminal import printable

    agent = _agent(args.config)
    try:
        result = agent.check(version=args.version)
    except OtaError as exc:
        if args.json:
            body = {"outcome": "refused", "error": type(exc).__name__, "detail": exc.reason}
            print(json.dumps(body))
        print(f"edge-runtime: error: {printable(exc.reason)}", file=sys.stderr)
        return int(exc.exit_code)
    if args.json:
        print(json.dumps({"outcome": result.outcome, "detail": result.detail,
                          "version": result.version}))
    else:
        print(printable(result.detail))
    return result.exit_code


def run_list(args: argparse.Namespace) -> int:
    from edge_runtime.ota.agent import summary
    from edge_runtime.terminal import printable

    agent = _agent(args.config)
    with agent.store.locked():
        agent.store.recover()
        state = agent.state()
    if args.json:
        print(json.dumps(summary(state), indent=2))
        return 0
    for name in ("active", "previous"):
        slot = getattr(state, name)
        where = "-"
        if slot is not None:
            path = agent.store.slot_path(slot)
            where = f"v{slot.version} ({path}, installed {slot.installed_at})"
        print(f"{name:9} {where}")
    if state.probation is not None:
        p = state.probation
        print(f"probation v{p.version}: {p.frames} frames, {p.errors} errors, "
              f"{p.unclean_restarts} unclean restarts")
    for version, reason in sorted(state.failed.items(), key=lambda item: int(item[0])):
        print(printable(f"failed    v{version}: {reason}"))
    if state.last_error:
        print(printable(f"last error: {state.last_error}"))
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    agent = _agent(args.config)
    slot = agent.rollback("rolled back by the operator (edge-runtime models rollback)")
    print(f"v{slot.version} is active again")
    return 0
