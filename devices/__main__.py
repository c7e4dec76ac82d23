"""``python -m devices detect`` and ``python -m devices config``: what the installer asks."""

from __future__ import annotations

import argparse
import sys

from devices import ProfileError, detect, list_profiles
from devices.templates import DEFAULT_HTTP, render_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devices", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("detect", help="print the profile that fits this device")
    commands.add_parser("list", help="print the shipped profiles")
    config = commands.add_parser("config", help="print a daemon config for a profile")
    config.add_argument("--profile", required=True, help="a profile name (see list)")
    config.add_argument("--model", required=True, help="the model path the config names")
    config.add_argument("--http", default=DEFAULT_HTTP, help="the status server's HOST:PORT")
    args = parser.parse_args(argv)
    if args.command == "detect":
        print(detect())
    elif args.command == "list":
        print("\n".join(list_profiles()))
    else:
        try:
            sys.stdout.write(render_config(args.profile, args.model, http=args.http))
        except ProfileError as exc:
            print(f"python -m devices: error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
