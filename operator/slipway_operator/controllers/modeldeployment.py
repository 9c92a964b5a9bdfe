"""ModelDeployment: which model to serve, on which track, with what share of traffic; pure.

`plan(obj, observed, settings)` returns the children (one ConfigMap per revision, the `stable` and maybe
`canary` Deployments, one Service), what to delete, the new status and the Events to post. The rollout's memory
(current revision, canary step and when it started, rolled-back revisions) is the status itself, as in
Argo Rollouts: each pass reads it, looks at the world, and writes the next state.

- The model: `spec.model` (a URI, or a succeeded TrainingRun/TuningSweep's exported model), or with autoUpdate
  a succeeded run matching the selector whose gate metric beats the serving model by `minImprovement`.
- A revision is the model URI plus the server settings, hashed: a change to either is a rollout.
- rolling: the stable Deployment's template moves to the new revision (a Kubernetes rolling update).
- canary: a canary Deployment gets `steps[i]` percent of the replicas (and of the local router's weight);
  after `intervalSeconds` the gate (error rate, p99 from the canary's /metrics) is judged: pass -> next step,
  the last step -> promote (stable moves to the revision, then the canary goes); fail -> roll back (canary
  deleted, the revision remembered as RolledBack so it is not tried again).
- Health: Available (stable replicas ready), Degraded (fewer ready than desired, or the error rate / p99 over
  the gate's limits), Drifted (a feature's drift score over the threshold).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from slipway_operator import builders
from slipway_operator.api.common import Phase
from slipway_operator.api.modeldeployment import Analysis, ModelDeploymentSpec
from slipway_operator.controllers.common import Child, Ref, ServingController, Settings, phase_of
from slipway_operator.runstatus import condition
from slipway_operator.servermetrics import Traffic
from slipway_operator.workloads import serve_config

STABLE, CANARY = "stable", "canary"
MIN_REQUESTS_FOR_HEALTH = 20  # fewer requests say nothing about an error rate
HISTORY = 10


@dataclass(frozen=True)
class Model:
    """A servable model and where it came from."""

    uri: str
    source: str  # TrainingRun/<name>, TuningSweep/<name> or uri
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    finished_at: str = ""


def model_of(obj: dict[str, Any]) -> Model | None:
    """The model a TrainingRun or TuningSweep produced, once it succeeded."""
    status = obj.get("status") or {}
    if phase_of(obj) != Phase.SUCCEEDED or not status.get("modelUri"):
        return None
    ready: dict[str, Any] = next((c for c in status.get("conditions", []) if c.get("type") == "Succeeded"), {})
    return Model(
        uri=str(status["modelUri"]),
        source=f"{obj['kind']}/{obj['metadata']['name']}",
        metrics={k: float(v) for k, v in (status.get("metrics") or {}).items()},
        lineage=dict(status.get("lineage") or {}),
        finished_at=str(ready.get("lastTransitionTime") or ""),
    )


def source_of(spec: ModelDeploymentSpec, source: dict[str, Any] | None) -> tuple[Model | None, str | None]:
    """(spec.model resolved, or what it waits for). `source` is the TrainingRun/TuningSweep it names."""
    if spec.model.uri:
        return Model(uri=spec.model.uri, source="uri"), None
    kind, name = (
        ("TrainingRun", spec.model.from_training_run)
        if spec.model.from_training_run
        else ("TuningSweep", spec.model.from_tuning_sweep)
    )
    if source is None:
        return None, f"{kind} {name} (it does not exist yet)"
    model = model_of(source)
    if model is None:
        return None, f"{kind} {name} ({phase_of(source)})"
    return model, None


def selector_string(selector: dict[str, Any] | None) -> str:
    """A Kubernetes label selector as the `labelSelector` query parameter writes it."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr["operator"], expr["key"], ",".join(expr.get("values") or [])
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key}.get(op, f"!{key}")
        )
    return ",".join(parts)


@dataclass
class Observed:
    """What a pass saw."""

    source: Model | None = None
    waiting_for: str | None = None
    candidates: list[Model] = field(default_factory=list)  # autoUpdate: succeeded runs matching the selector
    deployments: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # track -> Deployment
    traffic: dict[str, Traffic | None] = field(default_factory=dict)  # track -> its servers' /metrics
    scrape_errors: dict[str, str] = field(default_factory=dict)  # track -> why its /metrics were not read
    endpoint: str | None = None
    invalid: str | None = None
    now: float = 0.0  # seconds since the epoch


