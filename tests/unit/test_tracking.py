"""MLflow tracking from spec to status: how a run becomes MLflow parameters and metrics (slipway_trainer.tracking),
where the operator says to log it and with which credentials, and how the outcome reaches the status. A tracking
server that cannot be reached never fails a run: it is said, not raised."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from slipway_operator import builders
from slipway_operator.api.common import Phase
from slipway_operator.controllers import trainingrun, tuningsweep
from slipway_operator.controllers.common import Settings
from slipway_operator.runstatus import Observed, run_status
from slipway_trainer.config.base import Tracking
from slipway_trainer.tracking import RunRecord, epoch_metrics, flatten, track

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SETTINGS = Settings(image="slipway/trainer:test", store_uri="s3://slipway/")
NOW = "2026-12-07T00:00:00Z"


def test_a_spec_is_flattened_into_dotted_parameters_with_json_values() -> None:
    spec = {"model": {"architecture": "mlp", "params": {"hidden": [64, 32]}}, "optimizer": {"learningRate": 0.01},
            "training": {"epochs": 3, "augment": None}, "evaluation": {}}  # fmt: skip
    assert flatten(spec) == {
        "model.architecture": "mlp",
        "model.params.hidden": "[64, 32]",
        "optimizer.learningRate": "0.01",
        "training.epochs": "3",
    }


def test_every_number_of_every_epoch_is_a_metric_at_its_epoch() -> None:
    history = [{"epoch": 1, "val_loss": 0.5, "val_accuracy": 0.8, "note": "x", "stopped": False},
               {"epoch": 2, "val_loss": 0.25}]  # fmt: skip
    assert epoch_metrics(history) == [("val_loss", 0.5, 1), ("val_accuracy", 0.8, 1), ("val_loss", 0.25, 2)]


def test_a_tracking_server_that_is_not_there_is_said_not_raised() -> None:
    said = track(Tracking(uri="http://127.0.0.1:9"), RunRecord("r", {"a": 1}), env={"MLFLOW_TRACKING_TOKEN": "tok-123"})
    assert said["state"] == "Failed" and "could not be reached" in said["message"]
    assert "tok-123" not in said["message"]


def resource(path: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((EXAMPLES / path).read_text())
    obj["metadata"] |= {"namespace": "ml", "uid": "uid-1"}
    spec = obj["spec"].get("template", obj["spec"])
    spec["dataset"] = {"uri": "s3://shared/datasets/fashion"}  # no DatasetPrep to wait for
    return obj


def children(obj: dict[str, Any], settings: Settings) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the workload's config, the env of its Ray containers) for a TrainingRun or TuningSweep."""
    controller = tuningsweep if obj["kind"] == "TuningSweep" else trainingrun
    desired = controller.desired_children(obj, None, settings)
    (job,) = desired.children
    container = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    return json.loads(builders.job_config(job) or ""), container.get("env", [])


def test_runs_are_tracked_where_the_operator_or_their_spec_says_with_credentials_only_from_a_secret() -> None:
    run = resource("fashion-mnist/02-trainingrun.yaml")
    config, env = children(run, SETTINGS)
    assert "tracking" not in config and not [e for e in env if e["name"].startswith("MLFLOW")]  # off by default

    with_default = Settings(image="t", store_uri="s3://slipway/", tracking_uri="http://mlflow:5000",
                            tracking_secret="mlflow-creds")  # fmt: skip
    config, env = children(run, with_default)
    assert config["tracking"] == {"uri": "http://mlflow:5000", "experiment": "ml",
                                  "tags": {"slipway.dev/namespace": "ml"}}  # fmt: skip
    assert [e["name"] for e in env if e["name"].startswith("MLFLOW")] == [
        "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]  # fmt: skip
    assert all(e["valueFrom"]["secretKeyRef"] == {"name": "mlflow-creds", "key": e["name"], "optional": True}
               for e in env if e["name"].startswith("MLFLOW"))  # fmt: skip

    own = copy.deepcopy(run)
    own["spec"]["tracking"] = {"uri": "https://mlflow.example", "experiment": "fashion", "credentialsSecret": "mine"}
    config, env = children(own, with_default)
    assert config["tracking"]["uri"] == "https://mlflow.example" and config["tracking"]["experiment"] == "fashion"
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env if e["name"].startswith("MLFLOW")} == {"mine"}
    assert "mine" not in json.dumps(config)  # a Secret's name, not its keys, and only in the pod's env

    off = copy.deepcopy(run)
    off["spec"]["tracking"] = {"enabled": False}
    config, env = children(off, with_default)
    assert "tracking" not in config and not [e for e in env if e["name"].startswith("MLFLOW")]

    sweep = resource("fashion-mnist/03-tuningsweep.yaml")
    config, _ = children(sweep, with_default)
    assert config["tracking"]["experiment"] == "ml" and "tracking" not in config["template"]


def test_the_mlflow_run_reaches_the_status_and_a_tracking_failure_is_a_condition_not_a_failed_run() -> None:
    logged = {
        "state": "Logged",
        "runId": "abc123",
        "experimentId": "7",
        "url": "http://mlflow/#/experiments/7/runs/abc123",
    }
    result = {"status": "Succeeded", "metrics": {"test_accuracy": 0.9}, "modelUri": "s3://m", "tracking": logged}
    observed = Observed(ray_job={"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, result=result)
    status = run_status(observed, [], 1, NOW)
    tracked = next(c for c in status.conditions if c["type"] == "Tracked")
    assert status.phase == Phase.SUCCEEDED and tracked["status"] == "True" and "abc123" in tracked["message"]
    fields = trainingrun.model_status_fields(observed, "accuracy")
    assert fields["tracking"] == {"runId": "abc123", "experimentId": "7", "url": logged["url"]}

    down = {**result, "tracking": {"state": "Failed", "message": "MLflow at http://mlflow could not be reached"}}
    observed = Observed(ray_job={"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, result=down)
    status = run_status(observed, [], 1, NOW)
    tracked = next(c for c in status.conditions if c["type"] == "Tracked")
    assert status.phase == Phase.SUCCEEDED
    assert tracked["status"] == "False" and tracked["reason"] == "TrackingFailed"
    assert "could not be reached" in tracked["message"]
    assert "tracking" not in trainingrun.model_status_fields(observed, "accuracy")

    untracked = Observed(ray_job={"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
                         result={k: v for k, v in result.items() if k != "tracking"})  # fmt: skip
    assert "Tracked" not in {c["type"] for c in run_status(untracked, [], 1, NOW).conditions}


def test_a_tracked_runs_mlflow_run_goes_into_the_lineage_a_deployment_registers() -> None:
    from slipway_operator.controllers.revisions import model_of

    run = {"kind": "TrainingRun", "metadata": {"name": "mpg"},
           "status": {"phase": "Succeeded", "modelUri": "s3://m", "lineage": {"datasetFingerprint": "sha256:1"},
                      "tracking": {"runId": "abc123", "url": "http://mlflow/#/experiments/1/runs/abc123"}}}  # fmt: skip
    model = model_of(run)
    assert model is not None and model.lineage == {"datasetFingerprint": "sha256:1", "mlflowRunId": "abc123"}
    del run["status"]["tracking"]
    assert "mlflowRunId" not in (model_of(run) or model).lineage
