"""TuningSweep: waits for its dataset, then a RayJob that runs the tune workload (its config on the Ray pods), whose
worker group holds `parallelTrials` trials, each with the template's per-worker compute."""

from __future__ import annotations

from typing import Any

from slipway_operator import builders
from slipway_operator.api.tuningsweep import TuningSweepSpec
from slipway_operator.controllers.common import (
    Desired,
    RunController,
    Settings,
    artifact_uri,
    dataset_ref,
    retrain_lineage,
    run_job,
    tracking_of,
)
from slipway_operator.controllers.trainingrun import dataset_uri, model_status_fields, objective_of
from slipway_operator.workloads import tune_config

STEP = "tune"
ARTIFACT_FOLDER = "sweeps"


def desired_children(obj: dict[str, Any], dataset: dict[str, Any] | None, settings: Settings) -> Desired:
    """`dataset` is the DatasetPrep named by spec.template.dataset.ref, as observed (None when absent)."""
    spec = TuningSweepSpec.model_validate(obj["spec"])
    owner = builders.Owner.of(obj)
    data, waiting = dataset_uri(spec.template, dataset)
    if data is None:
        return Desired([], waiting_for=waiting)
    ref = spec.template.dataset.ref
    lineage = {"tuningSweep": owner.name, **({"datasetRef": ref} if ref else {}), **retrain_lineage(obj)}
    where = artifact_uri(settings, ARTIFACT_FOLDER, owner.namespace, owner.name)
    tracking, tracking_secret = tracking_of(spec.tracking, settings, owner.namespace)
    config = tune_config(owner.name, spec, data, where, lineage=lineage, tracking=tracking)
    # Trials are single-worker: the Ray cluster has room for parallelTrials of them at once.
    resources = spec.template.resources.model_copy(update={"workers": spec.parallel_trials})
    job = run_job(
        owner,
        STEP,
        settings,
        resources,
        config,
        spec.failure_policy,
        spec.ttl_seconds_after_finished,
        spec.suspend,
        tracking_secret,
    )
    return Desired([job])


CONTROLLER = RunController(
    kind="TuningSweep",
    step=STEP,
    artifact_folder=ARTIFACT_FOLDER,
    references=lambda spec: dataset_ref((spec.get("template") or {}).get("dataset")),
    desired_children=lambda obj, found, settings: desired_children(obj, next(iter(found.values()), None), settings),
    status_fields=lambda obj, settings, observed: model_status_fields(observed, objective_of(obj["spec"])),
    produces_model=True,
)
