"""The ``slipway`` command."""

from __future__ import annotations

import argparse
import subprocess
import sys

from slipway_operator import __version__

# What `make demo` can run today. Each later step of the journey joins this list when it lands.
BUILT = ("environment check (python -m slipway_trainer doctor)",)
NOT_YET = (
    "data preparation (DatasetPrep)",
    "training (TrainingRun)",
    "tuning (TuningSweep)",
    "serving (ModelDeployment)",
    "the local pipeline (`slipway run`)",
)


def demo() -> int:
    """Run the part of the journey that exists, and say plainly what does not yet."""
    print("Slipway demo: the embedded default runs the journey on this machine, no cluster needed.")
    print("Built so far: " + "; ".join(BUILT))
    print("Not built yet: " + "; ".join(NOT_YET))
    print()
    rc = subprocess.call([sys.executable, "-m", "slipway_trainer", "doctor"])
    print()
    if rc == 0:
        print("This machine is ready for the workloads. The test control plane: `make cluster`.")
    else:
        print("Fix the problems above, then run `make demo` again.")
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slipway", description="From raw data to a monitored inference service.")
    parser.add_argument("--version", action="version", version=f"slipway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("demo", help="run the main job on this machine (what exists so far)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
