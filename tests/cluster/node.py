"""The test bed's real node: containerd, runc, a kubelet, CNI, kube-proxy and CoreDNS in namespaces of its own.

KWOK's nodes prove scheduling; this one runs containers. Everything it changes stays inside a mount and a
network namespace that the test bed makes (``node-init.sh``) and in a cgroup tree of its own:

- the network: a bridge ``cni0`` at ``NODE_IP`` (the node's address, the pods' gateway), pods on
  ``POD_CIDR`` from the CNI bridge plugin, Services by kube-proxy's nftables rules, names by CoreDNS at the
  node's address. No route leaves the namespace. ``nodeproxy.py`` carries the kubelet's, kube-proxy's,
  CoreDNS's and the pods' connections to the API server and to the S3 store on the host's loopback, and the
  API server's connections to the kubelet and to pods (its egress selector) the other way;
- the filesystem: tmpfs over ``/run`` and this node's folder over ``/var/lib`` and ``/var/log``, files bound
  over the kernel settings the kubelet checks, all in the private mount namespace;
- processes: every component joins ``/<cgroup root>/system`` in each cgroup hierarchy and the kubelet puts
  pods under ``/<cgroup root>/kubepods``, so stopping kills everything under that root and removes it.

The node registers tainted ``slipway.dev/real-node=true:NoSchedule`` and labelled ``slipway.dev/node=real``:
nothing lands on it by accident. ``RealNode.namespace()`` makes a namespace whose pods all go there (the
``PodNodeSelector`` and ``PodTolerationRestriction`` admission plugins, from annotations on the namespace).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from common import (
    NODE_NETWORK_GATEWAY,
    SERVICE_CIDR,
    CertificateAuthority,
    Component,
    TestbedError,
    binary,
    kubeconfig_text,
    kuberay_argv,
    wait_until,
)
from images import busybox_archive, pause_archive
from nodenet import NodeNet

if TYPE_CHECKING:
    from testbed import ControlPlane

HERE = Path(__file__).resolve().parent

NODE_IP = NODE_NETWORK_GATEWAY
POD_CIDR = "10.88.0.0/16"
S3_PORT = 9000  # pods reach the test bed's S3 store at http://NODE_IP:S3_PORT, whatever its host port
REGISTRY_PORT = 5000  # and the node's containerd pulls from the test bed's registry as NODE_IP:REGISTRY_PORT
NODE_LABEL = ("slipway.dev/node", "real")
NODE_TAINT = {"key": "slipway.dev/real-node", "value": "true", "effect": "NoSchedule"}
CLUSTER_DOMAIN = "cluster.local"
KUBERAY_METRICS_PORT, KUBERAY_PROBE_PORT = 18080, 18081  # loopback of the node's network
METRICS_SERVER_PORT = 4443  # metrics-server's HTTPS, at NODE_IP
METRICS_API = "v1beta1.metrics.k8s.io"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_FS = Path("/sys/fs/cgroup")


def node_namespace_annotations() -> dict[str, str]:
    """Annotations that send every pod of a namespace to the real node (and only there)."""
    toleration = {"key": NODE_TAINT["key"], "operator": "Exists", "effect": NODE_TAINT["effect"]}
    return {
        "scheduler.alpha.kubernetes.io/node-selector": f"{NODE_LABEL[0]}={NODE_LABEL[1]}",
        "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps([toleration]),
    }


# ---------------------------------------------------------------------------------------------
# Cgroups: one tree per node, in every hierarchy
# ---------------------------------------------------------------------------------------------


def cgroup_hierarchies() -> list[Path]:
    """Mount points of the cgroup hierarchies (v1 controllers, named ones, and the unified one if mounted)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(left.split()[4]))
    return sorted(found)


def _subdirs(top: Path, deepest_first: bool = False) -> list[Path]:
    """``top`` and every directory under it. A cgroup can vanish while it is walked (its last process exits,
    runc or the kubelet removes it): ``os.walk`` skips what it can no longer list, where ``Path.rglob`` raises."""
    return [Path(d) for d, _, _ in os.walk(top, topdown=not deepest_first)]


