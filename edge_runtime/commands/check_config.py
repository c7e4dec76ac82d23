"""``edge-runtime check-config``: validate a runtime TOML file without starting anything."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXAMPLES = """\
examples:
  edge-runtime check-config /etc/edge-classify/runtime.toml
  edge-runtime check-config runtime.toml --json

Checks the file's syntax, its keys and values (each sink's and source's own settings), and that
the model path and the source URI exist and name things the runtime can read, with options that
source takes. Nothing is opened: no camera, no port, no model is loaded.
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
    from pathlib import Path

    from edge_runtime.config import load_config
    from edge_runtime.errors import ConfigError
    from edge_runtime.sources import check_options, parse_source_uri

    config = load_config(args.config)
    if not Path(config.model.path).exists():
        raise ConfigError(f"{args.config}: model.path {config.model.path} does not exist")
    kind, _, query = parse_source_uri(config.source.uri)
    try:
        check_options(kind, {**query, **config.source.options})
    except ConfigError as exc:
        raise ConfigError(f"{args.config}: source.options: {exc}") from None
    if args.json:
        print(json.dumps(config.model_dump(mode="json"), indent=2))
    else:
        print(f"{args.config}: ok (model {config.model.path}, {kind} source {config.source.uri})")
    return 0
