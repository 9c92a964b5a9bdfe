"""The objects the builders make are accepted by the real API server with KubeRay's own RayJob schema, and
nothing is pruned on the way (GPU limits, tolerations, selectors, the Kueue label survive)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import testbed
import yaml

from slipway_operator import builders
from slipway_operator.api.trainingrun import TrainingRunSpec
from slipway_operator.api.validation import validate_manifest
from slipway_operator.workloads import train_config

pytestmark = pytest.mark.cluster
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def dry_run(plane: testbed.ControlPlane, obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj))
    )
    return result


def test_a_training_runs_configmap_and_rayjob_are_accepted_as_built(
    kuberay_crds: testbed.ControlPlane, namespace: str
) -> None:
    manifest = yaml.safe_load((EXAMPLES / "fashion-mnist" / "02-trainingrun.yaml").read_text())
    spec = validate_manifest(manifest)
    assert isinstance(spec, TrainingRunSpec)
    spec = spec.model_copy(
        update={
            "resources": spec.resources.model_copy(update={"queue": "gpu-queue", "node_selector": {"pool": "h100"}})
        }
    )
    owner = builders.Owner("slipway.dev/v1alpha1", "TrainingRun", "fashion-cnn", namespace, "1234")
    config = train_config("fashion-cnn", spec, "s3://b/datasets/fashion", "s3://b/runs/fashion-cnn")
    config_map = builders.config_map(owner, "train", config)
    job = builders.ray_job(
        owner,
        builders.Workload(
            step="train",
            image="slipway/trainer:test",
            resources=spec.resources,
            config_map=config_map["metadata"]["name"],
            storage_secret="s3-creds",
            backoff_limit=2,
            ttl_seconds_after_finished=3600,
        ),
    )
    stored_map = dry_run(kuberay_crds, config_map)
    assert json.loads(stored_map["data"]["config.json"])["workers"] == 2
    stored = dry_run(kuberay_crds, job)
    assert stored["spec"]["entrypoint"] == job["spec"]["entrypoint"]
    worker = stored["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    pod = worker["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"pool": "h100"}
    assert stored["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert stored["spec"]["shutdownAfterJobFinishes"] is True and stored["spec"]["ttlSecondsAfterFinished"] == 3600
    assert pruned(job["spec"], stored["spec"]) == []  # the server added defaults, it removed nothing


def pruned(ours: Any, stored: Any, path: str = "spec") -> list[str]:
    """Paths of what we set that the stored object no longer has as we set it."""
    if isinstance(ours, dict):
        if not isinstance(stored, dict):
            return [path]
        return [
            p
            for key, value in ours.items()
            for p in (pruned(value, stored[key], f"{path}.{key}") if key in stored else [f"{path}.{key}"])
        ]
    if isinstance(ours, list):
        if not isinstance(stored, list) or len(stored) != len(ours):
            return [path]
        return [p for i, (a, b) in enumerate(zip(ours, stored, strict=True)) for p in pruned(a, b, f"{path}[{i}]")]
    return [] if ours == stored else [f"{path} ({ours!r} became {stored!r})"]
