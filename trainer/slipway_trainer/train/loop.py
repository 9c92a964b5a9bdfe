"""The training loop: one implementation, run in this process or by each Ray Train worker.

Per epoch: train on this worker's shard (augmented, L1/L2-penalised, bf16 autocast on GPU), validate, step
the learning-rate schedule; rank 0 then writes metrics (progress.json, TensorBoard) and, every N epochs,
a checkpoint. A loop that starts finds the newest checkpoint and resumes from it: after a worker failure
within a Ray job, and on a fresh job alike.
"""

from __future__ import annotations

import copy
import io
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from slipway_trainer import selection, storage
from slipway_trainer.artifacts import HISTORY, read_history
from slipway_trainer.config.train import TrainConfig, TrainSpec
from slipway_trainer.stop import StopRequest, StopRequested
from slipway_trainer.train import models
from slipway_trainer.train.data import Dataset, Split, open_dataset, shard
from slipway_trainer.workload import Progress, WorkloadError

CHECKPOINTS = "checkpoints"
CHECKPOINT_NAME = re.compile(r"epoch-(\d{4,})\.pt$")
BEST = "best.pt"
ERROR_METRICS = ("loss", "mse", "mae", "rmse")


@dataclass
class Worker:
    """Where this copy of the loop runs."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    prepare: Callable[[nn.Module], nn.Module] = lambda m: m
    report: Callable[[dict[str, float]], None] = lambda metrics: None

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def outputs_for(spec: TrainSpec, dataset: Dataset) -> int:
    if dataset.task == "regression":
        return 1
    if spec.objective.loss == "bce":
        if dataset.num_classes != 2:
            raise WorkloadError(
                "LossDoesNotFitData",
                f"loss bce needs two classes; this dataset has {dataset.num_classes}: use cross_entropy",
            )
        return 1
    return dataset.num_classes


def loss_function(spec: TrainSpec, dataset: Dataset) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    loss = spec.objective.loss
    regression = dataset.task == "regression"
    if regression and loss in ("cross_entropy", "bce"):
        raise WorkloadError(
            "LossDoesNotFitData",
            f"loss {loss} is for classification, but the label of this dataset "
            "is a number to predict: use mse, mae or huber",
        )
    if not regression and loss in ("mse", "mae", "huber"):
        raise WorkloadError(
            "LossDoesNotFitData",
            f"loss {loss} is for regression, but this dataset's label has "
            f"{dataset.num_classes} classes: use cross_entropy or bce",
        )
    if loss == "cross_entropy":
        return nn.functional.cross_entropy
    if loss == "bce":
        return lambda out, y: nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), y.float())
    regression_losses: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "mse": nn.functional.mse_loss,
        "mae": nn.functional.l1_loss,
        "huber": nn.functional.huber_loss,
    }
    fn = regression_losses[loss]
    return lambda out, y: fn(out.squeeze(1), y)


def metric_direction(metric: str) -> str:
    name = metric.removeprefix("val_").removeprefix("test_").removeprefix("train_")
    return "minimize" if name in ERROR_METRICS else "maximize"


def make_optimizer(spec: TrainSpec, model: nn.Module) -> torch.optim.Optimizer:
    o = spec.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.learning_rate, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.learning_rate, weight_decay=o.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=o.learning_rate, weight_decay=o.weight_decay)


def make_schedule(spec: TrainSpec, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    s = spec.optimizer.schedule
    epochs = spec.training.epochs

    def factor(epoch: int) -> float:  # `epoch` epochs done
        if epoch < s.warmup_epochs:
            return (epoch + 1) / (s.warmup_epochs + 1)
        if s.type == "cosine":
            span = max(epochs - s.warmup_epochs, 1)
            return 0.5 * (1 + math.cos(math.pi * min(epoch - s.warmup_epochs, span) / span))
        if s.type == "step":
            return float(s.gamma ** ((epoch - s.warmup_epochs) // s.step_size))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def augment(x: torch.Tensor, kinds: list[str], generator: torch.Generator) -> torch.Tensor:
    """Random image augmentations of a batch (N, C, H, W)."""
    if x.dim() != 4 or not kinds:
        return x
    n = x.shape[0]

    def chosen() -> torch.Tensor:
        return (torch.rand(n, generator=generator) < 0.5).to(x.device).view(n, 1, 1, 1)

    if "hflip" in kinds:
        x = torch.where(chosen(), x.flip(3), x)
    if "vflip" in kinds:
        x = torch.where(chosen(), x.flip(2), x)
    if "crop" in kinds:
        padded = nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
        dy, dx = (int(v) for v in torch.randint(0, 5, (2,), generator=generator))
        x = padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
    if "rotate" in kinds:
        angle = (torch.rand(n, generator=generator) - 0.5) * (math.pi / 9)  # up to +-10 degrees
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([cos, -sin, torch.zeros(n)], 1), torch.stack([sin, cos, torch.zeros(n)], 1)], 1
        )
        grid = nn.functional.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        x = nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    if "noise" in kinds:
        x = x + 0.05 * torch.randn(x.shape, generator=generator).to(x.device)
    return x


class Totals:
    """Sums of a pass over data (loss, confusion matrix or regression sums), all-reduced across workers."""

    def __init__(self, classes: int, device: torch.device) -> None:
        self.classes = classes
        self.count = 0
        self.loss = torch.zeros(2, dtype=torch.float64, device=device)  # sum, count (the count filled in by reduce)
        size = classes * classes if classes else 5  # regression: sum err^2, sum |err|, sum y, sum y^2, n
        self.stats = torch.zeros(size, dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        n = y.shape[0]
        self.count += n  # a Python int: a per-batch tensor made from it would be a host-to-device copy (a GPU sync)
        self.loss += loss.detach().double() * n
        if self.classes:
            predicted = (out.squeeze(1) > 0).long() if out.shape[1] == 1 else out.argmax(1)
            index = y.long() * self.classes + predicted
            self.stats += torch.bincount(index, minlength=self.classes**2).double()
        else:
            p, t = out.squeeze(1).double(), y.double()
            err = p - t
            self.stats += torch.stack(
                [
                    (err**2).sum(),
                    err.abs().sum(),
                    t.sum(),
                    (t**2).sum(),
                    torch.zeros((), dtype=torch.float64, device=y.device),  # n: filled in by reduce
                ]
            )

    def reduce(self) -> None:
        self.loss[1] = self.count
        if not self.classes:
            self.stats[4] = self.count
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.loss)
            dist.all_reduce(self.stats)

    def metrics(self, prefix: str) -> dict[str, float]:
        loss_sum, count = self.loss.tolist()
        out = {f"{prefix}loss": loss_sum / max(count, 1)}
        if self.classes:
            matrix = self.stats.view(self.classes, self.classes).cpu().numpy()
            out.update({f"{prefix}{k}": v for k, v in classification_scores(matrix).items()})
        else:
            sq, ab, s, s2, n = self.stats.tolist()
            variance = s2 / max(n, 1) - (s / max(n, 1)) ** 2
            out.update(
                {
                    f"{prefix}mse": sq / max(n, 1),
                    f"{prefix}mae": ab / max(n, 1),
                    f"{prefix}rmse": math.sqrt(sq / max(n, 1)),
                    f"{prefix}r2": 1 - (sq / max(n, 1)) / variance if variance > 0 else 0.0,
                }
            )
        return out


def classification_scores(matrix: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 from a confusion matrix (rows: truth, columns: prediction)."""
    total = matrix.sum()
    tp = np.diag(matrix)
    precision = np.divide(tp, matrix.sum(0), out=np.zeros_like(tp, dtype=float), where=matrix.sum(0) > 0)
    recall = np.divide(tp, matrix.sum(1), out=np.zeros_like(tp, dtype=float), where=matrix.sum(1) > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(tp, dtype=float), where=(precision + recall) > 0
    )
    macro_f1 = float(f1.mean())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": macro_f1,
        "f1_macro": macro_f1,
    }


