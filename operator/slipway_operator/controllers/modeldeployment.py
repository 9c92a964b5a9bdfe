"""ModelDeployment: which model to serve, on which track, with what share of traffic; pure.

`plan(obj, observed, settings)` returns the children (one ConfigMap per revision, the `stable` and maybe
`canary` Deployments, one Service), what to delete, the new status and the Events to post. The rollout's memory
(current revision, canary step and when it started, rolled-back revisions) is the status itself, as in
Argo Rollouts: each pass reads it, looks at the world, and takes one transition of a small state machine
(`Rollout`):

    steady ──new revision──> roll (strategy rolling) ──> steady
    steady ──new revision──> start canary ──> hold ──interval──> judge ─┬─ pass ──> next step ──> hold
                                                                         ├─ pass, last step ──> promote ──> steady
                                                                         └─ fail ──> roll back ──> steady
    with rollout.shadow, before the canary:
    steady ──new revision──> start shadow ──> hold ──interval──> judge ─┬─ pass ──> start canary
                                                                         └─ fail ──> reject (RolledBack) ──> steady

- Which model and revision: `revisions.py` (spec.model, or autoUpdate's better candidate).
- rolling: the stable Deployment's template moves to the new revision (a Kubernetes rolling update).
- canary: a canary Deployment gets `steps[i]` percent of the replicas (and of the local router's weight);
  after `intervalSeconds` the gate (error rate, p99 from the canary's /metrics) is judged: pass -> next step,
  the last step -> promote (stable moves to the revision, then the canary goes); fail -> roll back (canary
  deleted, the revision remembered as RolledBack so it is not tried again).
- shadow: a `shadow` Deployment outside the users' Services answers copies of live requests that the stable
  servers send it (`mirror`), and is judged on those (`shadow.py`) before the canary starts.
- Health (Available, Degraded, Drifted): `health.py`.
- Retraining (autoUpdate.retrain: new candidates when a trigger fires): `retrain.py`.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from typing import Any

from slipway_operator import builders
from slipway_operator.api.common import Phase, quantity
from slipway_operator.api.modeldeployment import Analysis, Autoscaling, Canary, ModelDeploymentSpec, Shadow
from slipway_operator.controllers import retrain, shadow
from slipway_operator.controllers.common import Child, Ref, ServingController, Settings, artifact_uri
from slipway_operator.controllers.health import (
    FAILED,
    INCONCLUSIVE,
    PASSED,
    Pods,
    fairness_gate,
    gate,
    health,
    quality_gate,
    replicas_ready,
)
from slipway_operator.controllers.revisions import (
    Model,
    Target,
    model_of,
    record,
    revision_of,
    selector_string,
    source_of,
    target,
    unfair,
)
from slipway_operator.runstatus import condition
from slipway_operator.servermetrics import Traffic
from slipway_operator.workloads import serve_config

__all__ = ["CANARY", "STABLE", "Model", "Observed", "Plan", "model_of", "plan", "selector_string", "source_of"]

STABLE, CANARY, SHADOW = "stable", "canary", builders.SHADOW
PAYLOAD_FOLDER = "payloads"  # <store>/payloads/<namespace>/<name>: payload logs and feedback
HISTORY = 10
NO_CANARY = {
    "canary": None,
    "canaryStep": None,
    "canaryWeight": None,
    "stepStartedAt": None,
    "stepBaseline": None,
    "canaryTraffic": None,
}
NO_SHADOW = {"shadow": None, "shadowStartedAt": None, "shadowBaseline": None}  # shadowTraffic stays: its result
ABORT_ANNOTATION = "slipway.dev/abort-canary"  # value: the canary revision to roll back now


@dataclass
class Observed:
    """What a pass saw."""

    source: Model | None = None
    waiting_for: str | None = None
    candidates: list[Model] = field(default_factory=list)  # autoUpdate: succeeded runs matching the selector
    deployments: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # track -> Deployment
    traffic: dict[str, Traffic | None] = field(default_factory=dict)  # track -> its servers' /metrics
    scrape_errors: dict[str, str] = field(default_factory=dict)  # track -> why its /metrics were not read
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # track -> its Deployment's pods
    logs: dict[tuple[str, str], str] = field(default_factory=dict)  # (pod, container) -> its crashed log's tail
    endpoint: str | None = None
    grpc_endpoint: str | None = None
    invalid: str | None = None
    now: float = 0.0  # seconds since the epoch
    retrains: list[dict[str, Any]] = field(default_factory=list)  # runs autoUpdate.retrain created (by label)
    retrain_dataset: dict[str, Any] | None = None  # the retrain template's DatasetPrep
    autoscaler: dict[str, Any] | None = None  # the stable track's HorizontalPodAutoscaler, as observed


@dataclass
class Plan:
    children: list[dict[str, Any]]
    delete: list[tuple[str, str, str]]  # (apiVersion, kind, name)
    status: dict[str, Any]
    events: list[tuple[str, str, str]]  # (Normal|Warning, reason, message)
    create: list[dict[str, Any]] = field(default_factory=list)  # Slipway resources to create (retrain runs)
    delete_runs: list[tuple[str, str, str]] = field(default_factory=list)  # Slipway resources to delete


@dataclass(frozen=True)
class Step:
    """Where one pass leaves the rollout: phase, reason and message, the children to apply, the tracks to delete."""

    phase: Phase
    reason: str
    message: str
    children: list[dict[str, Any]]
    delete: tuple[str, ...] = ()


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


def o_replicas(deployment: dict[str, Any] | None) -> int:
    return int(((deployment or {}).get("spec") or {}).get("replicas") or 0)


def canary_alongside(stable: int, weight: int, maximum: int) -> int:
    """Canary replicas beside an autoscaled stable track left as its autoscaler set it: as many as give the canary
    `weight` percent of all the pods (so of the requests, which a Service splits by ready pods), at most `maximum`."""
    if weight >= 100:
        return maximum
    return min(maximum, max(1, math.ceil(stable * weight / (100 - weight))))


def autoscaling_status(spec: ModelDeploymentSpec, hpa: dict[str, Any] | None) -> dict[str, Any]:
    """status.autoscaling: the rule, and what the autoscaler (as it reports in its status) sees and wants."""
    rule = spec.autoscaling or Autoscaling()
    status = (hpa or {}).get("status") or {}
    current = None
    for metric in status.get("currentMetrics") or []:
        now = (metric.get("resource") or metric.get("pods") or {}).get("current") or {}
        current = now.get("averageUtilization", quantity(now.get("averageValue")))
    stuck = [
        f"{c.get('reason')}: {c.get('message')}"
        for c in status.get("conditions") or []
        if c.get("type") in ("ScalingActive", "AbleToScale") and c.get("status") == "False"
    ]
    return {
        "min": spec.replicas.min,
        "max": spec.replicas.max,
        "metric": rule.metric,
        "target": rule.target_value(),
        "current": current,
        "desiredReplicas": status.get("desiredReplicas"),
        "message": "; ".join(stuck) or (None if hpa else "the autoscaler is being created"),
    }


class _Builder:
    """Children of one ModelDeployment."""

    def __init__(self, obj: dict[str, Any], spec: ModelDeploymentSpec, settings: Settings) -> None:
        self.owner = builders.Owner.of(obj)
        self.spec = spec
        self.settings = settings

    def payload_uri(self) -> str:
        """Where payload logs go: `monitoring.payloadLog.uri`, or `<store>/payloads/<namespace>/<name>`."""
        default = artifact_uri(self.settings, PAYLOAD_FOLDER, self.owner.namespace, self.owner.name)
        return self.spec.monitoring.payload_log.uri or default

    def config_map(self, rev: str, model_uri: str) -> dict[str, Any]:
        config = serve_config(self.owner.name, self.spec, model_uri, payload_uri=self.payload_uri(), model_version=rev,
                              peers=builders.peers_address(self.owner), mirror=builders.shadow_address(self.owner),
                              grpc_port=builders.GRPC_PORT)  # fmt: skip
        return builders.config_map(self.owner, rev, config)

    def deployment(self, track: str, rev: str, replicas: int, weight: int) -> dict[str, Any]:
        image = self.settings.serving_image(self.spec.server.format)
        config_map = builders.child_name(self.owner, rev)
        options: dict[str, Any] = {
            "storage_secret": self.settings.storage_secret,
            "gpu": self.settings.gpu,
            "startup_seconds": self.spec.server.startup_timeout_seconds,
            "salt": self.spec.privacy.salt_secret_ref,
        }
        if track == SHADOW:
            return builders.shadow_deployment(
                self.owner, rev, image, config_map, self.spec.resources, replicas, **options
            )
        return builders.server_deployment(
            self.owner, track, rev, image, config_map, self.spec.resources, replicas, weight, **options
        )


def plan(obj: dict[str, Any], o: Observed, settings: Settings) -> Plan:
    """The next state of a ModelDeployment's rollout, from the stored status and what was observed."""
    rollout = Rollout(obj, o, settings)
    return rollout.finish(rollout.next())


