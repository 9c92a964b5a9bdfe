"""Why a run's pods are not doing their work, from the pods and Events of its children (the Ray head and
workers, KubeRay's submitter, a server's replicas), as Kubernetes reports them; pure.

`diagnose(pods, events, ...)` names the worst problem it sees as a `Diagnosis`: a reason from `REASONS` a machine
can match, and a message that names the pod and container, the cause in the cluster's own words, and the fix.
Its `severity` says what the run makes of it: `fatal` (it will not mend itself: the run fails now), `stuck`
(nothing moves until something outside changes; fatal once the pod has waited `pendingTimeoutSeconds`) or `note`
(Kubernetes or KubeRay is already replacing the pod; said, not acted on).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

REASONS = (
    "ImagePullFailed",
    "Unschedulable",
    "ConfigError",
    "QuotaExceeded",
    "PodRefused",
    "OOMKilled",
    "CrashLoop",
    "Evicted",
    "Preempted",
)
IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"}
CONFIG = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
NEVER_STARTED = {"ImagePullFailed", "ConfigError"}  # container problems that keep a pod from ever starting
CRASH_LIMIT = 3  # restarts after which a crashing container is not going to start working
DEFAULT_PENDING_TIMEOUT = 300
LOG_LINES = 5
EVENT_SLACK = 5.0  # seconds an Event may seem older than the children it is about (clocks, rounding to seconds)

Severity = Literal["fatal", "stuck", "note"]
_RANK = {"fatal": 0, "stuck": 1, "note": 2}


@dataclass(frozen=True)
class Diagnosis:
    reason: str
    message: str
    severity: Severity = "stuck"
    pod: str = ""
    container: str = ""


def _age(meta: Mapping[str, Any], now: float) -> float:
    stamp = str(meta.get("creationTimestamp") or "")
    try:
        created = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, now - created)


def _requests(pod: Mapping[str, Any]) -> str:
    """What the pod asks the scheduler for, e.g. `cpu 2, memory 4Gi, nvidia.com/gpu 8`."""
    asked: dict[str, str] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        for name, value in {**(resources.get("limits") or {}), **(resources.get("requests") or {})}.items():
            asked.setdefault(name, str(value))
    return ", ".join(f"{k} {v}" for k, v in sorted(asked.items())) or "nothing in particular"


def _limit(pod: Mapping[str, Any], container: str) -> str:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            return str(((c.get("resources") or {}).get("limits") or {}).get("memory") or "none")
    return "none"


def _after(severity: Severity, age: float, timeout: int) -> Severity:
    """A stuck pod is fatal once it has waited longer than the pending timeout."""
    return "fatal" if severity == "stuck" and age >= timeout else severity


def crashing(pods: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(pod, container) of each container in a crash loop now (restarted after a failure, and not running again):
    whose last log lines are worth reading. One that crashed once, long ago, and runs is not read every pass."""
    found = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            last = ((cs.get("lastState") or {}).get("terminated")) or ((cs.get("state") or {}).get("terminated"))
            running = "running" in (cs.get("state") or {})
            if last and last.get("exitCode") not in (0, None) and int(cs.get("restartCount") or 0) >= 1 and not running:
                found.append((str(pod["metadata"]["name"]), str(cs.get("name"))))
    return found


def is_quota(text: str) -> bool:
    """Whether the API server's words are a ResourceQuota's refusal: "exceeded quota: q, ...", or "status unknown
    for quota: q" before the quota controller has counted (not the hint about ResourceQuotas every 403 gets)."""
    return "exceeded quota" in text or "for quota:" in text


