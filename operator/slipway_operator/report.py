"""The journey report: one HTML page per run of `slipway run`, readable offline, with the PNGs beside it.

`journey_report(resources, out_dir)` takes the journey's resources as plain dicts (apiVersion, kind, metadata,
spec, status — the status as the operator writes it) and writes `out_dir/report.html`: one section per
resource, in journey order (the controllers' order: DatasetPrep, TrainingRun, TuningSweep, ModelDeployment,
then any other kind), each with its phase and message. A run's section is filled by the trainer's renderer of
what its workload published (`slipway_trainer.report`: the dataset, the model, the sweep); a ModelDeployment's
comes from its status alone, here.

Everything shown is HTML-escaped; nothing in one section can stop the others from being written. Imported
lazily by `slipway run` (the page needs matplotlib, of the trainer extra); never imports torch or ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slipway_operator.controllers.kinds import ORDER
from slipway_trainer.report import (
    Markup,
    Output,
    Renderer,
    Section,
    as_dict,
    code,
    conditions_table,
    dataset,
    facts,
    fmt,
    lineage,
    model,
    note,
    pairs,
    sweep,
    table,
    write_page,
)


def journey_report(resources: list[dict[str, Any]], out_dir: Path, title: str = "Slipway journey") -> Path:
    """Write out_dir/report.html (+ PNGs beside it), openable offline; return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(
        (r if isinstance(r, dict) else {} for r in resources),
        key=lambda r: ORDER.get(str(r.get("kind")), len(ORDER)),
    )  # sorted() is stable: resources of one kind keep the order they were given in
    sections: list[Section] = []
    anchors: set[str] = set()
    for index, resource in enumerate(ordered):
        section = Section.of(resource, index, anchors)
        render = RENDERERS.get(section.kind, _render_other)
        section.fill(render, as_dict(resource.get("spec")), Output(out_dir, section.anchor))
        sections.append(section)
    return write_page(out_dir, title, sections)


# -- ModelDeployment -------------------------------------------------------------------------------------------


def _render_deployment(s: Section, spec: dict[str, Any], out: Output) -> None:
    status = s.status
    endpoint = status.get("endpoint")
    name = status.get("modelName") or s.name
    replicas = as_dict(status.get("replicas"))
    ready = status.get("readyReplicas") or (
        f"{replicas.get('ready', 0)}/{replicas.get('desired', 0)}" if replicas else ""
    )
    s.summary = ", ".join(x for x in (f"{ready} ready" if ready else "", str(endpoint or "")) if x)
    source = as_dict(spec.get("model"))
    rollout = as_dict(spec.get("rollout"))
    s.add(
        "Serving",
        lambda: [
            facts(
                [
                    ("endpoint", code(endpoint) if endpoint else "none yet"),
                    ("inference", code(f"POST {endpoint}/v2/models/{name}/infer") if endpoint else None),
                    ("model name", name),
                    ("replicas ready", ready),
                    ("model from", ", ".join(f"{k} {v}" for k, v in source.items() if v)),
                    ("rollout", rollout.get("strategy")),
                    ("serving since", as_dict(status.get("current")).get("at")),
                ]
            )
        ],
    )
    s.add("Revisions", lambda: _revisions(status))
    s.add("Traffic (stable revision, since its pods started)", lambda: _traffic(s, status))
    s.add("Drift of live inputs", lambda: _drift(status, spec))
    s.add("Conditions", lambda: [conditions_table(status)])
    s.add("Rollout history (newest first)", lambda: _history(status))


def _revision_row(role: str, rev: dict[str, Any]) -> list[Any]:
    model_uri = code(rev.get("modelUri") or "")
    return [
        role,
        rev.get("name"),
        rev.get("source"),
        model_uri,
        pairs(rev.get("metrics")),
        lineage(rev.get("lineage")),
        rev.get("at"),
    ]


def _revisions(status: dict[str, Any]) -> list[Markup]:
    current, canary = as_dict(status.get("current")), as_dict(status.get("canary"))
    rows = []
    if current:
        rows.append(_revision_row("stable", current))
    if canary:
        weight, step = status.get("canaryWeight"), status.get("canaryStep")
        rows.append(_revision_row(f"canary ({fmt(weight)}% of traffic, step {fmt(step)})", canary))
    if not rows:
        return [note("No revision is served yet.", "muted")]
    return [table(["role", "revision", "source", "model", "test metrics", "lineage", "since"], rows)]


def _traffic(s: Section, status: dict[str, Any]) -> list[Markup]:
    traffic = as_dict(status.get("traffic"))
    if not traffic:
        return [s.missing("traffic figures (status.traffic)")]
    rate, p99 = traffic.get("errorRate"), traffic.get("p99LatencyMs")
    shown = [
        traffic.get("requests"),
        f"{float(rate):.2%}" if isinstance(rate, int | float) else rate,
        f"{fmt(p99)} ms" if p99 is not None else "no requests yet",
    ]
    return [table(["requests", "5xx error rate", "p99 latency"], [shown])]


def _drift(status: dict[str, Any], spec: dict[str, Any]) -> list[Markup]:
    drift = as_dict(status.get("drift"))
    config = as_dict(as_dict(spec.get("monitoring")).get("drift"))
    if config.get("enabled") is False:
        return [note("Drift monitoring is off (spec.monitoring.drift.enabled: false).", "muted")]
    drifted = [str(f) for f in drift.get("driftedFeatures") or []]
    return [
        facts(
            [
                ("largest score", drift.get("score") if drift.get("score") is not None else "not measured yet"),
                ("threshold", f"{fmt(config.get('threshold'))} ({config.get('method', 'psi')})" if config else None),
                ("drifted features", ", ".join(drifted) if drifted else "none"),
                ("measured", drift.get("checkedAt")),
            ]
        )
    ]


def _history(status: dict[str, Any]) -> list[Markup]:
    history = [as_dict(h) for h in status.get("history") or []]
    if not history:
        return [note("No earlier revision: this is the first rollout.", "muted")]
    rows = [
        [
            h.get("name"),
            h.get("outcome"),
            h.get("reason"),
            h.get("at"),
            h.get("source"),
            code(h.get("modelUri") or ""),
            pairs(h.get("metrics")),
        ]
        for h in history
    ]
    return [table(["revision", "outcome", "why", "when", "source", "model", "test metrics"], rows)]


def _render_other(s: Section, spec: dict[str, Any], out: Output) -> None:
    s.body.append(note(f"{s.kind} is not a kind this report knows: only its phase and message are shown.", "muted"))
    s.add("Conditions", lambda: [conditions_table(s.status)])


RENDERERS: dict[str, Renderer] = {
    "DatasetPrep": dataset.render,
    "TrainingRun": model.render,
    "TuningSweep": sweep.render,
    "ModelDeployment": _render_deployment,
}
