"""The Kopf glue, thin: one handler set per kind calls `reconcile`, posts its Events and patches what changed.

Run with `slipway operator` (or `kopf run -m slipway_operator.handlers`). Settings are read once, at start-up,
by `Settings.from_env` (`slipway operator` passes its flags through Kopf's memo instead): SLIPWAY_BACKEND
(kubernetes | local), SLIPWAY_IMAGE, SLIPWAY_SERVER_IMAGE, SLIPWAY_STORE, SLIPWAY_STORAGE_SECRET,
SLIPWAY_ALLOW_FILE_URIS, SLIPWAY_GPU_RESOURCE, SLIPWAY_GPU_NODE_SELECTOR and SLIPWAY_GPU_TOLERATIONS (JSON),
SLIPWAY_STATE (the local backend's folder), SLIPWAY_METRICS_ADDRESS (host:port), SLIPWAY_WORKERS. The runtime
(API client, backend) lives in the memo every handler gets; nothing is a module global. Slipway resources are
always read from the cluster; where their children run is the backend's.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import kopf

from slipway_operator import api, metrics
from slipway_operator.api.common import API_VERSION, GROUP, VERSION
from slipway_operator.backends import Backend
from slipway_operator.backends.kubernetes import KubernetesApi, KubernetesBackend
from slipway_operator.builders import MANAGED_BY
from slipway_operator.controllers import kinds
from slipway_operator.controllers.common import RunController, Settings
from slipway_operator.reconcile import Cluster, Runtime, reconcile, stop_children

RUN_RESYNC_SECONDS = 10.0
SERVING_RESYNC_SECONDS = 5.0


def make_runtime(settings: Settings) -> Runtime:
    """The API client and the backend, made once per operator start and kept in Kopf's memo."""
    cluster = KubernetesApi()
    backend: Backend
    if settings.backend == "local":
        from slipway_operator.backends.local import LocalBackend

        backend = LocalBackend(Path(settings.state).resolve())
    else:
        backend = KubernetesBackend(cluster)
    return Runtime(settings, cluster, backend)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: its ServiceAccount; elsewhere: the kubeconfig that KUBECONFIG names now."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kopf.login_via_client(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