def _container_problem(
    pod: Mapping[str, Any], cs: Mapping[str, Any], logs: Mapping[tuple[str, str], str], memory_field: str
) -> Diagnosis | None:
    name, container = str(pod["metadata"]["name"]), str(cs.get("name"))
    where = f"pod {name} container {container}"
    waiting = (cs.get("state") or {}).get("waiting") or {}
    why, said = str(waiting.get("reason") or ""), " ".join(str(waiting.get("message") or "").split())
    restarts = int(cs.get("restartCount") or 0)
    if why in IMAGE_PULL:
        image = cs.get("image") or next(
            (c.get("image") for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") == container), ""
        )
        return Diagnosis(
            "ImagePullFailed",
            f"{where} cannot pull image {image!r} ({why}: {said or 'no message'}); check the image name and tag "
            "(the operator's image setting: the chart's image.*), that the nodes can reach its registry, and the "
            "imagePullSecrets it needs",
            "fatal" if why == "InvalidImageName" else "stuck",
            name,
            container,
        )
    if why in CONFIG:
        return Diagnosis(
            "ConfigError",
            f"{where} cannot start ({why}: {said or 'no message'}); create the Secret or ConfigMap it names, or fix "
            "the reference in the spec",
            "stuck",
            name,
            container,
        )
    terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated") or {}
    # A Failed pod ran once (restartPolicy Never: KubeRay's submitter): its Job's retries, then KubeRay's
    # backoffLimit, decide whether the run goes on; it is said, and the RayJob's failure carries it if they give up.
    pod_failed = (pod.get("status") or {}).get("phase") == "Failed"
    if terminated.get("reason") == "OOMKilled":
        limit = _limit(pod, container)
        return Diagnosis(
            "OOMKilled",
            f"{where} ran out of memory and was killed (memory limit {limit}, {restarts} restart"
            f"{'s' if restarts != 1 else ''}): raise {memory_field} (now {limit}), or lower the batch size",
            "fatal" if restarts >= CRASH_LIMIT else ("stuck" if why == "CrashLoopBackOff" else "note"),
            name,
            container,
        )
    code = terminated.get("exitCode")
    if why == "CrashLoopBackOff" or (pod_failed and code not in (0, None)):
        tail = logs.get((name, container), "").strip()
        shown = f"; its last log lines:\n{tail}" if tail else ""
        why_ended = f", {terminated.get('reason')}" if terminated.get("reason") else ""
        if pod_failed and not restarts:
            return Diagnosis(
                "CrashLoop",
                f"{where} failed (exit code {code}{why_ended}); see `kubectl logs {name} -c {container}`",
                "note",
                name,
                container,
            )
        return Diagnosis(
            "CrashLoop",
            f"{where} keeps crashing (exit code {code}, {restarts} restart{'s' if restarts != 1 else ''}"
            f"{why_ended}); see `kubectl logs {name} -c {container} --previous`{shown}",
            "fatal" if restarts >= CRASH_LIMIT else "stuck",
            name,
            container,
        )
    return None


def _pod_problem(
    pod: Mapping[str, Any], logs: Mapping[tuple[str, str], str], memory_field: str, now: float, timeout: int
) -> Diagnosis | None:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name = str(meta.get("name"))
    if meta.get("deletionTimestamp"):
        return None  # on its way out: its replacement is the one to look at
    if status.get("reason") == "Evicted":
        return Diagnosis(
            "Evicted",
            f"pod {name} was evicted by its node ({' '.join(str(status.get('message') or '').split())}); KubeRay "
            "replaces it: give the pods more memory or ephemeral storage, or run them on nodes with room",
            "note",
            name,
        )
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    target = conditions.get("DisruptionTarget") or {}
    if target.get("status") == "True" and target.get("reason") == "PreemptionByScheduler":
        return Diagnosis(
            "Preempted",
            f"pod {name} was preempted for a pod of higher priority ({target.get('message') or 'no message'}); set "
            "spec.resources.priorityClassName, or queue the run (spec.resources.queue) where it will not be",
            "note",
            name,
        )
    scheduled = conditions.get("PodScheduled") or {}
    age = _age(meta, now)
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        said = " ".join(str(scheduled.get("message") or "no node fits").split())
        found = Diagnosis(
            "Unschedulable",
            f"pod {name} cannot be scheduled: {said}; it asks for {_requests(pod)}: lower spec.resources, or add "
            "nodes that have them (GPU nodes: check their labels and taints match the operator's GPU pool)",
            "stuck",
            name,
        )
        return _with_wait(found, age, timeout)
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        found_c = _container_problem(pod, cs, logs, memory_field)
        if found_c is not None and found_c.reason in NEVER_STARTED:  # waited since the pod was made
            return _with_wait(found_c, age, timeout)
        if found_c is not None:  # a crash loop is judged by its restarts, not by how long the pod has lived
            return found_c
    return None


def _with_wait(d: Diagnosis, age: float, timeout: int) -> Diagnosis:
    severity = _after(d.severity, age, timeout)
    if severity == "fatal" and d.severity == "stuck":
        message = f"{d.message} (waited {int(age)}s, longer than spec.failurePolicy.pendingTimeoutSeconds {timeout}s)"
    elif d.severity == "stuck":
        message = f"{d.message} (waiting {int(age)}s; the run fails after pendingTimeoutSeconds {timeout}s)"
    else:
        message = d.message
    return Diagnosis(d.reason, message, severity, d.pod, d.container)


def _event_time(event: Mapping[str, Any]) -> float | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        stamp = event.get(key) or ((event.get("series") or {}).get("lastObservedTime") if key == "eventTime" else None)
        if stamp:
            try:
                return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _event_problem(event: Mapping[str, Any], now: float, timeout: int, started: float) -> Diagnosis | None:
    if event.get("type") != "Warning" or not str(event.get("reason") or "").startswith("Failed"):
        return None
    seen = _event_time(event)
    if seen is not None and seen < started - EVENT_SLACK:
        return None  # older than these children: an earlier resource of the same name, or a refusal since mended
    said = " ".join(str(event.get("message") or "").split())
    involved = event.get("involvedObject") or {}
    what = f"{involved.get('kind', 'object')} {involved.get('name', '')}"
    if is_quota(said):
        found = Diagnosis(
            "QuotaExceeded",
            f"{what} cannot create its pods: {said}; raise the namespace's ResourceQuota, or lower spec.resources",
        )
    elif "no PriorityClass with name" in said:  # the API server's Priority admission plugin
        found = Diagnosis(
            "PriorityClassNotFound",
            f"{what} cannot create its pods: {said}; spec.resources.priorityClassName must name a PriorityClass "
            "that exists (`kubectl get priorityclasses`): create it, or leave the field out",
        )
    elif "forbidden" in said.lower() and "Create" in str(event.get("reason")):
        found = Diagnosis("PodRefused", f"{what} cannot create its pods: {said}; see the cluster's admission policy")
    else:
        return None
    return _with_wait(found, max(0.0, now - started), timeout)


def diagnose(
    pods: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]] = (),
    *,
    now: float,
    pending_timeout: int = DEFAULT_PENDING_TIMEOUT,
    started: float | None = None,
    logs: Mapping[tuple[str, str], str] | None = None,
    memory_field: str = "spec.resources.memory",
) -> Diagnosis | None:
    """The worst problem among the pods (fatal before stuck before a note; the first pod wins a tie), else one
    an Event tells (a quota, an admission refusal: no pod to look at); None when nothing is wrong that shows.
    `started` is when the children were created (an Event's wait is counted from it)."""
    found = [d for pod in pods if (d := _pod_problem(pod, logs or {}, memory_field, now, pending_timeout))]
    if not found:
        found = [d for e in events if (d := _event_problem(e, now, pending_timeout, started or now))]
    return min(found, key=lambda d: _RANK[d.severity], default=None)


def age_of(obj: Mapping[str, Any] | None, now: float) -> float:
    """Seconds since an object was created (0 when it says no time)."""
    return _age((obj or {}).get("metadata") or {}, now)


def restarts(pods: Iterable[Mapping[str, Any]]) -> int:
    """Container restarts across the pods."""
    return sum(
        int(cs.get("restartCount") or 0)
        for pod in pods
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
    )


def last_crash(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """The latest container crash among the pods, in words (`pod/container: OOMKilled (exit code 137) at ...`)."""
    crashes = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if last and last.get("exitCode") not in (0, None):
                at = str(last.get("finishedAt") or "")
                why = last.get("reason") or "Error"
                crashes.append((at, f"{pod['metadata']['name']}/{cs.get('name')}: {why} (exit code {last['exitCode']})"
                                f"{' at ' + at if at else ''}"))  # fmt: skip
    return max(crashes)[1] if crashes else None
