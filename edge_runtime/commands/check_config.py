"""``edge-runtime check-config``: validate a runtime TOML file without starting anything."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXAMPLES = """\
examples:
  edge-runtime check-config /etc/edge-runtime/config.toml
  edge-runtime check-config runtime.toml --json

Prints every problem on stderr, one line each with its key path (model.path, outputs.mqtt.qos,
...), and exits 1 when there is one. Checked without opening anything: the file's syntax, every
key and value (each sink's and source's own settings), the model (a bundle's manifest, labels
and every artifact's sha256; a bare .tflite/.onnx exists), the label file and device profile,
the source URI and what can be said of it without the device (an unknown synthetic scenario, a
camera number, a missing /dev/videoN on a machine that has cameras), the listen address. Lines
starting with "needs the device:" say what only the device can tell (a camera that opens, a free
port): they are no problem.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate a runtime configuration file",
        description="Validate a runtime TOML configuration file without starting anything.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", metavar="FILE", help="the TOML file")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the validated configuration (or the problems) as JSON",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="print problems only")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Check the file; 0 when ``run`` and ``daemon`` would accept it, 1 with every problem.

    Raises:
        ConfigError: the file cannot be read or is not TOML.
    """
    from edge_runtime.checks import check_config_file
    from edge_runtime.redaction import redact
    from edge_runtime.sources import source_kind
    from edge_runtime.terminal import printable

    report = check_config_file(args.config)
    if args.json:
        # The validated configuration, or the problems (exit 1).
        body: dict[str, Any] = (
            report.config.model_dump(mode="json")
            if report.config is not None
            else {"problems": [{"where": p.where, "message": p.message} for p in report.problems]}
        )
        print(redact(json.dumps(body, indent=2)))
        return 0 if report.ok else 1
    if report.config is None:
        # One line per problem, as the command line reports an error.
        for problem in report.problems:
            line = printable(redact(f"{args.config}: {problem}"))
            print(f"edge-runtime: error: {line}", file=sys.stderr)
        return 1
    if not args.quiet:
        for note in report.device_checks:
            print(printable(redact(f"needs the device: {note}")))
    config = report.config
    kind = source_kind(config.source.uri)
    source = redact(config.source.uri)
    if config.model.path is not None:
        model = config.model.path
    else:
        assert config.update is not None  # the config refuses neither
        model = f"{config.update.name} from the update store {config.update.store}"
    print(printable(f"{args.config}: ok (model {model}, {kind} source {source})"))
    return 0
