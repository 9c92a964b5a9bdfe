"""`python -m slipway_trainer prep --config FILE`: the DatasetPrep workload under the workload contract."""

from __future__ import annotations

from typing import Any

from slipway_trainer import storage, workload
from slipway_trainer.config.prep import PrepConfig
from slipway_trainer.data.prep import prepare


def artifact_uri(config: PrepConfig) -> str:
    return config.artifact_uri or storage.join(config.output_uri, "_run")


def run(config: PrepConfig) -> dict[str, Any]:
    """Prepare the dataset (or return the result of an earlier identical run)."""
    return workload.run_staged(
        artifact_uri(config), config, lambda progress, workdir: prepare(config, progress, workdir)
    )


def main(config_path: str) -> int:
    return workload.main(config_path, PrepConfig, run, artifact_uri)
