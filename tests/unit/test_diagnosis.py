"""What a run's pods and Events say is wrong, from pod and Event documents shaped as the API server serves them
(the container states and messages below are the kubelet's, scheduler's and KubeRay's own words)."""

from __future__ import annotations

import copy
from typing import Any

from slipway_operator.diagnosis import crashing, diagnose, last_crash, restarts

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
CREATED = "2027-01-15T07:59:00Z"  # a minute before NOW


def pod(name: str = "fashion-train-head-abcde", created: str = CREATED, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {
            "containers": [
                {
                    "name": "ray-head",
                    "image": "ghcr.io/slipway/trainer:0.1.0",
                    "resources": {"limits": {"cpu": "1", "memory": "512Mi"}, "requests": {"cpu": "250m"}},
                }
            ]
        },
        "status": {"phase": "Pending", **status},
    }


def container(waiting: str = "", message: str = "", restarts: int = 0, last: dict[str, Any] | None = None) -> Any:
    state = {"waiting": {"reason": waiting, "message": message}} if waiting else {"running": {}}
    return {"name": "ray-head", "image": "ghcr.io/slipway/trainer:0.1.0", "restartCount": restarts, "state": state,
            "lastState": {"terminated": last} if last else {}}  # fmt: skip


def test_a_healthy_pod_says_nothing() -> None:
    assert diagnose([pod(phase="Running", containerStatuses=[container()])], now=NOW) is None
    assert diagnose([], now=NOW) is None


def test_an_image_that_cannot_be_pulled_names_the_image_and_the_registrys_words_then_fails_after_the_timeout() -> None:
    said = 'failed to pull and unpack image "ghcr.io/slipway/trainer:0.1.0": dial tcp: lookup ghcr.io: no such host'
    p = pod(containerStatuses=[container("ImagePullBackOff", said)])
    d = diagnose([p], now=NOW, pending_timeout=300)
    assert d is not None and d.reason == "ImagePullFailed" and d.severity == "stuck"
    assert "pod fashion-train-head-abcde container ray-head" in d.message
    assert "'ghcr.io/slipway/trainer:0.1.0'" in d.message and "no such host" in d.message
    assert "fails after pendingTimeoutSeconds 300s" in d.message
    late = diagnose([p], now=NOW, pending_timeout=30)
    assert (
        late is not None
        and late.severity == "fatal"
        and "longer than spec.failurePolicy.pendingTimeoutSeconds" in late.message
    )
    invalid = diagnose([pod(containerStatuses=[container("InvalidImageName", "bad ref")])], now=NOW)
    assert invalid is not None and invalid.severity == "fatal"  # no wait mends a malformed name


def test_an_unschedulable_pod_gives_the_schedulers_reason_and_what_it_asked_for() -> None:
    scheduler = "0/3 nodes are available: 1 node(s) had untolerated taint, 2 Insufficient nvidia.com/gpu."
    p = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": scheduler}])
    p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "8"
    d = diagnose([p], now=NOW, pending_timeout=600)
    assert d is not None and d.reason == "Unschedulable" and d.severity == "stuck"
    assert "2 Insufficient nvidia.com/gpu" in d.message and "nvidia.com/gpu 8" in d.message
    assert "lower spec.resources" in d.message


