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
from slipway_operator.api.modeldeployment import Autoscaling
from slipway_operator.api.trainingrun import TrainingRunSpec
from slipway_operator.api.validation import validate_manifest
from slipway_operator.workloads import serve_config, train_config

pytestmark = pytest.mark.cluster
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def dry_run(plane: testbed.ControlPlane, obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj))
    )
    return result


def test_a_training_runs_rayjob_with_its_config_on_the_pods_is_accepted_as_built(
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
    job = builders.ray_job(
        owner,
        builders.Workload(
            step="train",
            image="slipway/trainer:test",
            resources=spec.resources,
            config=builders.config_text(config),
            storage_secret="s3-creds",
            backoff_limit=2,
            ttl_seconds_after_finished=3600,
        ),
    )
    stored = dry_run(kuberay_crds, job)
    assert json.loads(builders.job_config(stored) or "")["workers"] == 2  # the CRD's schema keeps the annotation
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


def test_server_pods_run_in_a_namespace_that_enforces_the_restricted_pod_security_standard(
    control_plane: testbed.ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    with pytest.raises(testbed.TestbedError, match="violates PodSecurity"):  # the standard is enforced here
        control_plane.kubectl("run", "root-pod", "--image=busybox:1.36", "-n", namespace)
    spec = validate_manifest(yaml.safe_load((EXAMPLES / "fashion-mnist" / "04-modeldeployment.yaml").read_text()))
    # A stand-in owner object that exists (the operator's ModelDeployment will own them for real).
    anchor = control_plane.kubectl("create", "configmap", "owner", "-n", namespace, "-o", "json")
    owner = builders.Owner("v1", "ConfigMap", "owner", namespace, json.loads(anchor)["metadata"]["uid"])
    config_map = builders.config_map(owner, "serve-r1", serve_config("fashion", spec, "s3://b/models/fashion"))
    deployment = builders.server_deployment(
        owner, "stable", "r1", "slipway/server:test", config_map["metadata"]["name"], spec.resources, 2
    )
    service = builders.server_service(owner)
    for obj in (config_map, deployment, service):
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def ready() -> bool:
        status = json.loads(
            control_plane.kubectl("get", "deployment", deployment["metadata"]["name"], "-n", namespace, "-o", "json")
        )["status"]
        return status.get("readyReplicas") == 2

    testbed.wait_until("2 ready server pods under the restricted standard", ready, 90)
    events = control_plane.kubectl("get", "events", "-n", namespace, "-o", "json")
    assert "violates PodSecurity" not in events


@pytest.mark.parametrize("metric", ["cpu", "concurrency"])
def test_a_stable_tracks_autoscaler_is_accepted_as_built(
    control_plane: testbed.ControlPlane, namespace: str, metric: str
) -> None:
    owner = builders.Owner("slipway.dev/v1alpha1", "ModelDeployment", "fashion", namespace, "uid-fashion")
    rule = Autoscaling(metric=metric, scale_down_stabilization_seconds=60)  # type: ignore[arg-type]
    hpa = builders.autoscaler(owner, "stable", 2, 5, rule)
    stored = dry_run(control_plane, hpa)["spec"]
    for key in ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics"):
        assert stored[key] == hpa["spec"][key], key  # nothing pruned or rewritten
    assert stored["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 60
