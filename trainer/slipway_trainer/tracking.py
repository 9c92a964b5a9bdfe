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


def track(uri: str, experiment: str, record: RunRecord, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Log `record` to the server at `uri`, saying what happened instead of raising: a tracking server that is
    down or refuses never fails the run it would have logged."""
    try:
        mlflow = Mlflow(uri, **({"env": env} if env is not None else {}))
        logged = log_run(mlflow, mlflow.experiment(experiment), record)
    except MlflowError as err:
        return {"state": "Failed", "message": str(err)}
    return {"state": "Logged", **logged}
