"""The test control plane is a real Kubernetes: controllers, scheduler, fake kubelets, CEL, RBAC."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import testbed
import yaml

pytestmark = pytest.mark.cluster

HELLO_CHART = Path(__file__).parent / "testdata" / "hello-chart"


def kubectl_json(plane: testbed.ControlPlane, *args: str) -> Any:
    return json.loads(plane.kubectl(*args, "-o", "json"))


def wait_for(what: str, check: Any, timeout: float = 60) -> None:
    testbed.wait_until(what, check, timeout)


def pod_manifest(name: str, namespace: str, gpus: int = 0, tolerate_gpu: bool = False) -> str:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]},
    }
    if gpus:
        pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    if tolerate_gpu:
        pod["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return json.dumps(pod)


def test_version_is_stamped(control_plane: testbed.ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["major"] == "1"
    assert version["serverVersion"]["minor"] == "36"
    assert version["serverVersion"]["gitVersion"].startswith("v1.36.")


def test_nodes_include_a_gpu_node(control_plane: testbed.ControlPlane) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl_json(control_plane, "get", "nodes")["items"]}
    assert set(nodes) == {testbed.CPU_NODE, testbed.GPU_NODE}
    gpu = nodes[testbed.GPU_NODE]
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in gpu["spec"]["taints"]
    for node in nodes.values():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"


def test_deployment_gets_a_replicaset_and_running_pods(control_plane: testbed.ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "deployment", "web", "--image=nginx:1.27", "--replicas=2", "-n", namespace)

    def running_pods() -> list[dict[str, Any]]:
        pods = kubectl_json(control_plane, "get", "pods", "-n", namespace, "-l", "app=web")["items"]
        return [p for p in pods if p["status"].get("phase") == "Running"]

    wait_for("2 running pods of the Deployment", lambda: len(running_pods()) == 2)
    replicasets = kubectl_json(control_plane, "get", "replicasets", "-n", namespace)["items"]
    assert len(replicasets) == 1
    assert replicasets[0]["metadata"]["ownerReferences"][0]["name"] == "web"
    for pod in running_pods():
        assert pod["spec"]["nodeName"] == testbed.CPU_NODE  # the GPU node's taint keeps it away
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    wait_for(
        "the Deployment to report 2 available replicas",
        lambda: (
            kubectl_json(control_plane, "get", "deployment", "web", "-n", namespace)["status"].get("availableReplicas")
            == 2
        ),
    )


def test_gpu_pod_with_toleration_lands_on_the_gpu_node(control_plane: testbed.ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-f", "-", input=pod_manifest("trainer", namespace, gpus=2, tolerate_gpu=True))
    wait_for(
        "the GPU pod to run",
        lambda: (
            kubectl_json(control_plane, "get", "pod", "trainer", "-n", namespace)["status"].get("phase") == "Running"
        ),
    )
    pod = kubectl_json(control_plane, "get", "pod", "trainer", "-n", namespace)
    assert pod["spec"]["nodeName"] == testbed.GPU_NODE


def test_gpu_pod_without_toleration_is_not_scheduled(control_plane: testbed.ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-f", "-", input=pod_manifest("no-toleration", namespace, gpus=1))

    def unschedulable() -> bool:
        pod = kubectl_json(control_plane, "get", "pod", "no-toleration", "-n", namespace)
        conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
        scheduled = conditions.get("PodScheduled", {})
        return scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"

    wait_for("the scheduler to refuse the pod", unschedulable)
    pod = kubectl_json(control_plane, "get", "pod", "no-toleration", "-n", namespace)
    assert "nodeName" not in pod["spec"]
    message = next(c["message"] for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert "nvidia.com/gpu" in message  # names the untolerated taint / insufficient resource


def test_plain_pod_does_not_land_on_the_gpu_node(control_plane: testbed.ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-f", "-", input=pod_manifest("plain", namespace))
    wait_for(
        "the plain pod to be scheduled",
        lambda: "nodeName" in kubectl_json(control_plane, "get", "pod", "plain", "-n", namespace)["spec"],
    )
    assert kubectl_json(control_plane, "get", "pod", "plain", "-n", namespace)["spec"]["nodeName"] == (testbed.CPU_NODE)


WIDGET_CRD = textwrap.dedent(
    """\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.testbed.slipway.dev
    spec:
      group: testbed.slipway.dev
      scope: Namespaced
      names: {plural: widgets, singular: widget, kind: Widget}
      versions:
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec:
                type: object
                properties:
                  min: {type: integer}
                  max: {type: integer}
                x-kubernetes-validations:
                - rule: "self.min <= self.max"
                  message: "spec.min must be less than or equal to spec.max"
    """
)


def test_crd_cel_rule_rejects_a_bad_object_with_its_message(
    control_plane: testbed.ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    wait_for(
        "the Widget CRD to be established",
        lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in kubectl_json(control_plane, "get", "crd", "widgets.testbed.slipway.dev")["status"].get(
                "conditions", []
            )
        ),
    )

    def widget(name: str, lo: int, hi: int) -> str:
        return json.dumps(
            {
                "apiVersion": "testbed.slipway.dev/v1",
                "kind": "Widget",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"min": lo, "max": hi},
            }
        )

    control_plane.kubectl("apply", "-f", "-", input=widget("good", 1, 2))
    with pytest.raises(testbed.TestbedError) as refused:
        control_plane.kubectl("apply", "-f", "-", input=widget("bad", 3, 2))
    assert "spec.min must be less than or equal to spec.max" in str(refused.value)
    assert control_plane.kubectl("get", "widget", "bad", "-n", namespace, check=False) == ""


def test_rbac_denies_a_service_account_what_its_role_does_not_grant(
    control_plane: testbed.ControlPlane, namespace: str, tmp_path: Path
) -> None:
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    control_plane.kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", namespace)
    control_plane.kubectl(
        "create",
        "rolebinding",
        "reader",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    # A real token, signed by the API server's service-account key, used as a bearer token.
    token = control_plane.kubectl("create", "token", "reader", "-n", namespace).strip()
    config = tmp_path / "reader.kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "testbed",
                        "cluster": {
                            "server": control_plane.server,
                            "certificate-authority": str(control_plane.pki / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": "reader", "user": {"token": token}}],
                "contexts": [{"name": "reader", "context": {"cluster": "testbed", "user": "reader"}}],
                "current-context": "reader",
            }
        )
    )

    def as_reader(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [testbed.binary("kubectl"), "--kubeconfig", str(config), "-n", namespace, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    allowed = as_reader("get", "pods")
    assert allowed.returncode == 0, allowed.stderr
    denied = as_reader("get", "secrets")
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr
    assert f"system:serviceaccount:{namespace}:reader" in denied.stderr
    denied_write = as_reader("create", "configmap", "x", "--from-literal=a=b")
    assert denied_write.returncode != 0 and "forbidden" in denied_write.stderr
    assert as_reader("auth", "can-i", "delete", "pods").stdout.strip() == "no"
    assert as_reader("auth", "can-i", "list", "pods").stdout.strip() == "yes"


def helm(plane: testbed.ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [testbed.binary("helm"), "--kubeconfig", str(plane.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_helm_template_renders_the_chart(control_plane: testbed.ControlPlane) -> None:
    result = helm(control_plane, "template", "demo", str(HELLO_CHART), "--kube-version", "1.36.0")
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc]
    assert kinds == ["ConfigMap", "Deployment"]


def test_helm_install_creates_a_running_release(control_plane: testbed.ControlPlane, namespace: str) -> None:
    result = helm(
        control_plane,
        "install",
        "demo",
        str(HELLO_CHART),
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "90s",
        "--set",
        "replicas=2",
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(helm(control_plane, "status", "demo", "-n", namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    deployment = kubectl_json(control_plane, "get", "deployment", "demo-hello", "-n", namespace)
    assert deployment["status"]["readyReplicas"] == 2
    config = kubectl_json(control_plane, "get", "configmap", "demo-hello", "-n", namespace)
    assert config["data"]["greeting"] == "hello from demo"
    uninstall = helm(control_plane, "uninstall", "demo", "-n", namespace, "--wait")
    assert uninstall.returncode == 0, uninstall.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and control_plane.kubectl(
        "get", "deployment", "demo-hello", "-n", namespace, check=False
    ):
        time.sleep(0.5)
    assert control_plane.kubectl("get", "deployment", "demo-hello", "-n", namespace, check=False) == ""
