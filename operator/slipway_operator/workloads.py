"""Workload configs built from resource specs: what `python -m slipway_trainer <step>` receives.

Only the data fields travel: Kubernetes-only fields (resources, Secret references) stay behind, and
credentials never enter a config (they reach the workload as environment variables from a Secret).
"""

from __future__ import annotations

from typing import Any

from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_trainer.config.prep import PrepConfig

KUBERNETES_ONLY_PREP_FIELDS: dict[str, Any] = {
    "resources": True,
    "source": {"secret_ref"},
    "privacy": {"salt_secret_ref"},
}


def prep_config(name: str, spec: DatasetPrepSpec, output_uri: str, artifact_uri: str | None = None) -> PrepConfig:
    """The data-prep workload's config for a DatasetPrep."""
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=KUBERNETES_ONLY_PREP_FIELDS)
    return PrepConfig.model_validate(
        {
            "name": name,
            "spec": data,
            "outputUri": output_uri,
            "artifactUri": artifact_uri,
            "workers": spec.resources.workers,
        }
    )
