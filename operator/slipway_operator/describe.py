"""`slipway describe` and `slipway logs`, for a resource of `slipway run` (its state folder) or of a cluster (the
current kubeconfig context, or `--kubeconfig` / `--context` / `-n`).

`describe_text(obj, events)` is pure: the diagnosis (the Failed or Stalled condition, which names the pod, the
cause and the fix), the timeline of phases (the operator posts an Event on each change), the conditions and the
last Events, on one screen. A run's log is read from its artifact folder (`status.logUri`, which the workload
copies there as it goes), so it is there after the RayCluster, or the machine, that ran it is gone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import yaml

from slipway_operator import api
from slipway_operator.api.common import GROUP, VERSION, Phase
from slipway_trainer import logship, storage

TERMINAL = {str(Phase.SUCCEEDED), str(Phase.FAILED), str(Phase.INVALID)}
PHASES = {str(p) for p in Phase}
SHOWN_EVENTS = 10


class NotFound(Exception):
    pass


def _when(event: dict[str, Any]) -> str:
    return str(event.get("time") or event.get("lastTimestamp") or event.get("eventTime") or "")


def describe_text(obj: dict[str, Any], events: Iterable[dict[str, Any]]) -> str:
    """The resource in one screen (pure). `events` as the API serves them or as `slipway run` records them."""
    meta, status = obj["metadata"], obj.get("status") or {}
    conditions = status.get("conditions") or []
    lines = [
        f"Name:       {meta['name']}",
        f"Namespace:  {meta.get('namespace', 'default')}",
        f"Kind:       {obj['kind']}",
        f"Phase:      {status.get('phase', 'Pending')}",
    ]
    if status.get("progress"):
        lines.append(f"Progress:   {status['progress']}")
    if status.get("endpoint"):
        lines.append(f"REST:       {status['endpoint']}/v2/models/{status.get('modelName', meta['name'])}/infer")
    if status.get("grpcEndpoint"):
        lines.append(f"gRPC:       {status['grpcEndpoint']}  (inference.GRPCInferenceService/ModelInfer)")
    bad = [c for c in conditions if c.get("type") in ("Failed", "Stalled") and c.get("status") == "True"]
    if bad:
        lines += ["", f"Diagnosis:  {bad[0].get('reason')}", *_wrap(str(bad[0].get("message", "")), "  ")]
    elif status.get("message"):
        lines += ["", f"Message:    {status['message']}"]
    ordered = sorted(events, key=_when)
    timeline = [e for e in ordered if e.get("reason") in PHASES]
    lines += ["", "Timeline:"]
    lines += [f"  {_when(e):<26} {e['reason']}" for e in timeline] or [f"  {meta.get('creationTimestamp', '')} created"]
    if status.get("startTime") or status.get("completionTime"):
        lines.append(f"  started {status.get('startTime', '-')}, finished {status.get('completionTime', '-')}")
    shown_status = {k: v for k, v in status.items() if k not in ("conditions", "message", "phase", "progress")}
    if shown_status:
        lines += ["", "Status:", *_wrap(yaml.safe_dump(shown_status, sort_keys=False, width=110).rstrip(), "  ")]
    lines += ["", "Conditions:"]
    lines += [f"  {c['type']:<12} {c['status']:<8} {c.get('reason', '')}" for c in conditions] or ["  (none yet)"]
    lines += ["", "Events:"]
    shown = ordered[-SHOWN_EVENTS:]
    lines += [
        f"  {_when(e):<26} {e.get('type', ''):<8} {e.get('reason', ''):<18} {e.get('message', '')}" for e in shown
    ]
    if not shown:
        lines.append("  (none)")
    if status.get("logUri"):
        lines += ["", f"Log:        {status['logUri']}  (`slipway logs {meta['name']}`)"]
    return "\n".join(lines) + "\n"


def _wrap(text: str, indent: str) -> list[str]:
    return [f"{indent}{line}" for line in text.splitlines() or [""]]


def worker_lines(text: str, worker: int | None) -> str:
    """The lines of one training worker (each prints `[worker N]`; Ray forwards them to the driver), or all."""
    if worker is None:
        return text
    marker = f"[worker {worker}]"
    return "".join(line for line in text.splitlines(keepends=True) if marker in line)


def follow(read: Callable[[], bytes], finished: Callable[[], bool], out: Any, worker: int | None, poll: float) -> None:
    """Print the log, then what is added to it, until the resource has finished (then once more). Places are byte
    offsets in the whole log: a copy whose start was cut (logship keeps the last 8 MiB) says how much came before."""
    printed = 0
    while True:
        done = finished()
        start, data = logship.window(read())
        if start + len(data) < printed:  # a retry's driver started its log again
            printed = 0
        if printed < start:
            out.write(f"[... {start - printed} bytes of the log not kept ...]\n")
            printed = start
        out.write(worker_lines(data[printed - start :].decode(errors="replace"), worker))
        out.flush()
        printed = start + len(data)
        if done:
            return
        time.sleep(poll)


def log_text(data: bytes) -> str:
    """A log copy as text, with the note of a cut start in words."""
    start, body = logship.window(data)
    cut = f"[... the first {start} bytes of the log are not kept ...]\n" if start else ""
    return cut + body.decode(errors="replace")


def read_log(uri: str) -> bytes:
    try:
        return storage.read_bytes(uri) if storage.exists(uri) else b""
    except OSError as err:
        raise NotFound(
            f"the log at {uri} cannot be read: {err} (the store's credentials come from AWS_* here)"
        ) from None


# -- a cluster --------------------------------------------------------------------------------------------------


class ClusterView:
    """Slipway resources and their Events through the Kubernetes API, with the user's own kubeconfig."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        try:
            config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        except ConfigException as err:
            raise NotFound(
                f"no cluster to ask ({err}): give --kubeconfig or --context, or run `slipway run -f <manifests>` "
                "here for a local resource"
            ) from None
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
        self.namespace = namespace or ((chosen or {}).get("context") or {}).get("namespace") or "default"
        self.api = client.ApiClient()
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def find(self, ref: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kind, _, name = ref.rpartition("/")
        kinds = [k for k in api.BY_KIND if not kind or k.lower() == kind.lower()]
        if not kinds:
            raise NotFound(f"no kind {kind!r}: one of {', '.join(api.BY_KIND)}")
        found = []
        for k in kinds:
            try:
                obj = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, api.BY_KIND[k].plural, name
                )
            except ApiException as err:
                if err.status == 404:
                    continue
                raise NotFound(f"the API server refused to read {k} {name}: {err.status} {err.reason}") from None
            except HTTPError as err:
                raise NotFound(f"cannot reach the API server of the kubeconfig's cluster: {err}") from None
            found.append(cast(dict[str, Any], obj))
        if len(found) != 1:
            what = "no resource" if not found else f"{len(found)} resources ({', '.join(o['kind'] for o in found)})"
            raise NotFound(f"{what} named {name!r} in namespace {self.namespace}: give Kind/NAME, or -n NAMESPACE")
        return found[0]

    def events(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """The Events of the resource and of its RayJob."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        names = [obj["metadata"]["name"], (obj.get("status") or {}).get("rayJobName")]
        found: list[dict[str, Any]] = []
        for name in filter(None, names):
            try:
                listed = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
            except (ApiException, HTTPError) as err:  # no right to list Events: the rest is still worth showing
                print(f"warning: cannot list the Events of {name}: {err}", file=sys.stderr)
                continue
            found += [self.api.sanitize_for_serialization(e) for e in listed.items]  # type: ignore[no-untyped-call]
        return found

    def phase(self, ref: str) -> str:
        return str((self.find(ref).get("status") or {}).get("phase") or "")


def cluster_describe(view: ClusterView, ref: str) -> int:
    obj = view.find(ref)
    sys.stdout.write(describe_text(obj, view.events(obj)))
    return 0


def cluster_logs(view: ClusterView, ref: str, follow_it: bool, worker: int | None, poll: float = 3.0) -> int:
    obj = view.find(ref)
    uri = (obj.get("status") or {}).get("logUri")
    if not uri:
        print(
            f"{obj['kind']}/{obj['metadata']['name']} has no log in its status: a run's log appears once its RayJob "
            "started (a ModelDeployment's servers: kubectl logs -l slipway.dev/modeldeployment=NAME)",
            file=sys.stderr,
        )
        return 1
    if follow_it:
        follow(lambda: read_log(uri), lambda: view.phase(ref) in TERMINAL, sys.stdout, worker, poll)
        return 0
    data = read_log(uri)
    if not data:
        print(f"no log at {uri} yet: the workload copies it there every few seconds once it runs", file=sys.stderr)
        return 1
    sys.stdout.write(worker_lines(log_text(data), worker))
    return 0