class Rollout:
    """One pass of the rollout state machine: `next()` picks the transition, each transition is one method that
    updates the status it carries and says which children to apply; `finish()` adds health and the Plan."""

    def __init__(self, obj: dict[str, Any], o: Observed, settings: Settings) -> None:
        self.spec = ModelDeploymentSpec.model_validate(obj["spec"])
        self.obj = obj
        self.name = obj["metadata"]["name"]
        self.o = o
        self.previous: dict[str, Any] = dict(obj.get("status") or {})
        self.generation = int(obj["metadata"].get("generation", 1))
        self.now = iso(o.now)
        self.events: list[tuple[str, str, str]] = []
        carried = [*NO_CANARY, *NO_SHADOW, "shadowTraffic", "current", "sourceRevision"]
        self.status: dict[str, Any] = {
            "observedGeneration": self.generation,
            "modelName": self.name,
            "endpoint": o.endpoint,
            "grpcEndpoint": o.grpc_endpoint,
            **{k: self.previous.get(k) for k in carried},
            "history": list(self.previous.get("history") or []),
        }
        self.build = _Builder(obj, self.spec, settings)
        self.status["payloadUri"] = self.build.payload_uri() if self.spec.monitoring.payload_log.enabled else None
        owner = self.build.owner
        self.services = [builders.server_service(owner), builders.peers_service(owner), builders.shadow_service(owner)]
        replicas = self.spec.replicas
        self.autoscaled = replicas.max is not None and replicas.max > replicas.min
        self.total = replicas.min
        if self.autoscaled:  # the stable track's replicas are its autoscaler's: applied as it set them, never changed
            assert replicas.max is not None
            self.total = min(max(o_replicas(o.deployments.get(STABLE)) or replicas.min, replicas.min), replicas.max)
            rule = self.spec.autoscaling or Autoscaling()
            self.services.append(builders.autoscaler(owner, STABLE, replicas.min, replicas.max, rule))
        self.analysis = self.spec.rollout.canary.analysis if self.spec.rollout.canary else Analysis()
        self.abort = (obj["metadata"].get("annotations") or {}).get(ABORT_ANNOTATION)
        self.paused: str | None = None

    # -- the choice ---------------------------------------------------------------------------------------------

    def next(self) -> Step:
        o, status = self.o, self.status
        limit = self.spec.auto_update.gate.max_fairness_gap
        turned_down = [(c.source, unfair(c, limit)) for c in o.candidates if self.spec.auto_update.enabled]
        status["rejected"] = [{"source": s, "reason": r} for s, r in turned_down if r][:10]
        if o.invalid:
            return Step(Phase.INVALID, "InvalidSpec", o.invalid, [])
        chosen = target(self.name, self.spec, o.source, o.candidates, self.previous)
        if chosen is None:
            current = status["current"]
            if not current:
                return Step(Phase.WAITING, "WaitingForDependency", f"waiting for {o.waiting_for}", [])
            keep = str(current["name"])
            why = f"keeping revision {keep} while waiting for {o.waiting_for}"
            chosen = Target(Model(current["modelUri"], current.get("source", "")), keep, why)
        if o.source is not None:
            status["sourceRevision"] = revision_of(self.name, self.spec, o.source.uri)
        if not status["current"]:
            self.first_revision(chosen)
        if chosen.revision == self.stable_rev:
            return self.steady(chosen)
        if self.spec.rollout.strategy == "rolling":
            return self.roll(chosen)
        canary = status["canary"]
        if self.spec.rollout.shadow and (not canary or canary.get("name") != chosen.revision):
            in_shadow = self.shadow_stage(chosen)
            if in_shadow is not None:
                return in_shadow
            canary = None  # the shadow passed: the canary starts now
        if not canary or canary.get("name") != chosen.revision:
            self.start_canary(chosen)
        if self.abort == chosen.revision:
            return self.roll_back(chosen, f"aborted by the annotation {ABORT_ANNOTATION}={chosen.revision}")
        window = self.window()
        ready, _, _ = replicas_ready(o.deployments.get(CANARY))
        if self.step_due(ready):
            verdict, measured = gate(self.analysis, window, ready, o.scrape_errors.get(CANARY))
            judged = quality_gate(
                self.analysis, self.spec.monitoring.quality, o.traffic.get(CANARY), o.traffic.get(STABLE)
            )
            if verdict == PASSED and judged is not None:
                verdict, measured = judged[0], f"{measured}; {judged[1]}"
            fair = fairness_gate(
                self.spec.auto_update.gate.max_fairness_gap, self.spec.monitoring.quality, o.traffic.get(CANARY)
            )
            if verdict == PASSED and fair is not None:
                verdict, measured = fair[0], f"{measured}; {fair[1]}"
            if verdict == FAILED:
                return self.roll_back(chosen, measured)
            if verdict == INCONCLUSIVE:
                return self.hold_canary(chosen, inconclusive=measured)
            if self.last_step():
                return self.promote(chosen, measured)
            self.next_step(chosen, measured)
        return self.hold_canary(chosen)

    @property
    def current(self) -> dict[str, Any]:
        return dict(self.status["current"])

    @property
    def stable_rev(self) -> str:
        return str(self.status["current"]["name"])

    def _base(self) -> list[dict[str, Any]]:
        """The Service and the stable revision's ConfigMap: in every plan once something is served."""
        return [*self.services, self.build.config_map(self.stable_rev, self.current["modelUri"])]

    def _retire(self, revision: dict[str, Any], outcome: str, reason: str) -> None:
        self.status["history"] = [
            {**revision, "outcome": outcome, "reason": reason, "at": self.now},
            *self.status["history"],
        ][:HISTORY]

    # -- transitions ----------------------------------------------------------------------------------------------

    def first_revision(self, chosen: Target) -> None:
        """Nothing served yet: the target becomes the stable revision."""
        self.status["current"] = record(chosen.model, chosen.revision, self.now)
        message = f"serving revision {chosen.revision} ({chosen.model.source}: {chosen.model.uri})"
        self.events.append(("Normal", "FirstRevision", message))

    def steady(self, chosen: Target) -> Step:
        """The target is the stable revision; a finished promotion drops the canary track once stable rolled."""
        canary, stable_rev = self.status["canary"], self.stable_rev
        if canary and canary.get("name") == stable_rev:
            _, _, done = replicas_ready(self.o.deployments.get(STABLE))
            if not done:  # the stable track is still rolling to the promoted revision: keep the canary serving
                children = [
                    *self._base(),
                    self.build.deployment(STABLE, stable_rev, self.total, 100),
                    self.build.deployment(
                        CANARY, stable_rev, o_replicas(self.o.deployments.get(CANARY)) or self.total, 0
                    ),
                ]
                return Step(
                    Phase.DEPLOYING, "Promoting", f"promoting {stable_rev}: the stable track is rolling to it", children
                )
            self.events.append(("Normal", "Promoted", f"revision {stable_rev} is stable; the canary track is removed"))
        elif canary:
            self.events.append(("Normal", "CanaryCancelled", f"canary {canary['name']} cancelled: {chosen.why}"))
        if self.status["shadow"]:
            cancelled = f"shadow {self.status['shadow']['name']} cancelled: {chosen.why}"
            self.events.append(("Normal", "ShadowCancelled", cancelled))
        self.status |= NO_CANARY | NO_SHADOW
        children = [*self._base(), self.build.deployment(STABLE, stable_rev, self.total, 100)]
        delete = (CANARY,) if self.o.deployments.get(CANARY) else ()
        return Step(Phase.AVAILABLE, "Serving", f"serving revision {stable_rev}", children, delete)

    def roll(self, chosen: Target) -> Step:
        """strategy rolling: the stable track's template moves to the new revision."""
        rev, stable_rev = chosen.revision, self.stable_rev
        self._retire(self.current, "Replaced", f"replaced by {rev} ({chosen.why})")
        self.status["current"] = record(chosen.model, rev, self.now)
        self.events.append(("Normal", "RollingUpdate", f"rolling {stable_rev} -> {rev}: {chosen.why}"))
        children = [
            *self.services,
            self.build.config_map(rev, chosen.model.uri),
            self.build.deployment(STABLE, rev, self.total, 100),
        ]
        return Step(Phase.DEPLOYING, "RollingUpdate", f"rolling out revision {rev}", children)

    def start_canary(self, chosen: Target) -> None:
        """A new revision (or one that replaces the canary in progress) starts at the first step."""
        canary, steps = self.status["canary"], self._steps()
        if canary:
            message = f"canary {canary['name']} replaced by {chosen.revision}: {chosen.why}"
            self.events.append(("Normal", "CanaryReplaced", message))
        self.status |= {
            "canary": record(chosen.model, chosen.revision, self.now),
            "canaryStep": 0,
            "canaryWeight": steps[0],
            "stepStartedAt": self.now,
            "stepBaseline": self.baseline(),
            "canaryTraffic": None,
        }
        self.events.append(("Normal", "CanaryStarted", f"canary {chosen.revision} at {steps[0]}% ({chosen.why})"))

    def baseline(self) -> dict[str, Any]:
        """Each track's counters now: where the next step's window starts."""
        return {track: (self.o.traffic.get(track) or Traffic()).counters() for track in (STABLE, CANARY)}

    def window(self) -> Traffic | None:
        """What the canary served since its step started (None when its /metrics could not be read), kept in
        `status.canaryTraffic` with its share of both tracks' requests."""
        kept = self.status.get("stepBaseline") or {}
        windows: dict[str, Traffic | None] = {}
        for track in (STABLE, CANARY):
            seen = self.o.traffic.get(track)
            windows[track] = seen.since(Traffic.of_counters(kept.get(track))) if seen is not None else None
        canary, stable = windows[CANARY], windows[STABLE]
        if canary is not None:
            both = canary.requests + (stable.requests if stable else 0)
            p99 = canary.quantile_ms(0.99)
            self.status["canaryTraffic"] = {
                "requests": canary.requests,
                "share": round(canary.requests / both, 4) if both else None,
                "errorRate": round(canary.error_rate, 6),
                "p99LatencyMs": None if p99 is None or math.isinf(p99) else p99,
            }
        return canary

    def step_due(self, ready: int) -> bool:
        """The step's interval has passed and its canary answers: time to judge the gate. A canary whose servers are
        still starting (image pull, model load) is judged once they answer, or once server.startupTimeoutSeconds
        has passed."""
        started = seconds(self.status["stepStartedAt"]) or self.o.now
        return not self.starting(ready, started) and self.o.now - started >= self._canary().interval_seconds

    def starting(self, ready: int, started: float) -> bool:
        """No server of a track has answered yet, within server.startupTimeoutSeconds of its stage's start."""
        return ready < 1 and self.o.now - started < self.spec.server.startup_timeout_seconds

    def last_step(self) -> bool:
        return int(self.status["canaryStep"] or 0) + 1 >= len(self._steps())

    def shadow_stage(self, chosen: Target) -> Step | None:
        """rollout.shadow: the candidate answers copies of live requests until judged; None once it passed."""
        if not self.status["shadow"] or self.status["shadow"].get("name") != chosen.revision:
            self.start_shadow(chosen)
        if self.abort == chosen.revision:
            return self.reject_shadow(chosen, f"aborted by the annotation {ABORT_ANNOTATION}={chosen.revision}")
        kept = self.status.get("shadowBaseline") or {}
        windows: dict[str, Traffic | None] = {}
        for track in (STABLE, SHADOW):
            scraped = self.o.traffic.get(track)
            windows[track] = scraped.since(Traffic.of_counters(kept.get(track))) if scraped is not None else None
        seen = shadow.measured(windows[STABLE], windows[SHADOW])
        self.status["shadowTraffic"] = {"revision": chosen.revision, "verdict": "Running", **seen}
        started = seconds(self.status["shadowStartedAt"]) or self.o.now
        ready, _, _ = replicas_ready(self.o.deployments.get(SHADOW))
        if self.starting(ready, started) or self.o.now - started < self._shadow().interval_seconds:
            return self.hold_shadow(chosen)  # judged once its servers answer (within server.startupTimeoutSeconds)
        verdict, measured = shadow.gate(
            self._shadow(), self.analysis, ready, seen, windows[SHADOW], self.o.scrape_errors.get(SHADOW)
        )
        if verdict == FAILED:
            return self.reject_shadow(chosen, measured)
        if verdict == INCONCLUSIVE:
            self.status["shadowTraffic"]["verdict"] = "Inconclusive"
            return self.hold_shadow(chosen, inconclusive=measured)
        self.status["shadowTraffic"]["verdict"] = "Passed"
        self.status |= NO_SHADOW
        self.events.append(("Normal", "ShadowPassed", f"shadow {chosen.revision} passed ({measured}); canary starts"))
        return None

    def start_shadow(self, chosen: Target) -> None:
        """A new candidate goes to shadow first (a canary of another revision in progress is cancelled)."""
        canary = self.status["canary"]
        if canary:
            message = f"canary {canary['name']} replaced by {chosen.revision} (in shadow first): {chosen.why}"
            self.events.append(("Normal", "CanaryReplaced", message))
            self.status |= NO_CANARY
        self.status |= {
            "shadow": record(chosen.model, chosen.revision, self.now),
            "shadowStartedAt": self.now,
            "shadowBaseline": {t: (self.o.traffic.get(t) or Traffic()).counters() for t in (STABLE, SHADOW)},
        }
        message = f"shadow {chosen.revision} gets copies of live requests; users get {self.stable_rev}'s ({chosen.why})"
        self.events.append(("Normal", "ShadowStarted", message))

    def hold_shadow(self, chosen: Target, inconclusive: str | None = None) -> Step:
        """The stable track serves everyone; the shadow track answers the copies."""
        children = [
            *self._base(),
            self.build.config_map(chosen.revision, chosen.model.uri),
            self.build.deployment(STABLE, self.stable_rev, self.total, 100),
            self.build.deployment(SHADOW, chosen.revision, self._shadow().replicas, 0),
        ]
        seen = self.status["shadowTraffic"]
        message = (
            f"shadow {chosen.revision}: {seen['requests']} copies answered so far, users get {self.stable_rev}'s "
            f"answers; judged {self._shadow().interval_seconds}s after the stage started"
        )
        if inconclusive is None:
            return Step(Phase.DEPLOYING, "Shadow", message, children)
        return self._pause("shadow", chosen, "", inconclusive, "rollout.shadow.minRequests", children)

    def reject_shadow(self, chosen: Target, measured: str) -> Step:
        """The shadow failed (or was aborted): remembered as RolledBack, never tried again; users saw nothing."""
        self._retire(self.status["shadow"], "RolledBack", f"in shadow: {measured}")
        self.status["shadowTraffic"] = {**(self.status.get("shadowTraffic") or {}), "verdict": "Failed"}
        self.status |= NO_SHADOW
        rev, stable_rev = chosen.revision, self.stable_rev
        self.events.append(("Warning", "RolledBack", f"shadow {rev} rolled back: {measured}"))
        children = [*self._base(), self.build.deployment(STABLE, stable_rev, self.total, 100)]
        return Step(
            Phase.AVAILABLE, "RolledBack", f"shadow {rev} rolled back: {measured}; serving {stable_rev}", children
        )

    def roll_back(self, chosen: Target, measured: str) -> Step:
        """The gate failed: the canary goes, its revision is remembered as RolledBack and not tried again."""
        weight = self._steps()[int(self.status["canaryStep"] or 0)]
        self._retire(self.status["canary"], "RolledBack", measured)
        self.status |= NO_CANARY
        rev, stable_rev = chosen.revision, self.stable_rev
        self.events.append(("Warning", "RolledBack", f"canary {rev} rolled back at {weight}%: {measured}"))
        children = [*self._base(), self.build.deployment(STABLE, stable_rev, self.total, 100)]
        message = f"canary {rev} rolled back: {measured}; serving {stable_rev}"
        return Step(Phase.AVAILABLE, "RolledBack", message, children, (CANARY,))

    def next_step(self, chosen: Target, measured: str) -> None:
        """The gate passed: the canary moves to the next weight."""
        step = int(self.status["canaryStep"] or 0) + 1
        weight = self._steps()[step]
        self.status |= {
            "canaryStep": step,
            "canaryWeight": weight,
            "stepStartedAt": self.now,
            "stepBaseline": self.baseline(),
        }
        self.events.append(
            ("Normal", "CanaryStep", f"canary {chosen.revision} passed the gate ({measured}); now {weight}%")
        )

    def promote(self, chosen: Target, measured: str) -> Step:
        """The last step passed: the stable track rolls to the revision (then `steady` removes the canary)."""
        rev = chosen.revision
        self._retire(self.current, "Replaced", f"replaced by canary {rev} ({measured})")
        self.status["current"] = {**self.status["canary"], "at": self.now}
        self.status["canaryWeight"] = 0
        self.events.append(("Normal", "Promoting", f"canary {rev} passed every step ({measured}); promoting"))
        children = [
            *self.services,
            self.build.config_map(rev, chosen.model.uri),
            self.build.deployment(STABLE, rev, self.total, 100),
            self.build.deployment(CANARY, rev, o_replicas(self.o.deployments.get(CANARY)) or self.total, 0),
        ]
        return Step(Phase.DEPLOYING, "Promoting", f"promoting {rev}", children)

    def hold_canary(self, chosen: Target, inconclusive: str | None = None) -> Step:
        """Between judgements, or after one that could not judge (too few requests): both tracks at the step's
        weight; an inconclusive step is judged again on every pass as its requests grow, never promoted unjudged."""
        steps = self._steps()
        step = int(self.status["canaryStep"] or 0)
        weight = steps[step]
        stable_replicas, canary_replicas = replicas_for(self.total, weight)
        if self.autoscaled:  # the canary follows the stable track's autoscaled size instead of taking from it
            assert self.spec.replicas.max is not None
            stable_replicas = self.total
            canary_replicas = canary_alongside(self.total, weight, self.spec.replicas.max)
        children = [
            *self._base(),
            self.build.config_map(chosen.revision, chosen.model.uri),
            self.build.deployment(STABLE, self.stable_rev, stable_replicas, 100 - weight),
            self.build.deployment(CANARY, chosen.revision, canary_replicas, weight),
        ]
        share = (self.status.get("canaryTraffic") or {}).get("share")
        message = (
            f"canary {chosen.revision} at {weight}% (step {step + 1}/{len(steps)}, {canary_replicas} of "
            f"{stable_replicas + canary_replicas} replicas"
            + (f", {share:.0%} of requests so far" if share is not None else "")
            + f"); gate judged {self._canary().interval_seconds}s after the step started"
        )
        if inconclusive is None:
            return Step(Phase.DEPLOYING, "Canary", message, children)
        knob = "rollout.canary.analysis.minRequests"
        return self._pause("canary", chosen, f" at {weight}%", inconclusive, knob, children)

    def _pause(self, stage: str, chosen: Target, at: str, why: str, knob: str, children: list[dict[str, Any]]) -> Step:
        """A stage that could not be judged (too few requests): it holds, condition Paused says why and how to go
        on, one Warning Event (`ShadowInconclusive` or `CanaryInconclusive`)."""
        where, abort = f"{stage} {chosen.revision} paused", f"{ABORT_ANNOTATION}={chosen.revision}"
        self.paused = (
            f"{where}{at}: {why}. It resumes by itself once enough requests reach it (send traffic, or lower {knob}); "
            f"to abort, roll it back with `kubectl annotate modeldeployment {self.name} {abort}`"
        )
        reason = f"{stage.capitalize()}Inconclusive"
        if not str(self.previous.get("message") or "").startswith(where):
            self.events.append(("Warning", reason, self.paused))
        return Step(Phase.DEPLOYING, reason, self.paused, children)

    # -- the end of the pass ----------------------------------------------------------------------------------

    def finish(self, step: Step) -> Plan:
        decided = (step.phase, step.reason, step.message)
        stable, traffic = self.o.deployments.get(STABLE), self.o.traffic.get(STABLE)
        pods = Pods.of(self.o.pods.get(STABLE, []), self.o.now, self.o.logs)
        self.status.update(
            health(self.spec, stable, traffic, self.analysis, decided, self.previous, self.generation, self.now, pods)
        )
        stage = "Shadow" if self.paused and self.paused.startswith("shadow") else "Canary"
        why = (f"{stage}Inconclusive", self.paused) if self.paused else ("NotPaused", "the rollout is not paused")
        before = list(self.previous.get("conditions") or [])
        paused = condition("Paused", self.paused is not None, *why, self.generation, self.now, before)
        self.status["conditions"] = [*self.status["conditions"], paused]
        tracks = list(step.delete)
        built = {c["metadata"]["labels"].get(builders.TRACK_LABEL) for c in step.children if c["kind"] == "Deployment"}
        for track in (CANARY, SHADOW):  # a stage this pass does not keep (a shadow passed, a canary replaced): gone
            if step.children and self.o.deployments.get(track) and track not in built and track not in tracks:
                tracks.append(track)
        delete = [("apps/v1", "Deployment", builders.child_name(self.build.owner, t)) for t in tracks]
        self.status["autoscaling"] = autoscaling_status(self.spec, self.o.autoscaler) if self.autoscaled else None
        if self.o.autoscaler is not None and not self.autoscaled:  # replicas.max lowered to min: a fixed size again
            delete.append(("autoscaling/v2", "HorizontalPodAutoscaler", builders.child_name(self.build.owner, STABLE)))
        again = retrain.decide(self.obj, self.spec, self.status, self.o.retrains, self.o.retrain_dataset, self.o.now)
        self.status["retraining"] = again.status
        create = [again.create] if again.create else []
        return Plan(step.children, delete, self.status, [*self.events, *again.events], create, again.delete)

    def _canary(self) -> Canary:
        assert self.spec.rollout.canary is not None  # a CEL rule of the CRD: strategy canary has a canary block
        return self.spec.rollout.canary

    def _steps(self) -> list[int]:
        return list(self._canary().steps)

    def _shadow(self) -> Shadow:
        assert self.spec.rollout.shadow is not None
        return self.spec.rollout.shadow


def references(spec: dict[str, Any]) -> list[Ref]:
    """The TrainingRun or TuningSweep whose model `spec.model` names, if it names one."""
    model = spec.get("model") or {}
    if model.get("fromTrainingRun"):
        return [("TrainingRun", str(model["fromTrainingRun"]))]
    if model.get("fromTuningSweep"):
        return [("TuningSweep", str(model["fromTuningSweep"]))]
    return []


def children_to_stop(obj: dict[str, Any]) -> list[Child]:
    name = obj["metadata"]["name"]
    tracks = [("apps/v1", "Deployment", builders.suffixed(name, track)) for track in (STABLE, CANARY, SHADOW)]
    services = [("v1", "Service", builders.suffixed(name, s)) for s in (builders.PEERS, SHADOW)]
    autoscaler = ("autoscaling/v2", "HorizontalPodAutoscaler", builders.suffixed(name, STABLE))
    return [autoscaler, *tracks, ("v1", "Service", name), *services]


CONTROLLER = ServingController(kind="ModelDeployment", references=references, children_to_stop=children_to_stop)
