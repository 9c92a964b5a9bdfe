"""The Kopf glue, thin: read what is there, ask the controllers, let the backend apply, patch status, post Events.

Run with `slipway operator` (or `kopf run -m slipway_operator.handlers`). Settings come from the environment
once, at start-up, here at the edge: SLIPWAY_BACKEND (kubernetes | local), SLIPWAY_IMAGE, SLIPWAY_STORE,
SLIPWAY_STORAGE_SECRET, SLIPWAY_STATE (the local backend's folder), SLIPWAY_METRICS_ADDRESS (host:port).
Slipway resources are always read from the cluster; where their children run is the backend's business.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from slipway_operator import metrics
from slipway_operator.api.common import GROUP, VERSION, Phase
from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.api.modeldeployment import ModelDeploymentSpec
from slipway_operator.api.validation import InvalidManifest, validate_manifest
from slipway_operator.backends import Backend
from slipway_operator.backends.kubernetes import KubernetesApi, KubernetesBackend
from slipway_operator.builders import suffixed
from slipway_operator.controllers import datasetprep, modeldeployment, trainingrun, tuningsweep
from slipway_operator.controllers.common import (
    APPLIED_HASH,
    CONFIG_HASH,
    Desired,
    Settings,
    artifact_uri,
    changed_paths,
    stamp,
)
from slipway_operator.runstatus import Observed, run_status
from slipway_operator.servermetrics import parse, total
from slipway_trainer import storage

API_VERSION = f"{GROUP}/{VERSION}"
RUN_RESYNC_SECONDS = 10.0
SERVING_RESYNC_SECONDS = 5.0
TERMINAL = {str(Phase.SUCCEEDED), str(Phase.FAILED)}


@dataclass
class Runtime:
    settings: Settings
    cluster: KubernetesApi
    backend: Backend


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime  # noqa: PLW0603 (made once per process, at the edge)
    if _runtime is None:
        settings = Settings(
            image=os.environ.get("SLIPWAY_IMAGE", "ghcr.io/slipway/trainer:0.1.0"),
            store_uri=os.environ.get("SLIPWAY_STORE", "file:///var/lib/slipway"),
            storage_secret=os.environ.get("SLIPWAY_STORAGE_SECRET") or None,
        )
        cluster = KubernetesApi()
        backend: Backend
        if os.environ.get("SLIPWAY_BACKEND", "kubernetes") == "local":
            from slipway_operator.backends.local import LocalBackend

            backend = LocalBackend(Path(os.environ.get("SLIPWAY_STATE", ".slipway/state")).resolve())
        else:
            backend = KubernetesBackend(cluster)
        _runtime = Runtime(settings, cluster, backend)
    return _runtime


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: its ServiceAccount; elsewhere: the kubeconfig that KUBECONFIG names now."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kopf.login_via_client(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    global _runtime  # noqa: PLW0603
    _runtime = None  # settings are read again at every start (tests start several operators in one process)
    metrics.reset()
    settings.persistence.finalizer = "slipway.dev/finalizer"
    settings.posting.level = 20  # Events from INFO up
    settings.execution.max_workers = int(os.environ.get("SLIPWAY_WORKERS", "8"))
    address = os.environ.get("SLIPWAY_METRICS_ADDRESS")
    if address:
        logger.info(f"operator metrics on http://{address.rpartition(':')[0]}:{metrics.serve(address)}/metrics")
    logger.info(f"backend: {runtime().backend.name}, store: {runtime().settings.store_uri}")


@kopf.on.cleanup()
def stop(**_: Any) -> None:
    if _runtime is not None:
        _runtime.backend.close()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _read(uri: str) -> dict[str, Any] | None:
    try:
        return storage.read_json(uri) if storage.exists(uri) else None
    except (OSError, ValueError):
        return None


_validated: dict[tuple[str, int], str | None] = {}


def _invalid(body: kopf.Body) -> str | None:
    """What only the operator can find wrong (the API server checked the rest), once per generation."""
    key = (str(body.metadata.uid), int(body.metadata.get("generation", 1)))
    if key not in _validated:
        try:
            manifest = {"apiVersion": body["apiVersion"], "kind": body["kind"], "spec": dict(body.spec)}
            validate_manifest({**manifest, "metadata": {"name": str(body.metadata.name)}})
            _validated[key] = None
        except InvalidManifest as err:
            _validated[key] = str(err)
    return _validated[key]


def _post(body: kopf.Body, kind: str, type_: str, reason: str, message: str) -> None:
    metrics.EVENTS.labels(kind, reason).inc()
    kopf.event(body, type=type_, reason=reason, message=message[:1024])


def _patch_status(body: kopf.Body, patch: kopf.Patch, kind: str, new: dict[str, Any]) -> None:
    """Only what changed; an Event on every phase change."""
    before = body.status.get("phase")
    if new.get("phase") and new["phase"] != before:
        bad = new["phase"] in (Phase.FAILED, Phase.INVALID, Phase.DEGRADED)
        _post(body, kind, "Warning" if bad else "Normal", str(new["phase"]), str(new.get("message", "")))
    changed = {k: v for k, v in new.items() if body.status.get(k) != v}
    if changed:
        patch.status.update(changed)
    metrics.phase(kind, str(body.metadata.namespace), str(body.metadata.name), new.get("phase") or before)


def _run_children(desired: Desired) -> tuple[str | None, dict[str, Any] | None]:
    """Apply a run's children unless its workload config changed after it started; (why refused, the RayJob)."""
    backend = runtime().backend
    children = stamp(desired.children)
    job = next(c for c in children if c["kind"] == "RayJob")
    found = backend.observe(job)
    annotations = ((found or {}).get("metadata") or {}).get("annotations") or {}
    if found and annotations.get(CONFIG_HASH) != job["metadata"]["annotations"][CONFIG_HASH]:
        config_map = next(c for c in children if c["kind"] == "ConfigMap")
        started = backend.observe(config_map) or {}
        import json

        paths = changed_paths(
            json.loads(next(iter((started.get("data") or {"": "{}"}).values()))),
            json.loads(next(iter(config_map["data"].values()))),
        )
        shown = ", ".join(p.removeprefix("spec.") for p in paths[:5]) or "the workload config"
        return (
            f"the spec changed after the run started ({shown}); a started run keeps the spec it started with: "
            "revert the change, or delete and re-create the resource to run it again",
            found,
        )
    if found is None or annotations.get(APPLIED_HASH) != job["metadata"]["annotations"][APPLIED_HASH]:
        backend.apply(children)
        found = backend.observe(job) if found is not None else None
    return None, found