def test_oom_killed_names_the_limit_and_the_field_to_raise_and_is_fatal_once_it_keeps_happening() -> None:
    oom = {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2027-01-15T07:59:40Z"}
    once = pod(phase="Running", containerStatuses=[container(restarts=1, last=oom)])
    d = diagnose([once], now=NOW)
    assert d is not None and d.reason == "OOMKilled" and d.severity == "note"  # restarted, may be fine now
    assert "memory limit 512Mi" in d.message and "raise spec.resources.memory (now 512Mi)" in d.message
    looping = pod(containerStatuses=[container("CrashLoopBackOff", "back-off 40s", restarts=3, last=oom)])
    d = diagnose([looping], now=NOW)
    assert d is not None and d.reason == "OOMKilled" and d.severity == "fatal"


def test_a_crash_loop_gives_the_exit_code_and_its_last_log_lines() -> None:
    error = {"exitCode": 1, "reason": "Error", "finishedAt": "2027-01-15T07:59:50Z"}
    p = pod(containerStatuses=[container("CrashLoopBackOff", "back-off 10s", restarts=2, last=error)])
    assert crashing([p]) == [("fashion-train-head-abcde", "ray-head")]
    lines = {("fashion-train-head-abcde", "ray-head"): "Traceback ...\nFileNotFoundError: /models/m.onnx\n"}
    d = diagnose([p], now=NOW, logs=lines)
    assert d is not None and d.reason == "CrashLoop" and d.severity == "stuck"
    assert "exit code 1, 2 restarts" in d.message and "FileNotFoundError: /models/m.onnx" in d.message
    assert "kubectl logs fashion-train-head-abcde -c ray-head --previous" in d.message
    assert restarts([p]) == 2
    assert last_crash([p]) == "fashion-train-head-abcde/ray-head: Error (exit code 1) at 2027-01-15T07:59:50Z"


def test_a_missing_secret_is_a_config_error() -> None:
    p = pod(containerStatuses=[container("CreateContainerConfigError", 'secret "s3-creds" not found')])
    d = diagnose([p], now=NOW)
    assert d is not None and d.reason == "ConfigError" and 'secret "s3-creds" not found' in d.message


def test_evicted_and_preempted_pods_are_said_not_acted_on() -> None:
    evicted = pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    d = diagnose([evicted], now=NOW)
    assert d is not None and d.reason == "Evicted" and d.severity == "note" and "low on resource" in d.message
    preempted = pod(conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                                 "message": "preempted by a pod on node gpu-1"}])  # fmt: skip
    d = diagnose([preempted], now=NOW)
    assert d is not None and d.reason == "Preempted" and "priorityClassName" in d.message


def test_the_worst_problem_wins_and_a_pod_being_deleted_is_not_looked_at() -> None:
    evicted = pod("w-1", phase="Failed", reason="Evicted", message="low memory")
    pulling = pod("w-2", containerStatuses=[container("InvalidImageName", "bad")])
    d = diagnose([evicted, pulling], now=NOW)
    assert d is not None and d.pod == "w-2" and d.severity == "fatal"
    going = copy.deepcopy(pulling)
    going["metadata"]["deletionTimestamp"] = CREATED
    assert diagnose([going], now=NOW) is None


def test_a_quota_that_stops_kuberay_creating_pods_is_read_from_its_events() -> None:
    event = {
        "type": "Warning",
        "reason": "FailedCreateHeadPod",
        "message": 'Failed to create head Pod ml/a-head: pods "a-head" is forbidden: exceeded quota: gpu, '
        "requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4",
        "involvedObject": {"kind": "RayCluster", "name": "a-raycluster-x"},
    }
    d = diagnose([], [event], now=NOW, pending_timeout=300, started=NOW - 10)
    assert d is not None and d.reason == "QuotaExceeded" and d.severity == "stuck"
    assert "RayCluster a-raycluster-x cannot create its pods" in d.message and "ResourceQuota" in d.message
    late = diagnose([], [event], now=NOW, pending_timeout=300, started=NOW - 400)
    assert late is not None and late.severity == "fatal"
    assert diagnose([], [{**event, "type": "Normal"}], now=NOW) is None


