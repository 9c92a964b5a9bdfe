"""Workload configs built from resource specs: what `python -m slipway_trainer <step>` receives.

Only the data fields travel: Kubernetes-only fields (resources, Secret references) stay behind, and
credentials never enter a config (they reach the workload as environment variables from a Secret).
"""

from __future__ import annotations

from typing import Any

from slipway_operator.api.common import TrackingSpec
from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.api.modeldeployment import ModelDeploymentSpec
from slipway_operator.api.trainingrun import TrainingRunSpec, TrialTemplate
from slipway_operator.api.tuningsweep import TuningSweepSpec
from slipway_trainer.config.base import Tracking
from slipway_trainer.config.prep import PrepConfig
from slipway_trainer.config.serve import ServeConfig
from slipway_trainer.config.train import TrainConfig
from slipway_trainer.config.tune import TuneConfig

KUBERNETES_ONLY_PREP_FIELDS: dict[str, Any] = {
    "resources": True,
    "refresh": True,
    "source": {"secret_ref"},
    "privacy": {"salt_secret_ref"},
}


def prep_config(
    name: str, spec: DatasetPrepSpec, output_uri: str, artifact_uri: str | None = None, refresh: bool = False
) -> PrepConfig:
    """The data-prep workload's config for a DatasetPrep."""
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=KUBERNETES_ONLY_PREP_FIELDS)
    return PrepConfig.model_validate(
        {
            "name": name,
            "spec": data,
            "outputUri": output_uri,
            "artifactUri": artifact_uri,
            "workers": spec.resources.workers,
            "refresh": refresh,
        }
    )


KUBERNETES_ONLY_TRAIN_FIELDS: dict[str, Any] = {
    "dataset": True,
    "resources": True,
    "failure_policy": True,
    "ttl_seconds_after_finished": True,
    "suspend": True,
    "tracking": True,
}


def train_config(
    name: str,
    spec: TrainingRunSpec | TrialTemplate,
    dataset_uri: str,
    artifact_uri: str,
    *,
    workers: int | None = None,
    gpus_per_worker: int | None = None,
    cpus_per_worker: float | None = None,
    lineage: dict[str, str] | None = None,
    tracking: Tracking | None = None,
) -> TrainConfig:
    """The training workload's config for a TrainingRun (or a sweep's template). `workers` and
    `gpusPerWorker` default to the spec's resources; a local run passes what this machine has."""
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=KUBERNETES_ONLY_TRAIN_FIELDS)
    resources = spec.resources
    return TrainConfig.model_validate(
        {
            "name": name,
            "spec": data,
            "datasetUri": dataset_uri,
            "artifactUri": artifact_uri,
            "workers": resources.workers if workers is None else workers,
            "gpusPerWorker": resources.gpus_per_worker if gpus_per_worker is None else gpus_per_worker,
            "cpusPerWorker": resources.cpus_per_worker if cpus_per_worker is None else cpus_per_worker,
            "maxFailures": spec.failure_policy.max_failures,
            "lineage": lineage or {},
            "tracking": tracking,
        }
    )


KUBERNETES_ONLY_SWEEP_FIELDS: dict[str, Any] = {
    "template": True,
    "failure_policy": True,
    "ttl_seconds_after_finished": True,
    "suspend": True,
    "tracking": True,
}
KUBERNETES_ONLY_TEMPLATE_FIELDS: dict[str, Any] = {"dataset": True, "resources": True, "failure_policy": True}


def tune_config(
    name: str,
    spec: TuningSweepSpec,
    dataset_uri: str,
    artifact_uri: str,
    *,
    cpus_per_trial: float | None = None,
    gpus_per_trial: int | None = None,
    lineage: dict[str, str] | None = None,
    tracking: Tracking | None = None,
) -> TuneConfig:
    """The tuning workload's config for a TuningSweep: each trial gets the template's per-worker compute
    (a local run passes what this machine has)."""
    resources = spec.template.resources
    return TuneConfig.model_validate(
        {
            "name": name,
            "spec": spec.model_dump(
                mode="json", by_alias=True, exclude_none=True, exclude=KUBERNETES_ONLY_SWEEP_FIELDS
            ),
            "template": spec.template.model_dump(
                mode="json", by_alias=True, exclude_none=True, exclude=KUBERNETES_ONLY_TEMPLATE_FIELDS
            ),
            "datasetUri": dataset_uri,
            "artifactUri": artifact_uri,
            "cpusPerTrial": resources.cpus_per_worker if cpus_per_trial is None else cpus_per_trial,
            "gpusPerTrial": resources.gpus_per_worker if gpus_per_trial is None else gpus_per_trial,
            "lineage": lineage or {},
            "tracking": tracking,
        }
    )


def tracking_config(spec: TrackingSpec | None, default_uri: str | None, namespace: str) -> Tracking | None:
    """Where a run is logged: its own `tracking` over the operator's default server; none when neither names a
    server or the spec turns it off. The experiment defaults to the namespace."""
    spec = spec or TrackingSpec()
    uri = spec.uri or default_uri
    if not spec.enabled or not uri:
        return None
    return Tracking(uri=uri, experiment=spec.experiment or namespace, tags={"slipway.dev/namespace": namespace})


OPERATOR_ONLY_MONITORING_FIELDS: dict[str, Any] = {"quality": {"metric", "threshold", "min_rows"}}
"""Judged by the operator from /metrics: a changed threshold is not a new revision of the servers."""


def serve_config(
    name: str,
    spec: ModelDeploymentSpec,
    model_uri: str,
    *,
    port: int = 8080,
    payload_uri: str | None = None,
    model_version: str = "1",
    peers: str | None = None,
    mirror: str | None = None,
    grpc_port: int | None = None,
) -> ServeConfig:
    """The inference server's config for a ModelDeployment: its name is the model's name on the wire, its version
    the revision; `payload_uri` is where payload logs go unless `monitoring.payloadLog.uri` says; `peers` how a
    server finds the others, `mirror` where copies of requests go in a shadow stage, `grpc_port` the gRPC service's
    port (none of these is part of the revision: they do not change what is served)."""
    monitoring = spec.monitoring.model_dump(mode="json", by_alias=True, exclude=OPERATOR_ONLY_MONITORING_FIELDS)
    if spec.monitoring.payload_log.enabled and not spec.monitoring.payload_log.uri:
        monitoring["payloadLog"]["uri"] = payload_uri
    return ServeConfig.model_validate(
        {
            "modelUri": model_uri,
            "modelName": name,
            "modelVersion": model_version,
            "host": "0.0.0.0",  # in its pod, reached through the Service
            "port": port,
            "server": spec.server.model_dump(mode="json", by_alias=True),
            "monitoring": monitoring,
            "device": "cuda" if spec.resources.gpus else "cpu",
            "peers": peers,
            "mirror": mirror,
            "grpcPort": grpc_port,
        }
    )
