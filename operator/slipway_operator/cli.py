"""The `slipway` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slipway_operator import __version__
from slipway_operator.demo import DEMO_MANIFESTS, DEMO_STORE, demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slipway", description="From raw data to a monitored inference service.")
    parser.add_argument("--version", action="version", version=f"slipway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_parser = commands.add_parser("demo", help="run the main job on this machine (what exists so far)")
    demo_parser.add_argument("--manifests", type=Path, default=DEMO_MANIFESTS, help="folder of the journey")
    demo_parser.add_argument("--store", type=Path, default=DEMO_STORE, help="where artifacts go (default .slipway/)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.manifests, args.store)
    return 2


if __name__ == "__main__":
    sys.exit(main())
