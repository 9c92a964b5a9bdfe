"""One reconcile pass of any Slipway resource, with no Kopf in it: the Kopf handlers (`slipway operator`) and the
embedded runner (`slipway run`) both call `reconcile(obj, runtime)` and apply what it returns.

A pass reads what it needs (dependencies through `Cluster`, children through the `Backend`, results from the
artifact store), asks the pure controllers, lets the backend apply the children, and returns the new status
and the Events to post. `obj` is the resource as a plain dict (apiVersion, kind, metadata, spec, status).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from slipway_operator.api.common import GROUP, VERSION, Phase
from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.api.modeldeployment import ModelDeploymentSpec
from slipway_operator.api.validation import InvalidManifest, validate_manifest
from slipway_operator.backends import Backend
from slipway_operator.builders import suffixed
from slipway_operator.controllers import datasetprep, modeldeployment, trainingrun, tuningsweep
from slipway_operator.controllers.common import (
    APPLIED_HASH,
    CONFIG_HASH,
    Desired,
    Settings,
    artifact_uri,
    changed_paths,
    file_uri_paths,
    stamp,
)
from slipway_operator.runstatus import Observed, run_status
from slipway_operator.servermetrics import parse, total
from slipway_trainer import storage

API_VERSION = f"{GROUP}/{VERSION}"
TERMINAL = {str(Phase.SUCCEEDED), str(Phase.FAILED)}
STEPS = {"DatasetPrep": "prep", "TrainingRun": "train", "TuningSweep": "tune"}


class Cluster(Protocol):
    """Where Slipway resources are read: the Kubernetes API, or `slipway run`'s manifests."""

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]: ...


@dataclass
class Runtime:
    settings: Settings
    cluster: Cluster
    backend: Backend


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (Normal|Warning, reason, message)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _read(uri: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON document, None), (None, None) when it is not there yet, or (None, what the store said)."""
    try:
        if storage.exists(uri):
            return storage.read_json(uri), None
        bucket = uri.split("://", 1)[1].split("/", 1)[0] if uri.startswith("s3://") else None
        if bucket and not storage.exists(f"s3://{bucket}"):
            return None, f"{uri}: no such bucket {bucket!r}: create it, or point the store URI at one that exists"
        return None, None
    except Exception as err:  # s3fs maps S3 errors to OSError, but an unreachable endpoint is botocore's own error
        return None, storage_error(uri, err)


def storage_error(uri: str, err: BaseException) -> str:
    """The store's own reason, in one line: access denied, no such bucket, unreachable. Never credentials."""
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{uri}: {type(err).__name__}: {text[:300]}"


_validated: dict[tuple[str, int, str], str | None] = {}


def invalid(obj: dict[str, Any], settings: Settings | None = None) -> str | None:
    """What only the operator can find wrong (the API server checked the rest), once per generation; with
    `settings` that refuse file:// URIs (the kubernetes backend), any file:// URI in the spec too."""
    if settings is not None and not settings.allow_file_uris:
        paths = file_uri_paths(obj["spec"])
        if paths:
            return (
                f"{', '.join(paths)}: a file:// URI names a path on whichever node a pod runs on; use s3:// (or "
                "another shared store), or start the operator with --allow-file-uris when every node mounts it"
            )
    meta = obj["metadata"]
    key = (str(meta.get("uid", "")), int(meta.get("generation", 1)), json.dumps(obj["spec"], sort_keys=True))
    if key not in _validated:
        try:
            validate_manifest(
                {
                    "apiVersion": obj["apiVersion"],
                    "kind": obj["kind"],
                    "metadata": {"name": meta["name"]},
                    "spec": obj["spec"],
                }
            )
            _validated[key] = None
        except InvalidManifest as err:
            _validated[key] = str(err)
    return _validated[key]


def with_phase_event(before: dict[str, Any], outcome: Outcome) -> Outcome:
    """An Event on every phase change (Warning for Failed, Invalid and Degraded)."""
    phase = outcome.status.get("phase")
    if phase and phase != before.get("phase"):
        bad = phase in (Phase.FAILED, Phase.INVALID, Phase.DEGRADED)
        outcome.events.insert(0, ("Warning" if bad else "Normal", str(phase), str(outcome.status.get("message", ""))))
    return outcome


