"""Hyperparameter sweeps on real Ray Tune (a local cluster on loopback), each trial the real training loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from slipway_trainer.config.prep import PrepConfig
from slipway_trainer.data import workload as prep_workload

TEMPLATE = {
    "model": {"architecture": "mlp", "params": {"hidden": [16]}},
    "training": {"epochs": 3, "batchSize": 32},
    "export": {"formats": ["onnx"]},
}


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = (tmp_path_factory.mktemp("iris") / "iris").as_uri()
    result = prep_workload.run(
        PrepConfig.model_validate(
            {
                "outputUri": uri,
                "spec": {
                    "source": {"uri": "builtin://sklearn/digits"},
                    "transforms": [{"type": "minMax"}],
                    "sample": {"rows": 800},
                    "split": {"stratifyBy": "target"},
                },
            }
        )
    )
    assert result["status"] == "Succeeded", result
    return uri


def sweep(
    tmp_path: Path,
    dataset: str,
    spec: dict[str, Any],
    template: dict[str, Any] | None = None,
    name: str = "sweep",
    timeout: int = 600,
) -> dict[str, Any]:
    config = tmp_path / f"{name}.json"
    artifacts = tmp_path / name
    config.write_text(
        json.dumps(
            {
                "name": name,
                "datasetUri": dataset,
                "artifactUri": artifacts.as_uri(),
                "template": template or TEMPLATE,
                "spec": spec,
            }
        )
    )
    subprocess.run(
        [sys.executable, "-m", "slipway_trainer", "tune", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result: dict[str, Any] = json.loads((artifacts / "result.json").read_text())
    return result


def test_tpe_with_asha_ranks_trials_publishes_the_best_and_compares_the_top_two(iris: str, tmp_path: Path) -> None:
    result = sweep(
        tmp_path,
        iris,
        {
            "searchSpace": {
                "optimizer.learningRate": {"loguniform": [0.0005, 0.05]},
                "model.params.dropout": {"uniform": [0.0, 0.4]},
                "training.batchSize": {"choice": [16, 64]},
            },
            "algorithm": "tpe",
            "scheduler": {"type": "asha", "gracePeriod": 1, "reductionFactor": 2},
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "maxTrials": 5,
            "parallelTrials": 2,
        },
    )
    assert result["status"] == "Succeeded", result.get("message")
    artifacts = tmp_path / "sweep"
    board = json.loads((artifacts / "report" / "leaderboard.json").read_text())
    assert len(board) == 5 == result["trials"]["total"]
    bests = [row["best"] for row in board]
    assert bests == sorted(bests, reverse=True)
    assert {"optimizer.learningRate", "model.params.dropout", "training.batchSize"} == set(board[0]["params"])
    assert all(1 <= row["epochs"] <= 3 for row in board)
    assert result["trialEpochs"] == sum(row["epochs"] for row in board)
    took = datetime.fromisoformat(result["finishedAt"]) - datetime.fromisoformat(result["startedAt"])
    assert 0 < result["searchSeconds"] < took.total_seconds() + 1  # the trials' share of the sweep's time
    assert result["bestTrial"]["id"] == board[0]["trial"]
    assert result["metrics"]["test_accuracy"] > 0.5
    comparison = result["comparison"]
    low, high = comparison["ci95"]
    assert low <= comparison["difference"] <= high and comparison["resamples"] == 1000
    assert comparison["winnerIsBetter"] == (low > 0)
    assert (artifacts / "model" / "model.onnx").exists()
    card = json.loads((artifacts / "model" / "model_card.json").read_text())
    assert card["lineage"]["trial"] == result["bestTrial"]["id"]
    assert (artifacts / "report" / "comparison.png").stat().st_size > 5000
    assert "## The top two" in (artifacts / "report" / "leaderboard.md").read_text()
    progress = json.loads((artifacts / "progress.json").read_text())
    assert progress["trialsDone"] == 5 and progress["trialsFailed"] == 0 and progress["best"]["val_accuracy"] > 0


def test_grid_tries_every_combination_once(iris: str, tmp_path: Path) -> None:
    result = sweep(
        tmp_path,
        iris,
        {
            "searchSpace": {
                "training.batchSize": {"grid": [16, 64]},
                "optimizer.learningRate": {"choice": [0.001, 0.01]},
            },
            "algorithm": "grid",
            "objective": {"metric": "val_accuracy"},
            "maxTrials": 1,
            "parallelTrials": 1,
        },
    )
    assert result["status"] == "Succeeded", result.get("message")
    board = json.loads((tmp_path / "sweep" / "report" / "leaderboard.json").read_text())
    combos = {(row["params"]["training.batchSize"], row["params"]["optimizer.learningRate"]) for row in board}
    assert combos == {(16, 0.001), (16, 0.01), (64, 0.001), (64, 0.01)}


@pytest.mark.parametrize(
    "scheduler", [{"type": "asha", "gracePeriod": 1, "reductionFactor": 2}, {"type": "median", "gracePeriod": 1}]
)
def test_the_early_stopping_schedulers_stop_the_trials_that_fall_behind(
    iris: str, tmp_path: Path, scheduler: dict[str, Any]
) -> None:
    """Two learning rates that learn and two that cannot (1e-6: still at chance after an epoch), run one after
    the other: by the time a hopeless trial reports its first epoch, ASHA's rung (or the median of the others)
    is far above it, so it is stopped there; the best trial is one that learned."""
    result = sweep(
        tmp_path,
        iris,
        {
            "searchSpace": {"optimizer.learningRate": {"grid": [0.01, 0.005, 1e-6, 2e-6]}},
            "algorithm": "grid",
            "scheduler": scheduler,
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "maxTrials": 4,
            "parallelTrials": 1,
        },
        template={**TEMPLATE, "training": {"epochs": 4, "batchSize": 32}},
    )
    assert result["status"] == "Succeeded", result.get("message")
    board = json.loads((tmp_path / "sweep" / "report" / "leaderboard.json").read_text())
    hopeless = [row for row in board if row["params"]["optimizer.learningRate"] < 1e-5]
    assert len(hopeless) == 2 and all(row["status"] == "StoppedEarly" and row["epochs"] < 4 for row in hopeless)
    assert any(row["epochs"] == 4 for row in board)  # the first trial, at least, ran its whole budget
    assert result["trials"]["stoppedEarly"] >= 2
    assert result["bestTrial"]["params"]["optimizer.learningRate"] >= 0.005
    assert result["trialEpochs"] < 4 * 4
    # A trial is stopped or runs on, never paused and restarted from its checkpoint (Ray's median rule, by
    # default, pauses a trial it cannot judge yet in favour of a waiting one).
    resumed = {
        p.parent.name: json.loads(p.read_text())["resumedFrom"]
        for p in (tmp_path / "sweep").glob("trials/*/progress.json")
    }
    assert len(resumed) == 4 and not any(resumed.values()), resumed


def test_the_sweep_stops_when_the_goal_is_met(iris: str, tmp_path: Path) -> None:
    result = sweep(
        tmp_path,
        iris,
        {
            "searchSpace": {"optimizer.learningRate": {"loguniform": [0.003, 0.03]}},
            "objective": {"metric": "val_accuracy", "goal": 0.2},
            "maxTrials": 12,
            "parallelTrials": 1,
        },
    )
    assert result["status"] == "Succeeded", result.get("message")
    assert result["trials"]["total"] < 12
    assert result["bestTrial"]["metric"] >= 0.2


def test_failing_trials_are_tolerated_up_to_max_failed_trials(iris: str, tmp_path: Path) -> None:
    spec = {
        "searchSpace": {"model.params.hidden": {"grid": [16, -1]}},
        "algorithm": "grid",
        "objective": {"metric": "val_accuracy"},
        "maxTrials": 1,
        "parallelTrials": 1,
    }
    tolerated = sweep(tmp_path, iris, {**spec, "maxFailedTrials": 1}, name="tolerant")
    assert tolerated["status"] == "Succeeded", tolerated.get("message")
    assert tolerated["trials"]["failed"] == 1 and tolerated["trials"]["total"] == 2
    board = json.loads((tmp_path / "tolerant" / "report" / "leaderboard.json").read_text())
    assert board[-1]["status"] == "Failed" and "model.params.hidden" in board[-1]["error"]
    strict = sweep(tmp_path, iris, {**spec, "maxFailedTrials": 0}, name="strict")
    assert strict["status"] == "Failed" and strict["reason"] == "TooManyFailedTrials"
    assert "1 trials failed, more than maxFailedTrials (0)" in strict["message"]


def test_a_search_path_that_is_not_in_the_template_is_named(iris: str, tmp_path: Path) -> None:
    result = sweep(tmp_path, iris, {"searchSpace": {"optimizer.learningRat": {"loguniform": [0.001, 0.01]}}})
    assert result["status"] == "Failed" and result["reason"] == "InvalidSearchSpace"
    assert 'no field "learningRat" in optimizer' in result["message"]


def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(iris: str, tmp_path: Path) -> None:
    artifacts = tmp_path / "resumed"
    config = tmp_path / "resumed.json"
    config.write_text(
        json.dumps(
            {
                "name": "resumed",
                "datasetUri": iris,
                "artifactUri": artifacts.as_uri(),
                "template": {**TEMPLATE, "training": {"epochs": 4, "batchSize": 16}},
                "spec": {
                    "searchSpace": {"optimizer.learningRate": {"grid": [0.001, 0.003, 0.01, 0.03]}},
                    "algorithm": "grid",
                    "objective": {"metric": "val_accuracy"},
                    "maxTrials": 1,
                    "parallelTrials": 1,
                },
            }
        )
    )
    command = [sys.executable, "-m", "slipway_trainer", "tune", "--config", str(config)]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        progress = artifacts / "progress.json"
        if progress.exists() and json.loads(progress.read_text()).get("trialsDone", 0) >= 2:
            break
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    finished = {
        p.parent.parent.name: p.stat().st_mtime_ns for p in artifacts.glob("trials/*/checkpoints/epoch-0004.pt")
    }
    assert len(finished) >= 2
    subprocess.run(command, capture_output=True, text=True, timeout=600)
    result = json.loads((artifacts / "result.json").read_text())
    assert result["status"] == "Succeeded", result.get("message")
    assert result["trials"]["total"] == 4
    for trial, mtime in finished.items():  # the trials finished before the interruption were not run again
        assert (artifacts / "trials" / trial / "checkpoints" / "epoch-0004.pt").stat().st_mtime_ns == mtime
