"""Slipway's MLflow REST client against a real `mlflow server` (SQLite backend, artifacts on the test bed's S3
store), read back with MLflow's own client."""

from __future__ import annotations

from pathlib import Path

import mlflowserver
import pytest

from slipway_trainer.mlflow_rest import Mlflow, MlflowError


def test_a_run_with_params_metrics_a_dataset_artifacts_and_a_registered_version_reads_back_through_mlflow(
    mlflow_server: mlflowserver.MlflowServer, tmp_path: Path
) -> None:
    mlflow = Mlflow(mlflow_server.uri, env={})
    experiment = mlflow.experiment("slipway-test")
    assert mlflow.experiment("slipway-test") == experiment  # found, not made twice
    run = mlflow.start_run(experiment, "mpg-mlp", {"slipway.dev/kind": "TrainingRun"})
    params = {f"p{i}": i for i in range(150)}  # more than one log-batch request holds
    history = [("val_loss", 1.0 / (epoch + 1), epoch) for epoch in range(1200)]
    mlflow.log(run["run_id"], params=params, metrics=history, tags={"slipway.dev/namespace": "ns"})
    mlflow.log_dataset(run["run_id"], "mpg", "sha256:252e98929a483e7085", "s3://slipway/datasets/ns/mpg/v-1")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "metrics.json").write_text('{"test_mae": 2.2}')
    (tmp_path / "report" / "curves.png").write_bytes(b"\x89PNG not really")
    assert mlflow.upload(run["artifact_uri"], tmp_path / "report", under="report") == 2
    mlflow.end_run(run["run_id"])
    version = mlflow.register("mpg", f"{run['artifact_uri']}/report", run["run_id"], {"slipway.dev/run": "mpg-mlp"})
    mlflow.set_alias("mpg", "champion", version)

    seen = mlflow_server.read(f"""
r = client.get_run({run["run_id"]!r})
arts = [a.path for a in client.list_artifacts({run["run_id"]!r}, "report")]
mv = client.get_model_version_by_alias("mpg", "champion")
print(json.dumps({{"status": r.info.status, "params": len(r.data.params), "p7": r.data.params["p7"],
  "steps": len(client.get_metric_history({run["run_id"]!r}, "val_loss")), "tags": r.data.tags,
  "inputs": [(d.dataset.name, d.dataset.digest) for d in r.inputs.dataset_inputs],
  "artifacts": sorted(arts), "version": mv.version, "run_id": mv.run_id, "mv_tags": mv.tags}}))
""")
    assert isinstance(seen, dict)
    assert seen["status"] == "FINISHED" and seen["params"] == 150 and seen["p7"] == "7"
    assert seen["steps"] == 1200 and seen["tags"]["slipway.dev/kind"] == "TrainingRun"
    assert seen["inputs"] == [["mpg", "sha256:252e98929a483e7085"]]
    assert seen["artifacts"] == ["report/curves.png", "report/metrics.json"]
    assert seen["version"] == version and seen["run_id"] == run["run_id"]
    assert seen["mv_tags"] == {"slipway.dev/run": "mpg-mlp"}
    assert (mlflow.alias("mpg", "champion") or {}).get("version") == version
    assert mlflow.alias("mpg", "nobody") is None


def test_a_server_that_is_down_or_refuses_says_so_without_the_credentials(
    mlflow_server: mlflowserver.MlflowServer,
) -> None:
    down = Mlflow("http://127.0.0.1:9", env={"MLFLOW_TRACKING_TOKEN": "s3cr3t-token"}, timeout=3)
    with pytest.raises(MlflowError, match="could not be reached") as caught:
        down.experiment("x")
    assert "s3cr3t" not in str(caught.value)
    refused = Mlflow(mlflow_server.uri, env={"MLFLOW_TRACKING_PASSWORD": "hunter2", "MLFLOW_TRACKING_USERNAME": "u"})
    with pytest.raises(MlflowError, match="refused") as caught:
        refused.call("POST", "mlflow/runs/log-batch", {"run_id": "no-such-run", "metrics": []})
    assert "hunter2" not in str(caught.value)
    with pytest.raises(MlflowError, match="http"):
        Mlflow("file:///tmp/mlruns")


def test_a_finished_run_is_tracked_with_its_epochs_test_metrics_dataset_and_report(
    mlflow_server: mlflowserver.MlflowServer, tmp_path: Path
) -> None:
    from slipway_trainer.config.base import Tracking
    from slipway_trainer.tracking import RunRecord, flatten, track

    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "metrics.json").write_text("{}")
    record = RunRecord(
        "mpg-mlp", flatten({"model": {"architecture": "mlp"}, "training": {"epochs": 3}}),
        history=[{"epoch": e, "val_loss": 1.0 / e} for e in (1, 2, 3)], metrics={"test_mae": 2.25},
        tags={"slipway.dev/kind": "TrainingRun"}, dataset=("mpg", "sha256:abc", "s3://slipway/datasets/mpg/v-1"),
        folders={"report": tmp_path / "report"},
    )  # fmt: skip
    said = track(Tracking(uri=mlflow_server.uri, experiment="ns/mpg"), record, env={})
    assert said["state"] == "Logged", said
    assert said["url"].startswith(mlflow_server.uri) and said["runId"] in said["url"]
    seen = mlflow_server.read(f"""
r = client.get_run({said["runId"]!r})
print(json.dumps({{"params": r.data.params, "metrics": r.data.metrics, "status": r.info.status,
  "history": [(m.step, m.value) for m in client.get_metric_history({said["runId"]!r}, "val_loss")],
  "artifacts": [a.path for a in client.list_artifacts({said["runId"]!r}, "report")]}}))
""")
    assert isinstance(seen, dict)
    assert seen["params"] == {"model.architecture": "mlp", "training.epochs": "3"} and seen["status"] == "FINISHED"
    assert seen["metrics"] == {"val_loss": 1.0 / 3, "test_mae": 2.25}
    assert sorted(seen["history"]) == [[1, 1.0], [2, 0.5], [3, 1.0 / 3]]
    assert seen["artifacts"] == ["report/metrics.json"]
