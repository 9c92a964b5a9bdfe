"""Training throughput: Slipway's loop under Ray Train (1 worker) against a hand-written plain-torch loop.

Same model (the Fashion-MNIST example's CNN), same prepared data, same batch size, same optimizer; each
trains `--epochs` epochs and the last epoch's training samples/s is compared (validation excluded from
both). Prints the overhead ratio (plain / Slipway; the aim is <= 1.10).

Where a CUDA GPU is present it also runs the Slipway loop single-process (no Ray) on the GPU with bf16
autocast and prints samples/s and the achieved FLOP/s (FLOPs per sample counted by torch's FlopCounterMode).

    python benchmarks/train_vs_torch.py [--rows 20000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / ".out"
MODEL = {"architecture": "cnn", "params": {"channels": [32, 64], "hidden": 128, "dropout": 0.25}}


def prepare(rows: int) -> str:
    from slipway_trainer.config.prep import PrepConfig
    from slipway_trainer.data import workload

    out = OUT / f"fashion-{rows}"
    result = workload.run(
        PrepConfig.model_validate(
            {
                "outputUri": out.as_uri(),
                "spec": {
                    "source": {"uri": "builtin://fashion-mnist"},
                    "sample": {"rows": rows, "seed": 0},
                    "split": {"train": 0.8, "validation": 0.1, "test": 0.1},
                },
            }
        )
    )
    if result["status"] != "Succeeded":
        raise SystemExit(f"data prep failed: {result['message']}")
    return out.as_uri()


def slipway_epochs(dataset: str, epochs: int, batch: int, use_ray: bool, gpu: bool = False) -> list[dict[str, Any]]:
    """The Slipway loop's per-epoch history (samples/s of the training pass, validation excluded)."""
    from slipway_trainer.config.train import TrainConfig
    from slipway_trainer.train.loop import Worker, checkpoint_uris, load_checkpoint, train_loop

    artifacts = OUT / f"run-{'ray' if use_ray else 'local'}-{'gpu' if gpu else 'cpu'}"
    shutil.rmtree(artifacts, ignore_errors=True)
    config = TrainConfig.model_validate(
        {
            "datasetUri": dataset,
            "artifactUri": artifacts.as_uri(),
            "useRay": use_ray,
            "cpusPerWorker": 2,
            "gpusPerWorker": 1 if gpu else 0,
            "spec": {
                "model": MODEL,
                "training": {"epochs": epochs, "batchSize": batch},
                "optimizer": {"name": "adamw", "learningRate": 0.001},
                "export": {"formats": ["onnx"]},
            },
        }
    )
    if use_ray:
        from slipway_trainer.train import ray_runner

        ray_runner.fit(config, OUT, OUT / "tb")
    else:
        train_loop(config, Worker(device=torch.device("cuda" if gpu else "cpu")), None)
    history: list[dict[str, Any]] = load_checkpoint(checkpoint_uris(config.artifact_uri)[-1][1])["state"]["history"]
    return history


def plain_torch(dataset: str, epochs: int, batch: int) -> list[float]:
    """The loop a person would write by hand: tensors in memory, shuffle, forward, loss, backward, step."""
    from slipway_trainer.train import models
    from slipway_trainer.train.data import open_dataset

    torch.set_num_threads(2)
    data = open_dataset(dataset)
    train = data.load("train")
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    model = models.build("cnn", data.input_shape, data.num_classes, MODEL["params"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.001)
    rates = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x))
        for i in range(0, len(order), batch):
            index = order[i : i + batch]
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        rates.append(len(x) / (time.perf_counter() - start))
    return rates


def flops_per_sample(dataset: str, batch: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from slipway_trainer.train import models
    from slipway_trainer.train.data import open_dataset

    data = open_dataset(dataset)
    model = models.build("cnn", data.input_shape, data.num_classes, MODEL["params"])
    x = torch.zeros(batch, *data.input_shape)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()  # type: ignore[no-untyped-call]
    return float(counter.get_total_flops()) / batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    dataset = prepare(args.rows)
    # The first epoch warms up; the rest are averaged. Plain torch runs before and after Slipway, and the
    # two are averaged, so a drift in the machine's speed during the run does not favour either side.
    before = plain_torch(dataset, args.epochs, args.batch)[1:]
    history = slipway_epochs(dataset, args.epochs, args.batch, use_ray=True)[1:]
    after = plain_torch(dataset, args.epochs, args.batch)[1:]
    plain = float(np.mean(before + after))
    slipway = float(np.mean([h["samples_per_second"] for h in history]))
    print(
        f"training throughput, Fashion-MNIST CNN, {int(args.rows * 0.8):,} train images, batch {args.batch}, "
        f"mean of epochs 2-{args.epochs} ({platform.machine()}, {torch.get_num_threads()} threads)"
    )
    print(f"{'plain torch loop':28} {plain:10,.0f} samples/s")
    print(f"{'slipway loop, Ray Train x1':28} {slipway:10,.0f} samples/s")
    print(f"overhead ratio plain/slipway: {plain / slipway:.3f} (aim <= 1.10)")
    report: dict[str, Any] = {
        "plainSamplesPerSecond": plain,
        "slipwaySamplesPerSecond": slipway,
        "overhead": plain / slipway,
    }
    if torch.cuda.is_available():
        gpu = slipway_epochs(dataset, args.epochs, 512, use_ray=False, gpu=True)[-1]["samples_per_second"]
        flops = flops_per_sample(dataset, 512) * gpu
        print(
            f"{'slipway loop, CUDA bf16':28} {gpu:10,.0f} samples/s, {flops / 1e12:.2f} TFLOP/s achieved "
            f"({torch.cuda.get_device_name(0)})"
        )
        report |= {"gpuSamplesPerSecond": gpu, "gpuFlopsPerSecond": flops, "gpu": torch.cuda.get_device_name(0)}
    else:
        print("no CUDA GPU here: the bf16 GPU figures are skipped")
    (OUT / "train_vs_torch.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
