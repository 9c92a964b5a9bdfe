"""`python -m slipway_trainer prep --config FILE`: the DatasetPrep workload under the workload contract."""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

from slipway_trainer import storage, workload
from slipway_trainer.config.prep import PrepConfig
from slipway_trainer.data.prep import prepare


def artifact_uri(config: PrepConfig) -> str:
    return config.artifact_uri or storage.join(config.output_uri, "_run")


def run(config: PrepConfig) -> dict[str, Any]:
    """Prepare the dataset (or return the result of an earlier identical run)."""
    workdir = storage.staging_dir()
    try:
        return workload.run(artifact_uri(config), config, lambda progress: prepare(config, progress, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(config_path: str) -> int:
    try:
        config = workload.load_config(config_path, PrepConfig)
    except workload.WorkloadError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    result = run(config)
    print(json.dumps({k: v for k, v in result.items() if k != "traceback"}, indent=2))
    return 0 if result["status"] == workload.Status.SUCCEEDED else 1
