"""The test bed: a real Kubernetes control plane and a real S3-compatible store on loopback.

Started from the binaries that ``tests/cluster/build.sh`` builds into ``tests/cluster/bin``:
etcd, kube-apiserver (RBAC, generated certificates, service-account signing keys),
kube-controller-manager, kube-scheduler and KWOK, which plays the kubelets of fake nodes
(one CPU node and one GPU node advertising ``nvidia.com/gpu: 8``). SeaweedFS serves S3.
KubeRay's operator, built from its pinned module, can be started against the control plane
(``KubeRayOperator``; the tests do, ``make cluster`` does not). The real node that runs containers is
``node.RealNode``; ``make cluster`` starts it too. What both share (processes, certificates, addresses)
is in ``common.py``.

Used by the pytest session fixtures in ``tests/conftest.py`` and, for manual use, by
``make cluster`` / ``make cluster-down``::

    python tests/cluster/testbed.py up [--dir DIR]
    python tests/cluster/testbed.py down [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    API_SERVICE_IP,
    BIN,
    HERE,
    NODE_NETWORK_GATEWAY,
    SERVICE_CIDR,
    CertificateAuthority,
    Component,
    TestbedError,
    _pem_key,
    binary,
    free_port,
    kubeconfig_text,
    kuberay_argv,
    wait_until,
)

REPO = HERE.parent.parent
DEFAULT_DIR = REPO / ".testbed"

# The fake nodes. The GPU node looks like a node of the NVIDIA GPU operator: GPU labels,
# an `nvidia.com/gpu` extended resource and the usual NoSchedule taint.
CPU_NODE = "kwok-cpu-0"
GPU_NODE = "kwok-gpu-0"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"

S3_ACCESS_KEY = "slipway-test-access"
S3_SECRET_KEY = "slipway-test-secret-key"  # a throwaway credential of the loopback test store

__all__ = [
    "API_SERVICE_IP",
    "BIN",
    "NODE_NETWORK_GATEWAY",
    "SERVICE_CIDR",
    "CertificateAuthority",
    "Component",
    "ControlPlane",
    "KubeRayOperator",
    "Kueue",
    "ObjectStore",
    "TestbedError",
    "binary",
    "free_port",
    "kubeconfig_text",
    "running",
    "wait_until",
]


def write_pki(pki: Path) -> None:
    """A CA, the API server's serving certificate and its client certificate for kubelets, an admin client
    certificate and the service-account signing key pair, as envtest generates them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca = CertificateAuthority.create(pki)
    sans = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    sans += ["kubernetes.default.svc.cluster.local", "127.0.0.1", API_SERVICE_IP, NODE_NETWORK_GATEWAY]
    ca.issue(pki, "apiserver", "kube-apiserver", [], server_sans=sans)
    ca.issue(pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ["system:masters"])
    ca.issue(pki, "admin", "testbed-admin", ["system:masters"])
    # The aggregation layer's client certificate: how the API server proxies metrics.k8s.io to metrics-server.
    ca.issue(pki, "front-proxy-client", "front-proxy-client", [])

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(_pem_key(sa_key))
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


# ---------------------------------------------------------------------------------------------
# The control plane
# ---------------------------------------------------------------------------------------------


