"""One reconcile pass of any Slipway resource, with no Kopf in it: the Kopf handlers (`slipway operator`) and the
embedded runner (`slipway run`) both call `reconcile(obj, runtime)` and apply what it returns.

A pass reads what it needs (dependencies through `Cluster`, children through the `Backend`, results from the
artifact store), asks the pure controllers, lets the backend apply the children, and returns the new status
and the Events to post. `obj` is the resource as a plain dict (apiVersion, kind, metadata, spec, status).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from slipway_operator import api, diagnosis, registry
from slipway_operator.api.common import GROUP, VERSION, Phase
from slipway_operator.api.modeldeployment import ModelDeploymentSpec
from slipway_operator.api.validation import InvalidManifest, validate_manifest
from slipway_operator.backends import ApplyRefused, Backend
from slipway_operator.builders import job_config, suffixed
from slipway_operator.controllers import datasetprep, kinds, modeldeployment, retrain
from slipway_operator.controllers.common import (
    APPLIED_HASH,
    CONFIG_HASH,
    Desired,
    Ref,
    RunController,
    ServingController,
    Settings,
    changed_paths,
    file_uri_paths,
    stamp,
)
from slipway_operator.diagnosis import Diagnosis
from slipway_operator.queueing import queue_state
from slipway_operator.runstatus import Observed, condition, may_have_written, run_status
from slipway_operator.servermetrics import parse, total
from slipway_trainer import storage
from slipway_trainer.artifacts import DRIVER_LOG, PROGRESS, RESULT, Artifact, ArtifactError, Progress, Result

API_VERSION = f"{GROUP}/{VERSION}"
LOG = logging.getLogger(__name__)
TERMINAL = {str(Phase.SUCCEEDED), str(Phase.FAILED)}
# Workload config fields the operator derives from its store (not from the spec): when only these changed, the
# operator was restarted with another --store.
STORE_PATHS = {"outputUri", "artifactUri", "datasetUri"}


class Cluster(Protocol):
    """Where Slipway resources are read: the Kubernetes API, or `slipway run`'s manifests."""

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]: ...

    def create(self, obj: dict[str, Any]) -> None:
        """Create a Slipway resource (a retrain run); one that exists already is left as it is."""

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete a Slipway resource; one that is gone already is fine."""


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


# A bucket found to exist is not asked about again for this long: hundreds of runs that wait for their result.json
# would otherwise ask on every pass, for every artifact not written yet.
BUCKET_RECHECK_SECONDS = 60.0
_buckets_found: dict[str, float] = {}  # bucket -> when it was last found


def _read(uri: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON document, None), (None, None) when it is not there yet, or (None, what the store said). One GET
    (not a HEAD, then a GET): an object not there is the store's FileNotFoundError, and then whether its bucket
    exists tells "not written yet" from "no such bucket"."""
    try:
        return storage.read_json(uri), None
    except FileNotFoundError:
        pass
    except Exception as err:  # s3fs maps S3 errors to OSError, but an unreachable endpoint is botocore's own error
        return None, storage_error(uri, err)
    bucket = uri.split("://", 1)[1].split("/", 1)[0] if uri.startswith("s3://") else None
    found_at = _buckets_found.get(bucket or "")
    if bucket is None or (found_at is not None and time.monotonic() - found_at < BUCKET_RECHECK_SECONDS):
        return None, None
    try:
        if not storage.exists(f"s3://{bucket}"):
            return None, f"{uri}: no such bucket {bucket!r}: create it, or point the store URI at one that exists"
    except Exception as err:
        return None, storage_error(uri, err)
    _buckets_found[bucket] = time.monotonic()
    return None, None


A = TypeVar("A", bound=Artifact)


CLOCK_SKEW_SECONDS = 5


def _read_artifact(uri: str, model: type[A], since: str | None = None) -> tuple[A | None, str | None, str | None]:
    """(the artifact, what the store said, how it breaks its contract): each None when it does not apply. With
    `since` (when the resource or round began), one written before is another run's, left under the same name (a
    resource deleted and re-created): not there yet."""
    data, store_error = _read(uri)
    if data is None:
        return None, store_error, None
    try:
        found = model.read(data, uri)
    except ArtifactError as err:
        return None, None, str(err)
    if since and _before(_written_at(found), since):
        return None, None, None
    return found, None, None


