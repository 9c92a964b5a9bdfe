"""``python -m slipway_trainer <command>``: the entry point of every workload."""

from __future__ import annotations

import argparse
import os
import sys

# What the data-preparation process sets before Arrow loads: Arrow allocates from the C library, which gives a
# finished batch's memory back. Arrow's default (mimalloc) kept pages of batches long gone: about 250 MiB at the
# peak for a million rows instead of 200 (benchmarks/prep_vs_polars.py), and no faster.
PREP_ENVIRONMENT = {"ARROW_DEFAULT_MEMORY_POOL": "system"}


def main(argv: list[str] | None = None) -> int:
    from slipway_trainer.raycluster import keep_local_ray_on_loopback

    keep_local_ray_on_loopback()
    parser = argparse.ArgumentParser(prog="python -m slipway_trainer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    doctor = commands.add_parser("doctor", help="show what this machine can run (packages, GPUs, datasets)")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    prep = commands.add_parser("prep", help="prepare a dataset (the DatasetPrep workload)")
    prep.add_argument("--config", required=True, help="the workload's JSON config (file path or URI)")
    train = commands.add_parser("train", help="train, evaluate and export a model (the TrainingRun workload)")
    train.add_argument("--config", required=True, help="the workload's JSON config (file path or URI)")
    tune = commands.add_parser("tune", help="search hyperparameters and keep the best model (the TuningSweep workload)")
    tune.add_argument("--config", required=True, help="the workload's JSON config (file path or URI)")
    serve = commands.add_parser("serve", help="serve a model over the Open Inference Protocol v2")
    serve.add_argument("--config", required=True, help="the server's JSON config (file path or URI)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        from slipway_trainer.serve import workload as serve_workload

        return serve_workload.main(args.config)
    if args.command == "tune":
        from slipway_trainer.tune import workload as tune_workload

        return tune_workload.main(args.config)
    if args.command == "train":
        from slipway_trainer.train import workload as train_workload

        return train_workload.main(args.config)
    if args.command == "prep":
        for key, value in PREP_ENVIRONMENT.items():
            os.environ.setdefault(key, value)  # read by Arrow when it first allocates (a user's own setting wins)
        from slipway_trainer.data import workload as prep_workload

        return prep_workload.main(args.config)
    if args.command == "doctor":
        from slipway_trainer import doctor as doctor_module

        return doctor_module.main(as_json=args.json)
    parser.error(f"unknown command {args.command}")  # argparse has already refused it
    return 2


if __name__ == "__main__":
    sys.exit(main())