@dataclass
class CgroupTree:
    root: str  # e.g. "slipway-node-1a2b3c4d", directly under each hierarchy's top

    def dirs(self) -> list[Path]:
        return [h / self.root for h in cgroup_hierarchies()]

    def create(self) -> None:
        for top in self.dirs():
            for d in (top, top / "system"):
                d.mkdir(exist_ok=True)
                if (d.parent / "cpuset.cpus").exists():  # a cpuset cgroup takes no process until it has CPUs
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        (d / knob).write_text((d.parent / knob).read_text())

    def pids(self) -> set[int]:
        pids: set[int] = set()
        for top in self.dirs():
            if not top.exists():
                continue
            for d in _subdirs(top):
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return pids

    def kill_all(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        if self.pids():
            raise RuntimeError(f"processes left in cgroup {self.root}: {sorted(self.pids())}")

    def remove(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for top in self.dirs():
            if not top.exists():
                continue
            for d in _subdirs(top, deepest_first=True):
                while True:
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:  # busy for a moment after its last process died
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------------


@dataclass
class RealNode:
    """A real node registered with ``plane`` (a ``testbed.ControlPlane``).

    ``s3_port``: the host port of the S3 store, forwarded to ``NODE_IP:S3_PORT`` so pods reach it.
    ``registry_port``: the host port of a registry, forwarded to ``NODE_IP:REGISTRY_PORT``, which containerd
    pulls from over plain HTTP (images ``10.88.0.1:5000/<repository>:<tag>``).
    ``egress``: whether the API server's egress selector comes to this node (one node per control plane).
    """

    plane: ControlPlane
    workdir: Path
    name: str = "slipway-node-0"
    s3_port: int | None = None
    registry_port: int | None = None
    egress: bool = True
    cgroups: CgroupTree = field(default_factory=lambda: CgroupTree(f"slipway-node-{uuid.uuid4().hex[:8]}"))
    holder: subprocess.Popen[bytes] | None = None
    components: list[Component] = field(default_factory=list)
    net: NodeNet | None = None

    # -- paths ---------------------------------------------------------------------------------

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def pod_logs(self) -> Path:
        return self.workdir / "var-log" / "pods"

    def netns_path(self) -> str:
        assert self.holder is not None
        return f"/proc/{self.holder.pid}/ns/net"

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        plane = self.plane
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        (self.workdir / "resolv.conf").write_text(f"nameserver {NODE_IP}\nsearch {CLUSTER_DOMAIN}\noptions ndots:5\n")
        self.cgroups.create()
        try:
            self._start_namespaces()
            self._start_proxy(plane)
            self._start_containerd()
            self._import_images([pause_archive(), busybox_archive()])
            self._start_coredns(plane)
            self._start_kubelet(plane)
            self._start_kube_proxy(plane)
            self._wait_ready(plane)
            if self.egress:
                self._start_metrics_server(plane)
        except BaseException:
            self.stop()
            raise

    def _component(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, inside: bool = True
    ) -> Component:
        assert self.holder is not None
        prefix = [str(HERE / "in-cgroup.sh"), self.cgroups.root]
        if inside:
            prefix += ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--"]
        component = Component(name, prefix + argv, self.logs / f"{name}.log")
        component.start(env={"PATH": PATH, **(env or {})})
        self.components.append(component)
        return component

    def _start_namespaces(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        ready = self.workdir / "ready"
        ready.unlink(missing_ok=True)
        with (self.logs / "node-init.log").open("ab") as log:
            self.holder = subprocess.Popen(
                [
                    str(HERE / "in-cgroup.sh"),
                    self.cgroups.root,
                    "unshare",
                    "--mount",
                    "--net",
                    "--propagation",
                    "private",
                    "--",
                    str(HERE / "node-init.sh"),
                    str(self.workdir),
                    f"{NODE_IP}/16",
                    self._service_cidr(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait("the node's namespaces", ready.exists, 30, log=self.logs / "node-init.log")
        self.net = NodeNet(self.netns_path())

    def _service_cidr(self) -> str:
        return SERVICE_CIDR

    def _start_proxy(self, plane: ControlPlane) -> None:
        argv = [
            sys.executable,
            str(HERE / "nodeproxy.py"),
            f"--netns={self.netns_path()}",
            f"--forward={NODE_IP}:{plane.api_port}=127.0.0.1:{plane.api_port}",
        ]
        if self.s3_port:
            argv.append(f"--forward={NODE_IP}:{S3_PORT}=127.0.0.1:{self.s3_port}")
        if self.registry_port:
            argv.append(f"--forward={NODE_IP}:{REGISTRY_PORT}=127.0.0.1:{self.registry_port}")
        if self.egress:
            argv += [f"--egress={plane.egress_socket}", f"--allow={POD_CIDR}", f"--allow={self._service_cidr()}"]
        proxy = self._component("nodeproxy", argv, inside=False)
        self._wait("nodeproxy", lambda: "nodeproxy ready" in proxy.tail(5), 30, proxy)

    def _start_containerd(self) -> None:
        state = self.workdir / "containerd"
        config = self.workdir / "containerd.toml"
        config.write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{state / "root"}"',
                    'state = "/run/containerd"',
                    'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
                    ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",'
                    ' "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
                    "[grpc]",
                    f'  address = "{self.containerd_socket}"',
                    '[plugins."io.containerd.grpc.v1.cri"]',
                    '  sandbox_image = "registry.k8s.io/pause:3.10"',
                    # runc here cannot lower oom_score_adj (no CAP_SYS_RESOURCE): keep it at or above the parent's.
                    "  restrict_oom_score_adj = true",
                    "  enable_cdi = false",
                    '[plugins."io.containerd.grpc.v1.cri".containerd]',
                    '  snapshotter = "overlayfs"',
                    '  default_runtime_name = "runc"',
                    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
                    '  runtime_type = "io.containerd.runc.v2"',
                    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
                    "  SystemdCgroup = false",
                    '[plugins."io.containerd.grpc.v1.cri".cni]',
                    f'  bin_dir = "{HERE / "bin" / "cni"}"',
                    f'  conf_dir = "{self.workdir / "cni"}"',
                    '[plugins."io.containerd.grpc.v1.cri".registry]',
                    f'  config_path = "{self.workdir / "certs.d"}"',
                ]
            )
            + "\n"
        )
        self._write_registry_hosts()
        self._write_cni_config()
        containerd = self._component("containerd", ["containerd", f"--config={config}", "--log-level=warn"])
        self._wait("containerd's socket", self.containerd_socket.exists, 30, containerd)
        self._wait("containerd", lambda: self.ctr("version", check=False).returncode == 0, 30, containerd)

    def _write_registry_hosts(self) -> None:
        """containerd's hosts file for the test bed's registry: plain HTTP, pull only."""
        registry = f"{NODE_IP}:{REGISTRY_PORT}"
        hosts = self.workdir / "certs.d" / registry / "hosts.toml"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(
            f'server = "http://{registry}"\n[host."http://{registry}"]\n  capabilities = ["pull", "resolve"]\n'
        )

    def _write_cni_config(self) -> None:
        (self.workdir / "cni").mkdir(exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "slipway-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                }
            ],
        }
        (self.workdir / "cni" / "10-slipway.conflist").write_text(json.dumps(conflist, indent=2))

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed:\n{result.stderr}")
        return result

    def _import_images(self, archives: list[Path]) -> None:
        for archive in archives:
            self.ctr("images", "import", "--no-unpack=false", str(archive))

    def import_image(self, archive: Path) -> None:
        self._import_images([archive])

    def _start_coredns(self, plane: ControlPlane) -> None:
        corefile = self.workdir / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {NODE_IP}
    errors
    ready 127.0.0.1:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.workdir / "coredns.kubeconfig"} testbed
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""
        )
        self._component("coredns", [str(HERE / "bin" / "coredns"), "-conf", str(corefile)])

    def _start_kubelet(self, plane: ControlPlane) -> None:
        pki = self.workdir / "pki"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "tlsCertFile": str(pki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroups.root}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "protectKernelDefaults": True,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "clusterDNS": [NODE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": "/etc/resolv.conf",
            "registerWithTaints": [NODE_TAINT],
            "rotateCertificates": False,
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # The node's disk is the machine's, shared with everything else (a trainer image build dips it to a few
            # GB for a minute): 1% of a 250 GB disk called DiskPressure at 2.5 GB free, and under it the kubelet
            # removed every unused image, the pause image too (containerd 1.6 does not pin it), so no pod could start
            # again. Pressure only when the disk is really full.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "200Mi",
                "imagefs.available": "200Mi",
                "nodefs.inodesFree": "1%",
            },
            "nodeStatusReportFrequency": "10s",
            "runtimeRequestTimeout": "10m",
            "containerLogMaxSize": "10Mi",
            "maxPods": 110,
        }
        path = self.workdir / "kubelet.json"
        path.write_text(json.dumps(config, indent=2))
        self._component(
            "kubelet",
            [
                str(HERE / "bin" / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}",
                f"--hostname-override={self.name}",
                f"--node-ip={NODE_IP}",
                f"--node-labels={NODE_LABEL[0]}={NODE_LABEL[1]}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self, plane: ControlPlane) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "hostnameOverride": self.name,
            "clientConnection": {"kubeconfig": str(self.workdir / "kube-proxy.kubeconfig")},
            "clusterCIDR": POD_CIDR,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "nftables": {"masqueradeAll": True},
            # Leave the kernel's conntrack settings alone (some are not per namespace).
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
                "udpTimeout": "0s",
                "udpStreamTimeout": "0s",
            },
        }
        path = self.workdir / "kube-proxy.json"
        path.write_text(json.dumps(config, indent=2))
        self._component("kube-proxy", [str(HERE / "bin" / "kube-proxy"), f"--config={path}", "--v=1"])

    def start_kuberay(self, namespaces: list[str]) -> Component:
        """KubeRay's operator inside the node's namespaces, reconciling RayJobs in ``namespaces``.

        Inside, not on the host: KubeRay reads a RayJob's progress from its head's dashboard
        (``http://<head Service>.<ns>.svc.cluster.local:8265``), an address that exists only in the node's network
        and resolves only with its DNS, as on a real cluster where the operator is a pod. It reaches the API server
        through the node's forwarder, with a client certificate of its own.
        """
        pki = self.workdir / "pki"
        CertificateAuthority.load(self.plane.pki).issue(pki, "kuberay-operator", "kuberay-operator", ["system:masters"])
        config = self.workdir / "kuberay-operator.kubeconfig"
        config.write_text(kubeconfig_text(f"https://{NODE_IP}:{self.plane.api_port}", pki, "kuberay-operator"))
        argv = kuberay_argv(Path(binary("kuberay-operator")), config, KUBERAY_METRICS_PORT, KUBERAY_PROBE_PORT,
                            namespaces)  # fmt: skip
        # ENABLE_WEBHOOKS would need a serving certificate and a webhook configuration: off, as in KubeRay's chart.
        component = self._component("kuberay-operator", argv, env={"ENABLE_WEBHOOKS": "false"})
        assert self.net is not None
        net = self.net
        self._wait(
            "kuberay-operator /readyz",
            lambda: net.http_get("127.0.0.1", KUBERAY_PROBE_PORT, "/readyz")[0] == 200,
            60,
            component,
        )
        return component

    def _start_metrics_server(self, plane: ControlPlane) -> None:
        """metrics-server in the node's network, as its Deployment would run: it scrapes this node's kubelet
        (``/metrics/resource``, the containers' CPU and memory from their cgroups) every 10 s, and the API server
        reaches it through the aggregation layer (the APIService ``v1beta1.metrics.k8s.io`` in front of a Service
        whose endpoint is ``NODE_IP:METRICS_SERVER_PORT``, dialled through this node's egress proxy). That is what
        ``kubectl top`` and the HorizontalPodAutoscaler read. Only the real node is scraped: KWOK's have no kubelet."""
        pki = self.workdir / "pki"
        ca = CertificateAuthority.load(plane.pki)
        ca.issue(pki, "metrics-server-serving", "metrics-server", [],
                 server_sans=["metrics-server.kube-system.svc", NODE_IP])  # fmt: skip
        plane.kubectl("apply", "-f", "-", input=json.dumps(metrics_server_objects((pki / "ca.crt").read_bytes())))
        config = self.workdir / "metrics-server.kubeconfig"
        argv = [
            str(HERE / "bin" / "metrics-server"),
            *(f"--{flag}={config}" for flag in ("kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig")),
            f"--bind-address={NODE_IP}",
            f"--secure-port={METRICS_SERVER_PORT}",
            f"--tls-cert-file={pki / 'metrics-server-serving.crt'}",
            f"--tls-private-key-file={pki / 'metrics-server-serving.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--node-selector={NODE_LABEL[0]}={NODE_LABEL[1]}",
            "--metric-resolution=10s",
            "--kubelet-request-timeout=5s",
        ]
        component = self._component("metrics-server", argv)
        available = "jsonpath={.status.conditions[?(@.type=='Available')].status}"
        self._wait(
            f"APIService {METRICS_API} Available",
            lambda: plane.kubectl("get", "apiservice", METRICS_API, "-o", available, check=False) == "True",
            60,
            component,
        )

    def _wait_ready(self, plane: ControlPlane) -> None:
        kubelet = next(c for c in self.components if c.name == "kubelet")
        jsonpath = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
        self._wait(
            f"node {self.name} Ready",
            lambda: plane.kubectl("get", "node", self.name, "-o", jsonpath, check=False) == "True",
            120,
            kubelet,
        )
        coredns = next(c for c in self.components if c.name == "coredns")
        assert self.net is not None
        net = self.net
        self._wait("CoreDNS ready", lambda: net.http_get("127.0.0.1", 8181, "/ready")[0] == 200, 60, coredns)

    def _wait(
        self,
        what: str,
        check: Callable[[], bool],
        timeout: float,
        component: Component | None = None,
        log: Path | None = None,
    ) -> None:
        try:
            wait_until(what, check, timeout, component)
        except TestbedError as err:
            if log is not None and log.exists():
                raise TestbedError(f"{err}\n--- {log.name} ---\n{log.read_text()[-4000:]}") from None
            raise

    def stop(self) -> None:
        """Stops every component, kills whatever is left in the node's cgroups (containers, shims), removes
        the cgroups; the namespaces and their mounts go with their last process."""
        _stop(self.components, self.cgroups)
        if self.holder is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.holder.wait(timeout=10)
        if self.net is not None:
            self.net.close()
            self.net = None
        self.cgroups.remove()
        # the images and container layers (several GB once the trainer image is in); the logs stay
        shutil.rmtree(self.workdir / "containerd" / "root", ignore_errors=True)
        if self.plane.components:  # the control plane still runs
            self.plane.kubectl("delete", "node", self.name, "--ignore-not-found", "--wait=false", check=False)
            if self.egress:  # an unavailable aggregated API would fail every client's discovery
                self.plane.kubectl("delete", "apiservice", METRICS_API, "--ignore-not-found", check=False)

    def logs_summary(self, lines: int = 30) -> str:
        parts = [f"--- {c.name} ({c.log}) ---\n{c.tail(lines)}" for c in self.components]
        return "\n".join(parts)

    def to_state(self) -> dict[str, object]:
        return {
            "name": self.name,
            "cgroupRoot": self.cgroups.root,
            "holder": self.holder.pid if self.holder else None,
            "components": [{"name": c.name, "pid": c.pid, "log": str(c.log)} for c in self.components],
        }

    # -- certificates and kubeconfigs -----------------------------------------------------------

    def _write_pki(self) -> None:
        plane = self.plane
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        shutil.copy2(plane.pki / "ca.crt", pki / "ca.crt")
        issue = CertificateAuthority.load(plane.pki)
        issue.issue(pki, "kubelet", f"system:node:{self.name}", ["system:nodes"])
        issue.issue(pki, "kubelet-serving", self.name, [], server_sans=[self.name, NODE_IP])
        issue.issue(pki, "kube-proxy", "system:kube-proxy", [])
        issue.issue(pki, "coredns", "system:coredns", [])
        issue.issue(pki, "metrics-server", "system:metrics-server", [])
        server = f"https://{NODE_IP}:{plane.api_port}"
        for user in ("kubelet", "kube-proxy", "coredns", "metrics-server"):
            text = kubeconfig_text(server, pki, user)
            (self.workdir / f"{user}.kubeconfig").write_text(text)
        plane.kubectl("apply", "-f", "-", input=json.dumps(coredns_rbac()))


