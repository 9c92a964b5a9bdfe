"""The status of a run from what is observed: a table of situations and the phase, reason and conditions."""

from __future__ import annotations

import pytest

from slipway_operator.api.common import Phase
from slipway_operator.diagnosis import Diagnosis
from slipway_operator.runstatus import Observed, condition, may_have_written, run_status

NOW = "2026-11-26T12:00:00Z"

TABLE = [
    ("invalid spec", Observed(invalid="searchSpace[x]: no field x"), Phase.INVALID, "InvalidSpec", "Stalled"),
    ("kuberay missing", Observed(missing_crd="rayjobs.ray.io"), Phase.PENDING, "KubeRayMissing", "Stalled"),
    (
        "waiting for the dataset",
        Observed(waiting_for="DatasetPrep fashion (Running)"),
        Phase.WAITING,
        "WaitingForDependency",
        "Reconciling",
    ),
    ("suspended", Observed(suspended=True), Phase.SUSPENDED, "Suspended", None),
    ("no RayJob yet", Observed(), Phase.PENDING, "Creating", "Reconciling"),
    (
        "cluster starting",
        Observed(ray_job={"jobDeploymentStatus": "Initializing"}),
        Phase.PENDING,
        "Starting",
        "Reconciling",
    ),
    (
        "running",
        Observed(
            ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
            progress={"phase": "Training", "epoch": 3, "totalEpochs": 10},
        ),
        Phase.RUNNING,
        "Running",
        "Reconciling",
    ),
    (
        "retrying",
        Observed(ray_job={"jobDeploymentStatus": "Retrying", "message": "worker died"}),
        Phase.RUNNING,
        "Retrying",
        "Reconciling",
    ),
    ("kueue holds it", Observed(ray_job={"jobDeploymentStatus": "Suspended"}), Phase.SUSPENDED, "Suspended", None),
    (
        "deadline exceeded",
        Observed(
            ray_job={"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "activeDeadlineSeconds"}
        ),
        Phase.FAILED,
        "DeadlineExceeded",
        "Failed",
    ),
    (
        "job done, no result.json where this operator looks (it was started with another store)",
        Observed(
            ray_job={"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
            result_uri="s3://other/datasets/ml/mpg/_run/result.json",
        ),
        Phase.RUNNING,
        "ResultMissing",
        "Stalled",
    ),
    (
        "a pod cannot pull its image, within the pending timeout",
        Observed(
            ray_job={"jobDeploymentStatus": "Initializing"},
            diagnosis=Diagnosis("ImagePullFailed", "pod a-head container ray-head cannot pull image 'x:1'", "stuck"),
        ),
        Phase.PENDING,
        "ImagePullFailed",
        "Stalled",
    ),
    (
        "a pod cannot be scheduled, past the pending timeout",
        Observed(
            ray_job={"jobDeploymentStatus": "Initializing"},
            diagnosis=Diagnosis("Unschedulable", "pod a-worker cannot be scheduled: 0/2 nodes", "fatal"),
        ),
        Phase.FAILED,
        "Unschedulable",
        "Failed",
    ),
    (
        "KubeRay gave up on a job whose head was OOMKilled: the pods' reason, not KubeRay's",
        Observed(
            ray_job={"jobDeploymentStatus": "Failed", "reason": "AppFailed", "message": "job failed"},
            diagnosis=Diagnosis("OOMKilled", "pod a-head container ray-head ran out of memory", "note"),
        ),
        Phase.FAILED,
        "OOMKilled",
        "Failed",
    ),
    (
        "a worker pod was evicted and KubeRay replaces it: still running, the eviction said",
        Observed(
            ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "failed": 1},
            diagnosis=Diagnosis("Evicted", "pod a-worker was evicted by its node", "note"),
            attempts=3,
        ),
        Phase.RUNNING,
        "Running",
        "Reconciling",
    ),
    (
        "job done, the store cannot be read",
        Observed(
            ray_job={"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
            store_error="s3://slipway/runs/a/_run/result.json: PermissionError: Forbidden",
        ),
        Phase.RUNNING,
        "StorageUnavailable",
        "Stalled",
    ),
    (
        "job done, its result breaks the contract (another Slipway version wrote it)",
        Observed(
            ray_job={"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
            broken_result="s3://slipway/runs/a/result.json does not match the Result contract: status: Field required",
        ),
        Phase.RUNNING,
        "ResultUnreadable",
        "Stalled",
    ),
    (
        "running, its progress cannot be read",
        Observed(
            ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
            store_error="s3://slipway/runs/a/_run/progress.json: EndpointConnectionError: Could not connect",
        ),
        Phase.RUNNING,
        "StorageUnavailable",
        "Reconciling",
    ),
    (
        "an attempt failed in a way a retry may mend, KubeRay retrying",
        Observed(
            ray_job={"jobDeploymentStatus": "Retrying", "failed": 1},
            result={"status": "Failed", "reason": "InternalError", "message": "node lost", "retryable": True},
        ),
        Phase.RUNNING,
        "Retrying",
        "Reconciling",
    ),
    (
        "the last attempt failed too",
        Observed(
            ray_job={"jobDeploymentStatus": "Failed", "failed": 3},
            result={"status": "Failed", "reason": "InternalError", "message": "node lost", "retryable": True},
        ),
        Phase.FAILED,
        "InternalError",
        "Failed",
    ),
    (
        "a failure no retry mends, the job still winding down",
        Observed(
            ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
            result={"status": "Failed", "reason": "LabelNotFound", "message": "no column y", "retryable": False},
        ),
        Phase.FAILED,
        "LabelNotFound",
        "Failed",
    ),
    (
        "job stopped",
        Observed(ray_job={"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}),
        Phase.FAILED,
        "RayJobFailed",
        "Failed",
    ),
    (
        "workload succeeded",
        Observed(
            ray_job={"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
            result={"status": "Succeeded", "metrics": {"test_accuracy": 0.93}},
        ),
        Phase.SUCCEEDED,
        "Succeeded",
        "Ready",
    ),
    (
        "workload failed with a reason",
        Observed(result={"status": "Failed", "reason": "NaNLoss", "message": "lower optimizer.learningRate"}),
        Phase.FAILED,
        "NaNLoss",
        "Failed",
    ),
]


@pytest.mark.parametrize(("case", "observed", "phase", "reason", "true_condition"), TABLE, ids=[t[0] for t in TABLE])
def test_status_table(case: str, observed: Observed, phase: Phase, reason: str, true_condition: str | None) -> None:
    status = run_status(observed, [], generation=2, now=NOW)
    assert status.phase == phase
    by_type = {c["type"]: c for c in status.conditions}
    assert set(by_type) == {"Ready", "Reconciling", "Stalled", "Succeeded", "Failed"}
    assert by_type["Ready"]["reason"] == reason
    assert all(c["observedGeneration"] == 2 for c in status.conditions)
    trues = {t for t, c in by_type.items() if c["status"] == "True"}
    also = {"Ready": {"Succeeded"}, "Failed": {"Stalled"}}  # a failed run is Stalled as well (kstatus: Failed)
    assert trues == ({true_condition} | also.get(true_condition, set()) if true_condition else set())
    assert status.message


def test_messages_say_what_to_do() -> None:
    assert "install KubeRay" in run_status(Observed(missing_crd="rayjobs.ray.io"), [], 1, NOW).message
    assert "spec.suspend to false" in run_status(Observed(suspended=True), [], 1, NOW).message
    assert (
        "NaNLoss: lower"
        in run_status(
            Observed(result={"status": "Failed", "reason": "NaNLoss", "message": "lower the rate"}), [], 1, NOW
        ).message
    )


def test_progress_in_words() -> None:
    running = Observed(
        ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, progress={"epoch": 3, "totalEpochs": 10}
    )
    assert run_status(running, [], 1, NOW).progress == "epoch 3/10"
    resumed = Observed(
        ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        progress={"epoch": 5, "totalEpochs": 10, "resumedFrom": [3]},
    )
    assert run_status(resumed, [], 1, NOW).progress == "epoch 5/10 (resumed from the epoch-3 checkpoint)"
    for lost, said in ((0, "no finished epoch lost"), (1, "1 finished epoch trained again"), (4, "4 finished epochs")):
        resumed.progress = resumed.progress.model_copy(update={"epochs_lost": lost})
        assert run_status(resumed, [], 1, NOW).progress.startswith(
            f"epoch 5/10 (resumed from the epoch-3 checkpoint, {said}"
        )
    sweep = Observed(
        ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, progress={"trialsDone": 4, "maxTrials": 12}
    )
    assert run_status(sweep, [], 1, NOW).progress == "4/12 trials"
    prep = Observed(ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, progress={"rowsRead": 1200000})
    assert run_status(prep, [], 1, NOW).progress == "1,200,000 rows"


def test_transition_time_moves_only_when_the_status_changes() -> None:
    before = [condition("Ready", False, "Running", "", 1, "2026-01-01T00:00:00Z", [])]
    same = condition("Ready", False, "Running", "epoch 4", 1, NOW, before)
    assert same["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = condition("Ready", True, "Succeeded", "", 1, NOW, before)
    assert flipped["lastTransitionTime"] == NOW


def test_failure_messages_name_the_field_to_change_and_the_attempt() -> None:
    deadline = Observed(ray_job={"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "late"})
    assert "raise it" in run_status(deadline, [], 1, NOW).message
    assert "activeDeadlineSeconds" in run_status(deadline, [], 1, NOW).message
    retried = Observed(ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "failed": 1}, attempts=3)
    assert "attempt 2 of 3" in run_status(retried, [], 1, NOW).message
    assert "attempt" not in run_status(Observed(ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
                                                attempts=3), [], 1, NOW).message  # fmt: skip
    fatal = Observed(
        ray_job={"jobDeploymentStatus": "Initializing"}, diagnosis=Diagnosis("Unschedulable", "x", "fatal")
    )
    assert "RayJob is suspended" in run_status(fatal, [], 1, NOW).message
    missing = Observed(
        ray_job={"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, result_uri="s3://b/r.json"
    )
    assert "s3://b/r.json is not there" in run_status(missing, [], 1, NOW).message
    quota = Observed(apply_error="the API server refused RayJob a (HTTP 403): exceeded quota: q, requested: cpu=8")
    assert run_status(quota, [], 1, NOW).conditions[2]["reason"] == "QuotaExceeded"
    uncounted = Observed(apply_error="refused RayJob a (HTTP 403): status unknown for quota: q; check the RBAC and the "
                         "namespace's ResourceQuota")  # fmt: skip
    assert run_status(uncounted, [], 1, NOW).conditions[2]["reason"] == "QuotaExceeded"
    rbac = Observed(
        apply_error="refused RayJob a (HTTP 403): forbidden; check the RBAC and the namespace's ResourceQuota"
    )
    assert run_status(rbac, [], 1, NOW).conditions[2]["reason"] == "ApplyFailed"


STARTED_AT = {"startTime": NOW}


@pytest.mark.parametrize(
    ("why", "job", "run", "reads"),
    [
        ("no RayJob before this pass: it is being created", None, {}, False),
        ("KubeRay has not written a status yet", {}, {}, False),
        ("the Ray cluster is starting", {"status": {"jobDeploymentStatus": "Initializing"}}, {}, False),
        ("Kueue holds it", {"status": {"jobDeploymentStatus": "Suspended"}}, {}, False),
        ("the local backend queues it", {"status": {"jobDeploymentStatus": "Queued"}}, {}, False),
        ("its entrypoint runs", {"status": {"jobDeploymentStatus": "Running"}}, {}, True),
        ("it ended", {"status": {"jobDeploymentStatus": "Complete"}}, {}, True),
        ("it is being suspended", {"status": {"jobDeploymentStatus": "Suspending"}}, {}, True),
        ("a failed attempt, starting again", {"status": {"jobDeploymentStatus": "Initializing", "failed": 1}}, {},
         True),
        ("resumed after it ran", {"status": {"jobDeploymentStatus": "Initializing"}}, STARTED_AT, True),
        ("progress shown before", {"status": {"jobDeploymentStatus": "Suspended"}}, {"progress": "epoch 2/9"}, True),
        ("its RayJob deleted after it started", None, STARTED_AT, True),
    ],
)  # fmt: skip
def test_the_store_is_read_once_the_workload_may_have_written(
    why: str, job: dict[str, object] | None, run: dict[str, object], reads: bool
) -> None:
    assert may_have_written(job, run) is reads, why