def _written_at(artifact: Artifact) -> str | None:
    if isinstance(artifact, Result):
        return artifact.written_at
    if isinstance(artifact, Progress):
        return artifact.updated_at or artifact.started_at
    return None


def _seconds_between(start: str, end: str) -> float:
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def _before(moment: str | None, since: str) -> bool:
    """`moment` (an artifact's ISO time, the workload's clock) earlier than `since` (the API server's or the
    operator's clock), by more than clocks a few seconds apart could explain."""
    return bool(moment) and _seconds_between(str(moment), since) > CLOCK_SKEW_SECONDS


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
    controller = kinds.BY_KIND[obj["kind"]]
    if isinstance(controller, ServingController):
        return typed(obj["kind"], with_phase_event(status, reconcile_serving(obj, rt)), rt.settings.strict_status)
    if status.get("phase") == Phase.SUCCEEDED and controller.refreshes:
        refreshed = reconcile_refresh(obj, rt)  # its spec's other fields are immutable: no run again
        return None if refreshed is None else typed(obj["kind"], refreshed, rt.settings.strict_status)
    if status.get("phase") in TERMINAL and status.get("observedGeneration") == obj["metadata"].get("generation"):
        return None  # finished, and nothing changed since: a resync costs nothing
    return typed(obj["kind"], with_phase_event(status, reconcile_run(obj, controller, rt)), rt.settings.strict_status)


def typed(kind: str, outcome: Outcome, strict: bool = False) -> Outcome:
    """The status as the kind's `*Status` model (the one its CRD is generated from) validates and dumps it. Only
    the fields the pass set are dumped (a None clears a field in the status patch). A field the model lacks (the
    CRD would prune it) or a value it refuses is an error with `strict` (Settings.strict_status, on in the
    tests); otherwise it is dropped with a warning, and the rest of the status is written."""
    model = api.BY_KIND[kind].status
    try:
        checked = model.model_validate(outcome.status)
    except ValidationError as err:
        if strict:
            raise
        bad = sorted({str(e["loc"][0]) for e in err.errors() if e["loc"]})
        LOG.warning("%s status: dropping %s (not in its CRD, or refused by it): %s", kind, ", ".join(bad), err)
        kept = {k: v for k, v in outcome.status.items() if k not in bad}
        try:
            checked = model.model_validate(kept)
        except ValidationError:
            outcome.status = kept
            return outcome
    outcome.status = checked.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return outcome


# -- runs: DatasetPrep, TrainingRun, TuningSweep ---------------------------------------------------------------


def _found(rt: Runtime, obj: dict[str, Any], refs: list[Ref]) -> dict[Ref, dict[str, Any] | None]:
    namespace = obj["metadata"]["namespace"]
    return {(kind, name): rt.cluster.get(API_VERSION, kind, namespace, name) for kind, name in refs}


def _childless(obj: dict[str, Any]) -> bool:
    """A run whose last pass made no children: never reconciled (no phase), or Waiting for what it needs (its
    DatasetPrep): the usual journey's runs wait first, then start."""
    return (obj.get("status") or {}).get("phase") in (None, "", Phase.WAITING)


def _run_children(rt: Runtime, desired: Desired, new: bool = False) -> tuple[str | None, dict[str, Any] | None]:
    """Apply a run's children unless its workload config changed after it started; (why refused, the RayJob).
    `new`: the run has made no children before (`_childless`)."""
    children = stamp(desired.children)
    job = next(c for c in children if c["kind"] == "RayJob")
    found = rt.backend.observe(job, new=new)
    annotations = ((found or {}).get("metadata") or {}).get("annotations") or {}
    if found and annotations.get(CONFIG_HASH) != job["metadata"]["annotations"][CONFIG_HASH]:
        before = json.loads(job_config(found) or "{}")
        after = json.loads(job_config(job) or "{}")
        paths = changed_paths(before, after)
        if paths and all(p in STORE_PATHS for p in paths):  # the operator's --store changed, not the spec
            moved = "; ".join(f"{p}: {before.get(p)} -> {after.get(p)}" for p in paths)
            return (
                f"this run was started by an operator that writes to another store ({moved}): its result is there, "
                "not where this operator looks; run the operator with the store it started with, or delete and "
                "re-create the resource to run it again here",
                found,
            )
        shown = ", ".join(p.removeprefix("spec.") for p in paths[:5]) or "the workload config"
        return (
            f"the spec changed after the run started ({shown}); a started run keeps the spec it started with: "
            "revert the change, or delete and re-create the resource to run it again",
            found,
        )
    if found is None or annotations.get(APPLIED_HASH) != job["metadata"]["annotations"][APPLIED_HASH]:
        rt.backend.apply(children, absent=found is None)
        found = rt.backend.observe(job) if found is not None else None
    return None, found


