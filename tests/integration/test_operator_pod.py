"""The chart's operator as a real pod: the image built from images/operator/Dockerfile, installed by helm with the
test bed's values, running on the real node and reconciling from inside the cluster.

What KWOK could never show: the image starts (its entrypoint, its user, a read-only root filesystem), the
operator reaches the API server from a pod with the chart's ServiceAccount token and RBAC, and its metrics are
read through the API server's pod proxy (how the canary gate reads the servers' metrics).
"""

from __future__ import annotations

import json

import buildkit
import testbed
from node import RealNode


def test_helm_install_with_the_testbed_values_runs_the_operator_as_a_pod_on_the_real_node(
    control_plane: testbed.ControlPlane, slipway_on_node: str, real_node: RealNode
) -> None:
    ns = slipway_on_node
    (pod,) = json.loads(control_plane.kubectl("get", "pods", "-n", ns, "-l", "app.kubernetes.io/name=slipway",
                                              "-o", "json"))["items"]  # fmt: skip
    assert pod["spec"]["nodeName"] == real_node.name
    assert pod["spec"]["containers"][0]["image"] == buildkit.image_tag("operator")
    assert all(c["ready"] for c in pod["status"]["containerStatuses"])  # its /metrics probe answers
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["SLIPWAY_IMAGE"] == buildkit.image_tag("trainer")

    name = pod["metadata"]["name"]
    log = control_plane.kubectl("logs", "-n", ns, name)
    assert "Traceback" not in log, log[-3000:]
    metrics = control_plane.kubectl("get", "--raw", f"/api/v1/namespaces/{ns}/pods/{name}:8080/proxy/metrics")
    assert "slipway_operator_reconciles" in metrics, metrics[:2000]
