"""The status of a run (DatasetPrep, TrainingRun, TuningSweep), computed from what is observed — the KubeRay
RayJob's status and the workload's progress.json / result.json — on every pass, never from the stored status.

Pure: `run_status(observed, previous_conditions, generation, now)` returns the new status fields; the
handler patches only what changed. Conditions follow kstatus (Ready, Reconciling, Stalled) plus Succeeded and
Failed, each with a reason a machine can match and a message a person can act on. A failed run is Stalled too:
it ends there until its spec changes, which is what kstatus (Flux's `wait`) reads as Failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slipway_operator.api.common import Phase

# KubeRay's RayJob states (ray.io/v1): jobDeploymentStatus and jobStatus.
DEPLOYMENT_FAILED = {"Failed", "ValidationFailed"}
DEPLOYMENT_ACTIVE = {"", "Initializing", "Running", "Retrying", "Waiting"}


@dataclass
class Observed:
    """What a pass saw. Any part may be missing (None): not created yet, or not readable yet."""

    waiting_for: str | None = None  # a dependency not ready yet, in words ("DatasetPrep fashion: Running")
    invalid: str | None = None  # what only the operator could find wrong in the spec
    suspended: bool = False
    ray_job: dict[str, Any] | None = None  # the RayJob's status
    progress: dict[str, Any] | None = None  # progress.json
    result: dict[str, Any] | None = None  # result.json
    missing_crd: str | None = None  # KubeRay is not installed
    store_error: str | None = None  # progress.json / result.json could not be read: the store's own words


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


def run_status(observed: Observed, previous: list[dict[str, Any]], generation: int, now: str) -> RunStatus:
    phase, reason, message, ready, reconciling, stalled, succeeded = _decide(observed)

    def c(type_: str, status: bool | None, why: str) -> dict[str, Any]:
        return condition(type_, status, why, message, generation, now, previous)

    conditions = [
        c("Ready", ready, reason),
        c("Reconciling", reconciling, reason if reconciling else "Done"),
        c("Stalled", stalled, reason if stalled else "NotStalled"),
        c("Succeeded", succeeded, reason),
        c("Failed", phase == Phase.FAILED, reason),
    ]
    return RunStatus(phase=phase, conditions=conditions, message=message, progress=_progress(observed))


def _decide(o: Observed) -> tuple[Phase, str, str, bool, bool, bool, bool | None]:
    """(phase, reason, message, ready, reconciling, stalled, succeeded)."""
    if o.invalid:
        return Phase.INVALID, "InvalidSpec", o.invalid, False, False, True, False
    if o.missing_crd:
        return (
            Phase.PENDING,
            "KubeRayMissing",
            f"{o.missing_crd} is not installed: install KubeRay (its CRDs and "
            "operator, e.g. `helm install kuberay-operator kuberay/kuberay-operator`), then this resumes",
            False,
            False,
            True,
            None,
        )
    result = o.result or {}
    if result.get("status") == "Succeeded":
        return Phase.SUCCEEDED, "Succeeded", _summary(result), True, False, False, True
    deployment = str((o.ray_job or {}).get("jobDeploymentStatus") or "")
    if result.get("status") == "Failed":
        message = f"{result.get('reason', 'Failed')}: {result.get('message', '')}"
        if result.get("retryable") and deployment in (DEPLOYMENT_ACTIVE | {"New"}) - {""}:
            # KubeRay retries the job (backoffLimit); the retry clears this result as it starts, and may succeed.
            failed = int((o.ray_job or {}).get("failed") or 1)
            attempts = f"{failed} failed attempt{'s' if failed != 1 else ''} so far"
            message = f"{message} ({attempts}; KubeRay retries while spec.failurePolicy.backoffLimit allows)"
            return Phase.RUNNING, "Retrying", message, False, True, False, None
        return Phase.FAILED, str(result.get("reason") or "WorkloadFailed"), message, False, False, True, False
    if o.waiting_for:
        return (Phase.WAITING, "WaitingForDependency", f"waiting for {o.waiting_for}", False, True, False, None)
    if o.suspended:
        return (
            Phase.SUSPENDED,
            "Suspended",
            "suspended: set spec.suspend to false to start or resume it",
            False,
            False,
            False,
            None,
        )
    job = o.ray_job
    if job is None:
        return Phase.PENDING, "Creating", "creating the RayJob", False, True, False, None
    deployment = str(job.get("jobDeploymentStatus") or "")
    if deployment in DEPLOYMENT_FAILED:
        reason = str(job.get("reason") or "RayJobFailed")
        detail = job.get("message") or "the RayJob failed before the workload wrote a result"
        return Phase.FAILED, reason, f"{reason}: {detail}", False, False, True, False
    if deployment == "Complete" and job.get("jobStatus") == "SUCCEEDED" and o.store_error:
        return (  # not terminal: a fixed Secret or a bucket created later lets the next pass read the result
            Phase.RUNNING,
            "StorageUnavailable",
            f"the RayJob succeeded but its result cannot be read from the store: {o.store_error}; check the store "
            "Secret's credentials and endpoint and that the bucket exists (the next pass tries again)",
            False,
            False,
            True,
            None,
        )
    if deployment == "Complete" and job.get("jobStatus") == "SUCCEEDED":
        return (
            Phase.RUNNING,
            "CollectingResult",
            "the RayJob succeeded; reading result.json",
            False,
            True,
            False,
            None,
        )
    if deployment == "Complete":
        return (
            Phase.FAILED,
            "RayJobFailed",
            f"the Ray job ended {job.get('jobStatus')}: {job.get('message', '')}",
            False,
            False,
            True,
            False,
        )
    if deployment in ("Suspending", "Suspended"):
        return Phase.SUSPENDED, "Suspended", "the RayJob is suspended (or queued by Kueue)", False, False, False, None
    if deployment == "Retrying":
        return (
            Phase.RUNNING,
            "Retrying",
            f"retrying after a failure: {job.get('message', '')}",
            False,
            True,
            False,
            None,
        )
    if deployment == "Queued":  # the local backend runs a few jobs at a time
        return Phase.PENDING, "Queued", str(job.get("message") or "queued"), False, True, False, None
    if deployment == "Running" and job.get("jobStatus") == "RUNNING":
        if o.store_error:
            message = f"running; its progress cannot be read from the store: {o.store_error}"
            return Phase.RUNNING, "StorageUnavailable", message, False, True, False, None
        return Phase.RUNNING, "Running", _running_message(o.progress), False, True, False, None
    return Phase.PENDING, "Starting", f"the Ray cluster is starting ({deployment or 'new'})", False, True, False, None


def _running_message(progress: dict[str, Any] | None) -> str:
    if not progress:
        return "running"
    return f"{progress.get('phase', 'Running')}: {_progress_of(progress) or 'started'}"


def _progress(o: Observed) -> str:
    return _progress_of(o.progress) if o.progress else ""


def _progress_of(p: dict[str, Any]) -> str:
    if p.get("totalEpochs"):
        resumed = p.get("resumedFrom") or []
        again = f" (resumed from the epoch-{resumed[-1]} checkpoint)" if resumed else ""
        return f"epoch {p.get('epoch', 0)}/{p['totalEpochs']}{again}"
    if p.get("maxTrials"):
        return f"{p.get('trialsDone', 0)}/{p['maxTrials']} trials"
    if p.get("rowsRead") is not None:
        return f"{p.get('rowsWritten') or p.get('rowsRead'):,} rows"
    return ""


def _summary(result: dict[str, Any]) -> str:
    metrics = result.get("metrics") or {}
    if metrics:
        return "succeeded: " + ", ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:3])
    rows = result.get("rows") or {}
    if rows:
        return f"succeeded: {rows.get('total', 0):,} rows, fingerprint {str(result.get('fingerprint'))[:19]}"
    return "succeeded"