@dataclass
class Plan:
    children: list[dict[str, Any]]
    delete: list[tuple[str, str, str]]  # (apiVersion, kind, name)
    status: dict[str, Any]
    events: list[tuple[str, str, str]]  # (Normal|Warning, reason, message)


def revision_of(name: str, spec: ModelDeploymentSpec, model_uri: str) -> str:
    """8 hex digits of the model URI and the server settings: what makes a rollout."""
    served = serve_config(name, spec, model_uri).model_dump(mode="json", by_alias=True)
    return hashlib.sha256(json.dumps(served, sort_keys=True).encode()).hexdigest()[:8]


def iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def seconds(iso_time: str | None) -> float | None:
    if not iso_time:
        return None
    return datetime.datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


def replicas_for(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for a canary weight in percent: the canary gets its share rounded up, the
    stable track keeps the rest but at least one replica until the canary is promoted."""
    canary = min(total, max(1, math.ceil(total * weight / 100)))
    stable = max(1, total - canary)
    return stable, canary


def _revision(
    model: Model, rev: str, at: str, outcome: str = "", reason: str = "", lineage_extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    lineage = {k: v for k, v in {**model.lineage, **(lineage_extra or {})}.items() if k in LINEAGE_KEYS}
    return {
        "name": rev,
        "modelUri": model.uri,
        "source": model.source,
        "metrics": dict(model.metrics),
        "lineage": lineage,
        "outcome": outcome,
        "reason": reason,
        "at": at,
    }


LINEAGE_KEYS = ("datasetRef", "datasetUri", "datasetFingerprint", "trainingRun", "tuningSweep", "trial")


def _better(candidate: Model, serving: dict[str, Any], spec: ModelDeploymentSpec) -> bool:
    gate = spec.auto_update.gate
    new, old = candidate.metrics.get(gate.metric), (serving.get("metrics") or {}).get(gate.metric)
    if new is None or old is None:
        return False
    gain = float(new) - float(old) if gate.direction == "maximize" else float(old) - float(new)
    # minImprovement 0 still asks for a strictly better model (an equal one is no reason to roll out)
    return gain > 0 if gate.min_improvement == 0 else gain >= gate.min_improvement


def _target(
    name: str, spec: ModelDeploymentSpec, o: Observed, previous: dict[str, Any]
) -> tuple[Model | None, str | None, str]:
    """(the model to serve, its revision, why). `previous` is the stored status."""
    current = previous.get("current") or None
    if o.source is None:
        if current:
            return None, None, "keeping the serving model while spec.model is not ready"
        return None, None, ""
    source_rev = revision_of(name, spec, o.source.uri)
    if not current or source_rev != previous.get("sourceRevision"):
        return o.source, source_rev, f"spec.model is {o.source.source}"
    if spec.auto_update.enabled:
        rejected = {h["name"] for h in previous.get("history") or [] if h.get("outcome") == "RolledBack"}
        best: tuple[Model, str] | None = None
        for candidate in o.candidates:
            rev = revision_of(name, spec, candidate.uri)
            if rev in rejected or rev == current.get("name") or not _better(candidate, current, spec):
                continue
            if best is None or _better(candidate, _revision(best[0], best[1], ""), spec):
                best = (candidate, rev)
        if best is not None:
            gate = spec.auto_update.gate
            metric = best[0].metrics.get(gate.metric)
            return best[0], best[1], f"autoUpdate: {best[0].source} has {gate.metric}={metric:.4g}"
    canary = previous.get("canary") or None
    if canary:  # a canary in progress keeps going unless something else won
        model = Model(
            str(canary["modelUri"]), str(canary.get("source", "")), canary.get("metrics") or {}, canary.get("lineage")
        )
        return model, str(canary["name"]), "canary in progress"
    model = Model(
        str(current["modelUri"]), str(current.get("source", "")), current.get("metrics") or {}, current.get("lineage")
    )
    return model, str(current["name"]), "serving"


def _ready(deployment: dict[str, Any] | None) -> tuple[int, int, bool]:
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


def _gate(analysis: Analysis, traffic: Traffic | None, ready: int, scrape_error: str | None) -> tuple[bool, str]:
    """(passed, what was measured)."""
    if ready < 1:
        return False, "no canary replica became ready"
    if traffic is None:
        return False, f"the canary's /metrics could not be read ({scrape_error or 'no replica answered'})"
    if traffic.requests == 0:
        return True, "no requests reached the canary during the step (nothing failed)"
    p99 = traffic.quantile_ms(0.99)
    measured = f"error rate {traffic.error_rate:.2%} over {traffic.requests} requests, p99 {_ms(p99)}"
    if traffic.error_rate > analysis.max_error_rate:
        return False, f"{measured}: error rate above maxErrorRate {analysis.max_error_rate:.2%}"
    if p99 is not None and p99 > analysis.max_p99_latency_ms:
        return False, f"{measured}: p99 above maxP99LatencyMs {analysis.max_p99_latency_ms:g} ms"
    return True, measured


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "> largest bucket" if math.isinf(value) else f"<= {value:g} ms"


class _Builder:
    """Children of one ModelDeployment."""

    def __init__(self, obj: dict[str, Any], spec: ModelDeploymentSpec, settings: Settings) -> None:
        self.owner = builders.Owner.of(obj)
        self.spec = spec
        self.settings = settings

    def config_map(self, rev: str, model_uri: str) -> dict[str, Any]:
        return builders.config_map(self.owner, rev, serve_config(self.owner.name, self.spec, model_uri))

    def deployment(self, track: str, rev: str, replicas: int, weight: int) -> dict[str, Any]:
        return builders.server_deployment(
            self.owner,
            track,
            rev,
            self.settings.serving_image(self.spec.server.format),
            builders.child_name(self.owner, rev),
            self.spec.resources,
            replicas,
            weight=weight,
            storage_secret=self.settings.storage_secret,
            gpu=self.settings.gpu,
            startup_seconds=self.spec.server.startup_timeout_seconds,
        )


def plan(obj: dict[str, Any], o: Observed, settings: Settings) -> Plan:
    """The next state of a ModelDeployment's rollout, from the stored status and what was observed."""
    spec = ModelDeploymentSpec.model_validate(obj["spec"])
    name = obj["metadata"]["name"]
    previous: dict[str, Any] = dict(obj.get("status") or {})
    generation = int(obj["metadata"].get("generation", 1))
    now = iso(o.now)
    events: list[tuple[str, str, str]] = []
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "modelName": name,
        "endpoint": o.endpoint,
        "current": previous.get("current"),
        "canary": previous.get("canary"),
        "canaryStep": previous.get("canaryStep"),
        "canaryWeight": previous.get("canaryWeight"),
        "stepStartedAt": previous.get("stepStartedAt"),
        "sourceRevision": previous.get("sourceRevision"),
        "history": list(previous.get("history") or []),
    }
    build = _Builder(obj, spec, settings)
    total = spec.replicas.min
    service = builders.server_service(build.owner)
    analysis = spec.rollout.canary.analysis if spec.rollout.canary else Analysis()

    def finish(phase: Phase, reason: str, message: str, children: list[dict[str, Any]], delete: list[str]) -> Plan:
        status.update(_health(spec, o, analysis, phase, reason, message, previous, generation, now))
        return Plan(
            children, [("apps/v1", "Deployment", builders.child_name(build.owner, t)) for t in delete], status, events
        )

    if o.invalid:
        return finish(Phase.INVALID, "InvalidSpec", o.invalid, [], [])

    target, rev, why = _target(name, spec, o, previous)
    current = status["current"]
    if target is None or rev is None:
        if not current:
            return finish(Phase.WAITING, "WaitingForDependency", f"waiting for {o.waiting_for}", [], [])
        target, rev = Model(current["modelUri"], current.get("source", "")), current["name"]
        why = f"keeping revision {rev} while waiting for {o.waiting_for}"
    if o.source is not None:
        status["sourceRevision"] = revision_of(name, spec, o.source.uri)

    # 1. Nothing served yet: the target becomes the stable revision.
    if not current:
        status["current"] = current = _revision(target, rev, now)
        events.append(("Normal", "FirstRevision", f"serving revision {rev} ({target.source}: {target.uri})"))

    stable_rev = str(current["name"])
    canary = status["canary"]
    children = [service, build.config_map(stable_rev, current["modelUri"])]

    # 2. The target is being served: steady state (a finished promotion drops the canary track).
    if rev == stable_rev:
        if canary and canary.get("name") == stable_rev:
            _, _, done = _ready(o.deployments.get(STABLE))
            if not done:  # the stable track is still rolling to the promoted revision: keep the canary serving
                children += [
                    build.deployment(STABLE, stable_rev, total, 100),
                    build.deployment(CANARY, stable_rev, o_replicas(o.deployments.get(CANARY)) or total, 0),
                ]
                message = f"promoting {stable_rev}: the stable track is rolling to it"
                return finish(Phase.DEPLOYING, "Promoting", message, children, [])
            events.append(("Normal", "Promoted", f"revision {stable_rev} is stable; the canary track is removed"))
        elif canary:
            events.append(("Normal", "CanaryCancelled", f"canary {canary['name']} cancelled: {why}"))
        status |= {"canary": None, "canaryStep": None, "canaryWeight": None, "stepStartedAt": None}
        children.append(build.deployment(STABLE, stable_rev, total, 100))
        delete = [CANARY] if o.deployments.get(CANARY) else []
        return finish(Phase.AVAILABLE, "Serving", f"serving revision {stable_rev}", children, delete)

    # 3. A new revision: rolling update of the stable track.
    if spec.rollout.strategy == "rolling":
        old = {**current, "outcome": "Replaced", "reason": f"replaced by {rev} ({why})", "at": now}
        status["history"] = [old, *status["history"]][:HISTORY]
        status["current"] = _revision(target, rev, now)
        events.append(("Normal", "RollingUpdate", f"rolling {stable_rev} -> {rev}: {why}"))
        children = [service, build.config_map(rev, target.uri), build.deployment(STABLE, rev, total, 100)]
        return finish(Phase.DEPLOYING, "RollingUpdate", f"rolling out revision {rev}", children, [])

    # 4. A new revision: canary steps.
    assert spec.rollout.canary is not None  # a CEL rule of the CRD
    steps = spec.rollout.canary.steps
    if not canary or canary.get("name") != rev:
        if canary:
            events.append(("Normal", "CanaryReplaced", f"canary {canary['name']} replaced by {rev}: {why}"))
        status |= {
            "canary": _revision(target, rev, now),
            "canaryStep": 0,
            "canaryWeight": steps[0],
            "stepStartedAt": now,
        }
        canary = status["canary"]
        events.append(("Normal", "CanaryStarted", f"canary {rev} at {steps[0]}% ({why})"))
    step = int(status["canaryStep"] or 0)
    weight = steps[step]
    started = seconds(status["stepStartedAt"]) or o.now
    if o.now - started >= spec.rollout.canary.interval_seconds:
        ready, _, _ = _ready(o.deployments.get(CANARY))
        passed, measured = _gate(analysis, o.traffic.get(CANARY), ready, o.scrape_errors.get(CANARY))
        if not passed:
            rolled = {**canary, "outcome": "RolledBack", "reason": measured, "at": now}
            status["history"] = [rolled, *status["history"]][:HISTORY]
            status |= {"canary": None, "canaryStep": None, "canaryWeight": None, "stepStartedAt": None}
            events.append(("Warning", "RolledBack", f"canary {rev} rolled back at {weight}%: {measured}"))
            children.append(build.deployment(STABLE, stable_rev, total, 100))
            message = f"canary {rev} rolled back: {measured}; serving {stable_rev}"
            return finish(Phase.AVAILABLE, "RolledBack", message, children, [CANARY])
        if step + 1 < len(steps):
            step, weight = step + 1, steps[step + 1]
            status |= {"canaryStep": step, "canaryWeight": weight, "stepStartedAt": now}
            events.append(("Normal", "CanaryStep", f"canary {rev} passed the gate ({measured}); now {weight}%"))
        else:  # passed the last step: promote (the stable track rolls to the revision, then the canary goes)
            old = {**current, "outcome": "Replaced", "reason": f"replaced by canary {rev} ({measured})", "at": now}
            status["history"] = [old, *status["history"]][:HISTORY]
            status["current"] = {**canary, "at": now}
            status["canaryWeight"] = 0
            events.append(("Normal", "Promoting", f"canary {rev} passed every step ({measured}); promoting"))
            children = [
                service,
                build.config_map(rev, target.uri),
                build.deployment(STABLE, rev, total, 100),
                build.deployment(CANARY, rev, o_replicas(o.deployments.get(CANARY)) or total, 0),
            ]
            return finish(Phase.DEPLOYING, "Promoting", f"promoting {rev}", children, [])
    stable_replicas, canary_replicas = replicas_for(total, weight)
    children += [
        build.config_map(rev, target.uri),
        build.deployment(STABLE, stable_rev, stable_replicas, 100 - weight),
        build.deployment(CANARY, rev, canary_replicas, weight),
    ]
    message = (
        f"canary {rev} at {weight}% (step {step + 1}/{len(steps)}, {canary_replicas} of "
        f"{stable_replicas + canary_replicas} replicas); gate judged {spec.rollout.canary.interval_seconds}s "
        "after the step started"
    )
    return finish(Phase.DEPLOYING, "Canary", message, children, [])


