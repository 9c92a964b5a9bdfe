"""The kubernetes backend: children are applied to the cluster (server-side apply, field manager `slipway`);
KubeRay runs the RayJobs, Kubernetes the Deployments. Also the operator's reads of Slipway resources."""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from slipway_operator.backends import ApplyRefused
from slipway_operator.builders import GRPC_PORT, SERVER_PORT
from slipway_operator.queueing import WORKLOAD_API

FIELD_MANAGER = "slipway"
# What a new run's child is created with a POST instead of an apply (hundreds of runs arrive at once; an apply that
# creates costs the API server about a third more CPU); every other child is applied.
CREATED_KINDS = {("ray.io/v1", "RayJob")}
ADOPT_TRIES = 3
REFUSED_FOR_GOOD = {400, 403, 404, 422}  # bad request, forbidden (RBAC, a quota), no such namespace, invalid
CRD_RECHECK_SECONDS = 30.0
# Runs with no pod to look at read their Warning Events from one list per namespace (all its Warnings), made at
# most every 30 s and ever less often while it says nothing new about them: 300 pod-less runs cost what one does,
# and one that stays pod-less (e.g. no KubeRay to run it) next to nothing once it has waited long.
WARNINGS_FIRST_SECONDS = 30.0
WARNINGS_MAX_SECONDS = 600.0


@dataclass
class NamespaceWarnings:
    """The last list of one namespace's Warning Events, how long until the next, and the names runs asked about
    (name -> when last asked)."""

    listed_at: float
    events: list[dict[str, Any]]
    wait: float = WARNINGS_FIRST_SECONDS
    asked: dict[str, float] = field(default_factory=dict)
    new_names: bool = False  # asked about a name since the list was made that was not asked about before

    def due(self, names: Collection[str], now: float) -> bool:
        if any(name not in self.asked for name in names):
            self.new_names, self.wait = True, min(self.wait, WARNINGS_FIRST_SECONDS)
        self.asked.update(dict.fromkeys(names, now))
        return now - self.listed_at >= self.wait

    def followed_by(self, events: list[dict[str, Any]], now: float) -> NamespaceWarnings:
        """The next list: its wait doubles unless it says something new about the names asked (or new names were
        asked); names not asked about for WARNINGS_MAX_SECONDS are forgotten."""
        asked = {name: at for name, at in self.asked.items() if now - at < WARNINGS_MAX_SECONDS}
        latest = NamespaceWarnings(now, events, asked=asked)
        latest.wait = next_warnings_wait(self.wait, self.new_names or not latest.said(asked) <= self.said(asked))
        return latest

    def of(self, names: Collection[str]) -> list[dict[str, Any]]:
        return [e for e in self.events if (e.get("involvedObject") or {}).get("name") in names]

    def said(self, names: Collection[str]) -> set[tuple[str, str, str]]:
        """What the Events of `names` say, without their counts and times (a repeated warning is not news)."""
        return {(str(e["involvedObject"]["name"]), str(e.get("reason")), str(e.get("message"))) for e in self.of(names)}


