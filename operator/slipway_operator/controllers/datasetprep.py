"""DatasetPrep: a ConfigMap (the prep workload's config) and a RayJob that runs it."""

from __future__ import annotations

from typing import Any

from slipway_operator import builders
from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.controllers.common import Desired, Settings, artifact_uri
from slipway_operator.workloads import prep_config

PLURAL = "datasets"


def output_uri(settings: Settings, namespace: str, name: str, spec: DatasetPrepSpec) -> str:
    """Where the prepared dataset goes: `spec.output.uri`, or `<store>/datasets/<namespace>/<name>`."""
    return spec.output.uri or artifact_uri(settings, PLURAL, namespace, name)


def desired_children(obj: dict[str, Any], settings: Settings) -> Desired:
    spec = DatasetPrepSpec.model_validate(obj["spec"])
    owner = builders.Owner.of(obj)
    output = output_uri(settings, owner.namespace, owner.name, spec)
    config = prep_config(owner.name, spec, output)
    config_map = builders.config_map(owner, "prep", config)
    job = builders.ray_job(
        owner,
        builders.Workload(
            step="prep",
            image=settings.image,
            resources=spec.resources,
            config_map=config_map["metadata"]["name"],
            storage_secret=settings.storage_secret,
            source_secret=spec.source.secret_ref,
            salt=spec.privacy.salt_secret_ref,
            gpu=settings.gpu,
        ),
    )
    return Desired([config_map, job])