def o_replicas(deployment: dict[str, Any] | None) -> int:
    return int(((deployment or {}).get("spec") or {}).get("replicas") or 0)


def _health(
    spec: ModelDeploymentSpec,
    o: Observed,
    analysis: Analysis,
    phase: Phase,
    reason: str,
    message: str,
    previous: dict[str, Any],
    generation: int,
    now: str,
) -> dict[str, Any]:
    """Phase, message and conditions from the rollout decision and the stable track's health."""
    conditions_before = list(previous.get("conditions") or [])
    ready, desired, rolled_out = _ready(o.deployments.get(STABLE))
    traffic = o.traffic.get(STABLE)
    problems = []
    if desired and ready < desired:
        problems.append(f"{ready}/{desired} stable replicas ready")
    if traffic and traffic.requests >= MIN_REQUESTS_FOR_HEALTH:
        p99 = traffic.quantile_ms(0.99)
        if traffic.error_rate > analysis.max_error_rate:
            problems.append(f"error rate {traffic.error_rate:.2%} above {analysis.max_error_rate:.2%}")
        if p99 is not None and p99 > analysis.max_p99_latency_ms:
            problems.append(f"p99 {_ms(p99)} above {analysis.max_p99_latency_ms:g} ms")
    drift = spec.monitoring.drift
    scores = traffic.drift if traffic else {}
    drifted = sorted(f for f, s in scores.items() if s > drift.threshold)
    available = ready >= 1
    stalled = phase == Phase.INVALID
    if phase == Phase.AVAILABLE and not rolled_out:
        phase, reason, message = Phase.DEPLOYING, "Deploying", f"{message}; {ready}/{desired} replicas ready"
    elif phase == Phase.AVAILABLE and problems:
        phase = Phase.DEGRADED
    progressing = phase in (Phase.DEPLOYING, Phase.WAITING)

    def c(type_: str, value: bool | None, why: str, text: str) -> dict[str, Any]:
        return condition(type_, value, why, text, generation, now, conditions_before)

    health = "; ".join(problems) if problems else "healthy"
    conditions = [
        c("Ready", phase == Phase.AVAILABLE, reason, message),
        c("Reconciling", progressing, reason if progressing else "Done", message),
        c("Stalled", stalled, reason if stalled else "NotStalled", message),
        c("Available", available, "ReplicasReady" if available else "NoReplicaReady", f"{ready}/{desired} ready"),
        c("Degraded", bool(problems), "Unhealthy" if problems else "Healthy", health),
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
        "replicas": {"desired": desired, "ready": ready},
        "readyReplicas": f"{ready}/{desired}",
        "traffic": {
            "requests": traffic.requests if traffic else 0,
            "errorRate": round(traffic.error_rate, 6) if traffic else 0.0,
            "p99LatencyMs": None if p99 is None or math.isinf(p99) else p99,
        },
        "drift": {
            "score": round(max(scores.values()), 6) if scores else None,
            "driftedFeatures": drifted,
            "checkedAt": now if scores else (previous.get("drift") or {}).get("checkedAt"),
        },
    }


def references(spec: dict[str, Any]) -> list[Ref]:
    """The TrainingRun or TuningSweep whose model `spec.model` names, if it names one."""
    model = spec.get("model") or {}
    if model.get("fromTrainingRun"):
        return [("TrainingRun", str(model["fromTrainingRun"]))]
    if model.get("fromTuningSweep"):
        return [("TuningSweep", str(model["fromTuningSweep"]))]
    return []


def children_to_stop(name: str) -> list[Child]:
    tracks = [("apps/v1", "Deployment", builders.suffixed(name, track)) for track in (STABLE, CANARY)]
    return [*tracks, ("v1", "Service", name)]


CONTROLLER = ServingController(kind="ModelDeployment", references=references, children_to_stop=children_to_stop)