def _apply_refused(obj: dict[str, Any], outcome: Outcome, message: str) -> Outcome:
    """A serving resource whose children the cluster refused: Stalled with the API server's words, and an Event."""
    before = list(outcome.status.get("conditions") or [])
    generation = int(obj["metadata"].get("generation", 1))
    stalled = condition("Stalled", True, "ApplyFailed", message, generation, _now(), before)
    outcome.status["conditions"] = [c for c in before if c.get("type") != "Stalled"] + [stalled]
    outcome.status["message"] = message
    if not _already_refused(obj):
        outcome.events.append(("Warning", "ApplyFailed", message))
    return outcome


def reconcile_run(obj: dict[str, Any], controller: RunController, rt: Runtime) -> Outcome:
    """Read the references, apply the children, read the workload's progress and result, and say where it is."""
    artifacts = controller.artifacts_of(obj, rt.settings)
    observed = Observed(invalid=invalid(obj, rt.settings), suspended=bool(obj["spec"].get("suspend", False)))
    if observed.invalid:
        wanted = Desired([])
    else:
        wanted = controller.desired_children(obj, _found(rt, obj, controller.references(obj["spec"])), rt.settings)
    observed.waiting_for = wanted.waiting_for
    observed.missing_crd = rt.backend.missing_prerequisite()
    job_name = None
    if wanted.children and not observed.missing_crd:
        try:
            refused, job = _run_children(rt, wanted, new=_childless(obj))
        except ApplyRefused as err:
            observed.apply_error, refused, job = str(err), None, None
        observed.invalid = refused
        observed.ray_job = (job or {}).get("status") or {}
        job_name = next(c for c in wanted.children if c["kind"] == "RayJob")["metadata"]["name"]
        if may_have_written(job, obj.get("status") or {}):  # not while it waits: hundreds may wait
            born = obj["metadata"].get("creationTimestamp")
            observed.progress, progress_error, _ = _read_artifact(storage.join(artifacts, PROGRESS), Progress, born)
            observed.result, result_error, observed.broken_result = _read_artifact(
                storage.join(artifacts, RESULT), Result, born
            )
            observed.store_error = result_error or progress_error
        queue = str((obj["spec"].get("resources") or {}).get("queue") or "")
        if queue and rt.backend.name == "kubernetes" and observed.result is None:
            created = ((job or {}).get("metadata") or {}).get("creationTimestamp")
            waited = _seconds_between(created, _now()) if created else 0.0
            observed.queue = queue_state(queue, job_name, rt.backend.workloads(obj["metadata"]["namespace"]), waited)
            wanted_active = not observed.suspended  # a suspended queued run: Kueue's way, an inactive Workload
            if observed.queue.workload and observed.queue.active != wanted_active:
                rt.backend.activate_workload(obj["metadata"]["namespace"], observed.queue.workload, wanted_active)
        observed.result_uri = storage.join(artifacts, RESULT)
        observed.attempts = int((obj["spec"].get("failurePolicy") or {}).get("backoffLimit", 0)) + 1
        if job is not None and observed.result is None:
            observed.diagnosis = diagnose_run(rt, obj, job)
    outcome = Outcome(run_status_fields(obj, controller, observed, rt.settings, artifacts, job_name, _now()))
    if observed.diagnosis and observed.diagnosis.severity == "fatal" and outcome.status["phase"] == Phase.FAILED:
        _stop(rt, wanted)  # its pods will never start: free what they hold (the RayJob stays, suspended)
    if observed.apply_error and not _already_refused(obj):
        outcome.events.append(("Warning", "ApplyFailed", observed.apply_error))
    return outcome


