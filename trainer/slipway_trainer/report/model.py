"""A trained model's section, from what its run published under its artifact folder: `result.json` (`Result`,
read through its contract), `report/metrics.json` (test metrics, per class, fairness, importance), the plots
under `report/`, `history.json`, and the model card beside the model.

`render` fills the section of one training run; `evaluation` and `summarise` serve a sweep's best trial too.
"""

from __future__ import annotations

from typing import Any

from slipway_trainer import storage
from slipway_trainer.artifacts import RESULT, Result
from slipway_trainer.report.files import Output, list_pngs, read_artifact, read_json, read_text
from slipway_trainer.report.html import (
    Markup,
    as_dict,
    code,
    details,
    esc,
    facts,
    figure,
    figures,
    fmt,
    lineage,
    note,
    table,
)
from slipway_trainer.report.markdown import markdown_html
from slipway_trainer.report.page import Section, conditions_table, reason

MAX_HISTORY_ROWS = 60
SWEEP_PLOT = "comparison.png"  # a sweep's: shown with its leaderboard, not with its best trial's plots
# The plots a run publishes under report/, in the order they are shown, and what each one is.
PLOTS = {
    "training_curves.png": "Training curves (train and validation, per epoch)",
    "gan_losses.png": "Generator and discriminator losses",
    "confusion_matrix.png": "Confusion matrix on the test split",
    "saliency.png": "Saliency: what the model looks at in a few test images",
    "samples.png": "Generated samples",
    SWEEP_PLOT: "The objective against each hyperparameter (orange: trials stopped early)",
}


def read_result(artifacts: str | None) -> tuple[Result | None, str]:
    """The workload's result.json (its failure reason, its timings), when it is there; else why not."""
    return read_artifact(Result.read, storage.join(artifacts, RESULT) if artifacts else None)


def render(s: Section, spec: dict[str, Any], out: Output) -> None:
    artifacts = s.status.get("artifactUri")
    result, problem = read_result(artifacts)
    summarise(s, result, as_dict(spec.get("objective")))
    model = as_dict(spec.get("model"))
    training = as_dict(spec.get("training"))
    dataset = as_dict(spec.get("dataset"))
    epochs = result.epochs if result and result.epochs is not None else s.status.get("epoch")

    def run() -> list[Markup]:
        done = ""
        if epochs is not None:
            done = f"{fmt(epochs)} of {fmt(training.get('epochs', s.status.get('totalEpochs')))}"
            done += f", best epoch {fmt(result.best_epoch)}" if result and result.best_epoch else ""
            done += " (stopped early)" if result and result.stopped_early else ""
        seconds = result.train_seconds if result else None
        return [
            facts(
                [
                    ("dataset", dataset.get("ref") or dataset.get("uri")),
                    ("architecture", f"{model.get('architecture', '')} {fmt(model.get('params') or {})}".strip()),
                    ("objective", fmt(spec.get("objective")) if spec.get("objective") else None),
                    ("optimizer", fmt(spec.get("optimizer")) if spec.get("optimizer") else None),
                    ("epochs", done),
                    ("training time", f"{fmt(seconds)} s" if seconds is not None else None),
                    ("resumed from", ", ".join(map(str, (result.resumed_from if result else None) or []))),
                    ("exports", _exports(result.exports if result else None)),
                    ("model", code(s.status["modelUri"]) if s.status.get("modelUri") else None),
                    ("artifacts", code(artifacts) if artifacts else None),
                    ("lineage", lineage(s.status.get("lineage"))),
                ]
            ),
            s.absent("the run's result.json", problem) if artifacts and not result else Markup(""),
        ]

    s.add("Run", run)
    evaluation(s, artifacts, out, history=True)
    s.body.append(details("Conditions", conditions_table(s.status)))


def summarise(s: Section, result: Result | None, objective: dict[str, Any]) -> None:
    """The overview's line: why it failed, else the test value of the objective's metric, else its progress."""
    metric = str(objective.get("metric") or "").removeprefix("val_").removeprefix("test_")
    metrics = as_dict(s.status.get("metrics")) or ((result.metrics if result else None) or {})
    if s.failed:
        s.summary = f"failed: {(result.reason if result else None) or reason(s.status) or s.message}"
    elif metric and f"test_{metric}" in metrics:
        s.summary = f"test_{metric} {fmt(metrics[f'test_{metric}'])}"
    elif s.status.get("keyMetric"):
        s.summary = str(s.status["keyMetric"])
    elif s.status.get("progress"):
        s.summary = str(s.status["progress"])


def _exports(exports: Any) -> str:
    return ", ".join(
        f"{name} ({'checked' if as_dict(c).get('passed') else 'NOT checked'}, max difference "
        f"{fmt(as_dict(c).get('maxAbsDifference'))})"
        for name, c in as_dict(exports).items()
    )