def reconcile(obj: dict[str, Any], rt: Runtime) -> Outcome | None:
    """One pass; None when there is nothing to do (a finished run whose spec did not change)."""
    status = obj.get("status") or {}
    kind = obj["kind"]
    if kind == "ModelDeployment":
        return with_phase_event(status, reconcile_serving(obj, rt))
    if status.get("phase") in TERMINAL and status.get("observedGeneration") == obj["metadata"].get("generation"):
        return None  # finished, and nothing changed since: a resync costs nothing
    return with_phase_event(status, reconcile_run(obj, rt))


# -- runs: DatasetPrep, TrainingRun, TuningSweep ---------------------------------------------------------------


def _dependency(rt: Runtime, obj: dict[str, Any], ref: str | None) -> dict[str, Any] | None:
    return rt.cluster.get(API_VERSION, "DatasetPrep", obj["metadata"]["namespace"], ref) if ref else None


def _run_children(rt: Runtime, desired: Desired) -> tuple[str | None, dict[str, Any] | None]:
    """Apply a run's children unless its workload config changed after it started; (why refused, the RayJob)."""
    children = stamp(desired.children)
    job = next(c for c in children if c["kind"] == "RayJob")
    found = rt.backend.observe(job)
    annotations = ((found or {}).get("metadata") or {}).get("annotations") or {}
    if found and annotations.get(CONFIG_HASH) != job["metadata"]["annotations"][CONFIG_HASH]:
        config_map = next(c for c in children if c["kind"] == "ConfigMap")
        started = (rt.backend.observe(config_map) or {}).get("data") or {}
        paths = changed_paths(
            json.loads(next(iter(started.values()), "{}")), json.loads(next(iter(config_map["data"].values())))
        )
        shown = ", ".join(p.removeprefix("spec.") for p in paths[:5]) or "the workload config"
        return (
            f"the spec changed after the run started ({shown}); a started run keeps the spec it started with: "
            "revert the change, or delete and re-create the resource to run it again",
            found,
        )
    if found is None or annotations.get(APPLIED_HASH) != job["metadata"]["annotations"][APPLIED_HASH]:
        rt.backend.apply(children)
        found = rt.backend.observe(job) if found is not None else None
    return None, found


def _where(obj: dict[str, Any], rt: Runtime) -> tuple[Callable[[], Desired], str, Callable[[Observed], dict[str, Any]]]:
    """(the desired children, where the workload writes progress and result, the kind's own status fields)."""
    settings, meta, spec = rt.settings, obj["metadata"], obj["spec"]
    name, namespace = meta["name"], meta["namespace"]
    if obj["kind"] == "DatasetPrep":
        output = datasetprep.output_uri(settings, namespace, name, DatasetPrepSpec.model_validate(spec))
        return (
            lambda: datasetprep.desired_children(obj, settings),
            storage.join(output, "_run"),
            _prep_extra(output),
        )
    if obj["kind"] == "TrainingRun":
        ref = (spec.get("dataset") or {}).get("ref")
        return (
            lambda: trainingrun.desired_children(obj, _dependency(rt, obj, ref), settings),
            artifact_uri(settings, trainingrun.PLURAL, namespace, name),
            _model_extra,
        )
    ref = ((spec.get("template") or {}).get("dataset") or {}).get("ref")
    return (
        lambda: tuningsweep.desired_children(obj, _dependency(rt, obj, ref), settings),
        artifact_uri(settings, tuningsweep.PLURAL, namespace, name),
        _model_extra,
    )


