"""MLflow tracking through `slipway run`: with `MLFLOW_TRACKING_URI` set, a TrainingRun is an MLflow run (its spec,
every epoch, the test metrics, the dataset version, report and model) and a TuningSweep a parent run with its
trials as child runs, read back with MLflow's own client from a real `mlflow server`; the run id and URL are in
the status. A run whose tracking server is down still succeeds, and its Tracked condition says why it was not
logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflowserver
import pytest
import yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SLIPWAY = Path(sys.executable).parent / "slipway"


def manifests() -> list[dict[str, Any]]:
    def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "slipway.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}

    template = {
        "dataset": {"ref": "digits"},
        "model": {"architecture": "mlp", "params": {"hidden": [16]}},
        "training": {"epochs": 2, "batchSize": 32},
        "export": {"formats": ["onnx"]},
    }
    prep = {"source": {"uri": "builtin://sklearn/digits"}, "label": "target", "sample": {"rows": 400, "seed": 1}}
    sweep = {
        "template": {**template, "training": {"epochs": 1, "batchSize": 32}},
        "searchSpace": {"optimizer.learningRate": {"grid": [0.01, 0.003]}},
        "algorithm": "grid",
        "maxTrials": 2,
        "parallelTrials": 1,
        "scheduler": {"type": "fifo"},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
    }
    down = {**template, "tracking": {"uri": "http://127.0.0.1:9", "experiment": "nowhere"}}
    return [
        doc("DatasetPrep", "digits", prep),
        doc("TrainingRun", "digits-mlp", template),
        doc("TuningSweep", "digits-sweep", sweep),
        doc("TrainingRun", "digits-untracked", down),
    ]


def stored(state: Path, kind: str, name: str) -> dict[str, Any]:
    return dict(json.loads((state / "resources" / kind / f"{name}.json").read_text()))


def test_runs_and_sweeps_are_mlflow_runs_and_a_server_that_is_down_fails_no_run(
    tmp_path: Path, mlflow_server: mlflowserver.MlflowServer
) -> None:
    journey = tmp_path / "journey"
    journey.mkdir()
    (journey / "journey.yaml").write_text(yaml.safe_dump_all(manifests()))
    state = tmp_path / "state"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.uri, "MLFLOW_TRACKING_TOKEN": "t0ken-not-shown"}
    done = subprocess.run([str(SLIPWAY), "run", "-f", str(journey), "--state", str(state), "--no-serve"],
                          capture_output=True, text=True, timeout=900, cwd=REPO, env=env)  # fmt: skip
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-4000:]
    assert "t0ken-not-shown" not in said

    run = stored(state, "trainingrun", "digits-mlp")["status"]
    sweep = stored(state, "tuningsweep", "digits-sweep")["status"]
    untracked = stored(state, "trainingrun", "digits-untracked")["status"]
    for status in (run, sweep):
        tracked = next(c for c in status["conditions"] if c["type"] == "Tracked")
        assert tracked["status"] == "True", tracked
        assert status["tracking"]["url"].startswith(mlflow_server.uri) and status["tracking"]["runId"]
    assert untracked["phase"] == "Succeeded" and "tracking" not in untracked
    tracked = next(c for c in untracked["conditions"] if c["type"] == "Tracked")
    assert tracked["status"] == "False" and tracked["reason"] == "TrackingFailed"
    assert "127.0.0.1:9" in tracked["message"] and "could not be reached" in tracked["message"]

    seen = mlflow_server.read(f"""
run = client.get_run({run["tracking"]["runId"]!r})
sweep = client.get_run({sweep["tracking"]["runId"]!r})
children = client.search_runs([sweep.info.experiment_id],
                              filter_string="tags.mlflow.parentRunId = '{sweep["tracking"]["runId"]}'")
print(json.dumps({{
  "experiment": client.get_experiment(run.info.experiment_id).name, "name": run.info.run_name,
  "status": run.info.status, "params": run.data.params, "metrics": run.data.metrics, "tags": run.data.tags,
  "epochs": sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")),
  "inputs": [(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs],
  "artifacts": sorted(a.path for folder in ("model", "report") for a in client.list_artifacts(run.info.run_id, folder)),
  "sweep": {{"name": sweep.info.run_name, "params": sweep.data.params, "metrics": sweep.data.metrics}},
  "children": sorted((c.data.params.get("optimizer.learningRate"), c.data.tags["slipway.dev/trialStatus"],
                      len(client.get_metric_history(c.info.run_id, "val_accuracy"))) for c in children),
}}))
""")
    assert isinstance(seen, dict)
    assert seen["experiment"] == "default" and seen["name"] == "digits-mlp" and seen["status"] == "FINISHED"
    assert seen["params"]["model.architecture"] == "mlp" and seen["params"]["training.epochs"] == "2"
    assert seen["epochs"] == [1, 2]
    assert seen["metrics"]["test_accuracy"] == pytest.approx(run["metrics"]["test_accuracy"])
    assert seen["tags"]["slipway.dev/kind"] == "TrainingRun" and seen["tags"]["slipway.dev/namespace"] == "default"
    fingerprint = run["lineage"]["datasetFingerprint"]
    assert seen["inputs"] == [["digits", fingerprint[:36]]]
    assert "model/model.onnx" in seen["artifacts"] and "model/model_card.md" in seen["artifacts"]
    assert "report/metrics.json" in seen["artifacts"]
    assert seen["sweep"]["name"] == "digits-sweep"
    assert seen["sweep"]["params"]["sweep.searchSpace.optimizer.learningRate.grid"] == "[0.01, 0.003]"
    assert seen["sweep"]["metrics"]["test_accuracy"] == pytest.approx(sweep["metrics"]["test_accuracy"])
    assert seen["children"] == [["0.003", "Completed", 1], ["0.01", "Completed", 1]]