# --- checkpoints -------------------------------------------------------------------------------------


def checkpoint_uris(artifact_uri: str) -> list[tuple[int, str]]:
    """(epoch, uri) of every checkpoint, oldest first."""
    fs, path = storage.resolve(storage.join(artifact_uri, CHECKPOINTS))
    if not fs.exists(path):
        return []
    found = []
    for name in fs.ls(path, detail=False):
        match = CHECKPOINT_NAME.search(str(name))
        if match:
            found.append((int(match.group(1)), storage.join(artifact_uri, CHECKPOINTS, match.group(0))))
    return sorted(found)


def save_checkpoint(uri: str, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    storage.write_bytes_atomic(uri, buffer.getvalue())


def epoch_checkpoint_uri(artifact_uri: str, epoch: int) -> str:
    return storage.join(artifact_uri, CHECKPOINTS, f"epoch-{epoch:04d}.pt")


def save_epoch_checkpoint(artifact_uri: str, epoch: int, snapshot: dict[str, Any], keep: int) -> None:
    """Write `checkpoints/epoch-NNNN.pt` and keep only the `keep` newest."""
    save_checkpoint(epoch_checkpoint_uri(artifact_uri, epoch), snapshot)
    for _, old in checkpoint_uris(artifact_uri)[:-keep]:
        storage.remove(old)


def resume(artifact_uri: str, parts: dict[str, Any]) -> dict[str, Any] | None:
    """Load the newest checkpoint into `parts` (name -> object with `load_state_dict`); its loop state, or None
    when there is no checkpoint yet."""
    existing = checkpoint_uris(artifact_uri)
    if not existing:
        return None
    saved = load_checkpoint(existing[-1][1])
    for name, part in parts.items():
        part.load_state_dict(saved[name])
    state: dict[str, Any] = saved["state"]
    state.setdefault("resumedFrom", []).append(state["epoch"])
    # Finished epochs after the checkpoint (history.json is rewritten after each epoch's checkpoint) are trained again.
    history = read_history(artifact_uri)
    reached = max((int(h["epoch"]) for h in history), default=0)
    state["epochsLost"] = state.get("epochsLost", 0) + max(0, reached - state["epoch"])
    return state


def load_checkpoint(uri: str) -> dict[str, Any]:
    """Tensors and plain values only: `weights_only=True` never unpickles code."""
    state: dict[str, Any] = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)
    return state


def unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)
    assert isinstance(inner, nn.Module)
    return inner


# --- the loop ----------------------------------------------------------------------------------------


def train_loop(config: TrainConfig, worker: Worker, tensorboard_dir: Path | None = None) -> None:
    spec = config.spec
    torch.manual_seed(spec.training.seed)
    torch.set_num_threads(max(1, min(int(config.cpus_per_worker), os.cpu_count() or 1)))  # never more than there are
    dataset = open_dataset(config.dataset_uri)
    train_split = shard(dataset.load("train"), worker.rank, worker.world_size)
    val_split = shard(dataset.load("validation"), worker.rank, worker.world_size)
    criterion = loss_function(spec, dataset)
    classes = dataset.num_classes if dataset.task == "classification" else 0
    model = models.build(spec.model.architecture, dataset.input_shape, outputs_for(spec, dataset), spec.model.params)
    optimizer = make_optimizer(spec, model)
    schedule = make_schedule(spec, optimizer)
    objective = f"val_{spec.objective.metric.removeprefix('val_')}"
    stopping = spec.training.early_stopping
    # An improvement under earlyStopping.minDelta is a tie when early stopping watches the objective itself.
    tolerance = stopping.min_delta if stopping and f"val_{stopping.metric.removeprefix('val_')}" == objective else 0.0
    state = resume(config.artifact_uri, {"model": model, "optimizer": optimizer, "schedule": schedule}) or {
        "epoch": 0,
        "history": [],
        "best": None,
        "bestEpoch": None,
        "stale": 0,
    }
    model = worker.prepare(model.to(worker.device))
    progress = Progress(config.artifact_uri, interval=0.0) if worker.is_chief else None
    writer = _tensorboard(tensorboard_dir) if worker.is_chief and tensorboard_dir else None
    generator = torch.Generator().manual_seed(spec.training.seed + 1000 * worker.rank)
    train_data = resident(train_split.x, worker.device), resident(train_split.y, worker.device)
    started = time.monotonic()
    first_epoch = state["epoch"] + 1
    leave = StopRequest()  # this worker's pod going away (see slipway_trainer.stop)
    unsaved: tuple[int, dict[str, Any]] | None = None  # the last finished epoch, when its checkpoint is not written
    with leave.armed():
        for epoch in range(first_epoch, spec.training.epochs + 1):
            generator.manual_seed(spec.training.seed + 1000 * worker.rank + epoch)
            epoch_start = time.monotonic()
            try:
                totals = _train_epoch(model, train_data, spec, optimizer, criterion, classes, worker, generator, leave)
            except StopRequested:
                _stop_now(config, unsaved, leave)
            train_seconds = time.monotonic() - epoch_start
            metrics = totals.metrics("train_")
            if not math.isfinite(metrics["train_loss"]):
                raise WorkloadError(
                    "NaNLoss",
                    f"the training loss became {metrics['train_loss']} in epoch {epoch}: lower "
                    "optimizer.learningRate, or check the data for extreme values",
                )
            metrics |= _evaluate(model, val_split, spec, criterion, classes, worker).metrics("val_")
            metrics["learning_rate"] = float(optimizer.param_groups[0]["lr"])
            schedule.step()
            # Training samples per second of the training pass (validation excluded), all workers together.
            metrics["samples_per_second"] = len(train_split) * worker.world_size / max(train_seconds, 1e-9)
            state["history"].append({"epoch": epoch, **metrics})
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith(("train_loss", "val_")))
            print(f"[worker {worker.rank}] epoch {epoch}/{spec.training.epochs}: {shown}", flush=True)
            state["epoch"] = epoch
            improved = _track_best(state, metrics, objective, tolerance)
            stop = _should_stop(state, metrics, stopping) if stopping else False
            state["workers"] = worker.world_size
            due = epoch % spec.checkpoint.every_epochs == 0 or stop or epoch == spec.training.epochs
            # Every rank holds the same weights (DDP), so the rank whose pod goes away can write the checkpoint.
            snapshot = _snapshot(unwrap(model), optimizer, schedule, state) if due or leave.possible else None
            unsaved = (epoch, detached(snapshot)) if snapshot is not None and not due else None
            if worker.is_chief:
                _chief_epoch(
                    config,
                    unwrap(model),
                    snapshot if due else None,
                    state,
                    improved,
                    stop,
                    writer,
                    progress,
                    metrics,
                    started,
                    first_epoch,
                )
            worker.report({k: float(v) for k, v in metrics.items()} | {"epoch": float(epoch)})
            if stop:
                break
    if writer is not None:
        writer.close()


