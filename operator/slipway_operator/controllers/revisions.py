"""Which model a ModelDeployment should serve, and the revisions it has served; pure.

- The model: `spec.model` (a URI, or a succeeded TrainingRun/TuningSweep's exported model), or with autoUpdate
  a succeeded run matching the selector whose gate metric beats the serving model by `minImprovement`.
- A revision is the model URI plus the server settings, hashed: a change to either is a rollout. The status
  keeps each revision as a record (name, model, source, metrics, lineage, outcome, reason, time).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from slipway_operator.api.common import Phase
from slipway_operator.api.modeldeployment import ModelDeploymentSpec
from slipway_operator.controllers.common import phase_of
from slipway_operator.workloads import serve_config

LINEAGE_KEYS = (
    "datasetRef",
    "datasetUri",
    "datasetFingerprint",
    "trainingRun",
    "tuningSweep",
    "trial",
    "retrainReason",
    "mlflowRunId",
)


@dataclass(frozen=True)
class Model:
    """A servable model and where it came from."""

    uri: str
    source: str  # TrainingRun/<name>, TuningSweep/<name> or uri
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    finished_at: str = ""
    fairness: dict[str, Any] = field(default_factory=dict)  # its model card's: feature -> groups, largest_gap

    @classmethod
    def of_record(cls, record: dict[str, Any]) -> Model:
        """The model of a revision record in the status (`current`, `canary`)."""
        return cls(
            str(record["modelUri"]),
            str(record.get("source", "")),
            record.get("metrics") or {},
            record.get("lineage") or {},
        )


@dataclass(frozen=True)
class Target:
    """The model to serve now, its revision, and why (for Events and messages)."""

    model: Model
    revision: str
    why: str


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
        lineage={**(status.get("lineage") or {}), **_mlflow_run(status)},
        finished_at=str(ready.get("lastTransitionTime") or ""),
    )


def _mlflow_run(status: dict[str, Any]) -> dict[str, str]:
    """The MLflow run a tracked run was logged as, for the lineage (a registered version links to it)."""
    run_id = (status.get("tracking") or {}).get("runId")
    return {"mlflowRunId": str(run_id)} if run_id else {}


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


def revision_of(name: str, spec: ModelDeploymentSpec, model_uri: str) -> str:
    """8 hex digits of the model URI and the server settings: what makes a rollout. Settings left at their
    defaults are not hashed, so a setting added to a later Slipway does not roll every deployment out."""
    served = serve_config(name, spec, model_uri).model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return hashlib.sha256(json.dumps(served, sort_keys=True).encode()).hexdigest()[:8]


def record(
    model: Model, rev: str, at: str, outcome: str = "", reason: str = "", lineage_extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A revision as the status keeps it (`current`, `canary`, `history`)."""
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


def better(candidate: Model, serving: dict[str, Any], spec: ModelDeploymentSpec) -> bool:
    """Whether `candidate` beats the serving revision record on autoUpdate's gate metric."""
    gate = spec.auto_update.gate
    new, old = candidate.metrics.get(gate.metric), (serving.get("metrics") or {}).get(gate.metric)
    if new is None or old is None:
        return False
    gain = float(new) - float(old) if gate.direction == "maximize" else float(old) - float(new)
    # minImprovement 0 still asks for a strictly better model (an equal one is no reason to roll out)
    return gain > 0 if gate.min_improvement == 0 else gain >= gate.min_improvement


def unfair(model: Model, limit: float | None) -> str | None:
    """Why a candidate fails autoUpdate's fairness gate (its largest gap between groups of a sensitive feature, from
    its evaluation), in words naming the groups; None when it passes or was not evaluated per group."""
    if limit is None:
        return None
    for feature, report in sorted(model.fairness.items()):
        gap = report.get("largest_gap") if isinstance(report, dict) else None
        if gap is None or gap <= limit:
            continue
        metric = report.get("metric", "metric")
        groups = {g: v.get(metric) for g, v in (report.get("groups") or {}).items() if v.get(metric) is not None}
        low, high = min(groups, key=lambda g: groups[g]), max(groups, key=lambda g: groups[g])
        return (
            f"{feature}: {metric} gap {gap:.4g} between {low} ({groups[low]:.4g}) and {high} ({groups[high]:.4g}) is "
            f"above autoUpdate.gate.maxFairnessGap {limit:g}"
        )
    return None


def target(
    name: str, spec: ModelDeploymentSpec, source: Model | None, candidates: list[Model], previous: dict[str, Any]
) -> Target | None:
    """What to serve, from spec.model (`source`), autoUpdate's `candidates` and the stored status; None when
    nothing is known yet (spec.model not ready and nothing served)."""
    current = previous.get("current") or None
    if source is None:
        return None
    source_rev = revision_of(name, spec, source.uri)
    if not current or source_rev != previous.get("sourceRevision"):
        return Target(source, source_rev, f"spec.model is {source.source}")
    if spec.auto_update.enabled:
        rejected = {h["name"] for h in previous.get("history") or [] if h.get("outcome") == "RolledBack"}
        best: tuple[Model, str] | None = None
        for candidate in candidates:
            rev = revision_of(name, spec, candidate.uri)
            if rev in rejected or rev == current.get("name") or not better(candidate, current, spec):
                continue
            if unfair(candidate, spec.auto_update.gate.max_fairness_gap):
                continue
            if best is None or better(candidate, record(best[0], best[1], ""), spec):
                best = (candidate, rev)
        if best is not None:
            gate = spec.auto_update.gate
            metric = best[0].metrics.get(gate.metric)
            return Target(best[0], best[1], f"autoUpdate: {best[0].source} has {gate.metric}={metric:.4g}")
    for stage in ("canary", "shadow"):  # a rollout in progress keeps going unless something else won
        staged = previous.get(stage) or None
        if staged:
            return Target(Model.of_record(staged), str(staged["name"]), f"{stage} in progress")
    return Target(Model.of_record(current), str(current["name"]), "serving")
