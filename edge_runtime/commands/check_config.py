"""``edge-runtime check-config``: validate a runtime TOML file without starting anything."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXAMPLES = """\
examples:
  edge-runtime check-config /etc/edge-classify/runtime.toml
  edge-runtime check-config runtime.toml --json

Checks the file's syntax, its keys and values (each sink's and source's own settings), and makes
the checks `run` makes before it starts: the model path names a bundle directory, an uncompressed
.tar, a .tflite or an .onnx (no FIFO or device), the label file and device profile can be read,
and the source URI exists with options that source takes. Nothing is opened: no camera, no port,
no model is loaded.
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
    parser.add_argument("--json", action="store_true", help="print the validated configuration")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate the file; 0 when ``run`` would accept it.

    Raises:
        ConfigError: the file, or what it names, would be refused by ``run``; the message starts
            with the file's name.
    """
    from edge_runtime.config import load_config
    from edge_runtime.errors import ConfigError, EdgeRuntimeError
    from edge_runtime.redaction import redact
    from edge_runtime.sources import source_kind
    from edge_runtime.terminal import printable
    from edge_runtime.wiring import check_runnable

    config = load_config(args.config)
    try:
        check_runnable(config)
    except EdgeRuntimeError as exc:
        raise ConfigError(f"{args.config}: {exc}") from None
    kind = source_kind(config.source.uri)
    if args.json:
        print(redact(json.dumps(config.model_dump(mode="json"), indent=2)))
    else:
        source = redact(config.source.uri)
        ok = f"{args.config}: ok (model {config.model.path}, {kind} source {source})"
        print(printable(ok))
    return 0