def evaluation(s: Section, artifacts: str | None, out: Output, history: bool, title: str = "") -> None:
    """Test metrics, plots, fairness, importance, history and the model card of a run (or a sweep's best)."""
    if not artifacts:
        s.add("Evaluation", lambda: [s.missing("status.artifactUri (where the run's outputs are)")])
        return
    if s.failed:
        s.body.append(
            note("The run failed: it published no evaluation or model. What it left is shown below.", "muted")
        )
    report_uri = storage.join(artifacts, "report")
    metrics = as_dict(read_json(storage.join(report_uri, "metrics.json")))
    if title:
        s.body.append(Markup(f"<h3>{esc(title)}</h3>"))
    s.add("Test metrics", lambda: _test_metrics(s, metrics))
    s.add("Plots", lambda: _plots(s, report_uri, out))
    s.add("Fairness (test split, per group)", lambda: _fairness(metrics))
    s.add("What the model relies on (permutation importance)", lambda: _importance(metrics))
    if history:
        s.add("Training history", lambda: _history(storage.join(artifacts, "history.json")))
    model_uri = s.status.get("modelUri") or storage.join(artifacts, "model")
    s.add("Model card", lambda: _model_card(s, str(model_uri)))


def _test_metrics(s: Section, metrics: dict[str, Any]) -> list[Markup]:
    test = as_dict(metrics.get("test"))
    scalars = {f"test_{k}": v for k, v in test.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if not scalars:
        scalars = {k: v for k, v in as_dict(s.status.get("metrics")).items() if isinstance(v, int | float)}
    if not scalars:
        return [s.missing("the test metrics (report/metrics.json)")]
    parts = [table(["metric", "value"], scalars.items())]
    per_class = as_dict(test.get("per_class"))
    if per_class:
        rows = [
            [name, *(as_dict(v).get(k) for k in ("precision", "recall", "f1", "support"))]
            for name, v in per_class.items()
        ]
        parts.append(
            details(
                f"Per class ({len(rows)} classes)",
                table(["class", "precision", "recall", "f1", "support"], rows),
                open_=len(rows) <= 12,
            )
        )
    return parts


def _plots(s: Section, report_uri: str, out: Output) -> list[Markup]:
    names = [n for n in list_pngs(report_uri, PLOTS) if n != SWEEP_PLOT]
    if not names:
        return [s.missing(f"the run's plots (no PNG under {report_uri})")]
    shown = [
        figure(out.copy(storage.join(report_uri, n), n), PLOTS.get(n, n.removesuffix(".png").replace("_", " ")))
        for n in names
    ]
    return [figures(shown)]


def _fairness(metrics: dict[str, Any]) -> list[Markup]:
    parts: list[Markup] = []
    for feature, raw in as_dict(metrics.get("fairness")).items():
        found = as_dict(raw)
        if "groups" not in found:
            parts.append(note(f"{feature}: {found.get('error', 'no groups')}"))
            continue
        metric = str(found.get("metric") or "metric")
        rows = [
            [group, as_dict(v).get("rows"), as_dict(v).get(metric)] for group, v in as_dict(found["groups"]).items()
        ]
        heading = f"{feature}: {metric} per group, largest gap {fmt(found.get('largest_gap'))}"
        parts.append(Markup(f"<h4>{esc(heading)}</h4>") + table(["group", "rows", metric], rows))
    return parts


def _importance(metrics: dict[str, Any]) -> list[Markup]:
    importance = as_dict(metrics.get("importance"))
    if not importance:
        return []
    more = f" (the top 15 of {len(importance)})" if len(importance) > 15 else ""
    return [
        note(f"How much the test metric worsens when one raw column is shuffled{more}.", "muted"),
        table(["column", "drop in the metric"], list(importance.items())[:15]),
    ]


def _history(uri: str) -> list[Markup]:
    history = read_json(uri)
    if not isinstance(history, list) or not history:
        return []
    epochs = [as_dict(h) for h in history]
    keys = [k for k in ("epoch", "train_loss", "val_loss") if any(k in h for h in epochs)]
    keys += sorted({k for h in epochs for k in h if k.startswith("val_") and k != "val_loss"})[:4]
    keys += [k for k in ("learning_rate",) if any(k in h for h in epochs)]
    rows = [[h.get(k) for k in keys] for h in epochs[-MAX_HISTORY_ROWS:]]
    return [details(f"Every epoch ({len(history)})", table(keys, rows))]


def _model_card(s: Section, model_uri: str) -> list[Markup]:
    uri = storage.join(model_uri, "model_card.md")
    card = read_text(uri)
    if card is None:
        return [s.missing(f"the model card ({uri})")]
    rendered = Markup(f'<div class="card">{markdown_html(card)}</div>')
    return [details(f"model_card.md ({model_uri})", rendered, open_=True)]