def _reconcile_run(
    kind: str,
    body: kopf.Body,
    patch: kopf.Patch,
    desired: Callable[[], Desired],
    artifacts: str,
    extra: Callable[[Observed], dict[str, Any]],
) -> None:
    if body.status.get("phase") in TERMINAL and body.status.get("observedGeneration") == body.metadata.get(
        "generation"
    ):
        return  # finished, and nothing changed since: a timer tick costs nothing
    with metrics.reconcile(kind):
        observed = Observed(invalid=_invalid(body), suspended=bool(body.spec.get("suspend", False)))
        wanted = Desired([]) if observed.invalid else desired()
        observed.waiting_for = wanted.waiting_for
        observed.missing_crd = runtime().backend.missing_prerequisite()
        job_name = None
        if wanted.children and not observed.missing_crd:
            refused, job = _run_children(wanted)
            observed.invalid = refused
            observed.ray_job = (job or {}).get("status") or {}
            job_name = next(c for c in wanted.children if c["kind"] == "RayJob")["metadata"]["name"]
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
        if job_name:
            new["rayJobName"] = job_name
        _patch_status(body, patch, kind, new)


def _dependency(body: kopf.Body, ref: str | None) -> dict[str, Any] | None:
    if not ref:
        return None
    return runtime().cluster.get(API_VERSION, "DatasetPrep", str(body.metadata.namespace), ref)