def _snapshot(
    model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any, state: dict[str, Any]
) -> dict[str, Any]:
    """What an epoch checkpoint holds: enough to go on training exactly where the epoch ended."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "state": state,
    }


def detached(obj: Any) -> Any:
    """A copy of a checkpoint snapshot that later training does not change: tensors copied to host memory."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: detached(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(detached(v) for v in obj)
    return copy.deepcopy(obj)


def _stop_now(config: TrainConfig, unsaved: tuple[int, dict[str, Any]] | None, stop: StopRequest) -> None:
    """The pod is going away: checkpoint the last finished epoch if it is not yet, say so, wait to be killed."""
    if unsaved is not None:  # the older ones are pruned by the next regular checkpoint
        epoch, snapshot = unsaved
        save_checkpoint(epoch_checkpoint_uri(config.artifact_uri, epoch), snapshot)
        print(
            f"stop requested ({stop.path}): epoch {epoch} checkpointed; the next is trained again on resume", flush=True
        )
    else:
        print(f"stop requested ({stop.path}): no epoch finished since the newest checkpoint", flush=True)
    stop.disarm()
    stop.hold()


def local_device(config: TrainConfig) -> torch.device:
    """Where a run outside Ray Train trains: its GPU when it asks for one and there is one."""
    return torch.device("cuda" if config.gpus_per_worker and torch.cuda.is_available() else "cpu")