class QuietResyncs(logging.Filter):
    """Drops Kopf's `Timer '...' succeeded` line: the resync timers fire every few seconds per resource, and a
    pass that changes something says so in Events and status instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Timer '") and message.endswith("' succeeded."))


QUIET = QuietResyncs()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """The runtime goes into Kopf's memo, which every handler gets: `slipway operator` puts its Settings
    there (`memo.settings`); `kopf run -m slipway_operator.handlers` reads them from the environment."""
    try:
        config = memo.get("settings") or Settings.from_env(os.environ)
        ready = memo.runtime = make_runtime(config)
    except ValueError as err:  # a malformed setting: stop with the reason rather than retry forever
        raise kopf.PermanentError(f"cannot start: {err}") from None
    metrics.reset()
    logging.getLogger("kopf.objects").addFilter(QUIET)  # the same filter object is added once
    settings.persistence.finalizer = "slipway.dev/finalizer"
    # No cluster-wide list/watch of CRDs and Namespaces: the resources are found once by API discovery (which
    # every account may do) and the named namespaces are taken as given. So the operator needs no cluster-wide
    # read rights, and starts at once instead of retrying 403s for ~55 s. The cost: a watched namespace added
    # later, or a CRD version change, needs a restart (a helm upgrade that changes watchNamespaces rolls the pod).
    settings.scanning.disabled = True
    missing = ready.cluster.unserved(GROUP, VERSION, tuple(PLURALS)) if isinstance(ready.cluster, KubernetesApi) else ()
    if missing:
        raise kopf.PermanentError(
            f"Slipway's CRDs are not installed ({', '.join(missing)}): `kubectl apply -f crds/` or install the "
            "Helm chart, then start the operator again"
        )
    settings.posting.level = 20  # Events from INFO up
    settings.execution.max_workers = config.workers
    if config.metrics_address:
        host = config.metrics_address.rpartition(":")[0]
        logger.info(f"operator metrics on http://{host}:{metrics.serve(config.metrics_address)}/metrics")
    logger.info(f"backend: {ready.backend.name}, store: {ready.settings.store_uri}")


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("runtime") is not None:
        memo.runtime.backend.close()


class IndexedCluster:
    """Slipway resources read from Kopf's in-memory indexes (filled by the watch the operator keeps anyway)
    instead of a GET per resource on every timer tick; lists (autoUpdate's label selectors) still go to the API."""

    def __init__(self, api: Cluster, indexes: dict[str, kopf.Index[tuple[str, str], dict[str, Any]]]) -> None:
        self.api, self.indexes = api, indexes

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        index = self.indexes.get(INDEX_OF_KIND.get(kind, ""))
        if api_version != API_VERSION or index is None:
            return self.api.get(api_version, kind, namespace, name)
        found = list(index.get((namespace, name), ()))
        return copy.deepcopy(found[-1]) if found else None

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        return self.api.list(api_version, kind, namespace, label_selector)

    def create(self, obj: dict[str, Any]) -> None:
        self.api.create(obj)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.api.delete(api_version, kind, namespace, name)


def _pass(body: kopf.Body, patch: kopf.Patch, rt: Runtime, indexes: dict[str, Any]) -> None:
    kind = str(body["kind"])
    rt = Runtime(rt.settings, IndexedCluster(rt.cluster, indexes), rt.backend)
    with metrics.reconcile(kind):
        outcome = reconcile(dict(body), rt)
    if outcome is None:
        return
    for type_, reason, message in outcome.events:
        metrics.EVENTS.labels(kind, reason).inc()
        kopf.event(body, type=type_, reason=reason, message=message[:1024])
    changed = {k: v for k, v in outcome.status.items() if body.status.get(k) != v}
    if changed:
        patch.status.update(changed)
    phase = outcome.status.get("phase") or body.status.get("phase")
    metrics.phase(kind, str(body.metadata.namespace), str(body.metadata.name), phase)


def reconcile_resource(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    backend = memo.runtime.backend
    if isinstance(backend, KubernetesBackend) and not backend.seen:  # Kopf's live indexes, the same every call
        backend.seen = {child: kwargs[index] for child, index in CHILD_INDEXES.items() if index in kwargs}
        backend.seen_pods = kwargs.get(PODS_INDEX)
    _pass(body, patch, memo.runtime, {k: v for k, v in kwargs.items() if k in INDEX_OF_KIND.values()})


def by_name(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """An index of one kind: (namespace, name) -> the resource as last seen by the watch."""
    return {(str(namespace), str(name)): copy.deepcopy(dict(body))}


# Every kind: on creation, on spec changes, when the operator (re)starts, and on a resync timer (runs read their
# workload's progress; ModelDeployments judge canary gates and health).
PLURALS = {
    api.BY_KIND[c.kind].plural: RUN_RESYNC_SECONDS if isinstance(c, RunController) else SERVING_RESYNC_SECONDS
    for c in kinds.CONTROLLERS
}
# What a pass reads by name (a TrainingRun's DatasetPrep, a ModelDeployment's run): from these indexes.
INDEX_OF_KIND = {kind: f"{api.BY_KIND[kind].plural}_by_name" for kind in kinds.RUNS}
for _kind, _index in INDEX_OF_KIND.items():
    kopf.index(GROUP, VERSION, api.BY_KIND[_kind].plural, id=_index)(by_name)
# The children a pass looks at by name (a run's RayJob, a ModelDeployment's Deployments and autoscaler), kept
# current by watches: read from these indexes, not with a GET per child on every timer tick (KubernetesBackend).
CHILD_INDEXES = {
    ("ray.io/v1", "RayJob"): "rayjobs_by_name",
    ("apps/v1", "Deployment"): "deployments_by_name",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers_by_name",
}
for (_api_version, _child), _index in CHILD_INDEXES.items():
    _group, _version = _api_version.split("/")
    _plural = _index.removesuffix("_by_name")
    kopf.index(_group, _version, _plural, id=_index, labels={MANAGED_BY: "slipway"})(by_name)
PODS_INDEX = "pods_by_namespace"


@kopf.index("v1", "pods", id=PODS_INDEX, labels={MANAGED_BY: "slipway"})
def pods_by_namespace(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, Any]:
    """Slipway's pods (Ray pods, submitters, inference servers) by namespace, as the watch last saw them, less
    their managedFields: what a run's diagnosis and a ModelDeployment's readiness read each pass."""
    pod = copy.deepcopy(dict(body))
    pod.get("metadata", {}).pop("managedFields", None)
    return {str(namespace): pod}


for _plural, _interval in PLURALS.items():
    kopf.on.resume(GROUP, VERSION, _plural)(reconcile_resource)
    kopf.on.create(GROUP, VERSION, _plural)(reconcile_resource)
    kopf.on.update(GROUP, VERSION, _plural, field="spec")(reconcile_resource)
    # The first tick waits one interval: the create (or resume) handler has just done the first pass.
    kopf.timer(GROUP, VERSION, _plural, interval=_interval, initial_delay=_interval)(reconcile_resource)


def _local(memo: kopf.Memo, **_: Any) -> bool:
    return bool(memo.runtime.backend.name == "local")


@kopf.on.delete(GROUP, VERSION, "modeldeployments", when=_local)
@kopf.on.delete(GROUP, VERSION, "trainingruns", when=_local)
@kopf.on.delete(GROUP, VERSION, "tuningsweeps", when=_local)
@kopf.on.delete(GROUP, VERSION, "datasetpreps", when=_local)
def stop_local_children(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """On Kubernetes the garbage collector deletes the children (ownerReferences) and no finalizer is needed;
    the local backend's processes are outside Kubernetes: a finalizer holds the resource until they stop."""
    stop_children(dict(body), memo.runtime)


@kopf.on.delete(GROUP, VERSION, "modeldeployments", optional=True)
@kopf.on.delete(GROUP, VERSION, "trainingruns", optional=True)
@kopf.on.delete(GROUP, VERSION, "tuningsweeps", optional=True)
@kopf.on.delete(GROUP, VERSION, "datasetpreps", optional=True)
def forget(body: kopf.Body, **_: Any) -> None:
    """Keeps the resources-by-phase metric true when resources go away (no finalizer: best effort)."""
    metrics.phase(str(body["kind"]), str(body.metadata.namespace), str(body.metadata.name), None)
