"""``edge-runtime daemon``: the pipeline as a systemd service (see ``service.daemon``)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EXAMPLES = """\
examples:
  edge-runtime daemon --config /etc/edge-runtime/config.toml
  systemctl reload edge-runtime       # SIGHUP: reload the config and the model
  journalctl -u edge-runtime -f       # the log, one line per event

A minimal config:
  [model]
  path = "/opt/edge-runtime/models/traffic-signs"
  [source]
  uri = "camera:0"
  [service]
  http = "127.0.0.1:8080"              # /healthz /status /metrics and the live view at /

Under systemd (Type=notify) it sends READY=1 once the first frame is classified, WATCHDOG=1
while frames flow, RELOADING=1 on SIGHUP and STOPPING=1 on SIGTERM; elsewhere it runs the same
without them. SIGHUP re-reads the file: a config or model that does not load is refused and the
running one keeps serving (see /status). SIGTERM or Ctrl-C stops cleanly (exit 0); a second one
gives up (exit 130).
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "daemon",
        help="run as a long-lived service (systemd notify, watchdog, reload, status server)",
        description="Run the pipeline a runtime config describes as a long-running service.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", "-c", metavar="FILE", required=True, help="the runtime TOML file"
    )
    parser.add_argument(
        "--journal",
        action="store_true",
        help="prefix log lines with journald priorities even when stderr is not the journal",
    )
    parser.add_argument(
        "--collect",
        metavar="DIR",
        help="save frames the model was unsure of under DIR/<label>/ for review (as [collect] "
        "dir; kept across reloads)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the daemon; 0 when it stopped on a signal or its source ended.

    A failure is one line on stderr (with journald's error priority under systemd) and exit 1.
    """
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.redaction import redact
    from edge_runtime.service.daemon import Daemon
    from edge_runtime.service.logs import stderr_is_journal
    from edge_runtime.terminal import printable

    environ = dict(os.environ)
    overrides = {"outputs": {"collect": {"dir": args.collect}}} if args.collect else None
    daemon = Daemon(
        args.config,
        environ=environ,
        log_format="journal" if args.journal else None,
        overrides=overrides,
    )
    try:
        return daemon.run()
    except EdgeRuntimeError as exc:
        journal = args.journal or stderr_is_journal(environ)
        message = printable(redact(" ".join(str(exc).split())))
        daemon.notifier.status(f"failed: {message}")
        print(f"{'<3>' if journal else ''}edge-runtime: error: {message}", file=sys.stderr)
        return 1
