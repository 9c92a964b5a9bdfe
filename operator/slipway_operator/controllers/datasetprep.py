"""DatasetPrep: a ConfigMap (the prep workload's config) and a RayJob that runs it."""

from __future__ import annotations

from typing import Any

from slipway_operator import builders
from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.controllers.common import Desired, RunController, Settings, artifact_uri
from slipway_operator.runstatus import Observed
from slipway_operator.workloads import prep_config
from slipway_trainer import storage

STEP = "prep"
ARTIFACT_FOLDER = "datasets"


def output_uri(settings: Settings, namespace: str, name: str, spec: DatasetPrepSpec) -> str:
    """Where the prepared dataset goes: `spec.output.uri`, or `<store>/datasets/<namespace>/<name>`."""
    return spec.output.uri or artifact_uri(settings, ARTIFACT_FOLDER, namespace, name)


def desired_children(obj: dict[str, Any], settings: Settings) -> Desired:
    spec = DatasetPrepSpec.model_validate(obj["spec"])
    owner = builders.Owner.of(obj)
    output = output_uri(settings, owner.namespace, owner.name, spec)
    config = prep_config(owner.name, spec, output)
    config_map = builders.config_map(owner, STEP, config)
    job = builders.ray_job(
        owner,
        builders.Workload(
            step=STEP,
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


def run_folder(obj: dict[str, Any], settings: Settings) -> str:
    """The workload writes its progress and result into `_run` next to the prepared dataset."""
    meta = obj["metadata"]
    spec = DatasetPrepSpec.model_validate(obj["spec"])
    return storage.join(output_uri(settings, meta["namespace"], meta["name"], spec), "_run")


def status_fields(obj: dict[str, Any], settings: Settings, observed: Observed) -> dict[str, Any]:
    """Where the prepared dataset is and what it holds, once the prep succeeded."""
    result = observed.result
    if result is None or not result.succeeded:
        return {}
    meta = obj["metadata"]
    return {
        "outputUri": output_uri(settings, meta["namespace"], meta["name"], DatasetPrepSpec.model_validate(obj["spec"])),
        "manifestUri": result.manifest_uri,
        "fingerprint": result.fingerprint,
        "rows": result.rows,
        "droppedRows": result.dropped_rows or {},
    }


CONTROLLER = RunController(
    kind="DatasetPrep",
    step=STEP,
    artifact_folder=ARTIFACT_FOLDER,
    references=lambda spec: [],
    desired_children=lambda obj, found, settings: desired_children(obj, settings),
    status_fields=status_fields,
    artifacts=run_folder,
)
