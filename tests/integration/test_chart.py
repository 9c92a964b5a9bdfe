"""The Helm chart (charts/slipway) on the real control plane: lint and render for the stated Kubernetes version,
every object accepted by the API server, the CRDs the same as crds/, least-privilege RBAC per watched namespace,
and the operator reconciling an example with nothing but the chart's ServiceAccount token.

The operator pod the chart installs lands on a KWOK node, which marks it Running without running anything; the
operator itself runs in this process (KopfRunner) with a kubeconfig holding that ServiceAccount's token."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testbed
import yaml
from kopf.testing import KopfRunner

from slipway_operator.builders import GpuPool
from slipway_operator.controllers.common import Settings

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "slipway"
EXAMPLES = REPO / "examples"
RELEASE = "slipway"
SA = "slipway"  # the release's full name: the release is called like the chart
OPTIONAL_ON = [
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.podMonitor.enabled=true",
    "--set",
    "grafanaDashboard.enabled=true",
    "--set",
    "networkPolicy.enabled=true",
    "--set",
    "store.existingSecret=slipway-store",
]


def stated_kube_version() -> str:
    """The oldest version Chart.yaml's kubeVersion admits, e.g. ">=1.29.0-0" -> "1.29.0"."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    found = re.fullmatch(r">=\s*v?(\d+\.\d+\.\d+)(-0)?", chart["kubeVersion"].strip())
    assert found, f"kubeVersion {chart['kubeVersion']!r} should be a plain lower bound"
    return found.group(1)


def helm(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    config = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    return subprocess.run([testbed.binary("helm"), *config, *args], capture_output=True, text=True, timeout=180)


def render(*values: str, namespace: str = "slipway-system", crds: bool = False) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "-n", namespace, "--kube-version", stated_kube_version(), *values]
    result = helm(*args, *(["--include-crds"] if crds else []))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def rbac_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io/")]


def token_kubeconfig(plane: testbed.ControlPlane, namespace: str, path: Path) -> Path:
    """A kubeconfig for the chart's ServiceAccount: a real token signed by the API server."""
    token = plane.kubectl("create", "token", SA, "-n", namespace, "--duration=1h").strip()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "testbed",
                        "cluster": {"server": plane.server, "certificate-authority": str(plane.pki / "ca.crt")},
                    }
                ],
                "users": [{"name": SA, "user": {"token": token}}],
                "contexts": [{"name": SA, "context": {"cluster": "testbed", "user": SA}}],
                "current-context": SA,
            }
        )
    )
    return path


# --- rendering --------------------------------------------------------------------------------------------------


def test_the_charts_crds_are_the_generated_crds() -> None:
    generated = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert sorted(shipped) == sorted(generated), "charts/slipway/crds/ differs from crds/: run `make crds`"
    for name, content in generated.items():
        assert shipped[name] == content, f"charts/slipway/crds/{name} is out of date: run `make crds`"


def test_helm_lint_passes_with_the_defaults_and_every_option() -> None:
    for values in ([], OPTIONAL_ON, ["--set", "watchNamespaces=all"], ["--set", "watchNamespaces={a,b}"]):
        result = helm("lint", "--strict", str(CHART), "--kube-version", stated_kube_version(), *values)
        assert result.returncode == 0, result.stdout + result.stderr


def test_helm_template_renders_without_a_kube_version_like_an_official_helm() -> None:
    # An official helm build assumes the Kubernetes version of the client-go it was built with; the test bed's
    # helm is stamped the same way, so a user's `helm template charts/slipway` is what this renders.
    result = helm("template", RELEASE, str(CHART))
    assert result.returncode == 0, result.stderr
    assert any(doc["kind"] == "Deployment" for doc in yaml.safe_load_all(result.stdout) if doc)


def test_the_stated_kube_version_is_enforced() -> None:
    render()  # the stated version renders
    older = helm("template", RELEASE, str(CHART), "--kube-version", "1.28.9")
    assert older.returncode != 0 and "kubeVersion" in older.stderr


