"""The chart's operator as a real pod: the image built from images/operator/Dockerfile, installed by helm with the
test bed's values, running on the real node and reconciling from inside the cluster.

What KWOK could never show: the image starts (its entrypoint, its user, a read-only root filesystem), the
operator reaches the API server from a pod with the chart's ServiceAccount token and RBAC, creates a run's
children, and its metrics are read through the API server's pod proxy (how the canary gate reads servers).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import buildkit
import testbed
import yaml
from node import NODE_IP, S3_PORT, RealNode

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "slipway"
VALUES = REPO / "tests" / "cluster" / "values-testbed.yaml"
NAMESPACE = "slipway-system"


def helm(plane: testbed.ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [testbed.binary("helm"), "--kubeconfig", str(plane.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_helm_install_with_the_testbed_values_runs_the_operator_pod_which_reconciles_from_inside_the_cluster(
    slipway_crds: testbed.ControlPlane,
    kuberay_crds: testbed.ControlPlane,
    real_node: RealNode,
    operator_image: str,
    object_store: testbed.ObjectStore,
) -> None:
    plane = slipway_crds
    plane.kubectl("create", "namespace", NAMESPACE)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "slipway-store", "namespace": NAMESPACE},
        "stringData": {
            "AWS_ACCESS_KEY_ID": object_store.access_key,
            "AWS_SECRET_ACCESS_KEY": object_store.secret_key,
            "AWS_ENDPOINT_URL": f"http://{NODE_IP}:{S3_PORT}",
            "AWS_REGION": "us-east-1",
        },
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(secret))
    try:
        installed = helm(plane, "install", "slipway", str(CHART), "-f", str(VALUES), "-n", NAMESPACE,
                         "--create-namespace", "--wait", "--timeout", "4m")  # fmt: skip
        pods = json.loads(plane.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json"))["items"]
        detail = json.dumps([p.get("status") for p in pods], indent=1)[:3000]
        assert installed.returncode == 0, f"{installed.stderr}\n{detail}"
        (pod,) = pods
        assert pod["spec"]["nodeName"] == real_node.name
        assert pod["spec"]["containers"][0]["image"] == operator_image
        name = pod["metadata"]["name"]

        # It reconciles: a DatasetPrep gets its ConfigMap and RayJob, created by the pod with the chart's RBAC.
        prep = yaml.safe_load((REPO / "examples" / "auto-mpg" / "01-datasetprep.yaml").read_text())
        plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(prep))
        deadline = time.monotonic() + 90
        rayjobs: list[dict[str, object]] = []
        while time.monotonic() < deadline and not rayjobs:
            rayjobs = json.loads(plane.kubectl("get", "rayjobs", "-n", NAMESPACE, "-o", "json"))["items"]
            time.sleep(1)
        logs = plane.kubectl("logs", "-n", NAMESPACE, name, check=False)
        assert rayjobs, f"the operator pod made no RayJob for the DatasetPrep; its log:\n{logs[-3000:]}"
        assert rayjobs[0]["metadata"]["ownerReferences"][0]["kind"] == "DatasetPrep"  # type: ignore[index]
        template = rayjobs[0]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]  # type: ignore[index]
        assert template["spec"]["containers"][0]["image"] == buildkit.image_tag("trainer")  # the values' workloadImage

        # Its metrics, through the API server's pod proxy (the real node's kubelet network, via the egress).
        metrics = plane.kubectl("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}:8080/proxy/metrics")
        assert "slipway_" in metrics, metrics[:2000]
    finally:
        helm(plane, "uninstall", "slipway", "-n", NAMESPACE, "--wait", "--timeout", "2m")
        plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