@dataclass
class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK on loopback."""

    workdir: Path
    components: list[Component] = field(default_factory=list)
    api_port: int = 0

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def egress_socket(self) -> Path:
        """Where the real node's CONNECT proxy listens for the API server (tests/cluster/nodeproxy.py)."""
        return self.workdir / "node-egress.sock"

    def _egress_config(self) -> Path:
        path = self.workdir / "egress-selector.yaml"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "apiserver.k8s.io/v1beta1",
                    "kind": "EgressSelectorConfiguration",
                    "egressSelections": [
                        {
                            "name": "cluster",
                            "connection": {
                                "proxyProtocol": "HTTPConnect",
                                "transport": {"uds": {"udsName": str(self.egress_socket)}},
                            },
                        }
                    ],
                }
            )
        )
        return path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [binary("kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise TestbedError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, port: int) -> Iterator[str]:
        """`kubectl port-forward <target> :<port>` from the host shell, as a user runs it; yields its local URL."""
        forward = subprocess.Popen(
            [binary("kubectl"), "--kubeconfig", str(self.kubeconfig), "port-forward", "-n", namespace, target,
             f":{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert forward.stdout is not None
            line = forward.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+) -> ", line)
            if not match:
                said = forward.stderr.read() if forward.stderr and forward.poll() is not None else ""
                raise TestbedError(f"kubectl port-forward {target} said {line!r} {said}")
            yield f"http://127.0.0.1:{match.group(1)}"
        finally:
            forward.terminate()
            forward.wait(timeout=10)

    def _get(self, url: str, client_cert: bool = True) -> int:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if client_cert:
            ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_pki(self.pki)
        etcd_port, peer_port = free_port(), free_port()
        self.api_port = free_port()
        cm_port, sched_port = free_port(), free_port()
        self.kubeconfig.write_text(kubeconfig_text(self.server, self.pki))

        etcd = Component(
            "etcd",
            [
                binary("etcd"),
                "--name=testbed",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=testbed=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self.logs / "etcd.log",
        )
        self._start(etcd)
        wait_until(
            "etcd health",
            lambda: _http_ok(f"http://127.0.0.1:{etcd_port}/health"),
            60,
            etcd,
        )

        pki = self.pki
        apiserver = Component(
            "kube-apiserver",
            [
                binary("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                # The `kubernetes` Service's endpoint: the real node's pods reach the API server there (nodeproxy.py).
                f"--advertise-address={NODE_NETWORK_GATEWAY}",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                # The aggregation-layer front proxy; without it every component logs a missing CA bundle.
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                # Aggregated APIs (metrics-server on the real node) are dialled at their endpoint's address, through
                # the egress selector below, as the pod proxy is.
                "--enable-aggregator-routing=true",
                "--authorization-mode=Node,RBAC",
                # Namespaces pinned to the real node by annotations (node.node_namespace_annotations).
                "--enable-admission-plugins=PodNodeSelector,PodTolerationRestriction",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--allow-privileged=true",
                # Logs, exec, port-forward and the pod proxy reach the real node through its CONNECT proxy.
                f"--egress-selector-config-file={self._egress_config()}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                "--v=1",
            ],
            self.logs / "kube-apiserver.log",
        )
        self._start(apiserver)
        wait_until("kube-apiserver /readyz", lambda: self._get(f"{self.server}/readyz") == 200, 120, apiserver)

        controller_manager = Component(
            "kube-controller-manager",
            [
                binary("kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
                # HorizontalPodAutoscalers are evaluated every 5 s (15 s by default): tests see a scale decision sooner.
                "--horizontal-pod-autoscaler-sync-period=5s",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                "--v=1",
            ],
            self.logs / "kube-controller-manager.log",
        )
        scheduler = Component(
            "kube-scheduler",
            [
                binary("kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                "--leader-elect=false",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--v=1",
            ],
            self.logs / "kube-scheduler.log",
        )
        stages = sorted(str(p) for p in (BIN / "kwok-stages").glob("*.yaml"))
        if not stages:
            raise TestbedError(f"no KWOK stage configs in {BIN / 'kwok-stages'}: rerun tests/cluster/build.sh")
        kwok = Component(
            "kwok",
            [
                binary("kwok"),
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=127.0.0.1",
                # Pod IPs inside loopback: nothing in a test can dial off this machine through a fake pod's
                # address (the API server's pod proxy refuses loopback targets without connecting).
                "--cidr=127.244.0.1/16",
                "--node-lease-duration-seconds=40",
                "--server-address=127.0.0.1:0",
                *[f"--config={s}" for s in stages],
            ],
            self.logs / "kwok.log",
        )
        for component in (controller_manager, scheduler, kwok):
            self._start(component)
        wait_until(
            "kube-controller-manager /healthz",
            lambda: self._get(f"https://127.0.0.1:{cm_port}/healthz", client_cert=False) == 200,
            60,
            controller_manager,
        )
        wait_until(
            "kube-scheduler /healthz",
            lambda: self._get(f"https://127.0.0.1:{sched_port}/healthz", client_cert=False) == 200,
            60,
            scheduler,
        )
        self.kubectl("apply", "-f", "-", input=nodes_manifest())
        wait_until(
            "KWOK nodes Ready",
            lambda: (
                self.kubectl(
                    "get",
                    "nodes",
                    "-l",
                    "type=kwok",
                    "-o",
                    "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{' '}{end}",
                ).split()
                == ["True", "True"]
            ),
            60,
            kwok,
        )
        # The service-account controller creates `default` in each namespace; pods need it.
        wait_until(
            "the default ServiceAccount",
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False) != "",
            60,
            controller_manager,
        )

    def _start(self, component: Component) -> None:
        component.start()
        self.components.append(component)

    def stop(self) -> None:
        for component in reversed(self.components):
            component.stop()

    def failed_components(self) -> list[Component]:
        return [c for c in self.components if not c.alive()]

    def logs_summary(self, lines: int = 30) -> str:
        return "\n".join(f"--- {c.name} ({c.log}) ---\n{c.tail(lines)}" for c in self.components)

    def to_state(self) -> dict[str, object]:
        return {
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "components": [{"name": c.name, "pid": c.pid, "log": str(c.log)} for c in self.components],
        }


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return int(resp.status) == 200


def nodes_manifest() -> str:
    def node(name: str, labels: dict[str, str], extra_capacity: dict[str, str], taints: list[dict[str, str]]) -> dict:
        capacity = {
            "cpu": "32",
            "memory": "256Gi",
            "pods": "110",
            "ephemeral-storage": "1Ti",
            **extra_capacity,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    **labels,
                },
            },
            "spec": {"taints": taints},
            "status": {"allocatable": capacity, "capacity": capacity},
        }

    items = [
        node(CPU_NODE, {"node.kubernetes.io/instance-type": "cpu-32"}, {}, []),
        node(
            GPU_NODE,
            {
                "node.kubernetes.io/instance-type": "gpu-8xh100",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": GPU_PRODUCT,
                "nvidia.com/gpu.count": "8",
                "nvidia.com/gpu.memory": "81559",
            },
            {"nvidia.com/gpu": "8"},
            [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        ),
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


# ---------------------------------------------------------------------------------------------
# Controllers beside the control plane: Kueue, KubeRay's operator
# ---------------------------------------------------------------------------------------------


def _run_beside(plane: ControlPlane, name: str, argv: list[str], ready_url: str, timeout: float,
                env: dict[str, str] | None = None) -> Component:  # fmt: skip
    """Start a controller as one of the plane's components (its log in the plane's logs, attached to a failing
    test) and wait for its readiness URL."""
    component = Component(name, argv, plane.logs / f"{name}.log")
    component.start(env=env)
    plane.components.append(component)
    wait_until(f"{name} {ready_url.rsplit('/', 1)[-1]}", lambda: _http_ok(ready_url), timeout, component)
    return component


def _stop_beside(plane: ControlPlane, component: Component | None) -> None:
    if component is None:
        return
    component.stop()
    with contextlib.suppress(ValueError):
        plane.components.remove(component)


@dataclass
class Kueue:
    """Kueue's manager (``bin/kueue``, built from the pinned module) against a ControlPlane, with the RayJob
    integration: a RayJob labelled ``kueue.x-k8s.io/queue-name`` and created suspended gets a Workload, waits for
    quota in its LocalQueue's ClusterQueue and is unsuspended when admitted (its pod templates given the
    ResourceFlavor's node labels). Leader election off; probes and metrics on free loopback ports. Its admission
    webhooks are not registered with the API server (Slipway creates queued RayJobs suspended itself, so nothing
    depends on them); their server still starts, on loopback, with a certificate from the test bed's CA. Kueue's
    and KubeRay's CRDs must be installed first (``bin/kueue-crds``, ``bin/kuberay-crds``)."""

    plane: ControlPlane
    workdir: Path
    component: Component | None = None

    def start(self) -> None:
        probe, metrics, webhook = free_port(), free_port(), free_port()
        ca = CertificateAuthority.load(self.plane.pki)
        certs = self.workdir / "webhook-certs"
        ca.issue(certs, "tls", "kueue-webhook", [], server_sans=["127.0.0.1"])
        # Without Kueue's internal certificate management its metrics server reads a certificate from a fixed path,
        # /etc/kueue/metrics/certs: it runs in a mount namespace of its own whose /etc is a folder of ours.
        etc = self.workdir / "etc"
        ca.issue(etc / "kueue" / "metrics" / "certs", "tls", "kueue-metrics", [], server_sans=["127.0.0.1"])
        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "health": {"healthProbeBindAddress": f"127.0.0.1:{probe}"},
            "metrics": {"bindAddress": f"127.0.0.1:{metrics}"},
            "webhook": {"port": webhook, "host": "127.0.0.1", "certDir": str(certs)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["ray.io/rayjob"]},
            # The on-demand visibility API is an aggregated API server with its own certificate at /visibility:
            # not needed (Slipway reads positions from the Workloads).
            "featureGates": {"VisibilityOnDemand": False},
        }
        path = self.workdir / "kueue-config.yaml"
        path.write_text(json.dumps(config, indent=2))
        kueue = [binary("kueue"), f"--config={path}", f"--kubeconfig={self.plane.kubeconfig}", "--zap-log-level=2"]
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                f'mount --bind "{etc}" /etc && exec "$@"', "kueue", *kueue]  # fmt: skip
        self.component = _run_beside(self.plane, "kueue", argv, f"http://127.0.0.1:{probe}/readyz", 90)

    def stop(self) -> None:
        _stop_beside(self.plane, self.component)


@dataclass
class KubeRayOperator:
    """KubeRay's operator (``bin/kuberay-operator``, built from the pinned module) against a ControlPlane.

    It reconciles RayJobs into RayClusters, head and worker pods, a head Service and (K8sJobMode) a submitter
    Job. Leader election is off; metrics and the health probe listen on free loopback ports. With
    ``watch_namespaces`` it watches (and caches) only those namespaces, so tests elsewhere that write a
    RayJob's status themselves are not raced by a real controller. Its log goes to the plane's log folder and,
    as one of the plane's components, into the logs attached to a failing test. KubeRay's CRDs must be
    installed first (``kubectl apply -f bin/kuberay-crds``).
    """

    plane: ControlPlane
    watch_namespaces: list[str] = field(default_factory=list)
    component: Component | None = None
    metrics_port: int = 0
    probe_port: int = 0

    def argv(self) -> list[str]:
        return kuberay_argv(
            Path(binary("kuberay-operator")), self.plane.kubeconfig, self.metrics_port, self.probe_port,
            self.watch_namespaces,
        )  # fmt: skip

    def start(self) -> None:
        self.metrics_port, self.probe_port = free_port(), free_port()
        # ENABLE_WEBHOOKS would need a serving certificate and a webhook configuration: left off, as in
        # KubeRay's default install.
        ready = f"http://127.0.0.1:{self.probe_port}/readyz"
        self.component = _run_beside(self.plane, "kuberay-operator", self.argv(), ready, 60,
                                     env={"ENABLE_WEBHOOKS": "false"})  # fmt: skip

    def stop(self) -> None:
        _stop_beside(self.plane, self.component)


# ---------------------------------------------------------------------------------------------
# The S3-compatible store
# ---------------------------------------------------------------------------------------------


@dataclass
class ObjectStore:
    """SeaweedFS (`weed server -s3`) on loopback, with an admin key and a read-only one (``reader_key``, for
    sources whose credentials are not the store's)."""

    workdir: Path
    component: Component | None = None
    port: int = 0
    access_key: str = S3_ACCESS_KEY
    secret_key: str = S3_SECRET_KEY
    reader_key: tuple[str, str] = ("slipway-reader", "reader-secret-key")  # (access key, secret): Read and List

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "testbed",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        },
                        {
                            "name": "reader",
                            "credentials": [{"accessKey": self.reader_key[0], "secretKey": self.reader_key[1]}],
                            "actions": ["Read", "List"],
                        },
                    ]
                }
            )
        )
        self.port = free_port()
        ports = {
            k: free_port() for k in ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")
        }
        self.component = Component(
            "seaweedfs",
            [
                binary("weed"),
                "server",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={ports['master']}",
                f"-master.port.grpc={ports['master_grpc']}",
                "-master.volumeSizeLimitMB=64",
                f"-volume.port={ports['volume']}",
                f"-volume.port.grpc={ports['volume_grpc']}",
                "-volume.max=0",
                "-filer",
                f"-filer.port={ports['filer']}",
                f"-filer.port.grpc={ports['filer_grpc']}",
                "-s3",
                f"-s3.port={self.port}",
                f"-s3.port.grpc={ports['s3_grpc']}",
                f"-s3.config={config}",
            ],
            self.workdir / "seaweedfs.log",
        )
        self.component.start()
        wait_until("SeaweedFS S3", self._s3_answers, 120, self.component)

    def _s3_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=5) as resp:
                return resp.status < 500
        except urllib.error.HTTPError as err:
            return err.code < 500  # 403 without credentials: it is up

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()

    def to_state(self) -> dict[str, object]:
        assert self.component is not None
        return {
            "endpoint": self.endpoint,
            "components": [{"name": "seaweedfs", "pid": self.component.pid, "log": str(self.component.log)}],
        }