def reconcile_refresh(obj: dict[str, Any], rt: Runtime) -> Outcome | None:
    """A Succeeded DatasetPrep: start a refresh round when one is due, follow the running one, and when its result
    is in, make its version current and remove the versions past `keepVersions`. None when nothing changed."""
    status, meta, now = obj.get("status") or {}, obj["metadata"], _now()
    patch: dict[str, Any] = {}
    if status.get("observedGeneration") != meta.get("generation"):
        patch["observedGeneration"] = meta.get("generation")  # refresh or resources changed: used from now on
    refresh = status.get("refresh") or {}
    events: list[tuple[str, str, str]] = []
    if refresh.get("state") == "Running":
        round_ = int(refresh["round"])
        folder = datasetprep.run_folder(obj, rt.settings, round_)
        try:
            _, job = _run_children(rt, datasetprep.desired_children(obj, rt.settings, round_))
        except ApplyRefused as err:
            job = None
            refresh = {**refresh, "message": f"round {round_}: the cluster refused its RayJob: {err}"}
        result, error, broken = _read_artifact(storage.join(folder, RESULT), Result, refresh.get("startTime"))
        ended = ((job or {}).get("status") or {}).get("jobDeploymentStatus") in ("Complete", "Failed")
        if result is None and (broken or (ended and not error)):
            why = broken or "its RayJob ended without writing a result"
            result = Result(status="Failed", reason="ResultMissing", message=f"{why} ({storage.join(folder, RESULT)})")
        if result is not None:
            deployments = rt.cluster.list(API_VERSION, "ModelDeployment", meta["namespace"])
            done, events = datasetprep.round_finished(obj, result, now, datasetprep.serving_fingerprints(deployments))
            for version in done["refresh"]["pruned"]:
                folder = storage.join(str(status["outputUri"]), version)
                try:
                    storage.remove(folder)
                except OSError as err:  # left in the store; the status no longer lists it
                    LOG.warning("could not remove %s: %s", folder, storage_error(folder, err))
            patch |= done
        elif refresh != status.get("refresh"):
            patch["refresh"] = refresh
    elif datasetprep.refresh_due(obj, now):
        round_ = int(refresh.get("round", 0)) + 1
        for api_version, kind, name in datasetprep.finished_round(obj):  # its logs and result stay in the store
            rt.backend.delete(api_version, kind, meta["namespace"], name)
        try:
            _run_children(rt, datasetprep.desired_children(obj, rt.settings, round_))
        except ApplyRefused as err:
            message = f"round {round_}: the cluster refused its RayJob: {err}"
            return Outcome({**patch, "refresh": {**refresh, "message": message}}, [("Warning", "ApplyFailed", message)])
        patch["refresh"] = datasetprep.round_started(obj, rt.settings, round_, now)
    elif obj["spec"].get("refresh") and not refresh.get("nextTime"):
        patch["refresh"] = {**refresh, "nextTime": datasetprep.next_refresh(obj)}  # the first one, shown in status
    return Outcome(patch, events) if patch or events else None


def diagnose_run(rt: Runtime, obj: dict[str, Any], job: dict[str, Any]) -> Diagnosis | None:
    """What the pods of a run's RayJob (its Ray head and workers, KubeRay's submitter) and the Warning Events of
    its RayCluster and submitter Job say is wrong, while the job has not ended."""
    status = job.get("status") or {}
    if status.get("jobDeploymentStatus") in ("Complete", "Suspending", "Suspended"):
        return None
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    job_name, now = job["metadata"]["name"], time.time()
    pods = rt.backend.pods(namespace, f"slipway.dev/{obj['kind'].lower()}={name}")
    pods += rt.backend.pods(namespace, f"job-name={job_name}")  # the submitter (a Job's pods carry its name)
    timeout = int(
        (obj["spec"].get("failurePolicy") or {}).get("pendingTimeoutSeconds", diagnosis.DEFAULT_PENDING_TIMEOUT)
    )
    found = diagnosis.diagnose(pods, now=now, pending_timeout=timeout)
    if found is not None and (found.pod, found.container) in diagnosis.crashing(pods):  # its last lines, only then
        logs = {(found.pod, found.container): rt.backend.log_tail(namespace, found.pod, found.container,
                                                                   diagnosis.LOG_LINES)}  # fmt: skip
        found = diagnosis.diagnose(pods, now=now, pending_timeout=timeout, logs=logs)
    if found is None and status.get("jobStatus") != "RUNNING":  # no pod to look at: a quota, an admission policy
        names = [n for n in (status.get("rayClusterName"), job_name) if n]
        started = now - diagnosis.age_of(job, now)
        found = diagnosis.diagnose([], rt.backend.warnings(namespace, names), now=now, pending_timeout=timeout,
                                   started=started)  # fmt: skip
    return found


