"""autoUpdate.retrain: when to train a new candidate, and the run to create; pure.

`decide(...)` looks at the runs this ModelDeployment created before (found by their `slipway.dev/retrained-by`
label, not remembered in the status), the template's DatasetPrep, the health just judged and the clock, and returns
at most one run to create and the finished runs beyond `keep` to delete. Level-triggered and restart-safe: the
next run's name counts up from the runs that exist (`<name>-retrain-<n>`), so an operator that died between
creating a run and writing the status finds the run and neither forgets nor repeats it; a run still going
blocks the next; the cooldown counts from the newest run's creation time.

Triggers (any one): a new dataset version (the DatasetPrep's fingerprint is neither the serving model's nor any
earlier retrain's), drift (Drifted), a live quality drop (Degraded, reason QualityDropped), a schedule. The runs
carry the autoUpdate selector's matchLabels, so the gate (`revisions.target`) considers them like any candidate:
a worse model is trained, measured and not rolled out.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any

from slipway_operator.api.common import API_VERSION
from slipway_operator.api.modeldeployment import ModelDeploymentSpec, Retrain
from slipway_operator.controllers.common import RETRAIN_REASON

RETRAINED_BY = "slipway.dev/retrained-by"  # label: the ModelDeployment that created the run
DATASET = "slipway.dev/retrain-dataset"  # annotation: the dataset fingerprint the retrain was started for
TERMINAL = ("Succeeded", "Failed")


@dataclass
class Decision:
    create: dict[str, Any] | None = None
    delete: list[tuple[str, str, str]] = field(default_factory=list)  # (apiVersion, kind, name)
    status: dict[str, Any] | None = None  # status.retraining
    events: list[tuple[str, str, str]] = field(default_factory=list)


def selector(name: str) -> str:
    """The label selector of the runs a ModelDeployment's retrains created."""
    return f"{RETRAINED_BY}={name}"


