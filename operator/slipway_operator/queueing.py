"""Where a queued run stands in Kueue, read from Kueue's own objects (pure: the backend lists, this decides).

A run with `spec.resources.queue` gets a RayJob labelled `kueue.x-k8s.io/queue-name` and created suspended;
Kueue makes a Workload for it (owned by the RayJob), reserves quota for it in the LocalQueue's ClusterQueue when
there is room, and unsuspends the RayJob. Until then the run is `Pending`, reason `Queued`, with its position
among the LocalQueue's pending Workloads (Kueue's order: higher priority first, then older first) and Kueue's own
words for what it waits for ("insufficient unused quota for nvidia.com/gpu in flavor gpu, 1 more needed"). A
Workload Kueue cannot admit at all (its LocalQueue or ClusterQueue does not exist, or is stopped) is
`Inadmissible`: the run says so, naming `spec.resources.queue`, instead of waiting without end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WORKLOAD_API = ("kueue.x-k8s.io/v1beta2", "Workload")
# Kueue makes a Workload within seconds of a labelled RayJob's creation. When it cannot (a PriorityClass that does
# not exist, the RayJob integration not enabled) it only logs the error: after this long the run says so.
WORKLOAD_GRACE_SECONDS = 60


@dataclass(frozen=True)
class QueueState:
    """A queued run's place in Kueue: admitted, or waiting (at `position`, for `waiting_for`), or refused."""

    queue: str
    admitted: bool = False
    position: int | None = None  # 1 = next in its LocalQueue
    waiting_for: str = ""  # Kueue's words
    inadmissible: bool = False  # Kueue will not admit it as things are (no such queue, a stopped queue)
    never_fits: bool = False  # it asks for more than the ClusterQueue could ever give, borrowing included
    preempted: str = ""  # Kueue's words when it took the quota back for a higher-priority workload
    workload: str = ""  # the Workload's name, once Kueue made it
    active: bool = True  # its spec.active: false while its run is suspended (Kueue keeps it out of the queue)
    kueue_missing: bool = False  # Kueue is not installed: nothing will ever admit it

    def status(self) -> dict[str, Any]:
        """status.queue."""
        return {"name": self.queue, "admitted": self.admitted, "position": self.position,
                "message": self.waiting_for or None}  # fmt: skip


def _condition(workload: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (workload.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def _reserved(workload: dict[str, Any]) -> bool:
    return _condition(workload, "QuotaReserved").get("status") == "True"


def _waiting(workload: dict[str, Any]) -> bool:
    return not _reserved(workload) and _condition(workload, "Finished").get("status") != "True"


def _order(workload: dict[str, Any]) -> tuple[int, str, str]:
    """Kueue's order: higher priority, then older; the name only to keep one order among equals (timestamps are to
    the second; Kueue's own order among equals is unspecified)."""
    meta = workload["metadata"]
    return -int((workload.get("spec") or {}).get("priority") or 0), str(meta.get("creationTimestamp")), meta["name"]


def queue_state(queue: str, ray_job: str, workloads: list[dict[str, Any]] | None, waited: float = 0.0) -> QueueState:
    """The run's state from the Workloads of its namespace (None: Kueue's Workload API is not served); `waited`:
    seconds since its RayJob was created."""
    if workloads is None:
        return QueueState(queue, kueue_missing=True)
    mine = next(
        (w for w in workloads if any(o.get("kind") == "RayJob" and o.get("name") == ray_job
                                     for o in w["metadata"].get("ownerReferences") or [])),
        None,
    )  # fmt: skip
    if mine is None and waited > WORKLOAD_GRACE_SECONDS:
        return QueueState(
            queue,
            waiting_for=f"Kueue made no Workload for RayJob {ray_job} in {waited:.0f} s; Kueue's log says why (a "
            "PriorityClass in spec.resources.priorityClassName that does not exist, or Kueue without its RayJob "
            "integration, ray.io/rayjob in integrations.frameworks)",
            inadmissible=True,
        )
    if mine is None:
        return QueueState(queue, waiting_for="waiting for Kueue to make its Workload")
    named = {"workload": mine["metadata"]["name"], "active": (mine.get("spec") or {}).get("active", True) is not False}
    if _reserved(mine) and _condition(mine, "Evicted").get("status") != "True":
        return QueueState(queue, admitted=True, **named)
    pending = _condition(mine, "QuotaReserved")
    words = str(pending.get("message") or "waiting for quota")
    if pending.get("reason") == "Inadmissible":
        return QueueState(queue, waiting_for=words, inadmissible=True, **named)
    # Kept by Kueue until it admits the Workload again (Evicted, reason Preempted; and Preempted itself).
    taken = next((c for c in (_condition(mine, "Preempted"), _condition(mine, "Evicted"))
                  if c.get("status") == "True" and (c.get("type") == "Preempted" or c.get("reason") == "Preempted")),
                 {})  # fmt: skip
    preempted = str(taken.get("message") or "") if taken else ""
    ahead = [
        w for w in workloads
        if (w.get("spec") or {}).get("queueName") == queue and _waiting(w) and _order(w) < _order(mine)
    ]  # fmt: skip
    # Kueue says "> maximum capacity" for a request no amount of waiting fits, "N more needed" for one that waits.
    never = "maximum capacity" in words and "more needed" not in words
    return QueueState(queue, position=len(ahead) + 1, waiting_for=words, preempted=preempted, never_fits=never,
                      **named)  # fmt: skip
