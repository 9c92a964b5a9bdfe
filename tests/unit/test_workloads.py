"""Workload configs built from resource specs carry the data fields and nothing Kubernetes-only."""

from __future__ import annotations

from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.workloads import prep_config


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
