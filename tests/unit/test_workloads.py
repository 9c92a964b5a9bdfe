"""Workload configs built from resource specs carry the data fields and nothing Kubernetes-only; a workload's
exit status tells KubeRay whether a retry is worth it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.workloads import prep_config
from slipway_trainer import workload


def test_prep_config_leaves_secret_references_and_resources_behind() -> None:
    spec = DatasetPrepSpec.model_validate(
        {
            "source": {"uri": "s3://bucket/raw/", "format": "csv", "secretRef": "s3-creds"},
            "label": "y",
            "privacy": {"hashColumns": ["email"], "saltSecretRef": {"name": "salt", "key": "value"}},
            "resources": {"workers": 3, "memory": "8Gi"},
        }
    )
    config = prep_config("people", spec, "s3://bucket/datasets/people")
    text = config.model_dump_json(by_alias=True)
    assert "s3-creds" not in text and "saltSecretRef" not in text and "8Gi" not in text
    assert config.workers == 3
    assert config.spec.source.uri == "s3://bucket/raw/"
    assert config.spec.privacy.hash_columns == ["email"]
    assert config.output_uri == "s3://bucket/datasets/people"


class Job(BaseModel):
    artifact: str
    fail: str = ""


def job_runner(config: Job) -> dict[str, Any]:
    def work(progress: workload.Progress) -> dict[str, Any]:
        if config.fail == "data":
            raise workload.WorkloadError("LabelNotFound", "label 'y' is not a column")
        if config.fail == "machine":
            raise ConnectionResetError("the store went away")
        return {"rows": {"total": 1}}

    return workload.run(config.artifact, config, work)


def test_a_failure_no_retry_mends_exits_0_so_kuberay_does_not_retry_it_and_an_unexpected_one_exits_1(
    tmp_path: Path,
) -> None:
    """KubeRay retries a RayJob whose entrypoint exits non-zero: only a failure a retry may mend does that."""
    codes = {}
    for fail in ("", "data", "machine"):
        artifact = tmp_path / (fail or "ok")
        path = tmp_path / f"{fail or 'ok'}.json"
        path.write_text(Job(artifact=artifact.as_uri(), fail=fail).model_dump_json())
        codes[fail] = workload.main(str(path), Job, job_runner)
        result = json.loads((artifact / "result.json").read_text())
        assert result.get("retryable") == {"": None, "data": False, "machine": True}[fail], result
    assert codes == {"": 0, "data": 0, "machine": 1}
