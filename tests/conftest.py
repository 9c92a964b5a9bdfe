"""Session fixtures: the real test control plane and the real S3-compatible store.

Both start on first use (once per test session, on free loopback ports) and stop at the end of the
session whatever happened. When a test that used them fails, the tail of every component's log is
attached to the failure report. Nothing here skips: a missing binary is an error that says how to
build it.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "cluster"))

import buildkit
import mlflowserver
import release
import testbed
from node import RealNode, node_namespace_annotations

REPO = Path(__file__).resolve().parent.parent
# A local Ray started by a test (or a workload it runs) listens on loopback only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Operators and `slipway run` started by the tests fail on a status field their CRD lacks (else: dropped, logged)
os.environ.setdefault("SLIPWAY_STRICT_STATUS", "1")


@pytest.fixture(scope="session")
def testbed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("testbed")


@pytest.fixture(scope="session")
def control_plane(testbed_dir: Path, request: pytest.FixtureRequest) -> Iterator[testbed.ControlPlane]:
    plane = testbed.ControlPlane(testbed_dir / "k8s")
    request.config.stash[_PLANE] = plane
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def object_store(testbed_dir: Path, request: pytest.FixtureRequest) -> Iterator[testbed.ObjectStore]:
    store = testbed.ObjectStore(testbed_dir / "s3")
    request.config.stash[_STORE] = store
    try:
        store.start()
        yield store
    finally:
        store.stop()


@pytest.fixture(scope="session")
def registry(testbed_dir: Path) -> Iterator[testbed.Registry]:
    """An OCI registry on loopback (crane's), which the real node pulls from."""
    server = testbed.Registry(testbed_dir / "registry")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def real_node(
    control_plane: testbed.ControlPlane,
    object_store: testbed.ObjectStore,
    registry: testbed.Registry,
    testbed_dir: Path,
    request: pytest.FixtureRequest,
) -> Iterator[RealNode]:
    """The test bed's real node (containerd, runc, kubelet, CNI, kube-proxy, CoreDNS), registered with the
    control plane, the S3 store reachable from its pods at ``http://10.88.0.1:9000`` (``node.S3_PORT``) and the
    registry pulled from as ``10.88.0.1:5000`` (``node.REGISTRY_PORT``). Tainted: only pods of a
    ``node_namespace`` run there."""
    node = RealNode(control_plane, testbed_dir / "node", s3_port=object_store.port, registry_port=registry.port)
    request.config.stash[_NODE] = node
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def slipway_on_node(
    slipway_crds: testbed.ControlPlane, kuberay_crds: testbed.ControlPlane, real_node: RealNode,
    object_store: testbed.ObjectStore,
) -> Iterator[str]:  # fmt: skip
    """Slipway installed as a user installs it, on the real node (`release.install`: its images, the store's
    bucket and Secret, `helm install` of the chart with tests/cluster/values-testbed.yaml into `slipway-system`,
    whose pods all run on the real node). Yields the namespace; the operator watches it and its ModelDeployments'
    servers run there from the server image; `kuberay_on_node` adds the trainer image and KubeRay."""
    try:
        release.install(slipway_crds, real_node, object_store)
        yield release.NAMESPACE
    finally:
        release.uninstall(slipway_crds)


@pytest.fixture(scope="session")
def kuberay_on_node(slipway_on_node: str, real_node: RealNode) -> str:
    """`slipway_on_node` with RayJobs that run: the trainer image (images/trainer/Dockerfile, built like the
    others) in the node's containerd and KubeRay's real operator reconciling `slipway-system` from inside the
    node (where the Ray heads' dashboards are). Yields the namespace."""
    real_node.import_image(buildkit.image_archives(["trainer"])["trainer"])
    real_node.start_kuberay([slipway_on_node])
    return slipway_on_node


@pytest.fixture
def node_namespace(control_plane: testbed.ControlPlane, real_node: RealNode) -> Iterator[str]:
    """A fresh namespace whose pods all run on the real node (and nowhere else), deleted afterwards."""
    name = f"n-{uuid.uuid4().hex[:8]}"
    release.create_namespace(control_plane, name, node_namespace_annotations())
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def slipway_crds(control_plane: testbed.ControlPlane) -> testbed.ControlPlane:
    """The control plane with Slipway's generated CRDs installed and established."""
    control_plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
    # The API server publishes a new CRD's OpenAPI (what `kubectl explain` reads) a moment later.
    for kind in ("datasetprep", "trainingrun", "tuningsweep", "modeldeployment"):
        testbed.wait_until(
            f"the OpenAPI schema of {kind}",
            lambda kind=kind: control_plane.kubectl("explain", kind, check=False) != "",  # type: ignore[misc]
            60,
        )
    return control_plane


@pytest.fixture(scope="session")
def kuberay_crds(control_plane: testbed.ControlPlane) -> testbed.ControlPlane:
    """The control plane with KubeRay's CRDs (RayJob, RayCluster, RayService) from its pinned Go module."""
    crds = testbed.BIN / "kuberay-crds"
    if not crds.is_dir():
        raise testbed.TestbedError(f"{crds} is missing: run tests/cluster/build.sh")
    control_plane.kubectl("apply", "--server-side", "-f", str(crds))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
    return control_plane


@pytest.fixture(scope="session")
def kuberay_operator(kuberay_crds: testbed.ControlPlane) -> Iterator[testbed.KubeRayOperator]:
    """KubeRay's real operator (built from its pinned module), started once, reconciling RayJobs and RayClusters
    in a namespace of its own only: `kuberay_operator.watch_namespaces[0]`. Elsewhere tests play KubeRay's part
    by writing RayJob statuses themselves (test_operator.py), and a real controller there would race them.
    Tests that create objects in its namespace delete them before they end."""
    name = f"kuberay-{uuid.uuid4().hex[:8]}"
    kuberay_crds.kubectl("create", "namespace", name)
    testbed.wait_until(
        f"ServiceAccount default in {name}",
        lambda: kuberay_crds.kubectl("get", "serviceaccount", "default", "-n", name, check=False) != "",
        30,
    )
    operator = testbed.KubeRayOperator(kuberay_crds, watch_namespaces=[name])
    try:
        operator.start()
        yield operator
    finally:
        operator.stop()
        kuberay_crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def kueue(kuberay_crds: testbed.ControlPlane, testbed_dir: Path) -> Iterator[testbed.Kueue]:
    """Kueue's real manager (built from its pinned module) with its CRDs and the RayJob integration, started once:
    RayJobs labelled with a LocalQueue wait for quota and are admitted by it. Tests make their own
    ClusterQueues (cluster-scoped: named after their namespace) and delete them."""
    crds = testbed.BIN / "kueue-crds"
    if not crds.is_dir():
        raise testbed.TestbedError(f"{crds} is missing: run tests/cluster/build.sh")
    kuberay_crds.kubectl("apply", "--server-side", "-f", str(crds))
    kuberay_crds.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
    manager = testbed.Kueue(kuberay_crds, testbed_dir / "kueue")
    try:
        manager.start()
        yield manager
    finally:
        manager.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: testbed.ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def kube_api(control_plane: testbed.ControlPlane):  # type: ignore[no-untyped-def]
    """A kubernetes.client.ApiClient talking to the test control plane as cluster admin."""
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(control_plane: testbed.ControlPlane) -> Iterator[str]:
    """A fresh namespace per test (with its default ServiceAccount), deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    release.create_namespace(control_plane, name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def s3_env(object_store: testbed.ObjectStore) -> dict[str, str]:
    """The environment a workload gets from a storage Secret, pointing at the test store."""
    return {
        "AWS_ACCESS_KEY_ID": object_store.access_key,
        "AWS_SECRET_ACCESS_KEY": object_store.secret_key,
        "AWS_ENDPOINT_URL": object_store.endpoint,
        "AWS_REGION": "us-east-1",
    }


@pytest.fixture
def bucket(object_store: testbed.ObjectStore) -> str:
    """A fresh, empty bucket on the test store."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3 = release.s3_client(object_store)
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def mlflow_server(testbed_dir: Path, object_store: testbed.ObjectStore) -> Iterator[mlflowserver.MlflowServer]:
    """A real MLflow tracking server (`mlflow server`, SQLite), its artifacts in a bucket of the test store."""
    release.s3_client(object_store).create_bucket(Bucket="mlflow")
    env = {"AWS_ACCESS_KEY_ID": object_store.access_key, "AWS_SECRET_ACCESS_KEY": object_store.secret_key,
           "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": object_store.endpoint}  # fmt: skip
    server = mlflowserver.MlflowServer(testbed_dir / "mlflow", "s3://mlflow/artifacts", env)
    try:
        server.start()
        yield server
    finally:
        server.stop()


_PLANE = pytest.StashKey[testbed.ControlPlane]()
_STORE = pytest.StashKey[testbed.ObjectStore]()
_NODE = pytest.StashKey[RealNode]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    used = set(getattr(item, "fixturenames", ()))
    plane = item.config.stash.get(_PLANE, None)
    if (
        plane is not None
        and plane.components
        and used
        & {"control_plane", "slipway_crds", "kuberay_crds", "namespace", "kube_api", "real_node", "node_namespace"}
    ):
        report.sections.append(("test control plane logs", plane.logs_summary()))
    node = item.config.stash.get(_NODE, None)
    if node is not None and node.components and used & {"real_node", "node_namespace"}:
        report.sections.append(("real node logs", node.logs_summary()))
    store = item.config.stash.get(_STORE, None)
    stored = {"object_store", "bucket", "s3_env", "mlflow_server"}
    if store is not None and store.component is not None and used & stored:
        report.sections.append(("SeaweedFS log", store.component.tail()))
    if "mlflow_server" in used:
        server = item.funcargs.get("mlflow_server") if hasattr(item, "funcargs") else None
        if server is not None and server.component is not None:
            report.sections.append(("MLflow server log", server.component.tail()))


def pytest_report_header(config: pytest.Config) -> str:
    return f"slipway test bed binaries: {testbed.BIN} (CI={os.environ.get('CI', '')})"
