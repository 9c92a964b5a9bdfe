"""A queued run's place in Kueue, from Workloads shaped as Kueue v0.17 writes them (seen on the test bed), and the
status it gives the run; the RayJob of a queued run is created suspended, and held only when its user says so."""

from __future__ import annotations

from typing import Any

from slipway_operator import builders
from slipway_operator.api.common import Phase, Resources
from slipway_operator.queueing import queue_state
from slipway_operator.runstatus import Observed, decide

QUOTA = (
    "couldn't assign flavors to pod set workers: insufficient unused quota for nvidia.com/gpu in flavor gpu, "
    "1 more needed"
)


def workload(job: str, created: str, queue: str = "team", reserved: bool | None = False, priority: int = 0,
             reason: str = "Pending", message: str = QUOTA, finished: bool = False) -> dict[str, Any]:  # fmt: skip
    conditions = []
    if reserved is not None:
        conditions.append({"type": "QuotaReserved", "status": str(reserved), "reason": reason, "message": message})
    if finished:
        conditions.append({"type": "Finished", "status": "True", "reason": "Succeeded", "message": "done"})
    return {
        "metadata": {"name": f"rayjob-{job}-abcde", "creationTimestamp": created,
                     "ownerReferences": [{"kind": "RayJob", "name": job, "apiVersion": "ray.io/v1"}]},
        "spec": {"queueName": queue, "priority": priority},
        "status": {"conditions": conditions},
    }  # fmt: skip


def test_a_waiting_run_has_its_place_behind_older_and_higher_priority_workloads_of_its_queue() -> None:
    others = [
        workload("older", "2026-12-06T10:00:00Z"),
        workload("running", "2026-12-06T09:00:00Z", reserved=True, reason="QuotaReserved", message="reserved"),
        workload("urgent", "2026-12-06T10:05:00Z", priority=100),
        workload("newer", "2026-12-06T10:10:00Z"),
        workload("elsewhere", "2026-12-06T09:00:00Z", queue="other"),
        workload("done", "2026-12-06T08:00:00Z", reserved=False, finished=True),
    ]
    state = queue_state("team", "mine", [*others, workload("mine", "2026-12-06T10:02:00Z")])
    assert (state.admitted, state.position, state.waiting_for) == (False, 3, QUOTA)  # behind older and urgent
    decision = decide(Observed(ray_job={}, queue=state))
    assert decision.phase == Phase.PENDING and decision.reason == "Queued"
    assert decision.message == f"queued in LocalQueue team, position 3: {QUOTA}"
    assert state.status() == {"name": "team", "admitted": False, "position": 3, "message": QUOTA}


def test_an_admitted_run_goes_on_as_any_other_and_one_without_its_workload_yet_waits_for_kueue() -> None:
    admitted = queue_state("team", "mine", [workload("mine", "2026-12-06T10:00:00Z", reserved=True)])
    assert admitted.admitted
    running = decide(Observed(ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, queue=admitted))
    assert running.phase == Phase.RUNNING
    early = queue_state("team", "mine", [], waited=5)
    assert not early.admitted and early.position is None and "Kueue" in early.waiting_for and not early.inadmissible
    never = decide(Observed(ray_job={}, queue=queue_state("team", "mine", [], waited=61)))
    assert never.reason == "QueueUnavailable" and never.stalled and "PriorityClass" in never.message


def test_no_such_queue_and_no_kueue_are_said_with_what_to_do_instead_of_an_endless_wait() -> None:
    missing = workload("mine", "2026-12-06T10:00:00Z", queue="nope", reason="Inadmissible",
                       message="LocalQueue nope doesn't exist")  # fmt: skip
    state = queue_state("nope", "mine", [missing])
    stuck = decide(Observed(ray_job={}, queue=state))
    assert stuck.phase == Phase.PENDING and stuck.reason == "QueueUnavailable" and stuck.stalled
    assert "LocalQueue nope doesn't exist" in stuck.message and "spec.resources.queue" in stuck.message
    huge = workload("mine", "2026-12-06T10:00:00Z", message="couldn't assign flavors to pod set workers: insufficient "
                    "quota for cpu in flavor default, previously considered podsets requests (250m) + current podset "
                    "request (8) > maximum capacity (3)")  # fmt: skip
    never = decide(Observed(ray_job={}, queue=queue_state("team", "mine", [huge])))
    assert never.reason == "QuotaNeverFits" and never.stalled and "maximum capacity (3)" in never.message
    assert "lower spec.resources" in never.message
    no_kueue = decide(Observed(ray_job={}, queue=queue_state("team", "mine", None)))
    assert no_kueue.reason == "KueueMissing" and no_kueue.stalled and "install Kueue" in no_kueue.message


def test_a_queued_runs_rayjob_is_created_suspended_for_kueue_and_held_only_when_its_user_suspends_it() -> None:
    owner = builders.Owner("slipway.dev/v1alpha1", "TrainingRun", "run", "ns", "uid-1")

    def job(queue: str, suspend: bool) -> dict[str, Any]:
        workload_ = builders.Workload(step="train", image="img", resources=Resources(queue=queue), config="{}",
                                      suspend=suspend)  # fmt: skip
        return builders.ray_job(owner, workload_)

    queued = job("team", False)
    assert queued["spec"]["suspend"] is True
    assert queued["metadata"]["labels"][builders.KUEUE_QUEUE_LABEL] == "team"
    assert builders.HELD_ANNOTATION not in (queued["metadata"].get("annotations") or {})
    held = job("team", True)
    assert held["spec"]["suspend"] is True and held["metadata"]["annotations"][builders.HELD_ANNOTATION] == "true"
    plain = job("", False)
    assert plain["spec"]["suspend"] is False and builders.KUEUE_QUEUE_LABEL not in plain["metadata"]["labels"]


def test_a_preempted_run_says_so_and_where_it_waits_again_until_kueue_admits_it_again() -> None:
    taken = workload("mine", "2026-12-06T10:00:00Z", message="couldn't assign flavors: insufficient unused quota")
    taken["status"]["conditions"] += [
        {"type": "Evicted", "status": "True", "reason": "Preempted", "message": "Preempted to accommodate a workload"},
        {"type": "Preempted", "status": "True", "reason": "InClusterQueue", "message": "Preempted to accommodate a "
         "workload (UID: 1) due to prioritization in the ClusterQueue"},
    ]  # fmt: skip
    state = queue_state("team", "mine", [taken])
    assert not state.admitted and state.position == 1 and "prioritization" in state.preempted
    decision = decide(Observed(ray_job={"jobDeploymentStatus": "Suspended"}, queue=state))
    assert decision.phase == Phase.PENDING and decision.reason == "Preempted"
    assert "queued again in LocalQueue team, position 1" in decision.message and "checkpoint" in decision.message
    # Kueue resets both conditions when it admits the Workload again
    again = workload("mine", "2026-12-06T10:00:00Z", reserved=True)
    again["status"]["conditions"].append({"type": "Evicted", "status": "False", "reason": "QuotaReserved"})
    assert queue_state("team", "mine", [again]).admitted
