"""The Kopf glue, thin: one handler set per kind calls `reconcile`, posts its Events and patches what changed.

Run with `slipway operator` (or `kopf run -m slipway_operator.handlers`). Settings come from the environment
once, at start-up, here at the edge: SLIPWAY_BACKEND (kubernetes | local), SLIPWAY_IMAGE, SLIPWAY_SERVER_IMAGE,
SLIPWAY_STORE, SLIPWAY_STORAGE_SECRET, SLIPWAY_ALLOW_FILE_URIS, SLIPWAY_GPU_RESOURCE, SLIPWAY_GPU_NODE_SELECTOR
and SLIPWAY_GPU_TOLERATIONS (JSON), SLIPWAY_STATE (the local backend's folder), SLIPWAY_METRICS_ADDRESS
(host:port), SLIPWAY_WORKERS (see `Settings.from_env`). Slipway resources are always read from the cluster;
where their children run is the backend's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import kopf

from slipway_operator import metrics
from slipway_operator.api.common import GROUP, VERSION
from slipway_operator.backends import Backend
from slipway_operator.backends.kubernetes import KubernetesApi, KubernetesBackend
from slipway_operator.controllers.common import Settings
from slipway_operator.reconcile import Runtime, reconcile, stop_children

RUN_RESYNC_SECONDS = 10.0
SERVING_RESYNC_SECONDS = 5.0

_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime  # noqa: PLW0603 (made once per process, at the edge)
    if _runtime is None:
        settings = Settings.from_env(os.environ)
        cluster = KubernetesApi()
        backend: Backend
        if os.environ.get("SLIPWAY_BACKEND", "kubernetes") == "local":
            from slipway_operator.backends.local import LocalBackend

            backend = LocalBackend(Path(os.environ.get("SLIPWAY_STATE", ".slipway/state")).resolve())
        else:
            backend = KubernetesBackend(cluster)
        _runtime = Runtime(settings, cluster, backend)
    return _runtime


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
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    global _runtime  # noqa: PLW0603
    _runtime = None  # settings are read again at every start (tests start several operators in one process)
    try:
        ready = runtime()
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
    settings.execution.max_workers = int(os.environ.get("SLIPWAY_WORKERS", "8"))
    address = os.environ.get("SLIPWAY_METRICS_ADDRESS")
    if address:
        logger.info(f"operator metrics on http://{address.rpartition(':')[0]}:{metrics.serve(address)}/metrics")
    logger.info(f"backend: {ready.backend.name}, store: {ready.settings.store_uri}")


@kopf.on.cleanup()
def stop(**_: Any) -> None:
    if _runtime is not None:
        _runtime.backend.close()


def _pass(body: kopf.Body, patch: kopf.Patch) -> None:
    kind = str(body["kind"])
    with metrics.reconcile(kind):
        outcome = reconcile(dict(body), runtime())
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


def reconcile_resource(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    _pass(body, patch)


# Every kind: on creation, on spec changes, when the operator (re)starts, and on a resync timer (runs read their
# workload's progress; ModelDeployments judge canary gates and health).
PLURALS = {
    "datasetpreps": RUN_RESYNC_SECONDS,
    "trainingruns": RUN_RESYNC_SECONDS,
    "tuningsweeps": RUN_RESYNC_SECONDS,
    "modeldeployments": SERVING_RESYNC_SECONDS,
}
for _plural, _interval in PLURALS.items():
    kopf.on.resume(GROUP, VERSION, _plural)(reconcile_resource)
    kopf.on.create(GROUP, VERSION, _plural)(reconcile_resource)
    kopf.on.update(GROUP, VERSION, _plural, field="spec")(reconcile_resource)
    # The first tick waits one interval: the create (or resume) handler has just done the first pass.
    kopf.timer(GROUP, VERSION, _plural, interval=_interval, initial_delay=_interval)(reconcile_resource)


def _local(**_: Any) -> bool:
    return runtime().backend.name == "local"


@kopf.on.delete(GROUP, VERSION, "modeldeployments", when=_local)
@kopf.on.delete(GROUP, VERSION, "trainingruns", when=_local)
@kopf.on.delete(GROUP, VERSION, "tuningsweeps", when=_local)
@kopf.on.delete(GROUP, VERSION, "datasetpreps", when=_local)
def stop_local_children(body: kopf.Body, **_: Any) -> None:
    """On Kubernetes the garbage collector deletes the children (ownerReferences) and no finalizer is needed;
    the local backend's processes are outside Kubernetes: a finalizer holds the resource until they stop."""
    stop_children(dict(body), runtime())


@kopf.on.delete(GROUP, VERSION, "modeldeployments", optional=True)
@kopf.on.delete(GROUP, VERSION, "trainingruns", optional=True)
@kopf.on.delete(GROUP, VERSION, "tuningsweeps", optional=True)
@kopf.on.delete(GROUP, VERSION, "datasetpreps", optional=True)
def forget(body: kopf.Body, **_: Any) -> None:
    """Keeps the resources-by-phase metric true when resources go away (no finalizer: best effort)."""
    metrics.phase(str(body["kind"]), str(body.metadata.namespace), str(body.metadata.name), None)
