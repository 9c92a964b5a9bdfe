"""Slipway's MLflow REST client against a real `mlflow server` (SQLite backend, artifacts on the test bed's S3
store), read back with MLflow's own client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def test_a_deployments_registry_follows_what_it_serves_and_costs_nothing_when_in_step(
    mlflow_server: mlflowserver.MlflowServer,
) -> None:
    from slipway_operator import registry
    from slipway_operator.api.modeldeployment import RegistrySpec

    spec = RegistrySpec(name="mpg-reg", alias="champion")
    client = Mlflow(mlflow_server.uri, env={})
    trained = client.start_run(client.experiment("ml"), "mpg-a", {})["run_id"]  # a tracked run: the version links it
    lineage = {"datasetFingerprint": "sha256:abc", "trainingRun": "mpg-mlp", "mlflowRunId": trained}
    a = {"name": "aaaa1111", "modelUri": "s3://slipway/runs/ml/mpg-a/model", "source": "TrainingRun/mpg-a",
         "lineage": lineage}  # fmt: skip
    b = {"name": "bbbb2222", "modelUri": "s3://slipway/runs/ml/mpg-b/model", "source": "TrainingRun/mpg-b"}

    def sync(status: dict[str, Any], before: dict[str, Any] | None, server: str = mlflow_server.uri) -> Any:
        return registry.sync(spec, server, {"phase": "Available", **status}, before, "ml/mpg", {})

    rolling, said = sync({"current": a, "phase": "Deploying"}, None)  # registered as it rolls out, not yet served
    assert (
        rolling["versions"] == {"aaaa1111": "1"}
        and rolling["version"] is None
        and [e[1] for e in said] == ["Registered"]
    )
    first, said = sync({"current": a}, rolling)
    assert first["version"] == "1" and first["versions"] == {"aaaa1111": "1"} and first["message"] is None
    assert [e[1] for e in said] == ["AliasMoved"]
    again, said = sync({"current": a}, first, server="http://127.0.0.1:9")  # in step: not a single request
    assert again == first and said == []

    canary, said = sync({"current": a, "canary": b}, first)
    assert canary["versions"] == {"aaaa1111": "1", "bbbb2222": "2"} and canary["version"] == "1"  # not served yet
    assert [e[1] for e in said] == ["Registered"]
    promoted, said = sync({"current": b}, canary)
    assert (
        promoted["version"] == "2" and promoted["modelUri"] == b["modelUri"] and [e[1] for e in said] == ["AliasMoved"]
    )
    back, said = sync({"current": a}, promoted)  # an earlier model served again: its version, not a new one
    assert back["version"] == "1" and [e[1] for e in said] == ["AliasMoved"] and "was version 2" in said[0][2]

    down, said = sync({"current": b}, back, server="http://127.0.0.1:9")
    assert down["version"] == "1" and "could not be reached" in (down["message"] or "")
    assert [e[0] for e in said] == ["Warning"]
    assert sync({"current": b}, down, server="http://127.0.0.1:9")[1] == []  # said once, tried again each pass
    mended, _ = sync({"current": b}, down)
    assert mended["version"] == "2" and mended["message"] is None

    model, waiting = registry.resolve("models:/mpg-reg@champion", mlflow_server.uri, {})
    assert waiting is None and model is not None and model.uri == b["modelUri"]
    model, waiting = registry.resolve("models:/mpg-reg/1", mlflow_server.uri, {})
    assert model is not None and model.uri == a["modelUri"] and model.lineage == lineage
    assert "(version 1)" in model.source
    model, waiting = registry.resolve("models:/mpg-reg@nobody", mlflow_server.uri, {})
    assert model is None and "points at no version" in (waiting or "")
    model, waiting = registry.resolve("models:/mpg-reg@champion", None, {})
    assert model is None and "MLFLOW_TRACKING_URI" in (waiting or "")

    seen = mlflow_server.read("""
versions = client.search_model_versions("name='mpg-reg'")
print(json.dumps({"versions": sorted((v.version, v.source) for v in versions),
  "champion": client.get_model_version_by_alias("mpg-reg", "champion").version,
  "tags": client.get_model_version("mpg-reg", "1").tags, "run": client.get_model_version("mpg-reg", "1").run_id}))
""")
    assert isinstance(seen, dict)
    assert seen["versions"] == [["1", a["modelUri"]], ["2", b["modelUri"]]] and seen["champion"] == "2"
    assert seen["tags"]["slipway.dev/datasetFingerprint"] == "sha256:abc" and seen["run"] == trained
    assert seen["tags"]["slipway.dev/deployment"] == "ml/mpg" and seen["tags"]["slipway.dev/revision"] == "aaaa1111"