def _seconds(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _index(run: dict[str, Any], name: str) -> int:
    found = re.fullmatch(rf"{re.escape(name)}-retrain-(\d+)", run["metadata"]["name"])
    return int(found.group(1)) if found else 0


def decide(
    obj: dict[str, Any],
    spec: ModelDeploymentSpec,
    health: dict[str, Any],
    runs: list[dict[str, Any]],
    dataset: dict[str, Any] | None,
    now: float,
) -> Decision:
    """What autoUpdate.retrain does this pass. `health` is the status just judged (conditions, current, canary),
    `runs` the runs this deployment created, `dataset` the template's DatasetPrep as observed."""
    retrain = spec.auto_update.retrain
    if retrain is None or not spec.auto_update.enabled:
        return Decision()
    name = obj["metadata"]["name"]
    runs = sorted(runs, key=lambda r: _index(r, name), reverse=True)
    decision = Decision(delete=_beyond_keep(runs, retrain, health))
    kept = [_summary(r) for r in runs if (API_VERSION, r["kind"], r["metadata"]["name"]) not in decision.delete]
    reason = _trigger(retrain, health, runs, dataset, now)
    newest = runs[0] if runs else None
    running = next((r for r in runs if (r.get("status") or {}).get("phase") not in TERMINAL), None)
    last_at = _seconds((newest or {}).get("metadata", {}).get("creationTimestamp")) if newest else None
    next_allowed = (last_at + retrain.cooldown_seconds) if last_at is not None else None
    waiting = None
    if reason and running is not None:
        waiting = f"{reason}: waiting for {running['kind']}/{running['metadata']['name']} to finish"
    elif reason and next_allowed is not None and now < next_allowed:
        waiting = f"{reason}: waiting for the cooldown to end at {_iso(next_allowed)}"
    elif reason:
        index = max([_index(r, name) for r in runs] + [0]) + 1
        decision.create = _run(obj, spec, retrain, f"{name}-retrain-{index}", reason, _fingerprint(dataset))
        decision.events.append(("Normal", "Retraining", f"{decision.create['kind']}/{name}-retrain-{index}: {reason}"))
        kept.insert(0, _summary(decision.create) | {"at": _iso(now)})
        next_allowed = now + retrain.cooldown_seconds
    decision.status = {
        "runs": kept[:100],
        "nextAllowedAt": _iso(next_allowed) if next_allowed is not None else None,
        "waiting": waiting,
    }
    return decision


def _trigger(
    retrain: Retrain, health: dict[str, Any], runs: list[dict[str, Any]], dataset: dict[str, Any] | None, now: float
) -> str | None:
    """The first trigger that fires, in words; None when none does."""
    triggers = retrain.triggers
    conditions = {c["type"]: c for c in health.get("conditions") or []}
    fingerprint = _fingerprint(dataset)
    serving = ((health.get("current") or {}).get("lineage") or {}).get("datasetFingerprint")
    seen = {((r.get("metadata") or {}).get("annotations") or {}).get(DATASET) for r in runs}
    if triggers.dataset_changed and fingerprint and serving and fingerprint != serving and fingerprint not in seen:
        return f"new dataset version {fingerprint[:19]} (the serving model was trained on {serving[:19]})"
    degraded = conditions.get("Degraded") or {}
    if triggers.quality_dropped and degraded.get("status") == "True" and degraded.get("reason") == "QualityDropped":
        return f"quality dropped: {degraded.get('message', '')}"
    drifted = conditions.get("Drifted") or {}
    if triggers.drift and drifted.get("status") == "True":
        return f"drift: {drifted.get('message', '')}"
    if triggers.schedule_seconds:
        times = [_seconds((r.get("metadata") or {}).get("creationTimestamp")) for r in runs]
        times.append(_seconds((health.get("current") or {}).get("at")))
        last = max((t for t in times if t is not None), default=None)
        if last is not None and now - last >= triggers.schedule_seconds:
            return f"schedule: no retrain for {int(now - last)}s (scheduleSeconds {triggers.schedule_seconds})"
    return None


def _fingerprint(dataset: dict[str, Any] | None) -> str | None:
    status = (dataset or {}).get("status") or {}
    return str(status["fingerprint"]) if status.get("phase") == "Succeeded" and status.get("fingerprint") else None


def _beyond_keep(runs: list[dict[str, Any]], retrain: Retrain, health: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Finished runs past the newest `keep`, except the ones the deployment serves or rolls out."""
    in_use = {
        str(r.get("source", "")).partition("/")[2]
        for r in (health.get("current") or {}, health.get("canary") or {})
        if r
    }
    finished = [r for r in runs if (r.get("status") or {}).get("phase") in TERMINAL]
    return [
        (API_VERSION, r["kind"], r["metadata"]["name"])
        for r in finished[retrain.keep :]
        if r["metadata"]["name"] not in in_use
    ]


def _run(
    obj: dict[str, Any],
    spec: ModelDeploymentSpec,
    retrain: Retrain,
    run_name: str,
    reason: str,
    fingerprint: str | None,
) -> dict[str, Any]:
    meta = obj["metadata"]
    selector_labels = dict((spec.auto_update.selector.match_labels if spec.auto_update.selector else None) or {})
    template = retrain.training_run or retrain.tuning_sweep
    assert template is not None  # a CEL rule: exactly one of trainingRun, tuningSweep
    annotations = {RETRAIN_REASON: reason[:1000]}
    if fingerprint:
        annotations[DATASET] = fingerprint
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingRun" if retrain.training_run else "TuningSweep",
        "metadata": {
            "name": run_name,
            "namespace": meta["namespace"],
            "labels": {**selector_labels, RETRAINED_BY: meta["name"]},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": obj.get("apiVersion", API_VERSION),
                    "kind": "ModelDeployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ],
        },
        "spec": template.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    meta = run.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return {
        "name": meta.get("name", ""),
        "kind": run.get("kind", "TrainingRun"),
        "reason": annotations.get(RETRAIN_REASON, ""),
        "datasetFingerprint": annotations.get(DATASET),
        "at": meta.get("creationTimestamp"),
        "phase": (run.get("status") or {}).get("phase"),
    }
