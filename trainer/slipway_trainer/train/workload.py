"""`python -m slipway_trainer train --config FILE`: train, evaluate on the test split, export, describe.

Outputs under the artifact URI: progress.json, result.json, checkpoints/, tensorboard/, report/ (plots,
metrics.json) and model/ (model.onnx, model.pt, transform.json, model_card.md, model_card.json).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from slipway_trainer import storage, tracking, workload
from slipway_trainer.config.train import TrainConfig
from slipway_trainer.train import evaluate, export, models
from slipway_trainer.train.data import Dataset, open_dataset
from slipway_trainer.train.loop import (
    BEST,
    CHECKPOINTS,
    Worker,
    checkpoint_uris,
    load_checkpoint,
    local_device,
    outputs_for,
)
from slipway_trainer.train.loop import train_loop as local_loop
from slipway_trainer.workload import Progress, WorkloadError, now


def run(config: TrainConfig) -> dict[str, Any]:
    return workload.run_staged(
        config.artifact_uri, config, lambda progress, workdir: train(config, progress, workdir), (CHECKPOINTS,)
    )


def train(config: TrainConfig, progress: Progress, workdir: Path) -> dict[str, Any]:
    outcome = train_and_publish(config, progress, workdir)
    if config.tracking is None:
        return outcome
    progress.update(force=True, phase="Tracking")
    record = tracking.training_record(config, outcome, workdir, "TrainingRun")
    return {**outcome, "tracking": tracking.track(config.tracking, record)}


def train_and_publish(config: TrainConfig, progress: Progress, workdir: Path) -> dict[str, Any]:
    spec = config.spec
    dataset = open_dataset(config.dataset_uri)
    if spec.model.architecture == "gan":
        from slipway_trainer.train import gan

        if not config.use_ray:
            return gan.train(config, dataset, progress, workdir)
        from slipway_trainer.train import ray_runner

        result = ray_runner.on_worker(config, _gan_on_worker)
        progress.refresh()
        return result
    model = models.build(spec.model.architecture, dataset.input_shape, outputs_for(spec, dataset), spec.model.params)
    _check_fits(model, dataset)
    progress.update(force=True, phase="Training", epoch=0, totalEpochs=spec.training.epochs)
    started = time.monotonic()
    tensorboard = workdir / "tensorboard"
    if config.use_ray:
        from slipway_trainer.train import ray_runner

        ray_runner.fit(config, workdir, tensorboard)
    else:
        local_loop(config, Worker(device=local_device(config)), tensorboard)
    train_seconds = time.monotonic() - started

    progress.refresh()
    outcome = publish(config, dataset, progress, workdir, config.artifact_uri)
    return {**outcome, "trainSeconds": round(train_seconds, 1)}


def _gan_on_worker(config: TrainConfig) -> dict[str, Any]:
    """The GAN's loop where a Ray task runs it (a worker, with its GPU), in a scratch folder of its own."""
    from slipway_trainer.train import gan

    progress = Progress(config.artifact_uri, "Training")
    progress.refresh()  # the driver's start time and phase
    workdir = storage.staging_dir()
    try:
        return gan.train(config, open_dataset(config.dataset_uri), progress, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def best_model(config: TrainConfig, dataset: Dataset) -> torch.nn.Module:
    """The run's best checkpoint (by the objective's validation metric), loaded into a fresh network."""
    spec = config.spec
    model = models.build(spec.model.architecture, dataset.input_shape, outputs_for(spec, dataset), spec.model.params)
    model.load_state_dict(load_checkpoint(storage.join(config.artifact_uri, CHECKPOINTS, BEST))["model"])
    return model.eval()


def publish(
    config: TrainConfig, dataset: Dataset, progress: Progress, workdir: Path, publish_uri: str
) -> dict[str, Any]:
    """Evaluate the run's best checkpoint on the test split and export it: report/ and model/ under
    `publish_uri` (the run's own artifacts, or a sweep's for its best trial)."""
    spec = config.spec
    progress.update(force=True, phase="Evaluating")
    newest = checkpoint_uris(config.artifact_uri)[-1][1]
    state = load_checkpoint(newest)["state"]
    model = best_model(config, dataset)
    report = workdir / "report"
    report.mkdir(exist_ok=True)
    test = dataset.load("test")
    outputs = evaluate.predict(model, test.x)
    scores = evaluate.scores(dataset, outputs, test.y)
    metric = spec.objective.metric.removeprefix("val_").removeprefix("test_")
    headline = {f"test_{k}": float(v) for k, v in scores.items() if isinstance(v, int | float)}
    fair = evaluate.fairness(dataset, test, outputs, list(spec.evaluation.sensitive_features), metric)
    importance: dict[str, float] = {}
    evaluate.curves_png(state["history"], f"val_{metric}", report / "training_curves.png")
    if dataset.task == "classification":
        evaluate.confusion_png(scores["confusion_matrix"], dataset.class_names, report / "confusion_matrix.png")
    if len(dataset.input_shape) == 3:
        evaluate.saliency_png(model, dataset, test, report / "saliency.png")
    else:
        importance = evaluate.permutation_importance(model, dataset, test, metric, seed=spec.training.seed)

    progress.update(force=True, phase="Exporting")
    model_dir = workdir / "model"
    exports = export.export_all(model, test.x, list(spec.export.formats), model_dir)
    (model_dir / "transform.json").write_text(json.dumps(dataset.transform.to_json(), indent=2, default=str))
    summary = models.summary(model, torch.from_numpy(test.x[:2]))
    card = _card_facts(config, dataset, state, summary, headline, fair, importance, exports)
    (model_dir / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
    (model_dir / "model_card.md").write_text(export.model_card(card))
    history = state["history"]
    details = {"test": scores, "fairness": fair, "importance": importance, "history": history}
    (report / "metrics.json").write_text(json.dumps(details, indent=2, default=str))
    storage.upload_dir(report, storage.join(publish_uri, "report"))
    storage.upload_dir(model_dir, storage.join(publish_uri, "model"))
    return {
        "metrics": headline,
        "bestEpoch": state["bestEpoch"],
        "epochs": state["epoch"],
        "stoppedEarly": state["epoch"] < spec.training.epochs,
        "resumedFrom": state.get("resumedFrom", []),
        "epochsLost": state.get("epochsLost", 0),
        "modelUri": storage.join(publish_uri, "model"),
        "reportUri": storage.join(publish_uri, "report"),
        "checkpointUri": newest,
        "exports": exports,
        "lineage": card["lineage"],
    }


def _check_fits(model: torch.nn.Module, dataset: Dataset) -> None:
    """Fail before any training when the network cannot take this dataset's input."""
    example = torch.zeros(2, *dataset.input_shape)
    try:
        with torch.no_grad():
            model.eval()(example)
    except RuntimeError as err:
        raise WorkloadError(
            "ModelDoesNotFitData",
            f"model.architecture {type(model).__name__} cannot take this "
            f"dataset's input of shape {dataset.input_shape}: {err}",
        ) from err


def _card_facts(
    config: TrainConfig,
    dataset: Dataset,
    state: dict[str, Any],
    summary: dict[str, Any],
    metrics: dict[str, float],
    fairness: dict[str, Any],
    importance: dict[str, float],
    exports: dict[str, Any],
) -> dict[str, Any]:
    manifest = dataset.manifest
    rows = manifest.rows
    return {
        "name": config.name,
        "task": dataset.task,
        "label": manifest.label,
        "classes": dataset.class_names if dataset.task == "classification" else [],
        "architecture": config.spec.model.architecture,
        "params": config.spec.model.params,
        "summary": summary,
        "epochs": state["epoch"],
        "bestEpoch": state["bestEpoch"],
        "trainedAt": now(),
        "objective": config.spec.objective.model_dump(mode="json", by_alias=True),
        "metrics": metrics,
        "fairness": fairness,
        "importance": importance,
        "exports": exports,
        "inputShape": dataset.input_shape,
        "features": dataset.transform.feature_names() or dataset.transform.input_columns(),
        "dataset": {
            "uri": dataset.uri,
            "version": manifest.version,
            "fingerprint": manifest.fingerprint,
            "rows": f"train {rows['train']:,}, validation {rows['validation']:,}, test {rows['test']:,}",
        },
        "lineage": {"datasetUri": dataset.uri, "datasetFingerprint": manifest.fingerprint, **config.lineage},
        "training": config.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def main(config_path: str) -> int:
    return workload.main(config_path, TrainConfig, run, lambda config: config.artifact_uri)
