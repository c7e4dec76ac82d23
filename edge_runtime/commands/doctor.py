"""``edge-runtime doctor``: check that this device can run the service, with a fix per problem."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXAMPLES = """\
examples:
  edge-runtime doctor
  edge-runtime doctor --config /etc/edge-runtime/config.toml
  edge-runtime doctor --config config.toml --json

Checks the device and its profile, Python and the architecture, each inference backend (its
version, or the command that installs it), the CPU features that make int8 fast (dotprod, i8mm,
VNNI, AMX), the cameras (V4L2 nodes, libcamera, Jetson's nvarguscamerasrc), and with --config
that the model loads and passes its samples/ smoke test and that the status server's port is
free; under systemd, the service's state. Exit 0 when nothing is wrong; each problem is one
line with its fix after '->'.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the device: backends, cameras, model, port, service",
        description="Check that this device can run edge-runtime, and say how to fix what not.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", metavar="FILE", help="also check this runtime config")
    parser.add_argument("--json", action="store_true", help="the findings as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the findings; 1 when one of them is a problem.

    Raises:
        ConfigError: ``--config`` cannot be read or is invalid.
    """
    from edge_runtime.config import load_config
    from edge_runtime.doctor import diagnose
    from edge_runtime.redaction import redact
    from edge_runtime.terminal import printable

    config = load_config(args.config) if args.config else None
    findings = diagnose(config=config)
    problems = [f for f in findings if f.level == "problem"]
    if args.json:
        body = {"ok": not problems, "findings": [f.to_json() for f in findings]}
        print(redact(json.dumps(body, indent=2)))
    else:
        for finding in findings:
            print(printable(redact(finding.line())))
        count = len(problems)
        print("all well" if not count else f"{count} problem{'s' if count > 1 else ''}")
    return 1 if problems else 0