def _stop(rt: Runtime, wanted: Desired) -> None:
    """Suspend the RayJob of a run that failed for good: KubeRay deletes its RayCluster and submitter."""
    children = copy.deepcopy(wanted.children)
    for child in children:
        if child["kind"] == "RayJob":
            child["spec"]["suspend"] = True
    try:
        rt.backend.apply(stamp(children))
    except ApplyRefused as err:
        LOG.warning("could not suspend the RayJob of a failed run: %s", err)


def _already_refused(obj: dict[str, Any]) -> bool:
    """The stored status says ApplyFailed already: its Event was posted (one per refusal, not one per pass)."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Stalled" and c.get("reason") in ("ApplyFailed", "QuotaExceeded") for c in conditions)


def run_status_fields(
    obj: dict[str, Any],
    controller: RunController,
    observed: Observed,
    settings: Settings,
    artifacts: str,
    job_name: str | None,
    now: str,
) -> dict[str, Any]:
    """A run's whole status from what one pass observed; pure."""
    status, meta = obj.get("status") or {}, obj["metadata"]
    computed = run_status(observed, list(status.get("conditions", [])), int(meta.get("generation", 1)), now)
    new = {
        "observedGeneration": meta.get("generation"),
        "phase": str(computed.phase),
        "conditions": computed.conditions,
        "message": computed.message,
        "progress": computed.progress,
        "artifactUri": artifacts,
        **controller.status_fields(obj, settings, observed),
    }
    if observed.queue is not None:
        new["queue"] = observed.queue.status()
    if job_name:
        new["rayJobName"] = job_name
        new["logUri"] = storage.join(artifacts, DRIVER_LOG)
    # When the operator first saw the workload under way, and first saw it finished; kept from then on.
    under_way = computed.phase in (Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED)
    started = status.get("startTime") or (now if job_name and under_way else None)
    if started:
        new["startTime"] = started
    if computed.phase in (Phase.SUCCEEDED, Phase.FAILED):
        new["completionTime"] = status.get("completionTime") or now
    return new


# -- ModelDeployment -------------------------------------------------------------------------------------------


def _stub(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}}


FAIRNESS: dict[str, dict[str, Any]] = {}  # model URI -> its card's fairness (exported models do not change)


def fairness_of(model_uri: str) -> dict[str, Any]:
    """The fairness section of an exported model's card, read once per URI (a failed read is tried again)."""
    if model_uri not in FAIRNESS:
        card, error = _read(storage.join(model_uri, "model_card.json"))
        if card is None:
            LOG.warning("no fairness for %s: %s", model_uri, error or "no model card")
            return {}
        if len(FAIRNESS) > 256:
            FAIRNESS.clear()
        FAIRNESS[model_uri] = dict(card.get("fairness") or {})
    return FAIRNESS[model_uri]


