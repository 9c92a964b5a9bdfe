"""The test bed's real node runs containers, and the host reaches them the way a user's shell would.

KWOK's nodes only say pods are Running; these tests run busybox containers on the real node (containerd, runc,
kubelet, CNI, kube-proxy, CoreDNS) and check what everything cluster-side relies on: kubelet probes, `kubectl
logs/exec/port-forward` from the host, Service addresses, cluster DNS (headless Services included, which
KubeRay's workers use to find the head), the API server from inside a pod, the S3 store from a pod, and a
teardown that leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import testbed
from common import API_SERVICE_IP
from images import BUSYBOX_IMAGE
from node import NODE_IP, POD_CIDR, S3_PORT, RealNode, cgroup_hierarchies

RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def busybox_pod(name: str, script: str, labels: dict[str, str] | None = None, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "securityContext": RESTRICTED,
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                }
            ],
            "terminationGracePeriodSeconds": 1,
            **spec,
        },
    }


WEB_SCRIPT = (
    'echo "started on $(hostname)"; mkdir -p /tmp/www; echo "hello from $(hostname)" > /tmp/www/index.html; '
    "exec httpd -f -p 8080 -h /tmp/www"
)


def web_pod(name: str = "web") -> dict[str, object]:
    pod = busybox_pod(name, WEB_SCRIPT)
    container = pod["spec"]["containers"][0]  # type: ignore[index]
    container["ports"] = [{"containerPort": 8080, "name": "http"}]
    container["readinessProbe"] = {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1}
    return pod


def apply(plane: testbed.ControlPlane, namespace: str, *objects: dict[str, object]) -> None:
    plane.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


def pod_json(plane: testbed.ControlPlane, namespace: str, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(plane.kubectl("get", "pod", name, "-n", namespace, "-o", "json"))


def wait_ready(plane: testbed.ControlPlane, namespace: str, name: str, timeout: int = 120) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [testbed.binary("kubectl"), "--kubeconfig", str(plane.kubeconfig), "wait", "-n", namespace,
         "--for=condition=Ready", f"pod/{name}", f"--timeout={timeout}s"],
        capture_output=True, text=True,
    )  # fmt: skip
    pod = pod_json(plane, namespace, name)
    assert result.returncode == 0, f"pod {name} not Ready: {result.stderr}\n{json.dumps(pod.get('status'), indent=1)}"
    return pod


def wait_phase(plane: testbed.ControlPlane, namespace: str, name: str, phase: str, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    pod = pod_json(plane, namespace, name)
    while time.monotonic() < deadline:
        pod = pod_json(plane, namespace, name)
        if pod["status"].get("phase") in (phase, "Failed" if phase != "Failed" else "-"):
            break
        time.sleep(0.5)
    assert pod["status"].get("phase") == phase, json.dumps(pod["status"], indent=1)
    return pod


def test_a_pod_runs_on_the_real_node_and_kubectl_logs_exec_and_port_forward_reach_it_from_the_host(
    control_plane: testbed.ControlPlane, real_node: RealNode, node_namespace: str
) -> None:
    apply(control_plane, node_namespace, web_pod())
    pod = wait_ready(control_plane, node_namespace, "web")  # the kubelet's HTTP probe reached the pod's network
    assert pod["spec"]["nodeName"] == real_node.name
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR)
    assert pod["status"]["containerStatuses"][0]["ready"] is True

    assert "started on web" in control_plane.kubectl("logs", "-n", node_namespace, "web")
    out = control_plane.kubectl("exec", "-n", node_namespace, "web", "--", "sh", "-c", "id -u; cat /tmp/www/index.html")
    assert out.split() == ["1000", "hello", "from", "web"]

    with control_plane.port_forward(node_namespace, "pod/web", 8080) as url:
        with urllib.request.urlopen(f"{url}/index.html", timeout=10) as resp:
            assert resp.read().decode().strip() == "hello from web"


def test_pods_reach_services_by_cluster_ip_and_dns_name_the_api_server_and_the_s3_store(
    control_plane: testbed.ControlPlane, real_node: RealNode, node_namespace: str, object_store: testbed.ObjectStore
) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web-headless"},
        "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 8080}]},
    }
    apply(control_plane, node_namespace, web_pod(), service, headless)
    web = wait_ready(control_plane, node_namespace, "web")
    cluster_ip = json.loads(control_plane.kubectl("get", "service", "web", "-n", node_namespace, "-o", "json"))["spec"][
        "clusterIP"
    ]

    script = "; ".join(
        [
            "echo service: $(wget -qO- http://web/index.html)",  # short name: the pod's DNS search path
            f"echo headless: $(nslookup web-headless.{node_namespace}.svc.cluster.local | tail -n +3 | grep Address)",
            # The `kubernetes` Service (kube-proxy to the API server's endpoint); a ClusterIP nobody has fails.
            "nc -w 3 kubernetes.default.svc 443 </dev/null && echo api: reachable",
            "nc -w 2 10.0.0.250 443 </dev/null || echo unused: unreachable",
            f"wget -qO- http://{NODE_IP}:{S3_PORT}/ 2>&1 | head -c 300; echo",
        ]
    )
    client = busybox_pod("client", script, labels={"app": "client"}, restartPolicy="Never")
    apply(control_plane, node_namespace, client)
    wait_phase(control_plane, node_namespace, "client", "Succeeded")
    out = control_plane.kubectl("logs", "-n", node_namespace, "client")

    assert "service: hello from web" in out, out
    assert f"headless: Address: {web['status']['podIP']}" in out, out
    assert "api: reachable" in out and "unused: unreachable" in out, out
    assert "403 Forbidden" in out, out  # the S3 store answered (an anonymous request is refused)

    # The host reaches ClusterIPs inside the node's network too (kube-proxy's rules in its namespace).
    assert real_node.net is not None
    status, body = real_node.net.http_get(cluster_ip, 80, "/index.html")
    assert (status, body.strip()) == (200, "hello from web")
    tls = ssl.create_default_context(cafile=str(control_plane.pki / "ca.crt"))
    tls.load_cert_chain(str(control_plane.pki / "admin.crt"), str(control_plane.pki / "admin.key"))
    with tls.wrap_socket(real_node.net.connect(API_SERVICE_IP, 443), server_hostname="kubernetes.default.svc") as api:
        api.sendall(b"GET /version HTTP/1.1\r\nHost: kubernetes.default.svc\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := api.recv(65536):
            reply += chunk
    assert b'"gitVersion": "v1.' in reply, reply


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def _processes_in_netns(inode: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns/net").st_ino == inode:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_stopping_a_node_leaves_no_process_mount_cgroup_or_container(
    control_plane: testbed.ControlPlane, real_node: RealNode, node_namespace: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "node"
    node = RealNode(control_plane, workdir, name="slipway-node-teardown", egress=False)
    node.start()
    try:
        apply(control_plane, node_namespace, busybox_pod("sleeper", "exec sleep 3600", nodeName=node.name))
        wait_phase(control_plane, node_namespace, "sleeper", "Running")
        assert node.holder is not None
        inode = _netns_inode(node.holder.pid)
        pids = node.cgroups.pids()
        assert len(pids) >= 8, pids  # containerd, shim, pause, sleep, kubelet, kube-proxy, CoreDNS, nodeproxy
        containers = node.ctr("containers", "list", "-q").stdout.split()
        assert len(containers) >= 2, containers  # the pod's sandbox and its container
        host_mounts = Path("/proc/self/mountinfo").read_text()
        assert str(workdir) not in host_mounts  # the node's mounts live in its own mount namespace
    finally:
        node.stop()

    # An exited process whose parent has not collected it yet (a zombie: this machine's init reaps orphans a
    # moment later) holds no memory, files or namespaces; anything else is a process left behind.
    alive = [p for p in pids if _running(p)]
    assert alive == [], f"processes left: {alive}"
    assert _processes_in_netns(inode) == []
    assert [h for h in cgroup_hierarchies() if (h / node.cgroups.root).exists()] == []
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(workdir) in line]
    assert mounts == []
    shims = subprocess.run(["pgrep", "-f", f"containerd-shim.*{workdir}"], capture_output=True, text=True).stdout
    assert shims == ""
    assert control_plane.kubectl("get", "node", node.name, "--ignore-not-found") == ""
    assert not (workdir / "containerd" / "root").exists()  # its images and layers do not pile up on the disk
    control_plane.kubectl("delete", "pod", "sleeper", "-n", node_namespace, "--force", "--grace-period=0", check=False)
