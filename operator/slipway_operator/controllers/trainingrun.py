"""TrainingRun: waits for its DatasetPrep, then a RayJob that runs the train workload (its config on the Ray pods)."""

from __future__ import annotations

from typing import Any

from slipway_operator import builders
from slipway_operator.api.common import Phase
from slipway_operator.api.trainingrun import TrainingRunSpec, TrialTemplate
from slipway_operator.controllers.common import (
    Desired,
    RunController,
    Settings,
    artifact_uri,
    dataset_ref,
    phase_of,
    retrain_lineage,
    run_job,
    tracking_of,
)
from slipway_operator.runstatus import Observed
from slipway_operator.workloads import train_config

STEP = "train"
ARTIFACT_FOLDER = "runs"


def dataset_uri(spec: TrialTemplate, dataset: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(the prepared dataset's URI, or what the run (or a sweep's template) waits for)."""
    if spec.dataset.uri:
        return spec.dataset.uri, None
    ref = spec.dataset.ref
    if dataset is None:
        return None, f"DatasetPrep {ref} (it does not exist yet)"
    if phase_of(dataset) != Phase.SUCCEEDED:
        return None, f"DatasetPrep {ref} ({phase_of(dataset)})"
    uri = (dataset.get("status") or {}).get("outputUri")
    return (str(uri), None) if uri else (None, f"DatasetPrep {ref} (no outputUri in its status yet)")


def desired_children(obj: dict[str, Any], dataset: dict[str, Any] | None, settings: Settings) -> Desired:
    """`dataset` is the DatasetPrep named by spec.dataset.ref, as observed (None when absent)."""
    spec = TrainingRunSpec.model_validate(obj["spec"])
    owner = builders.Owner.of(obj)
    data, waiting = dataset_uri(spec, dataset)
    if data is None:
        return Desired([], waiting_for=waiting)
    lineage = {"trainingRun": owner.name, **({"datasetRef": spec.dataset.ref} if spec.dataset.ref else {})}
    lineage |= retrain_lineage(obj)
    where = artifact_uri(settings, ARTIFACT_FOLDER, owner.namespace, owner.name)
    tracking, tracking_secret = tracking_of(spec.tracking, settings, owner.namespace)
    config = train_config(owner.name, spec, data, where, lineage=lineage, tracking=tracking)
    job = run_job(
        owner,
        STEP,
        settings,
        spec.resources,
        config,
        spec.failure_policy,
        spec.ttl_seconds_after_finished,
        spec.suspend,
        tracking_secret,
    )
    return Desired([job])


def key_metric(metrics: dict[str, float], objective: str) -> str:
    """`test_mae=2.31` for objective `mae` (or `val_mae`); the first metric when the test split lacks it."""
    name = f"test_{objective.removeprefix('val_').removeprefix('test_')}"
    chosen = (name, metrics[name]) if name in metrics else next(iter(metrics.items()), None)
    return f"{chosen[0]}={chosen[1]:.4g}" if chosen else ""


def model_status_fields(observed: Observed, objective: str) -> dict[str, Any]:
    """A run's or a sweep's own status fields: epochs or trials so far, then the model, its metrics (the key
    metric is the objective's metric on the test split) and, for a sweep, its best trial."""
    result, progress = observed.result, observed.progress
    out: dict[str, Any] = {}
    if progress is not None and progress.epoch:
        out |= {"epoch": progress.epoch, "totalEpochs": progress.total_epochs}
    resumed = (result and result.resumed_from) or (progress and progress.resumed_from)
    if resumed:  # a worker was lost and the loop went on from a checkpoint: say from which epochs, and what it cost
        out["resumedFrom"] = list(resumed)
        lost = result.epochs_lost if result and result.resumed_from else progress and progress.epochs_lost
        if lost is not None:
            out["epochsLost"] = lost
    if progress is not None and progress.max_trials:
        done, running, failed = (progress.trials_done or 0, progress.trials_running or 0, progress.trials_failed or 0)
        out["trials"] = {"total": done + running + failed, "completed": done, "running": running, "failed": failed}
    if result is None or not result.succeeded:
        return out
    metrics = dict(result.metrics or {})
    out |= {
        "metrics": metrics,
        "modelUri": result.model_uri,
        "keyMetric": key_metric(metrics, objective),
        "lineage": result.lineage or {},
    }
    if result.checkpoint_uri:
        out["checkpointUri"] = result.checkpoint_uri
    if result.tracking is not None and result.tracking.state == "Logged":
        out["tracking"] = result.tracking.model_dump(by_alias=True, exclude={"state", "message"}, exclude_none=True)
    if result.best_trial is not None:
        best, trials = result.best_trial, result.trials
        out |= {
            "bestTrial": {"id": best.id, "params": best.params, "metric": best.metric},
            "trials": trials.model_dump(by_alias=True, exclude={"not_started"}) if trials else {},
            "leaderboardUri": result.leaderboard_uri,
        }
    return out


def objective_of(spec: dict[str, Any]) -> str:
    return str((spec.get("objective") or {}).get("metric") or "loss")


CONTROLLER = RunController(
    kind="TrainingRun",
    step=STEP,
    artifact_folder=ARTIFACT_FOLDER,
    references=lambda spec: dataset_ref(spec.get("dataset")),
    desired_children=lambda obj, found, settings: desired_children(obj, next(iter(found.values()), None), settings),
    status_fields=lambda obj, settings, observed: model_status_fields(observed, objective_of(obj["spec"])),
    produces_model=True,
)