# -- DatasetPrep ---------------------------------------------------------------------------------------------


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
@kopf.timer(GROUP, VERSION, "datasetpreps", interval=RUN_RESYNC_SECONDS, idle=0)
def reconcile_datasetprep(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    settings = runtime().settings
    spec = DatasetPrepSpec.model_validate(dict(body.spec))
    output = datasetprep.output_uri(settings, str(body.metadata.namespace), str(body.metadata.name), spec)
    _reconcile_run(
        "DatasetPrep",
        body,
        patch,
        lambda: datasetprep.desired_children(dict(body), settings),
        storage.join(output, "_run"),
        _prep_extra(output),
    )


# -- TrainingRun and TuningSweep ------------------------------------------------------------------------------


def _model_extra(observed: Observed) -> dict[str, Any]:
    result = observed.result or {}
    progress = observed.progress or {}
    out: dict[str, Any] = {}
    if progress.get("epoch"):
        out |= {"epoch": progress["epoch"], "totalEpochs": progress.get("totalEpochs")}
    if progress.get("maxTrials"):
        out["trials"] = {
            "total": progress.get("trialsDone", 0) + progress.get("trialsRunning", 0) + progress.get("trialsFailed", 0),
            "completed": progress.get("trialsDone", 0),
            "running": progress.get("trialsRunning", 0),
            "failed": progress.get("trialsFailed", 0),
        }
    if result.get("status") == "Succeeded":
        metrics_ = {k: float(v) for k, v in (result.get("metrics") or {}).items()}
        first = next(iter(metrics_.items()), None)
        out |= {
            "metrics": metrics_,
            "modelUri": result.get("modelUri"),
            "keyMetric": f"{first[0]}={first[1]:.4g}" if first else "",
            "lineage": result.get("lineage", {}),
        }
        if result.get("checkpointUri"):
            out["checkpointUri"] = result["checkpointUri"]
        if result.get("bestTrial"):
            best = result["bestTrial"]
            out |= {
                "bestTrial": {"id": best.get("id", ""), "params": best.get("params", {}), "metric": best.get("metric")},
                "trials": {k: v for k, v in (result.get("trials") or {}).items() if k != "notStarted"},
                "leaderboardUri": result.get("leaderboardUri"),
            }
    return out


@kopf.on.resume(GROUP, VERSION, "trainingruns")
@kopf.on.create(GROUP, VERSION, "trainingruns")
@kopf.on.update(GROUP, VERSION, "trainingruns", field="spec")
@kopf.timer(GROUP, VERSION, "trainingruns", interval=RUN_RESYNC_SECONDS, idle=0)
def reconcile_trainingrun(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    settings = runtime().settings
    name, namespace = str(body.metadata.name), str(body.metadata.namespace)
    _reconcile_run(
        "TrainingRun",
        body,
        patch,
        lambda: trainingrun.desired_children(
            dict(body), _dependency(body, (body.spec.get("dataset") or {}).get("ref")), settings
        ),
        artifact_uri(settings, trainingrun.PLURAL, namespace, name),
        _model_extra,
    )


@kopf.on.resume(GROUP, VERSION, "tuningsweeps")
@kopf.on.create(GROUP, VERSION, "tuningsweeps")
@kopf.on.update(GROUP, VERSION, "tuningsweeps", field="spec")
@kopf.timer(GROUP, VERSION, "tuningsweeps", interval=RUN_RESYNC_SECONDS, idle=0)
def reconcile_tuningsweep(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    settings = runtime().settings
    name, namespace = str(body.metadata.name), str(body.metadata.namespace)
    ref = ((body.spec.get("template") or {}).get("dataset") or {}).get("ref")
    _reconcile_run(
        "TuningSweep",
        body,
        patch,
        lambda: tuningsweep.desired_children(dict(body), _dependency(body, ref), settings),
        artifact_uri(settings, tuningsweep.PLURAL, namespace, name),
        _model_extra,
    )


# -- ModelDeployment ------------------------------------------------------------------------------------------


def _stub(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}}


def _observe_serving(body: kopf.Body) -> modeldeployment.Observed:
    rt = runtime()
    name, namespace = str(body.metadata.name), str(body.metadata.namespace)
    observed = modeldeployment.Observed(invalid=_invalid(body), now=time.time())
    if observed.invalid:
        return observed
    spec = ModelDeploymentSpec.model_validate(dict(body.spec))
    source = None
    if spec.model.from_training_run:
        source = rt.cluster.get(API_VERSION, "TrainingRun", namespace, spec.model.from_training_run)
    elif spec.model.from_tuning_sweep:
        source = rt.cluster.get(API_VERSION, "TuningSweep", namespace, spec.model.from_tuning_sweep)
    observed.source, observed.waiting_for = modeldeployment.source_of(spec, source)
    if spec.auto_update.enabled and spec.auto_update.selector:
        selector = modeldeployment.selector_string(spec.auto_update.selector.model_dump(by_alias=True))
        for kind in ("TrainingRun", "TuningSweep"):
            for obj in rt.cluster.list(API_VERSION, kind, namespace, selector):
                model = modeldeployment.model_of(obj)
                if model is not None:
                    observed.candidates.append(model)
    for track in (modeldeployment.STABLE, modeldeployment.CANARY):
        found = rt.backend.observe(_stub("apps/v1", "Deployment", namespace, suffixed(name, track)))
        observed.deployments[track] = found
        if found is not None:
            bodies, error = rt.backend.scrape(found, "/metrics")
            observed.traffic[track] = total([parse(b, name) for b in bodies])
            if error:
                observed.scrape_errors[track] = error
    observed.endpoint = rt.backend.endpoint(_stub("v1", "Service", namespace, name))
    return observed


@kopf.on.resume(GROUP, VERSION, "modeldeployments")
@kopf.on.create(GROUP, VERSION, "modeldeployments")
@kopf.on.update(GROUP, VERSION, "modeldeployments", field="spec")
@kopf.timer(GROUP, VERSION, "modeldeployments", interval=SERVING_RESYNC_SECONDS, idle=0)
def reconcile_modeldeployment(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    with metrics.reconcile("ModelDeployment"):
        rt = runtime()
        plan = modeldeployment.plan(dict(body), _observe_serving(body), rt.settings)
        if plan.children:
            rt.backend.apply(plan.children)
        for api_version, kind, child in plan.delete:
            rt.backend.delete(api_version, kind, str(body.metadata.namespace), child)
        for type_, reason, message in plan.events:
            _post(body, "ModelDeployment", type_, reason, message)
        _patch_status(body, patch, "ModelDeployment", plan.status)


def _local(**_: Any) -> bool:
    return runtime().backend.name == "local"


@kopf.on.delete(GROUP, VERSION, "modeldeployments", when=_local)
@kopf.on.delete(GROUP, VERSION, "trainingruns", when=_local)
@kopf.on.delete(GROUP, VERSION, "tuningsweeps", when=_local)
@kopf.on.delete(GROUP, VERSION, "datasetpreps", when=_local)
def stop_local_children(body: kopf.Body, **_: Any) -> None:
    """On Kubernetes the garbage collector deletes the children (ownerReferences) and no finalizer is needed;
    the local backend's processes are outside Kubernetes: a finalizer holds the resource until they stop."""
    rt = runtime()
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    if body["kind"] == "ModelDeployment":
        for track in (modeldeployment.STABLE, modeldeployment.CANARY):
            rt.backend.delete("apps/v1", "Deployment", namespace, suffixed(name, track))
        rt.backend.delete("v1", "Service", namespace, name)
    else:
        step = {"DatasetPrep": "prep", "TrainingRun": "train", "TuningSweep": "tune"}[str(body["kind"])]
        rt.backend.delete("ray.io/v1", "RayJob", namespace, suffixed(name, step))


@kopf.on.delete(GROUP, VERSION, "modeldeployments", optional=True)
@kopf.on.delete(GROUP, VERSION, "trainingruns", optional=True)
@kopf.on.delete(GROUP, VERSION, "tuningsweeps", optional=True)
@kopf.on.delete(GROUP, VERSION, "datasetpreps", optional=True)
def forget(body: kopf.Body, **_: Any) -> None:
    """Keeps the resources-by-phase metric true when resources go away (no finalizer: best effort)."""
    metrics.phase(str(body["kind"]), str(body.metadata.namespace), str(body.metadata.name), None)