def reconcile_run(obj: dict[str, Any], rt: Runtime) -> Outcome:
    status = obj.get("status") or {}
    meta = obj["metadata"]
    desired, artifacts, extra = _where(obj, rt)
    observed = Observed(invalid=invalid(obj, rt.settings), suspended=bool(obj["spec"].get("suspend", False)))
    wanted = Desired([]) if observed.invalid else desired()
    observed.waiting_for = wanted.waiting_for
    observed.missing_crd = rt.backend.missing_prerequisite()
    job_name = None
    if wanted.children and not observed.missing_crd:
        refused, job = _run_children(rt, wanted)
        observed.invalid = refused
        observed.ray_job = (job or {}).get("status") or {}
        job_name = next(c for c in wanted.children if c["kind"] == "RayJob")["metadata"]["name"]
        observed.progress, progress_error = _read(storage.join(artifacts, "progress.json"))
        observed.result, result_error = _read(storage.join(artifacts, "result.json"))
        observed.store_error = result_error or progress_error
    computed = run_status(observed, list(status.get("conditions", [])), int(meta.get("generation", 1)), _now())
    new = {
        "observedGeneration": meta.get("generation"),
        "phase": str(computed.phase),
        "conditions": computed.conditions,
        "message": computed.message,
        "progress": computed.progress,
        "artifactUri": artifacts,
        **extra(observed),
    }
    if job_name:
        new["rayJobName"] = job_name
    return Outcome(new)


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


def _model_extra(observed: Observed) -> dict[str, Any]:
    result = observed.result or {}
    progress = observed.progress or {}
    out: dict[str, Any] = {}
    if progress.get("epoch"):
        out |= {"epoch": progress["epoch"], "totalEpochs": progress.get("totalEpochs")}
    resumed = result.get("resumedFrom") or progress.get("resumedFrom")
    if resumed:  # a worker was lost and the loop went on from a checkpoint: say from which epochs
        out["resumedFrom"] = list(resumed)
    if progress.get("maxTrials"):
        done, running, failed = (progress.get(k, 0) for k in ("trialsDone", "trialsRunning", "trialsFailed"))
        out["trials"] = {"total": done + running + failed, "completed": done, "running": running, "failed": failed}
    if result.get("status") != "Succeeded":
        return out
    metrics = {k: float(v) for k, v in (result.get("metrics") or {}).items()}
    first = next(iter(metrics.items()), None)
    out |= {
        "metrics": metrics,
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


# -- ModelDeployment -------------------------------------------------------------------------------------------


def _stub(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}}


def observe_serving(obj: dict[str, Any], rt: Runtime) -> modeldeployment.Observed:
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    observed = modeldeployment.Observed(invalid=invalid(obj, rt.settings), now=time.time())
    if observed.invalid:
        return observed
    spec = ModelDeploymentSpec.model_validate(obj["spec"])
    source = None
    if spec.model.from_training_run:
        source = rt.cluster.get(API_VERSION, "TrainingRun", namespace, spec.model.from_training_run)
    elif spec.model.from_tuning_sweep:
        source = rt.cluster.get(API_VERSION, "TuningSweep", namespace, spec.model.from_tuning_sweep)
    observed.source, observed.waiting_for = modeldeployment.source_of(spec, source)
    if spec.auto_update.enabled and spec.auto_update.selector:
        selector = modeldeployment.selector_string(spec.auto_update.selector.model_dump(by_alias=True))
        for kind in ("TrainingRun", "TuningSweep"):
            for candidate in rt.cluster.list(API_VERSION, kind, namespace, selector):
                model = modeldeployment.model_of(candidate)
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


def reconcile_serving(obj: dict[str, Any], rt: Runtime) -> Outcome:
    plan = modeldeployment.plan(obj, observe_serving(obj, rt), rt.settings)
    if plan.children:
        rt.backend.apply(plan.children)
    for api_version, kind, child in plan.delete:
        rt.backend.delete(api_version, kind, obj["metadata"]["namespace"], child)
    return Outcome(plan.status, list(plan.events))


def stop_children(obj: dict[str, Any], rt: Runtime) -> None:
    """What a deleted resource leaves outside Kubernetes (the local backend's processes)."""
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    if obj["kind"] == "ModelDeployment":
        for track in (modeldeployment.STABLE, modeldeployment.CANARY):
            rt.backend.delete("apps/v1", "Deployment", namespace, suffixed(name, track))
        rt.backend.delete("v1", "Service", namespace, name)
    else:
        rt.backend.delete("ray.io/v1", "RayJob", namespace, suffixed(name, STEPS[obj["kind"]]))
