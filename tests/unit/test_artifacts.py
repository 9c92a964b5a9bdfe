"""The artifacts between workloads and operator (slipway_trainer.artifacts): what the real workloads write is
exactly what the models describe, a writer cannot add a field the contract lacks, and a reader names the file
and the field of a broken one and drops what a newer writer added."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from slipway_operator.reconcile import _read_artifact
from slipway_trainer import workload
from slipway_trainer.artifacts import ArtifactError, Leaderboard, Manifest, Progress, Result
from slipway_trainer.config.prep import PrepConfig
from slipway_trainer.data import workload as prep_workload


class Config(BaseModel):
    n: int = 1


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifacts") / "iris"
    spec = {"source": {"uri": "builtin://sklearn/iris"}}
    config = PrepConfig.model_validate({"name": "iris", "outputUri": out.as_uri(), "spec": spec})
    result = prep_workload.run(config)
    assert result["status"] == "Succeeded", result
    return out


def test_a_real_prep_writes_a_manifest_result_and_progress_the_models_read_back_whole(prepared: Path) -> None:
    """Nothing the prep wrote is dropped on reading, so every field it writes is one the contract names."""
    for name, model in (("manifest.json", Manifest), ("_run/result.json", Result), ("_run/progress.json", Progress)):
        written = json.loads((prepared / name).read_text())
        assert model.read(written, name).dump() == written, name
    manifest = Manifest.read(json.loads((prepared / "manifest.json").read_text()))
    assert manifest.task == "classification" and manifest.label and len(manifest.labels()) == 3
    assert set(manifest.splits) == {"train", "validation", "test"} and manifest.profile.features


def test_a_workload_whose_result_has_a_field_the_contract_lacks_fails_and_says_which(tmp_path: Path) -> None:
    result = workload.run(tmp_path.as_uri(), Config(), lambda progress: {"rowz": {"total": 1}})
    assert result["status"] == "Failed" and result["reason"] == "InternalError"
    assert "rowz" in result["message"] and "contract" in result["message"]
    assert json.loads((tmp_path / "result.json").read_text()) == result  # what was returned is what was written


def test_a_folder_left_by_another_config_loses_its_checkpoints_and_the_same_config_resumes_from_them(
    tmp_path: Path,
) -> None:
    """What a resource deleted and re-created under the same name meets: the old run's checkpoints are not resumed
    by another config (they were trained on other data, or for other epochs), but an interrupted run of the same
    config (a retried job) resumes from them, and a finished one hands its result out again, stamped."""
    found: list[list[str]] = []

    def interrupted(progress: workload.Progress) -> dict[str, Any]:
        checkpoints = tmp_path / "checkpoints"
        found.append(sorted(p.name for p in checkpoints.glob("*")) if checkpoints.exists() else [])
        checkpoints.mkdir(exist_ok=True)
        (checkpoints / f"epoch-{len(found):04d}.pt").write_bytes(b"weights")
        raise RuntimeError("the pod was evicted")

    uri = tmp_path.as_uri()
    assert workload.run(uri, Config(n=1), interrupted, ("checkpoints",))["retryable"] is True
    workload.run(uri, Config(n=1), interrupted, ("checkpoints",))  # the same config: resumes
    workload.run(uri, Config(n=2), interrupted, ("checkpoints",))  # another config: starts from nothing
    assert found == [[], ["epoch-0001.pt"], []]

    first = workload.run(uri, Config(n=2), lambda progress: {"rows": {"total": 1}})
    again = workload.run(uri, Config(n=2), lambda progress: pytest.fail("a finished config runs again"))
    assert again["finishedAt"] == first["finishedAt"] and again["reusedAt"] >= first["finishedAt"]
    assert json.loads((tmp_path / "result.json").read_text())["reusedAt"] == again["reusedAt"]


def test_writing_refuses_an_unknown_field_and_reading_drops_it_at_every_level() -> None:
    with pytest.raises(ValidationError, match="bogus"):
        Result.model_validate({"status": "Succeeded", "bogus": 1})
    newer = {
        "status": "Succeeded",
        "addedLater": {"x": 1},
        "bestTrial": {"id": "t1", "metric": 0.9, "addedLater": True},
        "trials": {"total": 3, "completed": 3},
    }
    read = Result.read(newer)
    assert read.best_trial is not None and read.best_trial.id == "t1" and read.trials is not None
    assert "addedLater" not in json.dumps(read.dump())


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (Result, {"status": "Done"}, "status"),
        (Result, {"status": "Succeeded", "rows": "many"}, "rows"),
        (Manifest, {"name": "x", "version": "v", "fingerprint": "f"}, "task"),
        (Progress, {"phase": "Training", "epoch": "three"}, "epoch"),
    ],
)
def test_a_broken_artifact_is_an_error_naming_the_file_and_the_field(
    model: type[Any], data: dict[str, Any], field: str
) -> None:
    with pytest.raises(ArtifactError) as err:
        model.read(data, "s3://slipway/runs/ml/a/result.json")
    assert "s3://slipway/runs/ml/a/result.json" in str(err.value) and field in str(err.value)


def test_the_operator_reads_a_broken_result_as_a_contract_error_not_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text(json.dumps({"status": "Succeeded", "metrics": {"acc": "high"}}))
    found, store_error, broken = _read_artifact((tmp_path / "result.json").as_uri(), Result)
    assert found is None and store_error is None and broken and "metrics.acc" in broken
    (tmp_path / "ok.json").write_text(json.dumps({"status": "Failed", "reason": "MissingColumn", "message": "m"}))
    found, store_error, broken = _read_artifact((tmp_path / "ok.json").as_uri(), Result)
    assert found is not None and found.reason == "MissingColumn" and not store_error and not broken
    assert _read_artifact((tmp_path / "absent.json").as_uri(), Result) == (None, None, None)


def test_a_leaderboard_is_a_list_of_trials_and_a_malformed_row_is_named() -> None:
    rows = [{"trial": "a", "status": "Completed", "best": 0.9, "epochs": 3}, {"trial": "b", "status": "NotStarted"}]
    board = Leaderboard.read(rows, "leaderboard.json")
    assert [r.trial for r in board.rows] == ["a", "b"] and board.rows[1].best is None
    with pytest.raises(ArtifactError, match=r"leaderboard.json trial 1.*status"):
        Leaderboard.read([rows[0], {"trial": "b", "status": "Lost"}], "leaderboard.json")
