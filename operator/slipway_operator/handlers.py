"""The Kopf glue, thin: a pass of a resource calls `reconcile`, posts its Events and patches what changed in its
status. A pass runs when the watch brings news of the resource and on a resync interval (`resync.Resync`).

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
import functools
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import kopf

from slipway_operator import api, metrics
from slipway_operator.api.common import API_VERSION, GROUP, VERSION
from slipway_operator.backends import Backend
from slipway_operator.backends.kubernetes import KubernetesApi, KubernetesBackend
from slipway_operator.builders import MANAGED_BY
from slipway_operator.controllers import kinds
from slipway_operator.controllers.common import RunController, Settings
from slipway_operator.reconcile import Cluster, Runtime, reconcile, stop_children
from slipway_operator.resync import Key, Resync

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


class QuietPasses(logging.Filter):
    """Drops Kopf's `Handler 'on_event' succeeded.` line, logged for every watch event of every resource: a pass
    that changes something says so in Events and status instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Handler 'on_event' succeeded."


QUIET = QuietPasses()


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
    memo.indexes = {}  # Kopf's indexes, filled at the first handler call (each resource gets a copy of the memo)
    memo.resync = Resync(functools.partial(periodic_pass, memo), workers=config.workers)
    # No cluster-wide list/watch of CRDs and Namespaces: the resources are found once by API discovery (which
    # every account may do) and the named namespaces are taken as given. So the operator needs no cluster-wide
    # read rights, and starts at once instead of retrying 403s for ~55 s. The cost: a watched namespace added
    # later, or a CRD version change, needs a restart (a helm upgrade that changes watchNamespaces rolls the pod).
    settings.scanning.disabled = True
    settings.persistence.diffbase_storage = NoDiffBase()
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


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf compares every event's object with the last configuration its create/update handlers handled, from a
    deep copy of the object; Slipway has none of those handlers (one event handler per kind), so nothing reads
    that comparison and none is made."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("resync") is not None:
        memo.resync.stop()
    if memo.get("runtime") is not None:
        memo.runtime.backend.close()


class IndexedCluster:
    """Slipway resources read from Kopf's in-memory indexes (filled by the watch the operator keeps anyway)
    instead of a GET per resource on every pass; lists (autoUpdate's label selectors) still go to the API."""

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


def _pass(body: dict[str, Any], rt: Runtime, indexes: dict[str, Any]) -> None:
    """One pass of one resource: reconcile, post its Events, patch what changed in its status."""
    kind, meta = str(body["kind"]), body["metadata"]
    status = body.get("status") or {}
    with metrics.reconcile(kind):
        outcome = reconcile(body, Runtime(rt.settings, IndexedCluster(rt.cluster, indexes), rt.backend))
    if outcome is None:
        return
    for type_, reason, message in outcome.events:
        metrics.EVENTS.labels(kind, reason).inc()
        kopf.event(kopf.Body(cast(kopf.RawBody, body)), type=type_, reason=reason, message=message[:1024])
    changed = {k: v for k, v in outcome.status.items() if status.get(k) != v}
    if changed:
        assert isinstance(rt.cluster, KubernetesApi)  # Slipway resources are always read from the cluster
        rt.cluster.patch_status(str(body["apiVersion"]), kind, str(meta["namespace"]), str(meta["name"]), changed)
    metrics.phase(kind, str(meta["namespace"]), str(meta["name"]), outcome.status.get("phase") or status.get("phase"))


def _trigger(body: kopf.Body) -> str:
    """What brings a pass at once when the watch sees it change: the spec (its generation) and the annotations
    (e.g. a ModelDeployment's abort); a change of status alone (most often the pass's own patch) does not."""
    annotations = {k: v for k, v in (body.metadata.annotations or {}).items() if not k.startswith("kopf.")}
    return json.dumps([body.metadata.get("generation"), annotations], sort_keys=True)


def _key(body: Mapping[str, Any]) -> Key:
    meta = body["metadata"]
    return str(body["kind"]), str(meta["namespace"]), str(meta["name"])


