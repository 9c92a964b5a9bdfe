"""Dataset specs that several tests prepare the same way, and the helper that prepares and trains one in-process
(imported by name: pytest puts tests/ on sys.path for conftest.py). Tests that need a variant say so with
`{**SPEC, ...}` where they use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slipway_trainer.config.prep import PrepConfig
from slipway_trainer.config.train import TrainConfig
from slipway_trainer.data import workload as prep_workload
from slipway_trainer.train import workload as train_workload

# Auto MPG (vega_datasets' `cars`) as a regression set: gaps filled or dropped, one-hot origin, standardised.
AUTO_MPG: dict[str, Any] = {
    "source": {"uri": "builtin://vega/cars"},
    "label": "Miles_per_Gallon",
    "cleaning": {"missing": {"default": "drop", "columns": {"Horsepower": "median"}}},
    "transforms": [{"type": "oneHot", "columns": ["Origin"]}, {"type": "standardize"}],
    "privacy": {"dropColumns": ["Name"]},
    "split": {"train": 0.7, "validation": 0.15, "test": 0.15},
}


def prepare_and_train(root: Path, name: str, prep: dict[str, Any], train: dict[str, Any]) -> tuple[Path, Path]:
    dataset = root / f"{name}-data"
    result = prep_workload.run(PrepConfig.model_validate({"outputUri": dataset.as_uri(), "spec": prep}))
    assert result["status"] == "Succeeded", result
    run = root / f"{name}-run"
    result = train_workload.run(
        TrainConfig.model_validate(
            {"datasetUri": dataset.as_uri(), "artifactUri": run.as_uri(), "useRay": False, "spec": train}
        )
    )
    assert result["status"] == "Succeeded", result
    return dataset, run / "model"