class KubernetesApi:
    """One API client for the process (discovery is done once, not per call)."""

    def __init__(self) -> None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
        self.api_client = client.ApiClient()
        self.dynamic = DynamicClient(self.api_client)  # type: ignore[no-untyped-call]
        self.core = client.CoreV1Api(self.api_client)
        self._resources: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def resource(self, api_version: str, kind: str) -> Any:
        with self._lock:
            if (api_version, kind) not in self._resources:
                try:
                    found = self.dynamic.resources.get(api_version=api_version, kind=kind)
                except ResourceNotFoundError:  # discovery read before a CRD was installed: read it again, once
                    self.dynamic.resources.invalidate_cache()
                    found = self.dynamic.resources.get(api_version=api_version, kind=kind)
                self._resources[api_version, kind] = found
            return self._resources[api_version, kind]

    # Every call below asks the dynamic client for the raw answer (`serialize=False`) and reads its JSON here:
    # its ResourceInstance wrapping, and turning that back into a dict, cost more CPU than the request. A raw
    # answer is urllib3's response, unread: it must be read (`_json`, `_done`) to give its connection back to the
    # pool, else the next request opens a new TLS connection.

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.resource(api_version, kind).get(name=name, namespace=namespace, serialize=False)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return _json(found)

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str = "", field_selector: str = "",
             ) -> list[dict[str, Any]]:  # fmt: skip
        selectors = {k: v for k, v in (("label_selector", label_selector), ("field_selector", field_selector)) if v}
        found = _json(self.resource(api_version, kind).get(namespace=namespace, serialize=False, **selectors))
        items: list[dict[str, Any]] = found.get("items") or []
        for item in items:  # a list's items carry no apiVersion and kind of their own
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def create(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        try:
            answer = self.resource(obj["apiVersion"], obj["kind"]).create(
                body=obj, namespace=meta["namespace"], serialize=False
            )
            _done(answer)
        except ApiException as err:
            if err.status == 409:  # created by an earlier pass: level-triggered, nothing to do
                return
            if err.status not in REFUSED_FOR_GOOD:
                raise
            raise ApplyRefused(refusal(obj, err)) from None

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self.resource(api_version, kind).delete(name=name, namespace=namespace)
        except ApiException as err:
            if err.status != 404:
                raise

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A merge patch of a resource's status subresource; one deleted meanwhile is left alone."""
        try:
            answer = self.dynamic.patch(  # type: ignore[no-untyped-call]
                self.resource(api_version, kind).subresources["status"],
                body={"status": status},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
                serialize=False,
            )
            _done(answer)
        except ApiException as err:
            if err.status != 404:
                raise

    def unserved(self, group: str, version: str, plurals: tuple[str, ...]) -> tuple[str, ...]:
        """Which of these resources the API server does not serve (API discovery: no RBAC rule needed)."""
        try:
            found = client.CustomObjectsApi(self.api_client).get_api_resources(group, version)
        except ApiException as err:
            if err.status == 404:
                return plurals
            raise
        served = {r.name for r in found.resources}
        return tuple(p for p in plurals if p not in served)


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, api: KubernetesApi) -> None:
        self.api = api
        self._crd_checked = (0.0, False)
        self._crd_lock = threading.Lock()
        # (apiVersion, kind) -> what the operator's watch last saw of each child of that kind, by (namespace,
        # name): Kopf's indexes (handlers.CHILD_INDEXES), handed over by the first pass.
        self.seen: Mapping[tuple[str, str], Mapping[tuple[str, str], Any]] = {}
        # namespace -> the pods labelled as Slipway's (Ray pods, submitters, inference servers), from a watch too.
        self.seen_pods: Mapping[str, Any] | None = None
        self._warnings: dict[str, NamespaceWarnings] = {}
        self._warnings_lock = threading.Lock()

    def missing_prerequisite(self) -> str | None:
        """Checked at most every 30 s while present (one thread asks, the others take its answer); every pass
        while missing, so runs start as soon as KubeRay is installed."""
        with self._crd_lock:
            checked_at, present = self._crd_checked
            if not present or time.monotonic() - checked_at > CRD_RECHECK_SECONDS:
                # Served, not just created: a CRD the API server has not established yet cannot take a RayJob.
                present = not self.api.unserved("ray.io", "v1", ("rayjobs",))
                self._crd_checked = (time.monotonic(), present)
        return None if present else "the RayJob CRD (rayjobs.ray.io)"

    def apply(self, children: list[dict[str, Any]], absent: bool = False) -> None:
        """Server-side apply, field manager `slipway`. `absent`: the watch has not seen these children, so each is
        created with a POST, which costs the API server about a third less CPU than an apply that creates (it
        owns the same fields, as an Update; `_adopt` turns that into an Apply before the child is applied again).
        One that is there after all (409: the watch was behind) is applied."""
        for child in children:
            if (child["apiVersion"], child["kind"]) in CREATED_KINDS:
                if absent and self._created(child):
                    continue
                if absent or self._owned_by_update(child):
                    self._adopt(child)
            self._apply_one(child)

    def _created(self, child: dict[str, Any]) -> bool:
        try:
            answer = self.api.resource(child["apiVersion"], child["kind"]).create(
                body=child, namespace=child["metadata"]["namespace"], field_manager=FIELD_MANAGER, serialize=False
            )
            _done(answer)
        except ApiException as err:
            if err.status == 409:
                return False
            if err.status not in REFUSED_FOR_GOOD:
                raise
            raise ApplyRefused(refusal(child, err)) from None
        return True

    def _apply_one(self, child: dict[str, Any]) -> None:
        try:
            answer = self.api.resource(child["apiVersion"], child["kind"]).server_side_apply(
                body=json.dumps(child),  # sent as it is (the client would walk a dict to sanitize it first)
                name=child["metadata"]["name"],
                namespace=child["metadata"]["namespace"],
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                serialize=False,
            )
            _done(answer)
        except ApiException as err:
            if err.status not in REFUSED_FOR_GOOD:
                raise
            raise ApplyRefused(refusal(child, err)) from None

    def _owned_by_update(self, child: dict[str, Any]) -> bool:
        """Whether Slipway created the child with a POST and has not applied it since (from the watch's index,
        which keeps who manages an object, or a GET)."""
        found = self.observe(child)
        return found is not None and bool(created_fields(found.get("metadata") or {}))

    def _adopt(self, child: dict[str, Any]) -> None:
        """Make the fields Slipway's POST created Slipway's applied fields (the managedFields entry `slipway`
        Update becomes `slipway` Apply, merged into one there already), so that an apply that leaves a field out
        removes it (an Update's fields are kept). A JSON patch that holds only if the child did not change since
        it was read (KubeRay writes its status meanwhile: read again, up to ADOPT_TRIES); nothing when there is
        nothing to adopt."""
        meta = child["metadata"]
        for attempt in range(1, ADOPT_TRIES + 1):
            found = self.api.get(child["apiVersion"], child["kind"], meta["namespace"], meta["name"])
            adopted = adopted_fields(((found or {}).get("metadata") or {}).get("managedFields") or [])
            if found is None or adopted is None:
                return
            version = found["metadata"]["resourceVersion"]
            try:
                answer = self.api.resource(child["apiVersion"], child["kind"]).patch(
                    body=[
                        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
                        {"op": "replace", "path": "/metadata/managedFields", "value": adopted},
                    ],
                    name=meta["name"],
                    namespace=meta["namespace"],
                    content_type="application/json-patch+json",
                    serialize=False,
                )
            except ApiException as err:
                if err.status in (409, 422) and attempt < ADOPT_TRIES:  # a failed test: changed since it was read
                    continue
                raise
            _done(answer)
            return

    def observe(self, child: dict[str, Any], new: bool = False) -> dict[str, Any] | None:
        """From the watch's index when it holds the child (no request), else a GET: a child not seen yet (just
        created; a kind whose CRD came after the operator started, so nothing watches it) or not indexed. For a
        `new` parent a watched kind's index is the answer: Kopf fills every index before any handler runs, so a
        child missing from it was not there (the first pass of each run made a GET answered 404 before)."""
        meta = child["metadata"]
        index = self.seen.get((child["apiVersion"], child["kind"]))
        if index is not None:
            found = list(index.get((meta["namespace"], meta["name"]), ()))
            if found:
                return copy.deepcopy(found[-1])  # type: ignore[no-any-return]
            if new:
                return None
        return self.api.get(child["apiVersion"], child["kind"], meta["namespace"], meta["name"])

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.api.delete(api_version, kind, namespace, name)

    def endpoint(self, service: dict[str, Any]) -> str | None:
        meta = service["metadata"]
        return f"http://{meta['name']}.{meta['namespace']}.svc.cluster.local"

    def grpc_endpoint(self, service: dict[str, Any]) -> str | None:
        meta = service["metadata"]
        return f"grpc://{meta['name']}.{meta['namespace']}.svc.cluster.local:{GRPC_PORT}"

    def scrape(self, deployment: dict[str, Any], path: str) -> tuple[list[str], str | None]:
        """Through the API server's pod proxy (works from inside and outside the cluster; needs pods/proxy)."""
        meta = deployment["metadata"]
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        bodies, errors = [], []
        for pod in self.pods(meta["namespace"], selector):  # from the watch: no LIST every scrape
            conditions = (pod.get("status") or {}).get("conditions") or []
            if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                continue
            pod_name = pod["metadata"]["name"]
            try:
                bodies.append(
                    str(
                        self.api.core.connect_get_namespaced_pod_proxy_with_path(
                            f"{pod_name}:{SERVER_PORT}", meta["namespace"], path.lstrip("/")
                        )
                    )
                )
            except ApiException as err:
                errors.append(f"{pod_name}: {err.status} {err.reason}")
        return bodies, "; ".join(errors) or (None if bodies else "no ready pod")

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods matching an equality `selector` ("k=v,k2=v2"): from the watch's index when there is one."""
        if self.seen_pods is None:
            return self.api.list("v1", "Pod", namespace, selector)
        wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
        return [
            copy.deepcopy(pod)
            for pod in self.seen_pods.get(namespace, ())
            if all(((pod.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]

    def workloads(self, namespace: str) -> list[dict[str, Any]] | None:
        api_version, kind = WORKLOAD_API
        group, version = api_version.split("/")
        if self.api.unserved(group, version, ("workloads",)):
            return None
        return self.api.list(api_version, kind, namespace)

    def activate_workload(self, namespace: str, name: str, active: bool) -> None:
        api_version, kind = WORKLOAD_API
        self.api.resource(api_version, kind).patch(
            body={"spec": {"active": active}},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )

    def warnings(self, namespace: str, names: list[str]) -> list[dict[str, Any]]:
        """Warning Events of the named objects (a run's RayCluster and submitter Job while it has no pod to look
        at), from one list of the namespace's Warnings shared by all its runs. It is made again once it is
        WARNINGS_FIRST_SECONDS old if a run asks about a name it was not asked about before, else once its wait is
        over: the wait doubles up to WARNINGS_MAX_SECONDS while the list says nothing new about the names runs ask
        about (a new reason or message starts it again at the first wait). One thread lists; the others wait for its
        answer."""
        with self._warnings_lock:
            now, known = time.monotonic(), self._warnings.get(namespace)
            if known is None or known.due(names, now):
                events = self.api.list("v1", "Event", namespace, field_selector="type=Warning")
                if known is None:
                    known = NamespaceWarnings(now, events, asked=dict.fromkeys(names, now))
                else:
                    known = known.followed_by(events, now)
                # namespaces no run has asked about for the longest wait are forgotten
                self._warnings = {
                    ns: w
                    for ns, w in self._warnings.items()
                    if now - max(w.asked.values(), default=0) < WARNINGS_MAX_SECONDS
                }
                self._warnings[namespace] = known
            return copy.deepcopy(known.of(names))

    def log_tail(self, namespace: str, pod: str, container: str, lines: int) -> str:
        try:
            return str(
                self.api.core.read_namespaced_pod_log(
                    pod, namespace, container=container, previous=True, tail_lines=lines, limit_bytes=4096
                )
            )
        except ApiException:
            return ""  # no previous container (yet), or not allowed: the diagnosis goes without its lines

    def close(self) -> None:
        pass


def refusal(child: dict[str, Any], err: ApiException) -> str:
    """The API server's own message for a refused child, with what to look at."""
    try:
        said = str(json.loads(err.body or "{}").get("message") or err.reason)
    except (ValueError, AttributeError):
        said = str(err.reason)
    hint = {
        403: "check the operator's RBAC (the chart's ClusterRole) and the namespace's ResourceQuota",
        404: "check that the namespace exists",
    }.get(int(err.status or 0), "a validation or an admission policy of the cluster rejected it (see the message)")
    return f"the API server refused {child['kind']} {child['metadata']['name']} (HTTP {err.status}): {said}; {hint}"


def next_warnings_wait(previous: float | None, news: bool) -> float:
    """Seconds until a pod-less run's next look at its Warning Events: the first wait after the first look, or
    after one that found something new; else twice the previous wait, at most WARNINGS_MAX_SECONDS."""
    if previous is None or news:
        return WARNINGS_FIRST_SECONDS
    return min(previous * 2, WARNINGS_MAX_SECONDS)


def created_fields(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The managedFields entries of Slipway's POST: manager `slipway`, operation Update, on the object itself."""
    return [
        e
        for e in meta.get("managedFields") or []
        if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Update" and not e.get("subresource")
    ]


def adopted_fields(entries: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """managedFields with Slipway's Update entries folded into its Apply entry (made when there is none): what a
    client-side-apply upgrade does (client-go's csaupgrade). None when Slipway has no Update entry."""
    updates = created_fields({"managedFields": entries})
    if not updates:
        return None
    new_entry: dict[str, Any] = {"manager": FIELD_MANAGER, "operation": "Apply",
                                 "apiVersion": updates[-1].get("apiVersion"), "fieldsType": "FieldsV1"}  # fmt: skip
    applied = next((e for e in entries if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply"), None)
    fields: dict[str, Any] = copy.deepcopy((applied or {}).get("fieldsV1") or {})
    for entry in updates:
        _merge_fields(fields, entry.get("fieldsV1") or {})
    merged = {**(applied or new_entry), "fieldsV1": fields, "time": updates[-1].get("time")}
    kept = [e for e in entries if e is not applied and not any(e is u for u in updates)]
    return [*kept, {k: v for k, v in merged.items() if v is not None}]


def _merge_fields(into: dict[str, Any], more: dict[str, Any]) -> None:
    """The union of two FieldsV1 sets (nested maps of `f:`/`k:`/`v:`/`i:` keys, `{}` at the leaves)."""
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge_fields(into[key], value)
        else:
            into.setdefault(key, copy.deepcopy(value))


def _json(response: Any) -> dict[str, Any]:
    """The JSON body of a raw answer of the dynamic client (read whole: its connection goes back to the pool)."""
    return cast(dict[str, Any], json.loads(response.data))


def _done(response: Any) -> None:
    """A raw answer whose body nothing reads: read and let go of, so that its connection is used again."""
    response.drain_conn()
    response.release_conn()
