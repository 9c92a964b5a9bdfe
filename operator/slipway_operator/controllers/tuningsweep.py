"""TuningSweep: waits for its dataset, then a ConfigMap (the tune workload's config) and a RayJob whose worker
group holds `parallelTrials` trials, each with the template's per-worker compute."""

from __future__ import annotations

from typing import Any

from slipway_operator import builders
from slipway_operator.api.tuningsweep import TuningSweepSpec
from slipway_operator.controllers.common import Desired, Settings, artifact_uri
from slipway_operator.controllers.trainingrun import dataset_uri
from slipway_operator.workloads import tune_config

PLURAL = "sweeps"


def desired_children(obj: dict[str, Any], dataset: dict[str, Any] | None, settings: Settings) -> Desired:
    """`dataset` is the DatasetPrep named by spec.template.dataset.ref, as observed (None when absent)."""
    spec = TuningSweepSpec.model_validate(obj["spec"])
    owner = builders.Owner.of(obj)
    data, waiting = dataset_uri(spec.template, dataset)
    if data is None:
        return Desired([], waiting_for=waiting)
    ref = spec.template.dataset.ref
    lineage = {"tuningSweep": owner.name, **({"datasetRef": ref} if ref else {})}
    config = tune_config(
        owner.name, spec, data, artifact_uri(settings, PLURAL, owner.namespace, owner.name), lineage=lineage
    )
    config_map = builders.config_map(owner, "tune", config)
    # Trials are single-worker: the Ray cluster has room for parallelTrials of them at once.
    resources = spec.template.resources.model_copy(update={"workers": spec.parallel_trials})
    job = builders.ray_job(
        owner,
        builders.Workload(
            step="tune",
            image=settings.image,
            resources=resources,
            config_map=config_map["metadata"]["name"],
            storage_secret=settings.storage_secret,
            ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
            backoff_limit=spec.failure_policy.backoff_limit,
            active_deadline_seconds=spec.failure_policy.active_deadline_seconds,
            suspend=spec.suspend,
        ),
    )
    return Desired([config_map, job])
