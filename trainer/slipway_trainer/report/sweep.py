"""A hyperparameter sweep's section: its search, the leaderboard (`Leaderboard`, read through its contract),
the comparison plot, whether the winner is really better than the runner-up (`report/top_two.json`), and the
best trial's evaluation as for a trained model.
"""

from __future__ import annotations

from typing import Any

from slipway_trainer import storage
from slipway_trainer.artifacts import LEADERBOARD, Leaderboard, Result
from slipway_trainer.report import html
from slipway_trainer.report.files import Output, read_artifact, read_json
from slipway_trainer.report.html import Markup, as_dict, code, facts, fmt
from slipway_trainer.report.model import PLOTS, SWEEP_PLOT, evaluation, read_result, summarise
from slipway_trainer.report.page import Section, conditions_table


def render(s: Section, spec: dict[str, Any], out: Output) -> None:
    artifacts = s.status.get("artifactUri")
    result, problem = read_result(artifacts)
    summarise(s, result, as_dict(spec.get("objective")))
    best = as_dict(s.status.get("bestTrial")) or (result.best_trial.dump() if result and result.best_trial else {})
    if best:
        s.summary = f"best trial {best.get('id')}: {fmt(best.get('metric'))}; " + s.summary
    trials = as_dict(s.status.get("trials")) or (result.trials.dump() if result and result.trials else {})
    s.add(
        "Sweep",
        lambda: [
            facts(
                [
                    ("search space", fmt(spec.get("searchSpace")) if spec.get("searchSpace") else None),
                    ("algorithm", spec.get("algorithm")),
                    ("scheduler", fmt(spec.get("scheduler")) if spec.get("scheduler") else None),
                    ("objective", fmt(spec.get("objective")) if spec.get("objective") else None),
                    ("trials", html.pairs(trials)),
                    (
                        "best trial",
                        f"{best.get('id')} ({fmt(best.get('metric'))}) with {html.pairs(best.get('params'))}"
                        if best
                        else None,
                    ),
                    ("trial epochs", result.trial_epochs if result else None),
                    (
                        "searching",
                        f"{result.search_seconds:.1f} s" if result and result.search_seconds is not None else None,
                    ),
                    ("model", code(s.status["modelUri"]) if s.status.get("modelUri") else None),
                    ("artifacts", code(artifacts) if artifacts else None),
                    ("lineage", html.lineage(s.status.get("lineage"))),
                ]
            ),
            s.absent("the sweep's result.json", problem) if artifacts and not result else Markup(""),
        ],
    )
    report_uri = storage.join(artifacts, "report") if artifacts else None
    board_uri = s.status.get("leaderboardUri") or (storage.join(report_uri, LEADERBOARD) if report_uri else None)
    objective = str(best.get("objective") or as_dict(spec.get("objective")).get("metric") or "objective")
    s.add(
        "Leaderboard",
        lambda: [*leaderboard(s, board_uri, objective, str(best.get("id") or "")), *_comparison(s, report_uri, out)],
    )
    top_two_uri = storage.join(report_uri, "top_two.json") if report_uri else None
    s.add("Is the winner really better?", lambda: _top_two(s, top_two_uri, result))
    evaluation(s, artifacts, out, history=False, title="The best trial on the test split")
    s.body.append(html.details("Conditions", conditions_table(s.status)))


def leaderboard(s: Section, uri: str | None, objective: str, best: str) -> list[Markup]:
    """The trials as ranked, their parameters in columns; the best one's row highlighted."""
    board, problem = read_artifact(Leaderboard.read, uri)
    if board is None:
        return [s.absent(f"the leaderboard ({uri or 'no leaderboard URI'})", problem)]
    paths = sorted({p for trial in board.rows for p in trial.params})
    rows = [
        html.row(
            [rank, t.trial, *(t.params.get(p) for p in paths), t.best, t.epochs, t.status, t.error or ""],
            "best" if best and t.trial == best else "",
        )
        for rank, t in enumerate(board.rows, 1)
    ]
    return [html.table(["rank", "trial", *paths, objective, "epochs", "status", "error"], rows)]


def _comparison(s: Section, report_uri: str | None, out: Output) -> list[Markup]:
    uri = storage.join(report_uri, SWEEP_PLOT) if report_uri else None
    if not uri or not storage.exists(uri):
        return [s.missing(f"the comparison plot ({uri or 'no artifact URI'})")]
    return [html.figures([html.figure(out.copy(uri, SWEEP_PLOT), PLOTS[SWEEP_PLOT])])]


def _top_two(s: Section, uri: str | None, result: Result | None) -> list[Markup]:
    comparison = as_dict(read_json(uri)) or ((result.comparison if result else None) or {})
    if not comparison:
        return [s.missing("the top-two comparison (report/top_two.json)")]
    if "verdict" not in comparison:
        return [html.note(str(comparison.get("note") or "no comparison"), "verdict")]
    low, high = [*list(comparison.get("ci95") or []), None, None][:2]
    better = "The winner is really better" if comparison.get("winnerIsBetter") else "Not distinguishable"
    return [
        Markup(f'<div class="verdict"><strong>{better}</strong>: {html.esc(comparison["verdict"])}</div>'),
        facts(
            [
                ("metric", comparison.get("metric")),
                ("first, second", f"{comparison.get('first')}, {comparison.get('second')}"),
                ("difference", comparison.get("difference")),
                ("95% interval", f"{fmt(low)} to {fmt(high)}"),
                ("bootstrap resamples", comparison.get("resamples")),
            ]
        ),
    ]
