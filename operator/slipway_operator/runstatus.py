"""The status of a run (DatasetPrep, TrainingRun, TuningSweep), computed from what is observed — the KubeRay
RayJob's status and the workload's progress.json / result.json — on every pass, never from the stored status.

Pure: `decide(observed)` names the run's state (a `Decision`), `run_status(observed, previous_conditions,
generation, now)` turns it into the new status fields; the handler patches only what changed. Conditions follow
kstatus (Ready, Reconciling, Stalled) plus Succeeded and Failed, each with a reason a machine can match and a
message a person can act on. A failed run is Stalled too: it ends there until its spec changes, which is what
kstatus (Flux's `wait`) reads as Failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slipway_operator.api.common import Phase
from slipway_operator.diagnosis import Diagnosis, is_quota
from slipway_operator.queueing import QueueState
from slipway_trainer.artifacts import Progress, Result

# KubeRay's RayJob states (ray.io/v1): jobDeploymentStatus and jobStatus.
DEPLOYMENT_FAILED = {"Failed", "ValidationFailed"}
DEPLOYMENT_ACTIVE = {"", "Initializing", "Running", "Retrying", "Waiting"}
# States of a RayJob whose entrypoint has not been started: no status yet, KubeRay's New and Initializing (its Ray
# cluster is starting: pods waiting for a node, an image, a GPU), Suspended (Kueue holds it), and the local backend's
# Queued. Its workload cannot have written progress.json or result.json.
NOT_STARTED = {"", "New", "Initializing", "Suspended", "Queued"}


@dataclass
class Observed:
    """What a pass saw. Any part may be missing (None): not created yet, or not readable yet."""

    waiting_for: str | None = None  # a dependency not ready yet, in words ("DatasetPrep fashion: Running")
    invalid: str | None = None  # what only the operator could find wrong in the spec
    suspended: bool = False
    ray_job: dict[str, Any] | None = None  # the RayJob's status
    progress: Progress | None = None  # progress.json
    result: Result | None = None  # result.json
    missing_crd: str | None = None  # KubeRay is not installed
    store_error: str | None = None  # progress.json / result.json could not be read: the store's own words
    broken_result: str | None = None  # result.json is there but breaks its contract: which field, how
    apply_error: str | None = None  # the cluster refused a child: the API server's own words
    diagnosis: Diagnosis | None = None  # what the RayJob's pods and Events say is wrong
    result_uri: str = ""  # where result.json is read from
    attempts: int = 1  # how many times KubeRay may run the job (backoffLimit + 1)
    queue: QueueState | None = None  # where it stands in Kueue (spec.resources.queue, on a cluster)

    def __post_init__(self) -> None:
        # Parsed JSON is taken too (tests, fixtures): it is read through the contract as the store's would be.
        if isinstance(self.progress, dict):
            self.progress = Progress.read(self.progress)
        if isinstance(self.result, dict):
            self.result = Result.read(self.result)


def may_have_written(job: dict[str, Any] | None, run: dict[str, Any]) -> bool:
    """Whether a run's workload may have written its progress.json or result.json, so a pass must read them. Not
    before its RayJob's entrypoint starts: `job` is the RayJob as this pass found it before applying (None: there
    was none); `run` the run's stored status. Waiting runs (queued, their Ray cluster starting) then cost the store
    nothing. Once the run showed a start or progress, or the RayJob has counted an attempt, every pass reads."""
    if run.get("startTime") or run.get("progress"):
        return True
    if job is None:
        return False
    status = job.get("status") or {}
    if status.get("failed") or status.get("succeeded"):
        return True
    return str(status.get("jobDeploymentStatus") or "") not in NOT_STARTED


@dataclass
class RunStatus:
    phase: Phase
    conditions: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    progress: str = ""


def condition(
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: str,
    previous: list[dict[str, Any]],
) -> dict[str, Any]:
    """A condition; lastTransitionTime moves only when the status itself changes."""
    value = "Unknown" if status is None else ("True" if status else "False")
    before = next((c for c in previous if c.get("type") == type_), None)
    since = before["lastTransitionTime"] if before and before.get("status") == value else now
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


@dataclass(frozen=True)
class Decision:
    """What a pass concluded about a run: its phase, the reason a machine can match and the message a person
    acts on, and the kstatus booleans the conditions are built from (``succeeded`` is None while undecided)."""

    phase: Phase
    reason: str
    message: str
    ready: bool = False
    reconciling: bool = False
    stalled: bool = False
    succeeded: bool | None = None


def _working(phase: Phase, reason: str, message: str) -> Decision:
    """Still moving: the operator (or KubeRay) has more to do."""
    return Decision(phase, reason, message, reconciling=True)


def _stuck(phase: Phase, reason: str, message: str) -> Decision:
    """Not moving until something outside changes (a spec, KubeRay, a Secret); not terminal."""
    return Decision(phase, reason, message, stalled=True)


def _failed(phase: Phase, reason: str, message: str) -> Decision:
    """Terminal until the spec changes: Failed (or Invalid), Stalled."""
    return Decision(phase, reason, message, stalled=True, succeeded=False)


def run_status(observed: Observed, previous: list[dict[str, Any]], generation: int, now: str) -> RunStatus:
    d = decide(observed)

    def c(type_: str, status: bool | None, why: str) -> dict[str, Any]:
        return condition(type_, status, why, d.message, generation, now, previous)

    conditions = [
        c("Ready", d.ready, d.reason),
        c("Reconciling", d.reconciling, d.reason if d.reconciling else "Done"),
        c("Stalled", d.stalled, d.reason if d.stalled else "NotStalled"),
        c("Succeeded", d.succeeded, d.reason),
        c("Failed", d.phase == Phase.FAILED, d.reason),
    ]
    tracked = observed.result.tracking if observed.result is not None else None
    if tracked is not None:  # MLflow tracking was asked for: whether the run reached it (it never fails the run)
        logged = tracked.state == "Logged"
        said = f"logged to MLflow as run {tracked.run_id}" if logged else f"not logged to MLflow: {tracked.message}"
        reason = "Logged" if logged else "TrackingFailed"
        conditions.append(condition("Tracked", logged, reason, said, generation, now, previous))
    return RunStatus(phase=d.phase, conditions=conditions, message=d.message, progress=_progress(observed))


def decide(o: Observed) -> Decision:
    """The run's state from what was observed, checked in order: the spec, KubeRay, the workload's result, the
    dependency, suspension, then the RayJob's own state."""
    if o.invalid:
        return _failed(Phase.INVALID, "InvalidSpec", o.invalid)
    if o.missing_crd:
        return _stuck(
            Phase.PENDING,
            "KubeRayMissing",
            f"{o.missing_crd} is not installed: install KubeRay (its CRDs and "
            "operator, e.g. `helm install kuberay-operator kuberay/kuberay-operator`), then this resumes",
        )
    result = o.result
    if result is not None and result.succeeded:
        return Decision(Phase.SUCCEEDED, "Succeeded", _summary(result), ready=True, succeeded=True)
    deployment = str((o.ray_job or {}).get("jobDeploymentStatus") or "")
    if result is not None:
        message = f"{result.reason or 'Failed'}: {result.message or ''}"
        if result.retryable and deployment in (DEPLOYMENT_ACTIVE | {"New"}) - {""}:
            # KubeRay retries the job (backoffLimit); the retry clears this result as it starts, and may succeed.
            failed = int((o.ray_job or {}).get("failed") or 1)
            attempts = f"{failed} failed attempt{'s' if failed != 1 else ''} so far"
            message = f"{message} ({attempts}; KubeRay retries while spec.failurePolicy.backoffLimit allows)"
            return _working(Phase.RUNNING, "Retrying", message)
        return _failed(Phase.FAILED, result.reason or "WorkloadFailed", message)
    if o.apply_error:  # not terminal: a fixed RBAC rule or a raised quota lets the next pass apply it
        quota = is_quota(o.apply_error)
        return _stuck(Phase.PENDING, "QuotaExceeded" if quota else "ApplyFailed", o.apply_error)
    if o.waiting_for:
        return _working(Phase.WAITING, "WaitingForDependency", f"waiting for {o.waiting_for}")
    if o.suspended:
        return Decision(Phase.SUSPENDED, "Suspended", "suspended: set spec.suspend to false to start or resume it")
    if o.queue is not None and not o.queue.admitted:
        return _queued(o.queue)
    job = o.ray_job
    if job is None:
        return _working(Phase.PENDING, "Creating", "creating the RayJob")
    deployment = str(job.get("jobDeploymentStatus") or "")
    succeeded = deployment == "Complete" and job.get("jobStatus") == "SUCCEEDED"
    if deployment in DEPLOYMENT_FAILED:
        reason = str(job.get("reason") or "RayJobFailed")
        detail = job.get("message") or "the RayJob failed before the workload wrote a result"
        if reason == "DeadlineExceeded":
            detail = (
                f"{detail}: it ran longer than spec.failurePolicy.activeDeadlineSeconds; raise it, or shorten the run"
            )
        if o.diagnosis is not None and reason != "DeadlineExceeded":  # what the pods say is the better reason
            return _failed(Phase.FAILED, o.diagnosis.reason, f"{o.diagnosis.message} (the RayJob failed: {detail})")
        return _failed(Phase.FAILED, reason, f"{reason}: {detail}")
    d = o.diagnosis
    if d is not None and d.severity == "fatal":
        return _failed(
            Phase.FAILED,
            d.reason,
            f"{d.message}; its RayJob is suspended (its pods are deleted): fix the cause, then delete and re-create "
            "the resource to run it again",
        )
    if d is not None and d.severity == "stuck":
        return _stuck(Phase.RUNNING if job.get("jobStatus") == "RUNNING" else Phase.PENDING, d.reason, d.message)
    if succeeded and o.store_error:  # not terminal: a fixed Secret or a bucket created later lets a pass read it
        return _stuck(
            Phase.RUNNING,
            "StorageUnavailable",
            f"the RayJob succeeded but its result cannot be read from the store: {o.store_error}; check the store "
            "Secret's credentials and endpoint and that the bucket exists (the next pass tries again)",
        )
    if o.broken_result:  # the workload wrote it; the next pass reads it again (an operator upgrade may read it)
        return _stuck(
            Phase.RUNNING,
            "ResultUnreadable",
            f"{o.broken_result}; the trainer image and the operator may be of different Slipway versions",
        )
    if succeeded:  # the workload writes result.json before it exits: not there is not "not yet"
        return _stuck(
            Phase.RUNNING,
            "ResultMissing",
            f"the RayJob succeeded but {o.result_uri or 'its result.json'} is not there: the job wrote its result "
            "somewhere else (an operator restarted with another store, or a trainer image of another Slipway "
            "version); delete and re-create the resource to run it again (the next pass looks again)",
        )
    if deployment == "Complete":
        message = f"the Ray job ended {job.get('jobStatus')}: {job.get('message', '')}"
        return _failed(Phase.FAILED, "RayJobFailed", message)
    if deployment in ("Suspending", "Suspended"):
        return Decision(Phase.SUSPENDED, "Suspended", "the RayJob is suspended (or queued by Kueue)")
    attempt = _attempt(o)
    if deployment == "Retrying":
        return _working(Phase.RUNNING, "Retrying", f"retrying after a failure{attempt}: {job.get('message', '')}")
    if deployment == "Queued":  # the local backend runs a few jobs at a time
        return _working(Phase.PENDING, "Queued", str(job.get("message") or "queued"))
    note = f" ({d.reason}: {d.message})" if d is not None else ""  # KubeRay is replacing a pod: said, not acted on
    if deployment == "Running" and job.get("jobStatus") == "RUNNING":
        if o.store_error:
            message = f"running; its progress cannot be read from the store: {o.store_error}"
            return _working(Phase.RUNNING, "StorageUnavailable", message)
        return _working(Phase.RUNNING, "Running", f"{_running_message(o.progress)}{attempt}{note}")
    return _working(Phase.PENDING, "Starting", f"the Ray cluster is starting ({deployment or 'new'}){attempt}{note}")