@dataclass
class Registry:
    """An OCI registry on loopback (crane's, ``crane registry serve``; blobs on disk): where
    ``make images REGISTRY=...`` pushes in the tests, and what the real node pulls from (``node.REGISTRY_PORT``)."""

    workdir: Path
    component: Component | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        (self.workdir / "blobs").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.component = Component(
            "registry",
            [binary("crane"), "registry", "serve", f"--address={self.address}", f"--disk={self.workdir / 'blobs'}"],
            self.workdir / "registry.log",
        )
        self.component.start()
        wait_until("the registry", lambda: _http_ok(f"http://{self.address}/v2/"), 30, self.component)

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()


@contextlib.contextmanager
def running(workdir: Path | None = None) -> Iterator[tuple[ControlPlane, ObjectStore]]:
    """Both parts of the test bed, stopped on exit whatever happened inside."""
    base = workdir or Path(tempfile.mkdtemp(prefix="slipway-testbed-"))
    plane, store = ControlPlane(base / "k8s"), ObjectStore(base / "s3")
    try:
        plane.start()
        store.start()
        yield plane, store
    finally:
        store.stop()
        plane.stop()


# ---------------------------------------------------------------------------------------------
# make cluster / make cluster-down
# ---------------------------------------------------------------------------------------------


def up(workdir: Path) -> None:
    state_file = workdir / "state.json"
    if state_file.exists():
        down(workdir, quiet=True)
    shutil.rmtree(workdir, ignore_errors=True)
    from node import S3_PORT, RealNode, node_namespace_annotations

    plane, store = ControlPlane(workdir / "k8s"), ObjectStore(workdir / "s3")
    node = RealNode(plane, workdir / "node")
    try:
        plane.start()
        store.start()
        node.s3_port = store.port
        node.start()
    except BaseException:
        node.stop()
        store.stop()
        plane.stop()
        raise
    state = {"controlPlane": plane.to_state(), "objectStore": store.to_state(), "realNode": node.to_state()}
    state_file.write_text(json.dumps(state, indent=2))
    annotations = " ".join(f"{k}='{v}'" for k, v in node_namespace_annotations().items())
    print(
        textwrap.dedent(
            f"""\
            Test control plane is up (logs in {plane.logs}).
              export KUBECONFIG={plane.kubeconfig}
              kubectl: {BIN / "kubectl"}
              helm:    {BIN / "helm"}
              S3:      {store.endpoint} (key {store.access_key}, secret in {store.workdir / "s3.json"});
                       from pods: http://{NODE_NETWORK_GATEWAY}:{S3_PORT}
            Real node {node.name} runs containers (logs in {node.logs}); it is tainted, so pods go there from
            a namespace annotated to send them:
              kubectl annotate namespace NAME {annotations}
            Stop it with `make cluster-down`.
            """
        )
    )


def down(workdir: Path, quiet: bool = False) -> None:
    state_file = workdir / "state.json"
    if not state_file.exists():
        if not quiet:
            print(f"no test bed is running from {workdir}")
        return
    state = json.loads(state_file.read_text())
    if "realNode" in state:
        from node import stop_from_state

        stop_from_state(state["realNode"])
    components = state["objectStore"]["components"] + list(reversed(state["controlPlane"]["components"]))
    for c in components:
        Component(c["name"], [], Path(c["log"]), pid=c["pid"]).stop()
    state_file.unlink()
    if not quiet:
        print(f"stopped {', '.join(c['name'] for c in components)}")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped `make cluster` still tears down
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="working folder (default: .testbed/)")
    args = parser.parse_args(argv)
    try:
        (up if args.command == "up" else down)(args.dir.resolve())
    except TestbedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
