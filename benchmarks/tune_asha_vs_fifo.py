"""Tuning: ASHA early stopping against FIFO random search, on the same trial budget and search space.

Both run the same random search (same seed, so the same sampled configurations) of `--trials` trials of up to
`--epochs` epochs on scikit-learn's digits (or a sample of Fashion-MNIST); FIFO runs every trial to the end,
ASHA stops poor ones at its rungs.
Prints the best validation accuracy each reaches, the trial-epochs each spends, its wall time (the whole
`slipway_trainer tune` process) and its searching time (the trials, Ray's start included; the sweep's
`searchSeconds`: not the imports before it or the best trial's evaluation, export and report after it, which
are the same on both sides), and the ratios.

    python benchmarks/tune_asha_vs_fifo.py [--data digits|fashion-mnist] [--trials 8] [--epochs 9] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / ".out"


# What each data set's sweep trains: the prep spec and the trial template (epochs and seed are added).
CASES: dict[str, dict[str, Any]] = {
    "digits": {
        "prep": {
            "source": {"uri": "builtin://sklearn/digits"},
            "transforms": [{"type": "minMax"}],
            "split": {"stratifyBy": "target", "seed": 3},
        },
        "template": {"model": {"architecture": "mlp", "params": {"hidden": [64]}}, "batchSize": 32},
    },
    "fashion-mnist": {  # trials long enough that training, not the sweep's start, is most of the time
        "prep": {
            "source": {"uri": "builtin://fashion-mnist", "format": "idx"},
            "label": "label",
            "transforms": [{"type": "normalize"}],
            "sample": {"rows": 8000, "seed": 1},
            "split": {"stratifyBy": "label", "seed": 3},
        },
        "template": {
            "model": {"architecture": "cnn", "params": {"channels": [16, 32], "hidden": 64}},
            "batchSize": 64,
        },
    },
}


def prepare(out: Path, data: str) -> str:
    from slipway_trainer.config.prep import PrepConfig
    from slipway_trainer.data import workload

    uri = (out / data).as_uri()
    result = workload.run(PrepConfig.model_validate({"outputUri": uri, "spec": CASES[data]["prep"]}))
    if result["status"] != "Succeeded":
        raise SystemExit(f"data prep failed: {result['message']}")
    return uri


def sweep(dataset: str, data: str, scheduler: str, trials: int, epochs: int, out: Path) -> tuple[dict[str, Any], float]:
    artifacts = out / f"sweep-{data}-{scheduler}"
    shutil.rmtree(artifacts, ignore_errors=True)
    config = out / f"sweep-{data}-{scheduler}.json"
    config.write_text(
        json.dumps(
            {
                "name": scheduler,
                "datasetUri": dataset,
                "artifactUri": artifacts.as_uri(),
                "template": {
                    "model": CASES[data]["template"]["model"],
                    "training": {"epochs": epochs, "batchSize": CASES[data]["template"]["batchSize"], "seed": 7},
                    "export": {"formats": ["onnx"]},
                },
                "spec": {
                    "searchSpace": {
                        "optimizer.learningRate": {"loguniform": [0.00003, 0.03]},
                        "model.params.dropout": {"uniform": [0.0, 0.6]},
                    },
                    "algorithm": "random",
                    "scheduler": {"type": scheduler, "gracePeriod": 1, "reductionFactor": 3},
                    "objective": {"metric": "val_accuracy"},
                    "maxTrials": trials,
                    "parallelTrials": 1,
                },
            }
        )
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "slipway_trainer", "tune", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if not (artifacts / "result.json").exists():  # refused before it ran (an invalid config) or crashed: its words
        raise SystemExit(f"{scheduler} sweep left no result (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads((artifacts / "result.json").read_text())
    if result["status"] != "Succeeded":
        raise SystemExit(f"{scheduler} sweep {result['status']}: {result.get('reason')}: {result['message']}")
    return result, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument(
        "--data",
        choices=list(CASES),
        default="digits",
        help="digits: an MLP on 1,797 8x8 images (trials of about a second); fashion-mnist: a small CNN on 8,000 "
        "images (trials of tens of seconds)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="the folder for inputs and outputs (%(default)s)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = prepare(args.out, args.data)
    fifo, fifo_s = sweep(dataset, args.data, "fifo", args.trials, args.epochs, args.out)
    asha, asha_s = sweep(dataset, args.data, "asha", args.trials, args.epochs, args.out)
    print(f"tuning on {args.data}: {args.trials} random trials of up to {args.epochs} epochs, same seed")
    print(
        f"{'':6} {'best val_accuracy':>18} {'trial-epochs':>13} {'stopped early':>14} {'seconds':>8} {'searching':>10}"
    )
    for name, r, s in (("fifo", fifo, fifo_s), ("asha", asha, asha_s)):
        print(
            f"{name:6} {r['bestTrial']['metric']:18.4f} {r['trialEpochs']:13d} {r['trials']['stoppedEarly']:14d} "
            f"{s:8.1f} {r['searchSeconds']:10.1f}"
        )
    print(
        f"ratio asha/fifo: best metric {asha['bestTrial']['metric'] / fifo['bestTrial']['metric']:.3f}, "
        f"trial-epochs {asha['trialEpochs'] / fifo['trialEpochs']:.3f}, wall time {asha_s / fifo_s:.3f}, "
        f"searching {asha['searchSeconds'] / fifo['searchSeconds']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
