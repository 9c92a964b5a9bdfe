"""Failures on the real node, diagnosed in the resource's status by the chart's operator from the pods of its
children as the scheduler and the kubelet report them: a run whose workers no node can hold, and one whose image
cannot be pulled, fail after their pendingTimeoutSeconds with the scheduler's or the kubelet's own words (and the
RayJob is suspended, freeing what its pods held), and a ModelDeployment whose model is not there crash-loops and
is never Available, with the server's last log line.

Each bound below is the timeout the test gives the operator: pendingTimeoutSeconds plus a few resync passes (10 s
for runs, 5 s for ModelDeployments), plus the kubelet's first restart back-off (10 s) for the crash loop."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import testbed
from test_journey_on_node import example, wait_phase


@pytest.mark.timeout(600)
def test_a_run_asking_for_more_gpus_than_any_node_has_fails_after_its_pending_timeout_with_the_schedulers_reason(
    control_plane: testbed.ControlPlane, kuberay_on_node: str
) -> None:
    plane, ns = control_plane, kuberay_on_node
    run = example("auto-mpg/02-trainingrun.yaml", ns, dataset={"uri": "s3://slipway/datasets/not-needed"},
                  resources={"workers": 1, "cpusPerWorker": 0.5, "gpusPerWorker": 16, "memory": "1Gi"},
                  failurePolicy={"pendingTimeoutSeconds": 20})  # fmt: skip
    run["metadata"]["name"] = "mpg-greedy"
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(run))
        started = time.monotonic()
        failed = wait_phase(plane, run, {"Failed", "Succeeded"}, 20 + 120)
        condition = next(c for c in failed["conditions"] if c["type"] == "Failed")
        assert failed["phase"] == "Failed" and condition["reason"] == "Unschedulable", failed
        message = condition["message"]
        assert "cannot be scheduled: 0/" in message and "Insufficient nvidia.com/gpu" in message, message
        assert "nvidia.com/gpu 16" in message and "lower spec.resources" in message, message
        assert "pendingTimeoutSeconds 20s" in message, message
        assert time.monotonic() - started < 20 + 120
        rayjob = json.loads(plane.kubectl("get", "rayjob", "mpg-greedy-train", "-n", ns, "-o", "json"))
        assert rayjob["spec"]["suspend"] is True  # KubeRay deletes its cluster: the head no longer holds the node
        selector = "slipway.dev/trainingrun=mpg-greedy"
        testbed.wait_until(
            "the suspended RayJob's pods gone",
            lambda: not json.loads(plane.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json"))["items"],
            120,
        )
        events = plane.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=mpg-greedy")
        assert "Unschedulable" in events or "cannot be scheduled" in events, events
    finally:
        plane.kubectl("delete", "trainingrun", "mpg-greedy", "-n", ns, "--wait=true", "--timeout=120s", check=False)


@pytest.mark.timeout(600)
def test_a_run_whose_image_cannot_be_pulled_fails_after_its_pending_timeout_naming_the_image(
    control_plane: testbed.ControlPlane, kuberay_on_node: str
) -> None:
    """The operator set up with a trainer image tag that does not exist (the way a run meets a missing image: the
    chart's workloadImage): the node has no such image and no registry it can reach, so the pods' pulls fail."""
    plane, ns = control_plane, kuberay_on_node
    operator = ["deployment/slipway", "-n", ns]
    plane.kubectl("set", "env", *operator, "SLIPWAY_IMAGE=slipway/trainer:no-such-tag")
    run = example("auto-mpg/02-trainingrun.yaml", ns, dataset={"uri": "s3://slipway/datasets/not-needed"},
                  resources={"workers": 1, "cpusPerWorker": 0.5, "memory": "1Gi"},
                  failurePolicy={"pendingTimeoutSeconds": 20})  # fmt: skip
    run["metadata"]["name"] = "mpg-no-image"
    try:
        plane.kubectl("rollout", "status", *operator, "--timeout=180s")
        plane.kubectl("apply", "-f", "-", input=json.dumps(run))
        failed = wait_phase(plane, run, {"Failed", "Succeeded"}, 20 + 120)
        condition = next(c for c in failed["conditions"] if c["type"] == "Failed")
        assert failed["phase"] == "Failed" and condition["reason"] == "ImagePullFailed", failed
        assert "cannot pull image 'slipway/trainer:no-such-tag'" in condition["message"], condition
        assert "container ray-head" in condition["message"] or "container ray-worker" in condition["message"]
        assert "ErrImagePull" in condition["message"] or "ImagePullBackOff" in condition["message"], condition
    finally:
        plane.kubectl("delete", "trainingrun", "mpg-no-image", "-n", ns, "--wait=true", "--timeout=120s", check=False)
        plane.kubectl("set", "env", *operator, "SLIPWAY_IMAGE=slipway/trainer:dev")
        plane.kubectl("rollout", "status", *operator, "--timeout=180s")


def _deployment_status(plane: testbed.ControlPlane, ns: str, name: str) -> dict[str, Any]:
    obj = json.loads(plane.kubectl("get", "modeldeployment", name, "-n", ns, "-o", "json"))
    return dict(obj.get("status") or {})


@pytest.mark.timeout(600)
def test_a_model_deployment_whose_model_is_not_there_crash_loops_and_is_never_available(
    control_plane: testbed.ControlPlane, slipway_on_node: str
) -> None:
    plane, ns, name = control_plane, slipway_on_node, "mpg-nothing"
    manifest = {
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "model": {"uri": "s3://slipway/models/there-is-nothing-here"},
            "replicas": {"min": 1, "max": 1},
            "resources": {"cpu": "250m", "memory": "768Mi"},
            "server": {"format": "onnx"},
            "monitoring": {"drift": {"enabled": False}},
        },
    }
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        deadline, seen = time.monotonic() + 240, {}
        while time.monotonic() < deadline:
            seen = _deployment_status(plane, ns, name)
            available = next((c for c in seen.get("conditions") or [] if c["type"] == "Available"), {})
            assert not (available.get("status") == "True" or seen.get("phase") == "Available"), seen
            if available.get("reason") == "CrashLoop" and (seen.get("replicas") or {}).get("restarts", 0) >= 2:
                break
            time.sleep(2)
        else:
            pods = plane.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False)
            raise AssertionError(f"no CrashLoop within 240s:\n{json.dumps(seen, indent=1)}\n{pods}")
        message = available["message"]
        assert f"pod {name}-stable-" in message and "keeps crashing (exit code 2" in message, message
        assert "error:" in message and "there-is-nothing-here" in message, message  # the server's own last line
        assert "exit code 2" in seen["replicas"]["lastCrash"], seen
        assert seen["phase"] != "Available" and "CrashLoop" in seen["message"], seen
    finally:
        plane.kubectl("delete", "modeldeployment", name, "-n", ns, "--wait=true", "--timeout=120s", check=False)