def _queued(q: QueueState) -> Decision:
    if q.kueue_missing:
        return _stuck(
            Phase.PENDING,
            "KueueMissing",
            f"spec.resources.queue is {q.queue!r} but Kueue is not installed (the cluster serves no "
            "workloads.kueue.x-k8s.io): install Kueue, or remove spec.resources.queue to run without a queue",
        )
    if q.inadmissible:
        return _stuck(
            Phase.PENDING,
            "QueueUnavailable",
            f"Kueue cannot admit it: {q.waiting_for}; spec.resources.queue must name a LocalQueue of this namespace "
            f"(`kubectl get localqueues`) whose ClusterQueue exists and is active, or create LocalQueue {q.queue!r}; "
            "spec.resources.priorityClassName, when set, a PriorityClass that exists",
        )
    if q.never_fits:
        return _stuck(
            Phase.PENDING,
            "QuotaNeverFits",
            f"it asks for more than LocalQueue {q.queue}'s ClusterQueue can ever give ({q.waiting_for}): lower "
            "spec.resources (workers, cpusPerWorker, memory, gpusPerWorker), or raise the ClusterQueue's quota",
        )
    where = f", position {q.position}" if q.position else ""
    if q.preempted:
        return _working(
            Phase.PENDING,
            "Preempted",
            f"preempted ({q.preempted}); queued again in LocalQueue {q.queue}{where}: {q.waiting_for}; when admitted "
            "again it resumes from its last checkpoint",
        )
    return _working(Phase.PENDING, "Queued", f"queued in LocalQueue {q.queue}{where}: {q.waiting_for}")