def test_the_operator_deployment() -> None:
    docs = render("--set", "store.existingSecret=slipway-store", "--set", "store.uri=s3://ml-artifacts")
    (deployment,) = of_kind(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # no leader election
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == SA and pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["command"] == ["slipway", "operator"]
    assert container["args"] == ["--log-format", "json", "--namespace", "slipway-system"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SLIPWAY_STORE"] == "s3://ml-artifacts"
    assert env["SLIPWAY_IMAGE"] == "ghcr.io/slipway/trainer:0.1.0"
    assert env["SLIPWAY_STORAGE_SECRET"] == "slipway-store"
    assert env["SLIPWAY_METRICS_ADDRESS"] == "0.0.0.0:8080"
    assert container["envFrom"] == [{"secretRef": {"name": "slipway-store"}}]  # the name only, never a value
    assert "MLFLOW_TRACKING_URI" not in env and "SLIPWAY_TRACKING_SECRET" not in env  # tracking is off by default
    tracked = render("--set", "tracking.uri=http://mlflow.mlflow:5000", "--set", "tracking.existingSecret=mlflow")
    (container,) = of_kind(tracked, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow:5000" and env["SLIPWAY_TRACKING_SECRET"] == "mlflow"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["MLFLOW_TRACKING_TOKEN"] == {"name": "mlflow", "key": "MLFLOW_TRACKING_TOKEN", "optional": True}
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    (service,) = of_kind(docs, "Service")
    assert service["spec"]["ports"][0]["port"] == 8080 and service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    # off by default
    assert not of_kind(docs, "ServiceMonitor") and not of_kind(docs, "NetworkPolicy")
    assert not of_kind(docs, "ConfigMap")
    # without a Secret, no credentials reach the pod
    (plain,) = of_kind(render(), "Deployment")
    plain_container = plain["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in plain_container
    assert "SLIPWAY_STORAGE_SECRET" not in {e["name"] for e in plain_container["env"]}


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (deployment,) = of_kind(docs, "Deployment")
    return {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_operator_reads_the_charts_images_gpu_pool_and_file_uri_values(tmp_path: Path) -> None:
    """The values reach the operator pod's environment in the form the operator's own parser reads."""
    defaults = Settings.from_env(operator_env(render()))
    assert defaults.image == "ghcr.io/slipway/trainer:0.1.0" and defaults.server_image == "ghcr.io/slipway/server:0.1.0"
    assert defaults.gpu.resource == GpuPool().resource and not defaults.gpu.node_selector
    assert defaults.gpu.place({}, []) == GpuPool().place({}, []) and defaults.allow_file_uris is False
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "serverImage": {"digest": "sha256:" + "ab" * 32},
                "operator": {"allowFileUris": True},
                "gpu": {
                    "resourceName": "amd.com/gpu",
                    "nodeSelector": {"pool": "mi300x", "amd.com/gpu.family": "MI300"},
                    "tolerations": [
                        {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"},
                    ],
                },
            }
        )
    )
    settings = Settings.from_env(operator_env(render("-f", str(values))))
    assert settings.server_image == "ghcr.io/slipway/server@sha256:" + "ab" * 32
    assert settings.allow_file_uris is True
    assert settings.gpu.resource == "amd.com/gpu"
    assert dict(settings.gpu.node_selector) == {"pool": "mi300x", "amd.com/gpu.family": "MI300"}
    assert [t["key"] for t in settings.gpu.tolerations] == ["amd.com/gpu", "dedicated"]
    # No server image: every model is served from the trainer image.
    plain = Settings.from_env(operator_env(render("--set", "serverImage.repository=")))
    assert plain.serving_image("onnx") == "ghcr.io/slipway/trainer:0.1.0"


def test_the_optional_monitoring_objects() -> None:
    docs = render(*OPTIONAL_ON)
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (pods,) = of_kind(docs, "PodMonitor")
    assert pods["spec"]["namespaceSelector"] == {"matchNames": ["slipway-system"]}
    (dashboard,) = of_kind(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dashboard["data"]["slipway.json"])
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    for metric in (
        "slipway_operator_reconciles_total",
        "slipway_operator_reconcile_seconds_bucket",
        "slipway_operator_resources",
        "slipway_operator_events_total",
        "slipway_inference_requests_total",
        "slipway_inference_request_seconds_bucket",
        "slipway_drift_score",
    ):
        assert metric in exprs, metric
    (policy,) = of_kind(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]


def test_notes_say_to_install_kuberay_first_and_print_no_credentials(control_plane: testbed.ControlPlane) -> None:
    result = helm(
        "install", RELEASE, str(CHART), "--dry-run=server", "-n", "ml", "--set", "store.existingSecret=slipway-store",
        kubeconfig=control_plane.kubeconfig,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "helm repo add kuberay https://ray-project.github.io/kuberay-helm/" in notes
    assert "helm install kuberay-operator kuberay/kuberay-operator" in notes
    assert "kubectl get slipway -n ml" in notes
    assert "AWS_" not in notes and "secretKey" not in notes


def test_rbac_has_no_wildcards() -> None:
    for values in ([], ["--set", "watchNamespaces=all"], ["--set", "watchNamespaces={a,b}"], OPTIONAL_ON):
        docs = rbac_docs(render(*values))
        assert docs
        assert "*" not in yaml.safe_dump_all(docs)
        for doc in docs:
            for rule in doc.get("rules", []):
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


def test_watch_namespaces_gives_one_role_per_namespace_and_no_broad_cluster_role() -> None:
    docs = render("--set", "watchNamespaces={a,b}")
    roles, bindings = of_kind(docs, "Role"), of_kind(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": "slipway-system"}]
    # Nothing cluster-scoped: Kopf finds the resources, and the operator KubeRay's RayJob, by API discovery
    assert of_kind(docs, "ClusterRole") == [] and of_kind(docs, "ClusterRoleBinding") == []
    (deployment,) = of_kind(docs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["--log-format", "json", "--namespace", "a", "--namespace", "b"]


def test_all_namespaces_is_a_cluster_role() -> None:
    for values in (["--set", "watchNamespaces=all"], ["--set-json", "watchNamespaces=[]"]):
        docs = render(*values)
        assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")
        names = sorted(r["metadata"]["name"] for r in of_kind(docs, "ClusterRole"))
        assert names == ["slipway-system-slipway"]
        assert len(of_kind(docs, "ClusterRoleBinding")) == 1
        (deployment,) = of_kind(docs, "Deployment")
        assert "--namespace" not in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


# --- on the control plane -----------------------------------------------------------------------------------------


def test_every_rendered_object_is_accepted_by_the_api_server(
    slipway_crds: testbed.ControlPlane, namespace: str
) -> None:
    plane = slipway_crds
    served = set(plane.kubectl("api-resources", "-o", "name").split())
    docs = render(*OPTIONAL_ON, "--set", f"watchNamespaces={{{namespace}}}", namespace=namespace, crds=True)
    skipped = []
    for doc in docs:
        if doc["apiVersion"] == "monitoring.coreos.com/v1" and f"{doc['kind'].lower()}s.monitoring.coreos.com" not in (
            served
        ):
            skipped.append(doc["kind"])  # the Prometheus Operator's CRDs are not installed here
            continue
        plane.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(doc))
    assert sorted(skipped) == ["PodMonitor", "ServiceMonitor"]
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", "Service", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    assert {"ConfigMap", "NetworkPolicy"} <= kinds and "ClusterRole" not in kinds  # nothing cluster-scoped
    # watchNamespaces: all makes the namespaced rules a ClusterRole and its binding: accepted too
    cluster_wide = [d for d in render("--set", "watchNamespaces=all") if d["kind"].startswith("ClusterRole")]
    assert sorted(d["kind"] for d in cluster_wide) == ["ClusterRole", "ClusterRoleBinding"]
    for doc in cluster_wide:
        plane.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(doc))


@contextlib.contextmanager
def installed(plane: testbed.ControlPlane, tmp: Path, *values: str) -> Iterator[tuple[str, Path]]:
    """The chart installed into a namespace of its own that enforces the restricted Pod Security Standard:
    (the namespace, a kubeconfig holding the chart's ServiceAccount token)."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    plane.kubectl("create", "namespace", namespace)
    # The restricted Pod Security Standard, enforced: a non-compliant operator pod would never be created.
    plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    result = helm(
        "install", RELEASE, str(CHART), "-n", namespace, "--wait", "--timeout", "120s",
        "--set", "image.tag=test", "--set", "workloadImage.tag=test", *values,
        kubeconfig=plane.kubeconfig,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    try:
        yield namespace, token_kubeconfig(plane, namespace, tmp / "kubeconfig")
    finally:
        uninstall = helm("uninstall", RELEASE, "-n", namespace, "--wait", kubeconfig=plane.kubeconfig)
        plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        assert uninstall.returncode == 0, uninstall.stderr


@pytest.fixture(scope="module")
def release(
    slipway_crds: testbed.ControlPlane, kuberay_crds: testbed.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The chart with its defaults: it watches its own namespace."""
    with installed(slipway_crds, tmp_path_factory.mktemp("sa")) as found:
        yield found


def test_helm_install_runs_the_operator_pod(slipway_crds: testbed.ControlPlane, release: tuple[str, Path]) -> None:
    plane, (namespace, _) = slipway_crds, release
    deployment = json.loads(plane.kubectl("get", "deployment", SA, "-n", namespace, "-o", "json"))
    assert deployment["status"]["readyReplicas"] == 1
    pods = json.loads(plane.kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"]  # on a KWOK node: shown Running, nothing runs
    assert pods[0]["spec"]["serviceAccountName"] == SA
    # The CRDs the chart carries are installed (Helm leaves existing ones as they are).
    assert plane.kubectl("get", "crd", "trainingruns.slipway.dev", "-o", "name").strip()


def reconcile_example(
    plane: testbed.ControlPlane,
    kubeconfig: Path,
    namespace: str,
    scope: list[str],
    store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator, with nothing but the chart's ServiceAccount token and watching `scope`, takes the auto-mpg
    journey applied to `namespace` as far as it goes without Ray: no refusal anywhere in its log."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("SLIPWAY_BACKEND", "kubernetes")
    monkeypatch.setenv("SLIPWAY_STORE", store.as_uri())
    monkeypatch.setenv("SLIPWAY_IMAGE", "slipway/trainer:test")
    monkeypatch.delenv("SLIPWAY_METRICS_ADDRESS", raising=False)
    monkeypatch.delenv("SLIPWAY_STORAGE_SECRET", raising=False)

    def phase(kind: str, name: str) -> str:
        out = plane.kubectl("get", kind, name, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False)
        return out.strip()

    with KopfRunner(["run", "--standalone", *scope, "-m", "slipway_operator.handlers"]) as runner:
        # The whole journey: its ModelDeployment waits for a model, so no server pod is started (and none proxied).
        plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "auto-mpg"))
        testbed.wait_until(
            "the RayJob mpg-prep",
            lambda: plane.kubectl("get", "rayjob", "mpg-prep", "-n", namespace, check=False) != "",
            60,
        )
        testbed.wait_until("the DatasetPrep's phase", lambda: phase("datasetprep", "mpg") == "Pending", 60)
        testbed.wait_until(
            "every example's phase",
            lambda: all(
                phase(k, n) for k, n in [("trainingrun", "mpg-mlp"), ("tuningsweep", "mpg-sweep"), ("md", "mpg")]
            ),
            60,
        )
        testbed.wait_until(
            "the operator's Events",
            lambda: "Pending" in plane.kubectl("get", "events", "-n", namespace, "--field-selector", "reason=Pending"),
            30,
        )
    output = runner.output
    assert runner.exit_code == 0, output[-3000:]
    assert "Traceback" not in output, output[-5000:]
    # Log timestamps (",403" milliseconds) are not status codes: look at the messages only.
    messages = re.sub(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]", "", output)
    for refused in ("Forbidden", "forbidden", "403", "Not enough permissions"):
        assert refused not in messages, output[-5000:]
    ray_job = json.loads(plane.kubectl("get", "rayjob", "mpg-prep", "-n", namespace, "-o", "json"))
    assert ray_job["metadata"]["ownerReferences"][0]["kind"] == "DatasetPrep"
    assert phase("trainingrun", "mpg-mlp") == "Waiting"


def test_the_operator_reconciles_an_example_with_the_charts_service_account_only(
    slipway_crds: testbed.ControlPlane,
    release: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace, kubeconfig = release
    reconcile_example(slipway_crds, kubeconfig, namespace, ["--namespace", namespace], tmp_path / "store", monkeypatch)


def can_i(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        [testbed.binary("kubectl"), "--kubeconfig", str(kubeconfig), "auth", "can-i", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout.strip()


def test_cluster_wide_the_operator_reconciles_in_any_namespace_and_still_reads_no_secret(
    slipway_crds: testbed.ControlPlane,
    kuberay_crds: testbed.ControlPlane,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`watchNamespaces: all`: a ClusterRole instead of Roles, the operator watching every namespace; an example
    applied to a namespace the chart never named is reconciled."""
    with installed(slipway_crds, tmp_path, "--set", "watchNamespaces=all") as (release_namespace, kubeconfig):
        deployment = json.loads(slipway_crds.kubectl("get", "deployment", SA, "-n", release_namespace, "-o", "json"))
        assert "--namespace" not in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        reconcile_example(slipway_crds, kubeconfig, namespace, ["--all-namespaces"], tmp_path / "store", monkeypatch)
        for args in (
            ("list", "trainingruns.slipway.dev", "--all-namespaces"),
            ("create", "rayjobs.ray.io", "-n", namespace),
            ("get", "pods", "--subresource=proxy", "-n", namespace),
        ):
            assert can_i(kubeconfig, *args) == "yes", args
        for args in (
            ("get", "secrets", "-n", namespace),
            ("list", "secrets", "--all-namespaces"),
            ("create", "pods", "-n", namespace),
            ("list", "namespaces"),
            ("list", "customresourcedefinitions.apiextensions.k8s.io"),
            ("create", "clusterroles.rbac.authorization.k8s.io"),
            ("*", "*"),
        ):
            assert can_i(kubeconfig, *args) == "no", args


def test_the_service_account_may_do_no_more_than_it_needs(
    slipway_crds: testbed.ControlPlane, release: tuple[str, Path], namespace: str
) -> None:
    watched, kubeconfig = release
    other = namespace  # a namespace the release does not watch

    allowed = [
        ("list", "trainingruns.slipway.dev", "-n", watched),
        ("watch", "modeldeployments.slipway.dev", "-n", watched),
        ("patch", "datasetpreps.slipway.dev", "--subresource=status", "-n", watched),
        ("create", "rayjobs.ray.io", "-n", watched),
        ("watch", "rayjobs.ray.io", "-n", watched),  # observed through a watch, not a GET per tick
        ("list", "deployments.apps", "-n", watched),
        ("watch", "horizontalpodautoscalers.autoscaling", "-n", watched),
        ("patch", "deployments.apps", "-n", watched),
        ("delete", "deployments.apps", "-n", watched),
        ("create", "events", "-n", watched),
        ("list", "pods", "-n", watched),
        ("watch", "pods", "-n", watched),
        ("get", "pods", "--subresource=proxy", "-n", watched),
        ("create", "trainingruns.slipway.dev", "-n", watched),  # autoUpdate.retrain
        ("delete", "tuningsweeps.slipway.dev", "-n", watched),
    ]
    for args in allowed:
        assert can_i(kubeconfig, *args) == "yes", args
    refused = [
        ("get", "secrets", "-n", watched),
        ("list", "secrets", "-n", watched),
        ("create", "pods", "-n", watched),
        ("delete", "pods", "-n", watched),
        ("create", "pods", "--subresource=exec", "-n", watched),
        ("get", "pods", "-n", watched),
        ("update", "trainingruns.slipway.dev", "-n", watched),
        ("create", "datasetpreps.slipway.dev", "-n", watched),
        ("delete", "modeldeployments.slipway.dev", "-n", watched),
        ("create", "serviceaccounts", "--subresource=token", "-n", watched),
        ("create", "roles.rbac.authorization.k8s.io", "-n", watched),
        ("get", "deployments.apps", "-n", other),
        ("create", "rayjobs.ray.io", "-n", other),
        ("list", "trainingruns.slipway.dev", "-n", other),
        ("get", "pods", "--subresource=proxy", "-n", other),
        ("list", "trainingruns.slipway.dev", "--all-namespaces"),
        ("get", "customresourcedefinitions.apiextensions.k8s.io/trainingruns.slipway.dev"),
        ("get", "customresourcedefinitions.apiextensions.k8s.io/rayjobs.ray.io"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
        ("list", "namespaces"),
        ("watch", "namespaces"),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("*", "*"),
        ("*", "*", "-n", watched),
    ]
    for args in refused:
        assert can_i(kubeconfig, *args) == "no", args
    listing = subprocess.run(
        [testbed.binary("kubectl"), "--kubeconfig", str(kubeconfig), "auth", "can-i", "--list", "-n", watched],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    resource_rows = [line for line in listing.splitlines()[1:] if not line.lstrip().startswith("[")]
    assert not any("*" in line for line in resource_rows), listing