def resident(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """An array to batch from: copied to the GPU once for the whole run when it takes at most a quarter of the
    free GPU memory (then no host-to-device copy, and no sync, per batch), else left in host memory."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda" and tensor.nbytes <= torch.cuda.mem_get_info(device)[0] // 4:
        return tensor.to(device)
    return tensor


def _train_epoch(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    spec: TrainSpec,
    optimizer: torch.optim.Optimizer,
    criterion: Any,
    classes: int,
    worker: Worker,
    generator: torch.Generator,
    stop: StopRequest,
) -> Totals:
    model.train()
    totals = Totals(classes, worker.device)
    x_all, y_all = data
    order = torch.randperm(len(x_all), generator=generator).to(x_all.device)
    size = spec.training.batch_size
    reg = spec.regularization
    weights = [p for name, p in model.named_parameters() if p.dim() > 1 and "norm" not in name.lower()]
    for start in range(0, len(order), size):
        stop.check()
        index = order[start : start + size]
        x, y = x_all[index].to(worker.device, non_blocking=True), y_all[index].to(worker.device, non_blocking=True)
        x = augment(x, list(reg.augmentation), generator)
        with torch.autocast(device_type=worker.device.type, dtype=torch.bfloat16, enabled=worker.device.type == "cuda"):
            out = model(x)
            loss = criterion(out.float(), y)
        penalty = loss
        if reg.l1:
            penalty = penalty + reg.l1 * sum(w.abs().sum() for w in weights)
        if reg.l2:
            penalty = penalty + reg.l2 * sum((w**2).sum() for w in weights)
        optimizer.zero_grad(set_to_none=True)
        penalty.backward()
        optimizer.step()
        totals.add(loss, out.detach().float(), y)
    totals.reduce()
    return totals


def _evaluate(model: nn.Module, split: Split, spec: TrainSpec, criterion: Any, classes: int, worker: Worker) -> Totals:
    model.eval()
    totals = Totals(classes, worker.device)
    with torch.no_grad():
        for start in range(0, len(split), 1024):
            x = torch.from_numpy(split.x[start : start + 1024]).to(worker.device)
            y = torch.from_numpy(split.y[start : start + 1024]).to(worker.device)
            with torch.autocast(
                device_type=worker.device.type, dtype=torch.bfloat16, enabled=worker.device.type == "cuda"
            ):
                out = model(x).float()
            totals.add(criterion(out, y), out, y)
    totals.reduce()
    return totals


def _track_best(state: dict[str, Any], metrics: dict[str, float], objective: str, tolerance: float) -> bool:
    value = metrics.get(objective)
    if value is None:
        raise WorkloadError(
            "UnknownMetric",
            f"objective.metric {objective.removeprefix('val_')!r} is not measured "
            f"for this task (measured: {', '.join(sorted(metrics))})",
        )
    maximize = metric_direction(objective) == "maximize"
    better = selection.beats(value, metrics.get("val_loss"), state["best"], state.get("bestLoss"), maximize, tolerance)
    if better:
        state["best"], state["bestLoss"], state["bestEpoch"] = value, metrics.get("val_loss"), state["epoch"]
    return better


def _should_stop(state: dict[str, Any], metrics: dict[str, float], stopping: Any) -> bool:
    value = metrics.get(stopping.metric)
    if value is None:
        raise WorkloadError(
            "UnknownMetric",
            f"training.earlyStopping.metric {stopping.metric!r} is not measured "
            f"(measured: {', '.join(sorted(metrics))})",
        )
    direction = stopping.direction or metric_direction(stopping.metric)
    reference = state.get("stopBest")
    improved = reference is None or (
        value < reference - stopping.min_delta if direction == "minimize" else value > reference + stopping.min_delta
    )
    if improved:
        state["stopBest"], state["stale"] = value, 0
    else:
        state["stale"] += 1
    return bool(state["stale"] >= stopping.patience)


def _chief_epoch(
    config: TrainConfig,
    model: nn.Module,
    checkpoint: dict[str, Any] | None,
    state: dict[str, Any],
    improved: bool,
    stop: bool,
    writer: Any,
    progress: Progress | None,
    metrics: dict[str, float],
    started: float,
    first_epoch: int,
) -> None:
    """What the chief writes after an epoch: the best model when it improved, the epoch's `checkpoint` when one is
    due, the history, TensorBoard's events and the progress."""
    spec = config.spec
    epoch = state["epoch"]
    if improved:
        save_checkpoint(
            storage.join(config.artifact_uri, CHECKPOINTS, BEST), {"model": model.state_dict(), "epoch": epoch}
        )
    if checkpoint is not None:
        save_epoch_checkpoint(config.artifact_uri, epoch, checkpoint, spec.checkpoint.keep)
    storage.write_json_atomic(storage.join(config.artifact_uri, HISTORY), state["history"])
    if writer is not None:
        for key, value in metrics.items():
            writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key, value, epoch)
        writer.flush()
        storage.upload_dir(Path(writer.log_dir), storage.join(config.artifact_uri, "tensorboard"))
    if progress is not None:
        done = epoch - first_epoch + 1
        remaining = spec.training.epochs - epoch
        eta = (time.monotonic() - started) / done * remaining
        progress.update(
            force=True,
            phase="Training",
            epoch=epoch,
            totalEpochs=spec.training.epochs,
            metrics={k: round(v, 6) for k, v in metrics.items()},
            samplesPerSecond=round(metrics["samples_per_second"], 1),
            etaSeconds=round(eta, 1),
            bestEpoch=state["bestEpoch"],
            stoppedEarly=stop,
            workers=state.get("workers", 1),
            resumedFrom=state.get("resumedFrom", []),
            epochsLost=state.get("epochsLost", 0),
        )


def _tensorboard(directory: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    directory.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(directory))
