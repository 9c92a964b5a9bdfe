"""The Kopf glue (kubernetes backend), thin: read what is there, ask the controllers, apply, patch status.

Run with `kopf run -m slipway_operator.handlers` (or `slipway operator`, to come). Settings come from the
environment once, at start-up, here at the edge: SLIPWAY_IMAGE, SLIPWAY_STORE, SLIPWAY_STORAGE_SECRET.
Implemented so far: DatasetPrep and TrainingRun (children, dependencies, status from the RayJob and the
workload's progress.json / result.json). TuningSweep and ModelDeployment follow.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from slipway_operator.api.common import GROUP, VERSION
from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.controllers import datasetprep, trainingrun
from slipway_operator.controllers.common import Desired, Settings, artifact_uri
from slipway_operator.runstatus import Observed, run_status
from slipway_trainer import storage

FIELD_MANAGER = "slipway"
RESYNC_SECONDS = 5.0


def settings_from_environment() -> Settings:
    return Settings(
        image=os.environ.get("SLIPWAY_IMAGE", "ghcr.io/slipway/trainer:0.1.0"),
        store_uri=os.environ.get("SLIPWAY_STORE", "file:///var/lib/slipway"),
        storage_secret=os.environ.get("SLIPWAY_STORAGE_SECRET") or None,
    )


SETTINGS = settings_from_environment()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: its ServiceAccount; elsewhere: the kubeconfig that KUBECONFIG names now."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kopf.login_via_client(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global SETTINGS  # noqa: PLW0603 (settings are read once per start, at the edge)
    SETTINGS = settings_from_environment()
    settings.persistence.finalizer = "slipway.dev/finalizer"
    settings.posting.level = 20  # Events from INFO up


def _dynamic() -> DynamicClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return DynamicClient(client.ApiClient())  # type: ignore[no-untyped-call]


def _apply(children: list[dict[str, Any]]) -> None:
    api = _dynamic()
    for child in children:
        resource = api.resources.get(api_version=child["apiVersion"], kind=child["kind"])
        resource.server_side_apply(
            body=child,
            name=child["metadata"]["name"],
            namespace=child["metadata"]["namespace"],
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )


def _get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found = _dynamic().resources.get(api_version=api_version, kind=kind).get(name=name, namespace=namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    result: dict[str, Any] = found.to_dict()
    return result


def _kuberay_missing() -> str | None:
    try:
        client.ApiextensionsV1Api(_dynamic().client).read_custom_resource_definition("rayjobs.ray.io")
    except ApiException as err:
        if err.status == 404:
            return "the RayJob CRD (rayjobs.ray.io)"
        raise
    return None


def _read(uri: str) -> dict[str, Any] | None:
    try:
        return storage.read_json(uri) if storage.exists(uri) else None
    except (OSError, ValueError):
        return None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _reconcile(
    body: kopf.Body, patch: kopf.Patch, desired: Desired, artifacts: str, extra: Callable[[Observed], dict[str, Any]]
) -> None:
    missing = _kuberay_missing()
    observed = Observed(
        waiting_for=desired.waiting_for, missing_crd=missing, suspended=bool(body.spec.get("suspend", False))
    )
    if not desired.waiting_for and not missing:
        _apply(desired.children)
        job = next(c for c in desired.children if c["kind"] == "RayJob")
        found = _get("ray.io/v1", "RayJob", job["metadata"]["namespace"], job["metadata"]["name"])
        observed.ray_job = (found or {}).get("status") or {}
        observed.progress = _read(storage.join(artifacts, "progress.json"))
        observed.result = _read(storage.join(artifacts, "result.json"))
    status = run_status(
        observed, list(body.status.get("conditions", [])), int(body.metadata.get("generation", 1)), _now()
    )
    new = {
        "observedGeneration": body.metadata.get("generation"),
        "phase": str(status.phase),
        "conditions": status.conditions,
        "message": status.message,
        "progress": status.progress,
        "artifactUri": artifacts,
        **extra(observed),
    }
    if observed.ray_job is not None:
        job_name = next(c for c in desired.children if c["kind"] == "RayJob")["metadata"]["name"]
        new["rayJobName"] = job_name
    changed = {k: v for k, v in new.items() if body.status.get(k) != v}
    if changed:
        patch.status.update(changed)


def _prep_extra(output: str) -> Callable[[Observed], dict[str, Any]]:
    def extra(observed: Observed) -> dict[str, Any]:
        result = observed.result or {}
        if result.get("status") != "Succeeded":
            return {}
        return {
            "outputUri": output,
            "manifestUri": result.get("manifestUri"),
            "fingerprint": result.get("fingerprint"),
            "rows": result.get("rows"),
            "droppedRows": result.get("droppedRows", {}),
        }

    return extra


@kopf.on.resume(GROUP, VERSION, "datasetpreps")
@kopf.on.create(GROUP, VERSION, "datasetpreps")
@kopf.on.update(GROUP, VERSION, "datasetpreps", field="spec")
@kopf.timer(GROUP, VERSION, "datasetpreps", interval=RESYNC_SECONDS, idle=0)
def reconcile_datasetprep(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    spec = DatasetPrepSpec.model_validate(dict(body.spec))
    name, namespace = str(body.metadata.name), str(body.metadata.namespace)
    output = datasetprep.output_uri(SETTINGS, namespace, name, spec)
    desired = datasetprep.desired_children(dict(body), SETTINGS)
    _reconcile(body, patch, desired, storage.join(output, "_run"), _prep_extra(output))


def _train_extra(observed: Observed) -> dict[str, Any]:
    result = observed.result or {}
    progress = observed.progress or {}
    out: dict[str, Any] = {}
    if progress.get("epoch"):
        out |= {"epoch": progress["epoch"], "totalEpochs": progress.get("totalEpochs")}
    if result.get("status") == "Succeeded":
        metrics = {k: float(v) for k, v in (result.get("metrics") or {}).items()}
        first = next(iter(metrics.items()), None)
        out |= {
            "metrics": metrics,
            "modelUri": result.get("modelUri"),
            "checkpointUri": result.get("checkpointUri"),
            "keyMetric": f"{first[0]}={first[1]:.4g}" if first else "",
            "lineage": result.get("lineage", {}),
        }
    return out


@kopf.on.resume(GROUP, VERSION, "trainingruns")
@kopf.on.create(GROUP, VERSION, "trainingruns")
@kopf.on.update(GROUP, VERSION, "trainingruns", field="spec")
@kopf.timer(GROUP, VERSION, "trainingruns", interval=RESYNC_SECONDS, idle=0)
def reconcile_trainingrun(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    name, namespace = str(body.metadata.name), str(body.metadata.namespace)
    ref = (body.spec.get("dataset") or {}).get("ref")
    dataset = _get(f"{GROUP}/{VERSION}", "DatasetPrep", namespace, ref) if ref else None
    desired = trainingrun.desired_children(dict(body), dataset, SETTINGS)
    _reconcile(body, patch, desired, artifact_uri(SETTINGS, trainingrun.PLURAL, namespace, name), _train_extra)
