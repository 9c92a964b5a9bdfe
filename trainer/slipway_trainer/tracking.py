"""A finished run, logged to MLflow: its parameters (the spec, flattened), every epoch's metrics, the test metrics,
the dataset version it read, the report and the exported model with its card. A sweep is a parent run with its
trials as child runs.

Tracking never fails a run: `track` returns what happened (`{"state": "Logged", "runId", "url"}` or
`{"state": "Failed", "message"}`), which goes into result.json and from there into a condition of the resource.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipway_trainer.artifacts import read_history
from slipway_trainer.config.base import Tracking
from slipway_trainer.config.train import TrainConfig
from slipway_trainer.config.tune import TuneConfig
from slipway_trainer.mlflow_rest import Mlflow, MlflowError


@dataclass
class RunRecord:
    """What one run (or one trial) gives MLflow."""

    name: str
    params: Mapping[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch: {"epoch": n, metric: value}
    metrics: Mapping[str, float] = field(default_factory=dict)  # the test metrics, logged at the last step
    tags: Mapping[str, str] = field(default_factory=dict)
    dataset: tuple[str, str, str] | None = None  # (name, fingerprint, uri)
    folders: Mapping[str, Path] = field(default_factory=dict)  # artifact folder -> local folder


def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A spec as MLflow parameters: nested fields joined with dots, lists and values as JSON (`model.params.hidden`
    -> `[64, 32]`); empty mappings and None are left out."""
    flat: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}.")
        elif value is not None:
            flat[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return flat


def epoch_metrics(history: Iterable[Mapping[str, Any]]) -> list[tuple[str, float, int]]:
    """(key, value, step) for every number in every epoch's row; the epoch is the step."""
    out = []
    for row in history:
        step = int(row.get("epoch", 0))
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                out.append((key, float(value), step))
    return out


def log_run(mlflow: Mlflow, experiment_id: str, record: RunRecord, parent: str | None = None) -> dict[str, str]:
    """One MLflow run for `record` (a child of `parent` when given); its id and URL."""
    tags = {**record.tags, **({"mlflow.parentRunId": parent} if parent else {})}
    run = mlflow.start_run(experiment_id, record.name, tags)
    run_id = str(run["run_id"])
    failed = True
    try:
        last = max((int(r.get("epoch", 0)) for r in record.history), default=0)
        metrics = epoch_metrics(record.history) + [(k, float(v), last) for k, v in record.metrics.items()]
        mlflow.log(run_id, params=record.params, metrics=metrics)
        if record.dataset is not None:
            mlflow.log_dataset(run_id, *record.dataset)
        for under, folder in record.folders.items():
            if folder.exists():
                mlflow.upload(str(run["artifact_uri"]), folder, under=under)
        failed = False
    finally:
        mlflow.end_run(run_id, failed=failed)
    return {"runId": run_id, "experimentId": experiment_id, "url": mlflow.run_url(experiment_id, run_id)}


def track(
    tracking: Tracking, record: RunRecord, children: Iterable[RunRecord] = (), env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Log `record` (and `children` as its child runs) to the server `tracking` names, saying what happened
    instead of raising: a tracking server that is down or refuses never fails the run it would have logged."""
    try:
        mlflow = Mlflow(tracking.uri) if env is None else Mlflow(tracking.uri, env=env)
        experiment = mlflow.experiment(tracking.experiment)
        record.tags = {**tracking.tags, **record.tags}
        logged = log_run(mlflow, experiment, record)
        for child in children:
            child.tags = {**tracking.tags, **child.tags}
            log_run(mlflow, experiment, child, parent=logged["runId"])
    except MlflowError as err:
        return {"state": "Failed", "message": str(err)}
    return {"state": "Logged", **logged}


def training_record(config: TrainConfig, outcome: Mapping[str, Any], workdir: Path, kind: str) -> RunRecord:
    """A finished training run (or a sweep, `kind` TuningSweep, whose outcome is its best trial's) as an MLflow
    run: the spec as parameters, the epochs, the test metrics, the dataset version, report/ and model/."""
    lineage = {str(k): str(v) for k, v in (outcome.get("lineage") or {}).items()}
    uri = lineage.get("datasetUri", config.dataset_uri)
    name = config.lineage.get("datasetRef") or uri.rstrip("/").rsplit("/", 1)[-1]
    return RunRecord(
        name=config.name,
        params=flatten(config.spec.model_dump(mode="json", by_alias=True, exclude_none=True)),
        history=list(outcome.get("history") or read_history(config.artifact_uri)),
        metrics=dict(outcome.get("metrics") or {}),
        tags={"slipway.dev/kind": kind, **{f"slipway.dev/{k}": v for k, v in lineage.items()}},
        dataset=(name, lineage.get("datasetFingerprint", ""), uri),
        folders={"report": workdir / "report", "model": workdir / "model"},
    )


def sweep_records(
    config: TuneConfig,
    best: TrainConfig,
    outcome: Mapping[str, Any],
    trials: Iterable[tuple[Mapping[str, Any], str]],
    workdir: Path,
) -> tuple[RunRecord, list[RunRecord]]:
    """A sweep as a parent run (the search and the template as parameters; its best model's test metrics, report
    and model) and its trials as child runs: `trials` are (leaderboard row, the trial's artifact URI)."""
    parent = training_record(best, outcome, workdir, "TuningSweep")
    parent.name = config.name
    parent.params = flatten(
        {
            "sweep": config.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            "template": config.template.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
    )
    parent.history = []  # the best trial's epochs are in its own child run
    children = [
        RunRecord(
            name=f"{config.name}-{row['trial']}",
            params=flatten(row["params"]),
            history=read_history(uri),
            tags={
                "slipway.dev/kind": "Trial",
                "slipway.dev/trial": str(row["trial"]),
                "slipway.dev/trialStatus": str(row["status"]),
            },
        )
        for row, uri in trials
        if row["status"] != "NotStarted"
    ]
    return parent, children