def on_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Every watch event of a Slipway resource: a pass when it appears (or is found as the operator starts) and
    when its spec or annotations change, then one every resync interval on the operator's own threads. Kopf
    writes nothing to the resource for this handler: no finalizer, no annotation (its timers and change handlers
    did both: two PATCHes of each new resource, and a finalizer that held a deleted resource while no operator
    ran)."""
    rt, resync, key = memo.runtime, memo.resync, _key(body)
    if not memo.indexes:  # Kopf's live indexes, the same objects every call
        memo.indexes.update({k: v for k, v in kwargs.items() if k in INDEX_OF_KIND.values()})
        if isinstance(rt.backend, KubernetesBackend):
            rt.backend.seen = {child: kwargs[index] for child, index in CHILD_INDEXES.items() if index in kwargs}
            rt.backend.seen_pods = kwargs.get(PODS_INDEX)
    resync.start_once()  # from a handler: Kopf's Event poster is found through a handler's context
    if event["type"] == "DELETED":
        resync.forget(key)
        metrics.phase(*key, None)
        if rt.backend.name == "local":  # its processes are outside Kubernetes: stopped here
            stop_children(dict(body), rt)
        return
    if not resync.changed(key, _trigger(body)):
        return
    try:
        with resync.lock(key):
            _pass(copy.deepcopy(dict(body)), rt, memo.indexes)
    finally:
        resync.passed(key, INTERVALS[key[0]])


def periodic_pass(memo: kopf.Memo, key: Key) -> None:
    """A resource's periodic pass, on the body the watch saw last (Kopf's index)."""
    kind, namespace, name = key
    found = list(memo.indexes[INDEX_OF_KIND[kind]].get((namespace, name), ()))
    if not found:
        memo.resync.forget(key)  # deleted: its DELETED event says so too
        return
    _pass(copy.deepcopy(found[-1]), memo.runtime, memo.indexes)


def by_name(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """An index of one kind: (namespace, name) -> the resource as last seen by the watch, with its managedFields
    cut down to who manages it and how (their field sets are as large as a RayJob's spec, and every pass copies
    what it reads; the backend asks only whether Slipway's POST still owns fields)."""
    return {(str(namespace), str(name)): _without_field_sets(body)}


def _without_field_sets(body: kopf.Body) -> dict[str, Any]:
    """The watched object as a dict sharing its parts (each event brings new ones, which nothing changes: what
    reads an index copies what it will change), its managedFields without their fieldsV1."""
    obj = dict(body)
    meta = obj["metadata"] = dict(body.get("metadata", {}))
    if "managedFields" in meta:
        meta["managedFields"] = [
            {k: v for k, v in entry.items() if k in ("manager", "operation", "subresource")}
            for entry in meta["managedFields"]
        ]
    return obj


# Every kind: a pass when the watch brings news of it and on a resync interval (runs read their workload's
# progress; ModelDeployments judge canary gates and health).
INTERVALS = {
    c.kind: RUN_RESYNC_SECONDS if isinstance(c, RunController) else SERVING_RESYNC_SECONDS for c in kinds.CONTROLLERS
}
PLURALS = [api.BY_KIND[kind].plural for kind in INTERVALS]
# Every kind by name: the body of a periodic pass, and what a pass reads by name (a TrainingRun's DatasetPrep, a
# ModelDeployment's run).
INDEX_OF_KIND = {kind: f"{api.BY_KIND[kind].plural}_by_name" for kind in INTERVALS}
for _kind, _index in INDEX_OF_KIND.items():
    kopf.index(GROUP, VERSION, api.BY_KIND[_kind].plural, id=_index)(by_name)
# The children a pass looks at by name (a run's RayJob, a ModelDeployment's Deployments and autoscaler), kept
# current by watches: read from these indexes, not with a GET per child on every pass (KubernetesBackend).
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
    their managedFields' field sets: what a run's diagnosis and a ModelDeployment's readiness read each pass."""
    return {str(namespace): _without_field_sets(body)}


for _plural in PLURALS:
    kopf.on.event(GROUP, VERSION, _plural)(on_event)