def _attempt(o: Observed) -> str:
    """`, attempt 2 of 3` once KubeRay has retried the job, else nothing."""
    failed = int((o.ray_job or {}).get("failed") or 0)
    return f", attempt {failed + 1} of {max(o.attempts, failed + 1)}" if failed else ""


def _running_message(progress: Progress | None) -> str:
    if progress is None:
        return "running"
    return f"{progress.phase}: {_progress_of(progress) or 'started'}"


def _progress(o: Observed) -> str:
    return _progress_of(o.progress) if o.progress is not None else ""


def _progress_of(p: Progress) -> str:
    if p.total_epochs:
        lost = {None: "", 0: ", no finished epoch lost", 1: ", 1 finished epoch trained again"}.get(
            p.epochs_lost, f", {p.epochs_lost} finished epochs trained again"
        )
        again = f" (resumed from the epoch-{p.resumed_from[-1]} checkpoint{lost})" if p.resumed_from else ""
        return f"epoch {p.epoch or 0}/{p.total_epochs}{again}"
    if p.max_trials:
        return f"{p.trials_done or 0}/{p.max_trials} trials"
    if p.rows_read is not None:
        return f"{p.rows_written or p.rows_read:,} rows"
    return ""


def _summary(result: Result) -> str:
    if result.metrics:
        return "succeeded: " + ", ".join(f"{k}={v:.4g}" for k, v in list(result.metrics.items())[:3])
    if result.rows:
        return f"succeeded: {result.rows.get('total', 0):,} rows, fingerprint {str(result.fingerprint)[:19]}"
    return "succeeded"
