"""TrainingRun: waits for its DatasetPrep, then a ConfigMap (the train workload's config) and a RayJob."""

from __future__ import annotations

from typing import Any

from slipway_operator import builders
from slipway_operator.api.common import Phase
from slipway_operator.api.trainingrun import TrainingRunSpec, TrialTemplate
from slipway_operator.controllers.common import Desired, Settings, artifact_uri, phase_of, run_job
from slipway_operator.workloads import train_config

PLURAL = "runs"


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
    config = train_config(
        owner.name, spec, data, artifact_uri(settings, PLURAL, owner.namespace, owner.name), lineage=lineage
    )
    config_map = builders.config_map(owner, "train", config)
    job = run_job(
        owner,
        "train",
        settings,
        spec.resources,
        config_map,
        spec.failure_policy,
        spec.ttl_seconds_after_finished,
        spec.suspend,
    )
    return Desired([config_map, job])