def observe_serving(obj: dict[str, Any], rt: Runtime) -> modeldeployment.Observed:
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    observed = modeldeployment.Observed(invalid=invalid(obj, rt.settings), now=time.time())
    if observed.invalid:
        return observed
    spec = ModelDeploymentSpec.model_validate(obj["spec"])
    source = next(iter(_found(rt, obj, modeldeployment.references(obj["spec"])).values()), None)
    observed.source, observed.waiting_for = modeldeployment.source_of(spec, source)
    if registry.is_registry_uri(spec.model.uri):  # models:/<name>@<alias>: followed as the alias moves
        server = registry.server_of(spec, rt.settings.tracking_uri)
        observed.source, observed.waiting_for = registry.resolve(str(spec.model.uri), server, os.environ)
    if spec.auto_update.enabled and spec.auto_update.selector:
        selector = modeldeployment.selector_string(spec.auto_update.selector.model_dump(by_alias=True))
        for kind in kinds.MODEL_KINDS:
            for candidate in rt.cluster.list(API_VERSION, kind, namespace, selector):
                model = modeldeployment.model_of(candidate)
                if model is not None and spec.auto_update.gate.max_fairness_gap is not None:
                    model = dataclasses.replace(model, fairness=fairness_of(model.uri))
                if model is not None:
                    observed.candidates.append(model)
    retraining = spec.auto_update.retrain
    if retraining is not None and spec.auto_update.enabled:
        kind = "TrainingRun" if retraining.training_run else "TuningSweep"
        observed.retrains = rt.cluster.list(API_VERSION, kind, namespace, retrain.selector(name))
        template = retraining.training_run or (retraining.tuning_sweep.template if retraining.tuning_sweep else None)
        ref = template.dataset.ref if template else None
        observed.retrain_dataset = rt.cluster.get(API_VERSION, "DatasetPrep", namespace, ref) if ref else None
    for track in (modeldeployment.STABLE, modeldeployment.CANARY, modeldeployment.SHADOW):
        found = rt.backend.observe(_stub("apps/v1", "Deployment", namespace, suffixed(name, track)))
        observed.deployments[track] = found
        if found is not None:
            labels = ((found.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            pods = rt.backend.pods(namespace, ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
            observed.pods[track] = pods
            for pod, container in diagnosis.crashing(pods)[:1]:
                observed.logs[pod, container] = rt.backend.log_tail(namespace, pod, container, diagnosis.LOG_LINES)
            bodies, error = rt.backend.scrape(found, "/metrics")
            observed.traffic[track] = total([parse(b, name) for b in bodies])
            if error:
                observed.scrape_errors[track] = error
    hpa = _stub("autoscaling/v2", "HorizontalPodAutoscaler", namespace, suffixed(name, modeldeployment.STABLE))
    observed.autoscaler = rt.backend.observe(hpa)
    observed.endpoint = rt.backend.endpoint(_stub("v1", "Service", namespace, name))
    observed.grpc_endpoint = rt.backend.grpc_endpoint(_stub("v1", "Service", namespace, name))
    return observed


def reconcile_serving(obj: dict[str, Any], rt: Runtime) -> Outcome:
    plan = modeldeployment.plan(obj, observe_serving(obj, rt), rt.settings)
    outcome = Outcome(plan.status, list(plan.events))
    if (obj.get("spec") or {}).get("registry") and plan.status.get("phase") != Phase.INVALID:
        spec = ModelDeploymentSpec.model_validate(obj["spec"])  # the registry follows what this pass serves
        assert spec.registry is not None
        where = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        previous = (obj.get("status") or {}).get("registry")
        server = registry.server_of(spec, rt.settings.tracking_uri)
        outcome.status["registry"], said = registry.sync(
            spec.registry, server, plan.status, previous, where, os.environ
        )
        outcome.events += said
    elif (obj.get("status") or {}).get("registry"):
        outcome.status["registry"] = None  # spec.registry removed: the registry is no longer kept in step
    if plan.children:
        try:
            rt.backend.apply(plan.children)
        except ApplyRefused as err:
            return _apply_refused(obj, outcome, str(err))
    for api_version, kind, child in plan.delete:
        rt.backend.delete(api_version, kind, obj["metadata"]["namespace"], child)
    for run in plan.create:
        try:
            rt.cluster.create(run)
        except ApplyRefused as err:  # the API server refused the template: say so (once), keep serving
            refused = f"the retrain {run['kind']}/{run['metadata']['name']} was refused: {err}"
            before = ((obj.get("status") or {}).get("retraining") or {}).get("waiting")
            outcome.status["retraining"] = {**(outcome.status.get("retraining") or {}), "waiting": refused}
            if refused != before:
                outcome.events.append(("Warning", "RetrainRefused", refused))
    for api_version, kind, child in plan.delete_runs:
        rt.cluster.delete(api_version, kind, obj["metadata"]["namespace"], child)
    return outcome


def stop_children(obj: dict[str, Any], rt: Runtime) -> None:
    """What a deleted resource leaves outside Kubernetes (the local backend's processes)."""
    namespace = obj["metadata"]["namespace"]
    for api_version, kind, child in kinds.BY_KIND[obj["kind"]].children_to_stop(obj):
        rt.backend.delete(api_version, kind, namespace, child)
