"""Training throughput: Slipway's loop under Ray Train (1 worker) against a hand-written plain-torch loop.

Same model (the Fashion-MNIST example's CNN), same prepared data, same batch size, same optimizer; each
trains `--epochs` epochs and the last epoch's training samples/s is compared (validation excluded from
both). Prints the overhead ratio (plain / Slipway; the aim is <= 1.10).

With `--device cuda` (a machine with a CUDA GPU; Ray is not needed) it compares on the GPU instead: the
plain loop with the data on the GPU and bf16 autocast, against the Slipway loop single-process (no Ray;
bf16 autocast), and against the Slipway loop made to copy every batch from host memory (what it did before
it kept the training split on the GPU), at two batch sizes; it prints samples/s and the achieved FLOP/s
(FLOPs per sample counted by torch's FlopCounterMode).

    python benchmarks/train_vs_torch.py [--rows 20000] [--epochs 3] [--out benchmarks/.out]
    python benchmarks/train_vs_torch.py --device cuda --rows 60000 --epochs 4
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
MODEL: dict[str, Any] = {"architecture": "cnn", "params": {"channels": [32, 64], "hidden": 128, "dropout": 0.25}}


def prepare(rows: int, folder: Path) -> str:
    from slipway_trainer.config.prep import PrepConfig
    from slipway_trainer.data import workload

    out = folder / f"fashion-{rows}"
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


def slipway_epochs(
    dataset: str,
    epochs: int,
    batch: int,
    use_ray: bool,
    folder: Path,
    gpu: bool = False,
    host_batches: bool = False,
) -> list[dict[str, Any]]:
    """The Slipway loop's per-epoch history (samples/s of the training pass, validation excluded).
    `host_batches`: keep the training split in host memory (a copy to the GPU per batch)."""
    from slipway_trainer.config.train import TrainConfig
    from slipway_trainer.train import loop
    from slipway_trainer.train.loop import Worker, checkpoint_uris, load_checkpoint, train_loop

    artifacts = folder / f"run-{'ray' if use_ray else 'local'}-{'gpu' if gpu else 'cpu'}"
    shutil.rmtree(artifacts, ignore_errors=True)
    config = TrainConfig.model_validate(
        {
            "datasetUri": dataset,
            "artifactUri": artifacts.as_uri(),
            "useRay": use_ray,
            "cpusPerWorker": 2 if not gpu else 8,
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

        ray_runner.fit(config, folder, folder / "tb")
    else:
        keep = loop.resident
        if host_batches:
            loop.resident = lambda array, device: torch.from_numpy(array)
        try:
            train_loop(config, Worker(device=torch.device("cuda" if gpu else "cpu")), None)
        finally:
            loop.resident = keep
    history: list[dict[str, Any]] = load_checkpoint(checkpoint_uris(config.artifact_uri)[-1][1])["state"]["history"]
    return history


def plain_torch(dataset: str, epochs: int, batch: int, gpu: bool = False) -> list[float]:
    """The loop a person would write by hand: tensors in memory (on the GPU: all of it there, bf16 autocast),
    shuffle, forward, loss, backward, step."""
    from slipway_trainer.train import models
    from slipway_trainer.train.data import open_dataset

    device = torch.device("cuda" if gpu else "cpu")
    torch.set_num_threads(2 if not gpu else 8)
    data = open_dataset(dataset)
    train = data.load("train")
    x, y = torch.from_numpy(train.x).to(device), torch.from_numpy(train.y).to(device)
    model = models.build("cnn", data.input_shape, data.num_classes, MODEL["params"]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.001)
    rates = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x), device=device)
        for i in range(0, len(order), batch):
            index = order[i : i + batch]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=gpu):
                loss = torch.nn.functional.cross_entropy(model(x[index]).float(), y[index])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        if gpu:
            torch.cuda.synchronize()
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
        model(x).sum().backward()
    return float(counter.get_total_flops()) / batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=OUT, help="the folder for inputs and outputs (%(default)s)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch warms up and is left out of the mean")
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = prepare(args.rows, args.out)
    report = compare_on_gpu(dataset, args) if args.device == "cuda" else compare_on_cpu(dataset, args)
    (args.out / f"train_vs_torch_{args.device}.json").write_text(json.dumps(report, indent=2))
    return 0


def compare_on_cpu(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    # The first epoch warms up; the rest are averaged. Plain torch runs before and after Slipway, and the
    # two are averaged, so a drift in the machine's speed during the run does not favour either side.
    before = plain_torch(dataset, args.epochs, args.batch)[1:]
    history = slipway_epochs(dataset, args.epochs, args.batch, use_ray=True, folder=args.out)[1:]
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
    return {"plainSamplesPerSecond": plain, "slipwaySamplesPerSecond": slipway, "overhead": plain / slipway}


def compare_on_gpu(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU here")
    name = torch.cuda.get_device_name(0)
    print(
        f"training throughput on {name}, Fashion-MNIST CNN, {int(args.rows * 0.8):,} train images, bf16 autocast, "
        f"mean of epochs 2-{args.epochs} (plain: before and after the Slipway runs)"
    )
    report: dict[str, Any] = {"gpu": name, "torch": torch.__version__, "batches": {}}
    for batch in (args.batch, 512):
        before = plain_torch(dataset, args.epochs, batch, gpu=True)[1:]
        resident = slipway_epochs(dataset, args.epochs, batch, use_ray=False, folder=args.out, gpu=True)[1:]
        host = slipway_epochs(dataset, args.epochs, batch, use_ray=False, folder=args.out, gpu=True, host_batches=True)
        host = host[1:]
        after = plain_torch(dataset, args.epochs, batch, gpu=True)[1:]
        flops = flops_per_sample(dataset, batch)
        rates = {
            "plain torch, data on GPU": float(np.mean(before + after)),
            "slipway loop": float(np.mean([h["samples_per_second"] for h in resident])),
            "slipway, batch per copy": float(np.mean([h["samples_per_second"] for h in host])),
        }
        plain = rates["plain torch, data on GPU"]
        print(f"batch {batch}:")
        for label, rate in rates.items():
            tflops = rate * flops / 1e12
            print(f"  {label:28} {rate:10,.0f} samples/s  {tflops:6.2f} TFLOP/s  plain/this {plain / rate:.3f}")
        report["batches"][str(batch)] = {"samplesPerSecond": rates, "flopsPerSample": flops}
    return report


if __name__ == "__main__":
    sys.exit(main())
