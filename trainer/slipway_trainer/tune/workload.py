"""`python -m slipway_trainer tune --config FILE`: search, rank, compare the top two soundly, publish the best.

Outputs under the artifact URI: progress.json (trials done/running/failed, best so far), result.json,
trials/<id>/ (each trial's checkpoints), tune/ (Ray Tune's state, for resuming), report/ (leaderboard.json,
leaderboard.md, comparison.png, the best trial's evaluation) and model/ (the best trial's exported model).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from slipway_trainer import selection, storage, tracking, workload
from slipway_trainer.artifacts import LEADERBOARD, Leaderboard, TrialRow, read_history
from slipway_trainer.config.train import TrainSpec
from slipway_trainer.config.tune import TuneConfig, search_space_problems
from slipway_trainer.train import evaluate
from slipway_trainer.train import workload as train_workload
from slipway_trainer.train.data import Dataset, open_dataset
from slipway_trainer.tune import sweep
from slipway_trainer.workload import Progress, WorkloadError


def run(config: TuneConfig) -> dict[str, Any]:
    resumable = (sweep.STATE, sweep.TRIALS)
    return workload.run_staged(
        config.artifact_uri, config, lambda progress, workdir: tune(config, progress, workdir), resumable
    )


def tune(config: TuneConfig, progress: Progress, workdir: Path) -> dict[str, Any]:
    template = config.template.model_dump(mode="json", by_alias=True, exclude_none=True)
    problems = search_space_problems(TrainSpec, template, config.spec.search_space)
    if problems:
        listed = "; ".join(f"searchSpace[{path}]: {problem}" for path, problem in problems)
        raise WorkloadError("InvalidSearchSpace", listed)
    dataset = open_dataset(config.dataset_uri)
    progress.update(force=True, phase="Tuning", trialsDone=0, maxTrials=config.spec.max_trials)
    started = time.monotonic()
    grid = sweep.run(config, progress, workdir)
    search_seconds = time.monotonic() - started  # the trials, Ray's start included; not the best one's publishing
    metric, mode = sweep.objective(config)
    board = leaderboard(config, grid, metric, mode)
    finished = [row for row in board if row["status"] != "Failed" and row["best"] is not None]
    failed = [row for row in board if row["status"] == "Failed"]
    if len(failed) > config.spec.max_failed_trials:
        first = failed[0]
        raise WorkloadError(
            "TooManyFailedTrials",
            f"{len(failed)} trials failed, more than maxFailedTrials "
            f"({config.spec.max_failed_trials}); the first: {first['error']}",
        )
    if not finished:
        raise WorkloadError(
            "NoTrialFinished",
            f"no trial reported its objective metric {metric!r}: check the template (see the trials' errors)",
        )
    best = finished[0]
    best_config = sweep.trial_config(config, best["trial"], best["params"])
    outcome = train_workload.publish(best_config, dataset, progress, workdir, config.artifact_uri)
    report = workdir / "report"
    comparison = compare_top_two(config, dataset, finished)
    rows = Leaderboard(rows=[TrialRow.model_validate(row) for row in board])  # the contract the report reads
    (report / LEADERBOARD).write_text(json.dumps(rows.dump(), indent=2, default=str))
    (report / "leaderboard.md").write_text(leaderboard_markdown(board, metric, comparison))
    (report / "top_two.json").write_text(json.dumps(comparison, indent=2, default=str))
    comparison_png(board, config, metric, report / "comparison.png")
    storage.upload_dir(report, storage.join(config.artifact_uri, "report"))
    summary = {
        **outcome,
        "bestTrial": {"id": best["trial"], "params": best["params"], "metric": best["best"], "objective": metric},
        "trials": {
            "total": sum(r["status"] != "NotStarted" for r in board),
            "completed": sum(r["status"] == "Completed" for r in board),
            "stoppedEarly": sum(r["status"] == "StoppedEarly" for r in board),
            "failed": len(failed),
            "notStarted": sum(r["status"] == "NotStarted" for r in board),
        },
        "leaderboardUri": storage.join(config.artifact_uri, "report", LEADERBOARD),
        "comparison": comparison,
        "trialEpochs": sum(r["epochs"] for r in board),
        "searchSeconds": round(search_seconds, 2),
    }
    if config.tracking is not None:
        progress.update(force=True, phase="Tracking")
        trials = [(row, sweep.trial_config(config, row["trial"], row["params"]).artifact_uri) for row in board]
        parent, children = tracking.sweep_records(config, best_config, outcome, trials, workdir)
        summary["tracking"] = tracking.track(config.tracking, parent, children)
    return summary


def leaderboard(config: TuneConfig, grid: Any, metric: str, mode: str) -> list[dict[str, Any]]:
    """Every trial: parameters, best and last metrics, status, whether it was stopped early, epochs run."""
    epochs = config.template.training.epochs
    rows: list[dict[str, Any]] = []
    for result in grid:
        trial = str((result.metrics or {}).get("trial_id") or Path(result.path).name)
        params = {k: v for k, v in (result.config or {}).items() if k in config.spec.search_space}
        # The trial's own record (not Ray Tune's, which can lose a finished trial's results when the sweep is
        # killed): every epoch's metrics, written by the training loop.
        history = read_history(sweep.trial_config(config, trial, params).artifact_uri)
        chosen = selection.best_row(history, metric, maximize=mode == "max")
        best = float(chosen[metric]) if chosen else None
        ran = len(history)
        if result.error:
            status = "Failed"
        elif ran == 0:
            status = "NotStarted"  # queued when the sweep stopped (goal met, time budget or failures)
        else:
            status = "StoppedEarly" if ran < epochs else "Completed"
        rows.append(
            {
                "trial": trial,
                "params": params,
                "status": status,
                "stoppedEarly": status == "StoppedEarly",
                "epochs": ran,
                "best": best,
                "bestLoss": chosen.get("val_loss") if chosen else None,
                "last": {
                    k: v for k, v in (history[-1] if history else {}).items() if k.startswith(("val_", "train_loss"))
                },
                "error": str(result.error).splitlines()[-1][:500] if result.error else None,
            }
        )
    ranked = sorted(
        (r for r in rows if r["best"] is not None),
        key=lambda r: selection.rank_key(float(r["best"]), r["bestLoss"], maximize=mode == "max"),
    )
    return ranked + [r for r in rows if r["best"] is None]


def compare_top_two(config: TuneConfig, dataset: Dataset, finished: list[dict[str, Any]]) -> dict[str, Any]:
    """Is the winner really better? A paired bootstrap of the test-metric difference between the top two."""
    name = config.spec.objective.metric.removeprefix("val_")
    if len(finished) < 2:
        return {"metric": f"test_{name}", "note": "only one trial finished: nothing to compare"}
    test = dataset.load("test")
    outputs = []
    for row in finished[:2]:
        model = train_workload.best_model(sweep.trial_config(config, row["trial"], row["params"]), dataset)
        outputs.append(evaluate.predict(model, test.x))
    observed = _metric(dataset, outputs[0], test.y, name) - _metric(dataset, outputs[1], test.y, name)

    def difference(rows: np.ndarray) -> float:  # the two models scored on the same resampled test rows
        return _metric(dataset, outputs[0][rows], test.y[rows], name) - _metric(
            dataset, outputs[1][rows], test.y[rows], name
        )

    low, high = selection.paired_interval(len(test.y), difference, config.template.training.seed)
    better_if_positive = config.spec.objective.direction == "maximize"
    winner_better = low > 0 if better_if_positive else high < 0
    return {
        "metric": f"test_{name}",
        "first": finished[0]["trial"],
        "second": finished[1]["trial"],
        "difference": observed,
        "ci95": [low, high],
        "resamples": selection.BOOTSTRAP,
        "winnerIsBetter": bool(winner_better),
        "verdict": (
            f"{finished[0]['trial']} is better than {finished[1]['trial']} on test_{name} "
            f"(95% interval of the difference: {low:+.4f} to {high:+.4f})"
            if winner_better
            else f"{finished[0]['trial']} and {finished[1]['trial']} are not distinguishable on test_{name}: "
            f"the 95% interval of the difference ({low:+.4f} to {high:+.4f}) includes 0"
        ),
    }


def _metric(dataset: Dataset, outputs: np.ndarray, y: np.ndarray, name: str) -> float:
    value = evaluate.scores(dataset, outputs, y).get(name)
    if not isinstance(value, int | float):
        raise WorkloadError("UnknownMetric", f"objective.metric {name!r} is not measured on the test split")
    return float(value)


def leaderboard_markdown(board: list[dict[str, Any]], metric: str, comparison: dict[str, Any]) -> str:
    paths = sorted({p for row in board for p in row["params"]})
    lines = [
        f"# Leaderboard ({metric})",
        "",
        "| rank | trial | " + " | ".join(paths) + f" | {metric} | epochs | status |",
        "|" + "---|" * (len(paths) + 5),
    ]
    for rank, row in enumerate(board, 1):
        values = " | ".join(_fmt(row["params"].get(p)) for p in paths)
        best = _fmt(row["best"]) if row["best"] is not None else "-"
        lines.append(f"| {rank} | {row['trial']} | {values} | {best} | {row['epochs']} | {row['status']} |")
    lines += ["", "## The top two", "", comparison.get("verdict") or comparison.get("note", ""), ""]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def comparison_png(board: list[dict[str, Any]], config: TuneConfig, metric: str, path: Path) -> None:
    rows = [r for r in board if r["best"] is not None]
    paths = list(config.spec.search_space)
    fig, axes = plt.subplots(1, len(paths), figsize=(4 * len(paths), 3.4), squeeze=False)
    for ax, name in zip(axes[0], paths, strict=True):
        kind = config.spec.search_space[name].kind
        xs = [r["params"].get(name) for r in rows]
        ys = [r["best"] for r in rows]
        colours = ["tab:orange" if r["stoppedEarly"] else "tab:blue" for r in rows]
        if all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs):
            ax.scatter(xs, ys, c=colours)
            if kind == "loguniform":
                ax.set_xscale("log")
        else:
            labels = sorted({json.dumps(x) for x in xs})
            ax.scatter([labels.index(json.dumps(x)) for x in xs], ys, c=colours)
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
    fig.suptitle(f"{metric} of each trial (orange: stopped early)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(config_path: str) -> int:
    return workload.main(config_path, TuneConfig, run, lambda config: config.artifact_uri)
