"""How a ModelDeployment's servers are doing: replicas ready and rolled out, the canary's gate, and the
health conditions (Available, Degraded, Drifted) and live quality from the stable track's /metrics; pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from slipway_operator.api.common import Phase
from slipway_operator.api.modeldeployment import Analysis, ModelDeploymentSpec
from slipway_operator.diagnosis import Diagnosis, diagnose, last_crash, restarts
from slipway_operator.runstatus import condition
from slipway_operator.servermetrics import Traffic
from slipway_trainer.config.serve import LOWER_IS_BETTER, Quality

MIN_REQUESTS_FOR_HEALTH = 20  # fewer requests say nothing about an error rate
MAX_GROUPS = 20  # groups in status.quality (each server reports its 20 most frequent)


@dataclass(frozen=True)
class Pods:
    """What the stable track's pods say: the worst problem among them, their restarts, their last crash."""

    problem: Diagnosis | None = None
    restarts: int = 0
    last_crash: str | None = None

    @classmethod
    def of(cls, pods: list[dict[str, Any]], now: float, logs: dict[tuple[str, str], str]) -> Pods:
        problem = diagnose(pods, now=now, logs=logs)
        return cls(problem, restarts(pods), last_crash(pods))


def replicas_ready(deployment: dict[str, Any] | None) -> tuple[int, int, bool]:
    """(ready, desired, rolled out: every replica runs the newest template)."""
    if not deployment:
        return 0, 0, False
    status = deployment.get("status") or {}
    desired = int((deployment.get("spec") or {}).get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    observed = (status.get("observedGeneration") or 0) >= (deployment.get("metadata") or {}).get("generation", 0)
    done = observed and updated >= desired and ready >= desired and int(status.get("replicas") or 0) <= desired
    return ready, desired, done


PASSED, FAILED, INCONCLUSIVE = "passed", "failed", "inconclusive"


def gate(analysis: Analysis, window: Traffic | None, ready: int, scrape_error: str | None) -> tuple[str, str]:
    """Whether a canary step passed, failed or cannot be judged yet, from the requests the canary served during the
    step (`window`), and what was measured. Fewer than `minRequests` requests judge nothing: inconclusive."""
    if ready < 1:
        return FAILED, "no canary replica became ready within server.startupTimeoutSeconds"
    if window is None:
        return FAILED, f"the canary's /metrics could not be read ({scrape_error or 'no replica answered'})"
    if window.requests < analysis.min_requests:
        return INCONCLUSIVE, (
            f"{window.requests} requests reached the canary during the step; analysis.minRequests is "
            f"{analysis.min_requests}"
        )
    p99 = window.quantile_ms(0.99)
    measured = f"error rate {window.error_rate:.2%} over {window.requests} requests, p99 {ms(p99)}"
    if window.error_rate > analysis.max_error_rate:
        return FAILED, f"{measured}: error rate above maxErrorRate {analysis.max_error_rate:.2%}"
    if p99 is not None and p99 > analysis.max_p99_latency_ms:
        return FAILED, f"{measured}: p99 above maxP99LatencyMs {analysis.max_p99_latency_ms:g} ms"
    return PASSED, measured


def quality_gate(
    analysis: Analysis, quality: Quality, canary: Traffic | None, stable: Traffic | None
) -> tuple[str, str] | None:
    """The canary's live quality against the stable track's (`analysis.maxQualityDrop`): None when not asked."""
    metric = quality.metric
    if analysis.max_quality_drop is None or metric is None:
        return None
    rows = {track: (t.quality_rows if t else 0) for track, t in (("canary", canary), ("stable", stable))}
    short = [f"{track} {n}" for track, n in rows.items() if n < quality.min_rows]
    if short:
        return INCONCLUSIVE, (
            f"live {metric} needs {quality.min_rows} feedback rows on each track (monitoring.quality.minRows); "
            f"so far: {', '.join(short)}"
        )
    assert canary is not None and stable is not None
    new, old = canary.quality.get(metric), stable.quality.get(metric)
    if new is None or old is None:
        return FAILED, f"live {metric} is not measured for this model (monitoring.quality.metric)"
    drop = (new - old) if metric in LOWER_IS_BETTER else (old - new)
    measured = f"live {metric} {new:.4g} (canary) vs {old:.4g} (stable)"
    if drop > analysis.max_quality_drop:
        return FAILED, f"{measured}: worse by {drop:.4g}, above maxQualityDrop {analysis.max_quality_drop:g}"
    return PASSED, measured


def fairness_gap(quality: Quality, traffic: Traffic | None) -> dict[str, Any] | None:
    """The largest gap in live quality between the groups feedback named, among those with `minRows` rows each (at
    least two): `monitoring.quality.metric` when set, else accuracy or MAE. None before that."""
    groups = {g: t for g, t in (traffic.groups if traffic else {}).items() if t.quality_rows >= quality.min_rows}
    measured = {m for t in groups.values() for m in t.quality}
    metric = quality.metric if quality.metric in measured else ("accuracy" if "accuracy" in measured else "mae")
    values = {g: t.quality[metric] for g, t in groups.items() if metric in t.quality}
    if len(values) < 2:
        return None
    low, high = min(values, key=lambda g: values[g]), max(values, key=lambda g: values[g])
    worst, best = (high, low) if metric in LOWER_IS_BETTER else (low, high)
    return {"metric": metric, "gap": round(values[high] - values[low], 6), "worst": worst, "best": best,
            "worstValue": round(values[worst], 6), "bestValue": round(values[best], 6)}  # fmt: skip


def fairness_gate(limit: float | None, quality: Quality, canary: Traffic | None) -> tuple[str, str] | None:
    """The canary's live fairness (`autoUpdate.gate.maxFairnessGap`, from feedback that names groups): FAILED when its
    gap is above the limit, None when not asked or not measured (feedback may never name a group)."""
    gap = fairness_gap(quality, canary) if limit is not None else None
    if gap is None or limit is None:
        return None
    rows = {g: canary.groups[g].quality_rows for g in (gap["worst"], gap["best"])} if canary else {}
    words = (
        f"live {gap['metric']} gap {gap['gap']:.4g} between groups {gap['worst']} ({gap['worstValue']:.4g}, "
        f"{rows.get(gap['worst'], 0)} rows) and {gap['best']} ({gap['bestValue']:.4g}, {rows.get(gap['best'], 0)} rows)"
    )
    if gap["gap"] > limit:
        return FAILED, f"{words} is above autoUpdate.gate.maxFairnessGap {limit:g}"
    return PASSED, words


def quality_problem(quality: Quality, traffic: Traffic | None) -> tuple[str, str] | None:
    """(reason, words) when live quality is judged and found wanting: QualityDropped below (or, for errors, above)
    `monitoring.quality.threshold`; nothing before `minRows` feedback rows."""
    if quality.metric is None or quality.threshold is None or traffic is None:
        return None
    if traffic.quality_rows < quality.min_rows:
        return None
    value = traffic.quality.get(quality.metric)
    if value is None:
        measured = ", ".join(sorted(traffic.quality)) or "nothing"
        return (
            "QualityNotMeasured",
            f"monitoring.quality.metric {quality.metric} is not measured for this model "
            f"(it measures {measured}): choose one of those",
        )
    worse = value > quality.threshold if quality.metric in LOWER_IS_BETTER else value < quality.threshold
    if not worse:
        return None
    bound = "above" if quality.metric in LOWER_IS_BETTER else "below"
    return "QualityDropped", (
        f"live {quality.metric} {value:.4g} over the last {traffic.quality_rows} feedback rows is {bound} "
        f"monitoring.quality.threshold {quality.threshold:g}"
    )


def ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "> largest bucket" if math.isinf(value) else f"<= {value:g} ms"


def health(
    spec: ModelDeploymentSpec,
    stable: dict[str, Any] | None,
    traffic: Traffic | None,
    analysis: Analysis,
    decided: tuple[Phase, str, str],
    previous: dict[str, Any],
    generation: int,
    now: str,
    pods: Pods | None = None,
) -> dict[str, Any]:
    """Phase, message, conditions, replicas, traffic and drift, from the rollout's decision (phase, reason,
    message), the stable track's Deployment and /metrics, and what its pods say (a crash loop is never
    Available, even between the restarts a readiness probe may pass)."""
    phase, reason, message = decided
    pods = pods or Pods()
    conditions_before = list(previous.get("conditions") or [])
    ready, desired, rolled_out = replicas_ready(stable)
    problems = []
    problem = pods.problem if pods.problem is not None and pods.problem.severity != "note" else None
    if problem is not None:
        problems.append(f"{problem.reason}: {problem.message}")
    if desired and ready < desired:
        problems.append(f"{ready}/{desired} stable replicas ready")
    if traffic and traffic.requests >= MIN_REQUESTS_FOR_HEALTH:
        p99 = traffic.quantile_ms(0.99)
        if traffic.error_rate > analysis.max_error_rate:
            problems.append(f"error rate {traffic.error_rate:.2%} above {analysis.max_error_rate:.2%}")
        if p99 is not None and p99 > analysis.max_p99_latency_ms:
            problems.append(f"p99 {ms(p99)} above {analysis.max_p99_latency_ms:g} ms")
    quality = quality_problem(spec.monitoring.quality, traffic)
    if quality is not None:
        problems.append(quality[1])
    drift = spec.monitoring.drift
    scores = traffic.drift if traffic else {}
    drifted = sorted(f for f, s in scores.items() if s > drift.threshold)
    crashing = problem is not None and problem.reason in ("CrashLoop", "OOMKilled")
    available = ready >= 1 and not crashing
    stalled = phase == Phase.INVALID
    if phase == Phase.AVAILABLE and not rolled_out:
        phase, reason, message = Phase.DEPLOYING, "Deploying", f"{message}; {ready}/{desired} replicas ready"
    elif phase == Phase.AVAILABLE and problems:  # a crash loop is one of the problems
        phase = Phase.DEGRADED
    if problem is not None and phase in (Phase.DEPLOYING, Phase.AVAILABLE, Phase.DEGRADED):
        message = f"{message}; {problem.reason}: {problem.message}"
    progressing = phase in (Phase.DEPLOYING, Phase.WAITING)

    def c(type_: str, value: bool | None, why: str, text: str) -> dict[str, Any]:
        return condition(type_, value, why, text, generation, now, conditions_before)

    summary = "; ".join(problems) if problems else "healthy"
    conditions = [
        c("Ready", phase == Phase.AVAILABLE, reason, message),
        c("Reconciling", progressing, reason if progressing else "Done", message),
        c("Stalled", stalled, reason if stalled else "NotStalled", message),
        c(
            "Available",
            available,
            "ReplicasReady" if available else (problem.reason if crashing and problem else "NoReplicaReady"),
            f"{ready}/{desired} ready" + (f"; {problem.message}" if crashing and problem else ""),
        ),
        c("Degraded", bool(problems), (quality[0] if quality else "Unhealthy") if problems else "Healthy", summary),
        c(
            "Drifted",
            bool(drifted),
            "DriftDetected" if drifted else "NoDrift",
            f"drift above {drift.threshold:g} ({drift.method}): {', '.join(drifted)}" if drifted else "no drift",
        ),
    ]
    p99 = traffic.quantile_ms(0.99) if traffic else None
    return {
        "phase": str(phase),
        "message": message,
        "conditions": conditions,
        "replicas": {"desired": desired, "ready": ready, "restarts": pods.restarts, "lastCrash": pods.last_crash},
        "readyReplicas": f"{ready}/{desired}",
        "traffic": {
            "requests": traffic.requests if traffic else 0,
            "errorRate": round(traffic.error_rate, 6) if traffic else 0.0,
            "p99LatencyMs": None if p99 is None or math.isinf(p99) else p99,
        },
        "quality": {
            "metrics": {k: round(v, 6) for k, v in (traffic.quality if traffic else {}).items()},
            "rows": traffic.quality_rows if traffic else 0,
            "checkedAt": now if traffic and traffic.quality_rows else (previous.get("quality") or {}).get("checkedAt"),
            "groups": {
                g: {"rows": t.quality_rows, "metrics": {k: round(v, 6) for k, v in t.quality.items()}}
                for g, t in sorted((traffic.groups if traffic else {}).items())[:MAX_GROUPS]
            },
            "fairnessGap": fairness_gap(spec.monitoring.quality, traffic),
        },
        "drift": {
            "score": round(max(scores.values()), 6) if scores else None,
            "driftedFeatures": drifted,
            "checkedAt": now if scores else (previous.get("drift") or {}).get("checkedAt"),
        },
    }