def stop_from_state(state: dict[str, object]) -> None:
    """Stops a node that another process started (``make cluster-down``), from its ``to_state()``."""
    components = [Component(c["name"], [], Path(c["log"]), pid=c["pid"]) for c in state["components"]]  # type: ignore[attr-defined]
    tree = CgroupTree(str(state["cgroupRoot"]))
    _stop(components, tree)
    tree.remove()


def _stop(components: list[Component], tree: CgroupTree) -> None:
    """The kubelet and the node's agents first (so nothing restarts containers), then everything left under the
    node's cgroups at once (containers, shims, containerd), then whatever did not exit."""
    for component in reversed(components):
        if component.name in ("kuberay-operator", "kubelet", "kube-proxy", "coredns"):
            component.stop(timeout=5)
    tree.kill_all()
    for component in components:
        component.stop(timeout=2)


RBAC = "rbac.authorization.k8s.io"


def user_access(
    user: str, role: str, rules: list[dict[str, object]], bindings: tuple[tuple[str, str, str], ...] = ()
) -> list[dict[str, object]]:
    """A ClusterRole `role` with `rules` bound to the certificate user `user`, and `user` bound to existing roles:
    `bindings` of (role kind, role name, namespace or "" for a ClusterRoleBinding)."""
    subject = [{"apiGroup": RBAC, "kind": "User", "name": user}]

    def bind(kind: str, name: str, namespace: str) -> dict[str, object]:
        meta = {"name": role if name == role else f"{role}:{name}", **({"namespace": namespace} if namespace else {})}
        return {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding" if namespace else "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": RBAC, "kind": kind, "name": name},
            "subjects": subject,
        }

    own = {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": {"name": role}, "rules": rules}
    return [own, bind("ClusterRole", role, ""), *(bind(kind, name, ns) for kind, name, ns in bindings)]


def coredns_rbac() -> dict[str, object]:
    """What CoreDNS's kubernetes plugin reads, for the user of its client certificate."""
    rules: list[dict[str, object]] = [
        {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    ]
    return {"apiVersion": "v1", "kind": "List", "items": user_access("system:coredns", "testbed:coredns", rules)}


def metrics_server_objects(ca_bundle: bytes) -> dict[str, object]:
    """metrics-server's RBAC (as its own manifests grant it), the selector-less Service and the Endpoints that
    point at it on the node, and the APIService, its serving certificate checked against the test bed's CA."""
    import base64

    rules: list[dict[str, object]] = [
        {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
    ]
    delegated = (("ClusterRole", "system:auth-delegator", ""),
                 ("Role", "extension-apiserver-authentication-reader", "kube-system"))  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            *user_access("system:metrics-server", "testbed:metrics-server", rules, delegated),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "metrics-server", "namespace": "kube-system"},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": METRICS_SERVER_PORT}]},
            },
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "metrics-server", "namespace": "kube-system"},
                "subsets": [
                    {"addresses": [{"ip": NODE_IP}], "ports": [{"name": "https", "port": METRICS_SERVER_PORT}]}
                ],
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": METRICS_API},
                "spec": {
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443},
                    "caBundle": base64.b64encode(ca_bundle).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        ],
    }
