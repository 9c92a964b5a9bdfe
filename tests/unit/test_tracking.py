"""How a run becomes MLflow parameters and metrics (slipway_trainer.tracking), and that a tracking server that
cannot be reached never fails a run: it is said, not raised."""

from __future__ import annotations

from slipway_trainer.tracking import RunRecord, epoch_metrics, flatten, track


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
    said = track("http://127.0.0.1:9", "slipway", RunRecord("r", {"a": 1}), env={"MLFLOW_TRACKING_TOKEN": "tok-123"})
    assert said["state"] == "Failed" and "could not be reached" in said["message"]
    assert "tok-123" not in said["message"]
