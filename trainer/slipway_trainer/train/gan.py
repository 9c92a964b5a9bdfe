"""Generative modelling of an image set: a generator and a discriminator with their own training loop.

Reports both losses per epoch, the discriminator's accuracy on held-out real images against fresh fakes,
a grid of samples (PNG), and exports the generator (input: latent vectors) like any other model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from slipway_trainer import storage
from slipway_trainer.config.train import TrainConfig
from slipway_trainer.train import export, models
from slipway_trainer.train.data import Dataset
from slipway_trainer.train.loop import local_device, resident, resume, save_epoch_checkpoint
from slipway_trainer.workload import Progress, WorkloadError


def _unit_range(x: np.ndarray) -> np.ndarray:
    low, high = float(x.min()), float(x.max())
    return ((x - low) / (high - low or 1.0)).astype(np.float32)


def train(config: TrainConfig, dataset: Dataset, progress: Progress, workdir: Path) -> dict[str, Any]:
    spec = config.spec
    if len(dataset.input_shape) != 3:
        raise WorkloadError("ModelDoesNotFitData", "gan generates images: this dataset is tabular; use an image set")
    torch.manual_seed(spec.training.seed)
    device = local_device(config)
    real = _unit_range(dataset.load("train").x)
    held_out = _unit_range(dataset.load("test").x)
    generator, discriminator, latent = models.build_gan(dataset.input_shape, spec.model.params)
    generator.to(device)  # before the optimizers and the resume, so their state lands on the same device
    discriminator.to(device)
    images = resident(real, device)
    lr = spec.optimizer.learning_rate
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    parts = {"generator": generator, "discriminator": discriminator, "opt_g": opt_g, "opt_d": opt_d}
    state: dict[str, Any] = resume(config.artifact_uri, parts) or {"epoch": 0, "history": []}
    bce = nn.functional.binary_cross_entropy_with_logits
    rng = torch.Generator().manual_seed(spec.training.seed)
    size = spec.training.batch_size
    for epoch in range(state["epoch"] + 1, spec.training.epochs + 1):
        generator.train()
        discriminator.train()
        order = torch.randperm(len(real), generator=rng).to(images.device)
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # summed on the device: no sync per step
        steps = 0
        for start in range(0, len(order), size):
            batch = images[order[start : start + size]].to(device, non_blocking=True)
            n = batch.shape[0]
            fake = generator(torch.randn(n, latent, generator=rng).to(device))
            d_loss = bce(discriminator(batch), torch.full((n, 1), 0.9, device=device)) + bce(
                discriminator(fake.detach()), torch.zeros(n, 1, device=device)
            )
            opt_d.zero_grad()
            d_loss.backward()  # type: ignore[no-untyped-call]
            opt_d.step()
            g_loss = bce(discriminator(fake), torch.ones(n, 1, device=device))
            opt_g.zero_grad()
            g_loss.backward()  # type: ignore[no-untyped-call]
            opt_g.step()
            totals += torch.stack([d_loss.detach(), g_loss.detach()]).double()
            steps += 1
        d_total, g_total = totals.tolist()
        metrics = {"d_loss": d_total / max(steps, 1), "g_loss": g_total / max(steps, 1)}
        if not all(math.isfinite(v) for v in metrics.values()):
            raise WorkloadError("NaNLoss", f"a GAN loss became non-finite in epoch {epoch}: lower the learning rate")
        state["history"].append({"epoch": epoch, **metrics})
        state["epoch"] = epoch
        if epoch % spec.checkpoint.every_epochs == 0 or epoch == spec.training.epochs:
            snapshot = {
                "generator": generator.state_dict(),
                "discriminator": discriminator.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "state": state,
            }
            save_epoch_checkpoint(config.artifact_uri, epoch, snapshot, spec.checkpoint.keep)
        progress.update(
            force=True,
            phase="Training",
            epoch=epoch,
            totalEpochs=spec.training.epochs,
            metrics={k: round(v, 6) for k, v in metrics.items()},
        )

    generator.cpu().eval()  # evaluation, plots and export on the CPU, as for the other architectures
    discriminator.cpu().eval()
    with torch.no_grad():
        probe = torch.from_numpy(held_out[:512])
        fakes = generator(torch.randn(len(probe), latent, generator=rng))
        real_right = (discriminator(probe) > 0).float().mean()
        fake_right = (discriminator(fakes) <= 0).float().mean()
    report = workdir / "report"
    report.mkdir()
    _samples_png(generator, latent, report / "samples.png", rng)
    _losses_png(state["history"], report / "gan_losses.png")
    example = torch.randn(CHECK, latent, generator=rng).numpy()
    model_dir = workdir / "model"
    exports = export.export_all(generator, example, list(spec.export.formats), model_dir)
    metrics = {
        "test_discriminator_accuracy": float((real_right + fake_right) / 2),
        **{f"final_{k}": v for k, v in state["history"][-1].items() if k != "epoch"},
    }
    card = {
        "name": config.name,
        "task": "generation",
        "architecture": "gan",
        "latent": latent,
        "outputShape": dataset.input_shape,
        "metrics": metrics,
        "exports": exports,
        "lineage": {"datasetUri": dataset.uri, "datasetFingerprint": dataset.manifest.fingerprint, **config.lineage},
        "summary": models.summary(generator, torch.from_numpy(example[:2])),
    }
    (model_dir / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
    (model_dir / "model_card.md").write_text(
        f"# Model card: {config.name} (GAN generator)\n\nGenerates {dataset.input_shape} images from "
        f"{latent}-dimensional standard normal vectors. Trained {state['epoch']} epochs on `{dataset.uri}` "
        f"(fingerprint `{dataset.manifest.fingerprint}`).\n\nDiscriminator accuracy on held-out real images "
        f"against fresh samples: {metrics['test_discriminator_accuracy']:.3f} (0.5 means it cannot tell them "
        "apart).\n\nLimitations: samples imitate the training images; they are not labelled and may memorise.\n"
    )
    storage.upload_dir(report, storage.join(config.artifact_uri, "report"))
    storage.upload_dir(model_dir, storage.join(config.artifact_uri, "model"))
    return {
        "metrics": metrics,
        "epochs": state["epoch"],
        "modelUri": storage.join(config.artifact_uri, "model"),
        "reportUri": storage.join(config.artifact_uri, "report"),
        "exports": exports,
        "lineage": card["lineage"],
        "history": state["history"],
    }


CHECK = 16


def _samples_png(generator: nn.Module, latent: int, path: Path, rng: torch.Generator) -> None:
    with torch.no_grad():
        images = generator(torch.randn(64, latent, generator=rng)).numpy()
    fig, axes = plt.subplots(8, 8, figsize=(6, 6))
    for image, ax in zip(images, axes.flat, strict=True):
        picture = image.transpose(1, 2, 0)
        ax.imshow(picture.squeeze(), cmap="gray" if picture.shape[2] == 1 else None, vmin=0, vmax=1)
        ax.axis("off")
    fig.suptitle("Generated samples")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _losses_png(history: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["d_loss"] for h in history], label="discriminator")
    ax.plot(epochs, [h["g_loss"] for h in history], label="generator")
    ax.set_xlabel("epoch")
    ax.set_title("GAN losses")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