def test_a_failed_submitter_pod_is_said_and_left_to_its_jobs_retries() -> None:
    """KubeRay's submitter runs once per pod (restartPolicy Never): its Job retries, then KubeRay's backoffLimit;
    a failure is not fatal here, and there is no previous container to read the log of."""
    error = {"exitCode": 1, "reason": "Error", "finishedAt": "2027-01-15T07:59:50Z"}
    submitter = pod("fashion-train-abcde", phase="Failed", containerStatuses=[
        {"name": "ray-job-submitter", "restartCount": 0, "state": {"terminated": error}}])  # fmt: skip
    d = diagnose([submitter], now=NOW)
    assert d is not None and d.reason == "CrashLoop" and d.severity == "note", d
    assert "failed (exit code 1, Error)" in d.message and "--previous" not in d.message, d.message
    assert "kubectl logs fashion-train-abcde -c ray-job-submitter" in d.message
    assert crashing([submitter]) == []


def test_a_worker_that_crashed_after_an_hour_is_judged_by_its_restarts_not_by_its_age() -> None:
    error = {"exitCode": 1, "reason": "Error", "finishedAt": "2027-01-15T07:59:50Z"}
    old = pod("w-1", created="2027-01-15T07:00:00Z",
              containerStatuses=[container("CrashLoopBackOff", "back-off 10s", restarts=1, last=error)])  # fmt: skip
    d = diagnose([old], now=NOW, pending_timeout=300)
    assert d is not None and d.reason == "CrashLoop" and d.severity == "stuck", d
    assert "pendingTimeoutSeconds" not in d.message
    running_again = pod("w-1", containerStatuses=[container(restarts=1, last=error)])
    assert crashing([running_again]) == []  # crashed once, long ago, runs again: its log is not read every pass


def head_pod_refused(message: str, at: str) -> dict[str, Any]:
    """KubeRay's Warning Event when the API server refuses its head pod."""
    return {
        "type": "Warning",
        "reason": "FailedCreateHeadPod",
        "message": message,
        "involvedObject": {"kind": "RayCluster", "name": "a-raycluster-x"},
        "lastTimestamp": at,
    }


def test_a_priority_class_that_does_not_exist_is_named_with_what_to_do() -> None:
    event = head_pod_refused(
        'pods "a-head-x" is forbidden: no PriorityClass with name urgent was found', "2027-01-15T07:59:30Z"
    )
    d = diagnose([], [event], now=NOW, pending_timeout=300, started=NOW - 60)
    assert d is not None and d.reason == "PriorityClassNotFound", d
    assert "urgent" in d.message and "spec.resources.priorityClassName" in d.message


def test_a_quota_event_older_than_the_run_is_not_its_problem() -> None:
    event = head_pod_refused(
        'pods "a-head" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=1',
        "2027-01-15T07:00:00Z",  # an hour before NOW: an earlier resource of the same name
    )
    assert diagnose([], [event], now=NOW, pending_timeout=300, started=NOW - 60) is None
    fresh = {**event, "lastTimestamp": "2027-01-15T07:59:30Z"}
    d = diagnose([], [fresh], now=NOW, pending_timeout=300, started=NOW - 60)
    assert d is not None and d.reason == "QuotaExceeded"
    unknown = {**fresh, "message": 'pods "a-head" is forbidden: status unknown for quota: gpu, resource: pods'}
    d = diagnose([], [unknown], now=NOW, pending_timeout=300, started=NOW - 60)
    assert d is not None and d.reason == "QuotaExceeded"


def test_a_pod_less_runs_warning_events_are_looked_at_ever_less_often_until_something_new_is_said() -> None:
    """The looks of a run that stays pod-less: now, 30 s later, then doubling up to 10 min (0.1 requests a minute
    for a run nothing will ever run, where every 30 s cost 2); a new warning brings the next look back to 30 s."""
    from slipway_operator.backends.kubernetes import WARNINGS_MAX_SECONDS, next_warnings_wait

    waits: list[float] = []
    for _ in range(8):
        waits.append(next_warnings_wait(waits[-1] if waits else None, news=False))
    assert waits == [30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0, 600.0]
    assert WARNINGS_MAX_SECONDS == 600.0  # one look per 10 min: 0.1 requests per run per minute at most
    assert next_warnings_wait(600.0, news=True) == 30.0
