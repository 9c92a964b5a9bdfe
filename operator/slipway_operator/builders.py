"""Pure builders of the Kubernetes objects the operator creates: resource in, object (a dict) out.

No API calls and no environment reads here: the image, the owner and the workload config are arguments.
Every child carries an ownerReference to its Slipway resource and the labels
`app.kubernetes.io/managed-by: slipway` and `slipway.dev/<kind>: <name>`; names are deterministic, so a
restarted operator finds (adopts) what it created instead of creating it again.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from slipway_operator.api.common import Resources, SecretKeyRef
from slipway_trainer.artifacts import (
    IN_FLIGHT_METRIC,
    SALT_ENV,
    STEP_LABEL,
    STOP_ARMED_SUFFIX,
    STOP_FILE,
    STOP_FILE_ENV,
    WORKER_RESOURCE,
)
from slipway_trainer.storage import SOURCE_ENV_PREFIX

RAY_VERSION = "2.60.0"
CONFIG_DIR = "/etc/slipway"
CONFIG_FILE = "config.json"
# A run's workload config rides on its Ray pods' template as this annotation, which a downward-API volume shows the
# workload as CONFIG_DIR/CONFIG_FILE: the RayJob is a run's one child (no ConfigMap to create, watch or delete), and
# the file the trainer reads is the same as a serving revision's ConfigMap gives it.
CONFIG_ANNOTATION = "slipway.dev/config"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class GpuPool:
    """Where GPU work lands on this cluster (the chart's `gpu` values): the extended resource GPUs are requested
    as, and the node selector and tolerations every pod that asks for GPUs gets. A resource's own nodeSelector
    wins key by key; its tolerations come first, and a pool toleration for a key it already tolerates is left
    out."""

    resource: str = GPU_RESOURCE
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] | None = None  # None: the usual `<resource>:NoSchedule` taint

    def place(self, node_selector: Mapping[str, str], tolerations: list[dict[str, Any]]) -> dict[str, Any]:
        """nodeSelector and tolerations of a pod that asks for GPUs (empty ones left out)."""
        keys = {t.get("key") for t in tolerations}
        placed: dict[str, Any] = {}
        if self.node_selector or node_selector:
            placed["nodeSelector"] = {**self.node_selector, **node_selector}
        pool = self.tolerations if self.tolerations is not None else ({**GPU_TOLERATION, "key": self.resource},)
        merged = tolerations + [dict(t) for t in pool if t.get("key") not in keys]
        if merged:
            placed["tolerations"] = merged
        return placed


KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# On a RayJob of a queued run that its user suspended (spec.suspend): the RayJob is created suspended either way,
# and Kueue unsuspends it when admitted, so its own `suspend` cannot say which (the local backend reads this; on
# a cluster the operator also sets the Kueue Workload's spec.active to false, which is how Kueue suspends).
HELD_ANNOTATION = "slipway.dev/held"


@dataclass(frozen=True)
class Owner:
    """The Slipway resource a child belongs to."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Owner:
        meta = obj["metadata"]
        return cls(obj["apiVersion"], obj["kind"], meta["name"], meta["namespace"], meta["uid"])


MANAGED_BY = "app.kubernetes.io/managed-by"


def labels(owner: Owner) -> dict[str, str]:
    return {
        MANAGED_BY: "slipway",
        "app.kubernetes.io/part-of": "slipway",
        f"slipway.dev/{owner.kind.lower()}": owner.name,
    }


def metadata(owner: Owner, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**labels(owner), **(extra_labels or {})},
        "ownerReferences": [
            {
                "apiVersion": owner.api_version,
                "kind": owner.kind,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def child_name(owner: Owner, suffix: str) -> str:
    """`<name>-<suffix>`, within the 63 characters a label value (and a RayJob's name) allows."""
    return suffixed(owner.name, suffix)


def suffixed(name: str, suffix: str) -> str:
    return f"{name[: 62 - len(suffix)]}-{suffix}"


def config_text(config: BaseModel) -> str:
    """A workload's config as its file reads (no credentials: those come from Secrets as environment variables)."""
    return json.dumps(config.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True)


def config_map(owner: Owner, step: str, config: BaseModel) -> dict[str, Any]:
    """A serving revision's config, which its Deployment's pods mount."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, child_name(owner, step)),
        "data": {CONFIG_FILE: config_text(config)},
    }


def config_volume() -> dict[str, Any]:
    """The Ray pods' volume that shows the pod's own CONFIG_ANNOTATION as CONFIG_FILE."""
    item = {"path": CONFIG_FILE, "fieldRef": {"fieldPath": f"metadata.annotations['{CONFIG_ANNOTATION}']"}}
    return {"name": "slipway-config", "downwardAPI": {"items": [item]}}


def job_config(job: dict[str, Any]) -> str | None:
    """The workload config a RayJob runs (its head template's CONFIG_ANNOTATION); None for a RayJob made before the
    config rode on the pods (it mounted a ConfigMap)."""
    template = ((job.get("spec") or {}).get("rayClusterSpec") or {}).get("headGroupSpec", {}).get("template", {})
    config = ((template.get("metadata") or {}).get("annotations") or {}).get(CONFIG_ANNOTATION)
    return str(config) if config is not None else None


POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": False,
}


@dataclass(frozen=True)
class Workload:
    """What a RayJob runs and on what."""

    step: str  # prep | train | tune
    image: str
    resources: Resources
    config: str  # the workload's config (`config_text`), carried on the Ray pods' template
    storage_secret: str | None = None  # envFrom: AWS_* keys for the store (artifacts, outputs, sources in it)
    source_secret: str | None = None  # envFrom with prefix SOURCE_: a DatasetPrep source's own credentials
    salt: SecretKeyRef | None = None  # SLIPWAY_HASH_SALT for hashed columns
    tracking_secret: str | None = None  # MLflow's credentials (MLFLOW_TRACKING_* keys, each optional)
    ttl_seconds_after_finished: int | None = None
    backoff_limit: int = 0
    active_deadline_seconds: int | None = None
    suspend: bool = False
    gpu: GpuPool = GpuPool()
    name: str | None = None  # the RayJob's name suffix when not the step (a DatasetPrep's refresh round)


# MLflow's own variables for its credentials, taken one by one from a tracking Secret (a token, or a user and a
# password): named keys, not envFrom, so nothing else in that Secret reaches the workload.
TRACKING_CREDENTIALS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")

# What the Ray head asks the scheduler for: it runs the driver and schedules, Ray runs no work on it
# (`num-cpus: 0`), so it may burst to a worker's CPUs but does not reserve them.
HEAD_CPU_REQUEST = "250m"
RAY_POD_GRACE_SECONDS = 30  # Kubernetes' default, stated: the stop hook below waits within it
STOP_WAIT_SECONDS = RAY_POD_GRACE_SECONDS - 5


def stop_hook() -> dict[str, Any]:
    """The Ray containers' preStop hook. Ray does not pass SIGTERM on to its workers, and KubeRay deletes the pods of
    a preempted (suspended) RayJob, so the hook asks instead: it creates the stop file, which the training loops
    look for between batches (they checkpoint their last finished epoch; see slipway_trainer.stop), and waits within
    the grace period while a loop or the driver is still armed. Then the kubelet's SIGTERM reaches Ray, which takes
    it for a preemption of its node (Ray Train resumes elsewhere without counting a failure)."""
    script = (
        f"touch {STOP_FILE}; for i in $(seq {STOP_WAIT_SECONDS}); do "
        f"ls {STOP_FILE}{STOP_ARMED_SUFFIX}* >/dev/null 2>&1 || exit 0; sleep 1; done"
    )
    return {"preStop": {"exec": {"command": ["bash", "-c", script]}}}


def cpu_quantity(cpus: float) -> str:
    """CPU cores as a Kubernetes quantity: whole cores as a number, a fraction in millicores (0.5 -> 500m)."""
    return str(int(cpus)) if float(cpus).is_integer() else f"{round(cpus * 1000)}m"


def _container(
    name: str, workload: Workload, cpus: float, memory: str, gpus: int, cpu_request: str | None = None
) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": cpu_quantity(cpus), "memory": memory}
    if gpus:
        limits[workload.gpu.resource] = str(gpus)
    requests = dict(limits) | ({"cpu": cpu_request} if cpu_request else {})
    container: dict[str, Any] = {
        "name": name,
        "image": workload.image,
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": [{"name": "slipway-config", "mountPath": CONFIG_DIR, "readOnly": True}],
        "securityContext": copy.deepcopy(CONTAINER_SECURITY),
    }
    env = []
    if workload.salt is not None:
        env.append(salt_env(workload.salt))
    if workload.tracking_secret:
        env += [
            {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": workload.tracking_secret, "key": key, "optional": True}},
            }
            for key in TRACKING_CREDENTIALS
        ]
    if env:
        container["env"] = env
    env_from: list[dict[str, Any]] = []
    if workload.storage_secret:
        env_from.append({"secretRef": {"name": workload.storage_secret}})
    if workload.source_secret:  # prefixed: the source's keys never replace the store's (the output is written there)
        env_from.append({"secretRef": {"name": workload.source_secret}, "prefix": SOURCE_ENV_PREFIX})
    if env_from:
        container["envFrom"] = env_from
    return container


def _pod_spec(container: dict[str, Any], workload: Workload, gpus: int, *, worker: bool) -> dict[str, Any]:
    """Node selectors and tolerations place the workers (where the GPUs are); the head, which only schedules,
    may run on any node (a GPU-pool selector on it would keep it Pending on clusters whose GPU nodes are tainted
    or scarce)."""
    r = workload.resources
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [config_volume()],
        "securityContext": copy.deepcopy(POD_SECURITY),
        "terminationGracePeriodSeconds": RAY_POD_GRACE_SECONDS,
    }
    if r.priority_class_name:
        spec["priorityClassName"] = r.priority_class_name
    if not worker:
        return spec
    tolerations = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in r.tolerations]
    if gpus:
        spec |= workload.gpu.place(r.node_selector, tolerations)
        return spec
    if r.node_selector:
        spec["nodeSelector"] = dict(r.node_selector)
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


def _submitter(workload: Workload, pod_labels: dict[str, str]) -> dict[str, Any]:
    """The pod KubeRay runs `ray job submit` in (K8sJobMode); KubeRay fills in the command. Given here so it
    meets the restricted Pod Security Standard like the Ray pods (KubeRay's default sets no securityContext), and
    carries Slipway's labels like them (the operator watches the pods so labelled)."""
    limits = {"cpu": "1", "memory": "1Gi"}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": copy.deepcopy(POD_SECURITY),
        "containers": [
            {
                "name": "ray-job-submitter",
                "image": workload.image,
                "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": limits},
                "securityContext": copy.deepcopy(CONTAINER_SECURITY),
            }
        ],
    }
    if workload.resources.priority_class_name:
        spec["priorityClassName"] = workload.resources.priority_class_name
    return {"metadata": {"labels": dict(pod_labels)}, "spec": spec}


def worker_start_params(cpus: float) -> dict[str, str]:
    """`ray start` of a worker pod: one `WORKER_RESOURCE`, which each training worker asks for (one worker per
    pod, as `resources.workers` says), and whole CPUs (KubeRay would take them from the limit; a fractional one,
    500m, still gives Ray one CPU, which the workers' fractional requests fit in)."""
    params = {"resources": "'" + json.dumps({WORKER_RESOURCE: 1}) + "'"}
    if not float(cpus).is_integer():
        params["num-cpus"] = str(math.ceil(cpus))
    return params


def ray_job(owner: Owner, workload: Workload) -> dict[str, Any]:
    """A KubeRay RayJob (ray.io/v1): the head runs the entrypoint, the worker group gets the GPUs."""
    r = workload.resources
    extra = {STEP_LABEL: workload.step, **({KUEUE_QUEUE_LABEL: r.queue} if r.queue else {})}
    head = _container(
        "ray-head", workload, cpus=r.cpus_per_worker, memory=r.memory, gpus=0, cpu_request=HEAD_CPU_REQUEST
    )
    head["ports"] = [
        {"containerPort": 6379, "name": "gcs"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
    ]
    worker = _container("ray-worker", workload, cpus=r.cpus_per_worker, memory=r.memory, gpus=r.gpus_per_worker)
    for container in (head, worker):
        container["env"] = [*container.get("env", []), {"name": STOP_FILE_ENV, "value": STOP_FILE}]
        container["lifecycle"] = stop_hook()
    template_meta = {"labels": labels(owner), "annotations": {CONFIG_ANNOTATION: workload.config}}
    spec: dict[str, Any] = {
        "entrypoint": f"python -m slipway_trainer {workload.step} --config {CONFIG_DIR}/{CONFIG_FILE}",
        "shutdownAfterJobFinishes": True,
        "backoffLimit": workload.backoff_limit,
        # A queued run's RayJob is created suspended: Kueue admits it by unsuspending it (its webhook would do the
        # same; this way nothing depends on the webhook being reachable).
        "suspend": workload.suspend or bool(r.queue),
        "submitterPodTemplate": _submitter(workload, labels(owner)),
        "rayClusterSpec": {
            "rayVersion": RAY_VERSION,
            "headGroupSpec": {
                # The head schedules, it does not train: no GPU and no Ray work on it.
                "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                "template": {
                    "metadata": template_meta,
                    "spec": _pod_spec(head, workload, gpus=0, worker=False),
                },
            },
            "workerGroupSpecs": [
                {
                    "groupName": "workers",
                    "replicas": r.workers,
                    "minReplicas": r.workers,
                    "maxReplicas": r.workers,
                    "rayStartParams": worker_start_params(r.cpus_per_worker),
                    "template": {
                        "metadata": copy.deepcopy(template_meta),
                        "spec": _pod_spec(worker, workload, gpus=r.gpus_per_worker, worker=True),
                    },
                }
            ],
        },
    }
    if workload.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = workload.ttl_seconds_after_finished
    if workload.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = workload.active_deadline_seconds
    meta = metadata(owner, child_name(owner, workload.name or workload.step), extra)
    if r.queue and workload.suspend:
        meta["annotations"] = {HELD_ANNOTATION: "true"}
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": spec}


SERVER_PORT = 8080
GRPC_PORT = 8081  # the OIP v2 gRPC service of the same server


TRACK_LABEL = "slipway.dev/track"
REVISION_LABEL = "slipway.dev/revision"
WEIGHT_ANNOTATION = "slipway.dev/traffic-weight"
STARTUP_PROBE_PERIOD = 5
ENDPOINT_DRAIN_SECONDS = 5


def salt_env(ref: SecretKeyRef) -> dict[str, Any]:
    """The salt of `privacy.hashColumns`, from its Secret key, as the workload reads it."""
    return {"name": SALT_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def server_deployment(
    owner: Owner,
    track: str,
    revision: str,
    image: str,
    config_map_name: str,
    resources: Any,
    replicas: int,
    weight: int = 100,
    storage_secret: str | None = None,
    gpu: GpuPool = GpuPool(),
    startup_seconds: int = 600,
    salt: SecretKeyRef | None = None,
) -> dict[str, Any]:
    """One track (`stable` or `canary`) of a ModelDeployment's inference server: `<name>-<track>`, serving one
    revision, probed on OIP v2 health. The selector names the track only (selectors are immutable), so a new
    revision on the stable track is a Deployment rolling update. `weight` is the track's share of traffic in
    percent: on Kubernetes the Service splits by ready replicas; the local backend's router uses the weight."""
    selector = {f"slipway.dev/{owner.kind.lower()}": owner.name, TRACK_LABEL: track}
    limits: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    if resources.gpus:
        limits[gpu.resource] = str(resources.gpus)
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "command": ["python", "-m", "slipway_trainer", "serve", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "ports": [{"containerPort": SERVER_PORT, "name": "http"}, {"containerPort": GRPC_PORT, "name": "grpc"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5},
        # Liveness counts only once the server answered it: fetching and loading a model may take minutes.
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": STARTUP_PROBE_PERIOD,
            "failureThreshold": max(1, -(-startup_seconds // STARTUP_PROBE_PERIOD)),
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        # A deleted pod stays in the Service's endpoints until every kube-proxy has synced: it keeps serving for a
        # few seconds before SIGTERM, so no connection is refused meanwhile (seen on the real node: 4 of 643).
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(ENDPOINT_DRAIN_SECONDS)]}}},
        "resources": {"requests": dict(limits), "limits": limits},
        "volumeMounts": [{"name": "slipway-config", "mountPath": CONFIG_DIR, "readOnly": True}],
        "securityContext": copy.deepcopy(CONTAINER_SECURITY),
    }
    if storage_secret:
        container["envFrom"] = [{"secretRef": {"name": storage_secret}}]
    if salt is not None:  # the server hashes privacy.hashColumns as the dataset did
        container["env"] = [salt_env(salt)]
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "slipway-config", "configMap": {"name": config_map_name}}],
        "securityContext": copy.deepcopy(POD_SECURITY),
        "terminationGracePeriodSeconds": 45,  # the server finishes in-flight requests on SIGTERM
    }
    if resources.gpus:
        pod |= gpu.place({}, [])
    meta = metadata(owner, child_name(owner, track), {TRACK_LABEL: track, REVISION_LABEL: revision})
    meta["annotations"] = {WEIGHT_ANNOTATION: str(weight)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": {**labels(owner), **selector, REVISION_LABEL: revision},
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(SERVER_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod,
            },
        },
    }


def server_service(owner: Owner) -> dict[str, Any]:
    """One Service over every revision of a ModelDeployment, REST on port 80 and gRPC on GRPC_PORT: traffic splits
    by ready replicas (canaries); gRPC's by connection, since a channel keeps one."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, owner.name),
        "spec": {
            "selector": {f"slipway.dev/{owner.kind.lower()}": owner.name},
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "kubernetes.io/h2c"},
            ],
        },
    }


def autoscaler(owner: Owner, track: str, minimum: int, maximum: int, autoscaling: Any) -> dict[str, Any]:
    """An `autoscaling/v2` HorizontalPodAutoscaler of one track's Deployment (the stable one), named like it:
    `cpu` as the average utilisation of the pods' CPU request (metrics-server), `concurrency` as the average of
    the servers' in-flight gauge, a pods metric (a custom-metrics adapter serves it)."""
    name, target = child_name(owner, track), autoscaling.target_value()
    if autoscaling.metric == "cpu":
        metric: dict[str, Any] = {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}},
        }
    else:
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": IN_FLIGHT_METRIC},
                "target": {"type": "AverageValue", "averageValue": str(target)},
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(owner, name, {TRACK_LABEL: track}),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": minimum,
            "maxReplicas": maximum,
            "metrics": [metric],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds}},
        },
    }


PEERS = "peers"  # the suffix of a ModelDeployment's headless Service over all its servers


def peers_service(owner: Owner) -> dict[str, Any]:
    """A headless Service over every ready server of a ModelDeployment (both tracks): its DNS name lists their pod
    addresses, so a server that gets feedback for a request another one answered can hand it over."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, child_name(owner, PEERS)),
        "spec": {
            "clusterIP": "None",
            "selector": {f"slipway.dev/{owner.kind.lower()}": owner.name},
            "ports": [{"name": "http", "port": SERVER_PORT, "targetPort": "http"}],
        },
    }


def peers_address(owner: Owner) -> str:
    """How a server finds its peers: the headless Service's DNS name (`slipway run` rewrites it to its router
    table)."""
    return f"dns://{child_name(owner, PEERS)}.{owner.namespace}.svc.cluster.local:{SERVER_PORT}"


SHADOW = "shadow"  # the track of a candidate in shadow, and the suffix of its Deployment and headless Service
SHADOW_OF_LABEL = "slipway.dev/shadow-of"


def _shadow_labels(owner: Owner) -> dict[str, str]:
    """A shadow's labels: not the ModelDeployment's own label, so no Service of its users selects its pods."""
    own = f"slipway.dev/{owner.kind.lower()}"
    return {**{k: v for k, v in labels(owner).items() if k != own}, SHADOW_OF_LABEL: owner.name}


def shadow_deployment(
    owner: Owner, revision: str, image: str, config_map_name: str, resources: Any, replicas: int, **options: Any
) -> dict[str, Any]:
    """A candidate in shadow (`<name>-shadow`): a server like a track's (`options` as `server_deployment`'s), whose
    pods only the stable servers' copies reach, through `shadow_service`."""
    deployment = server_deployment(owner, SHADOW, revision, image, config_map_name, resources, replicas, 0, **options)
    selector = {SHADOW_OF_LABEL: owner.name, TRACK_LABEL: SHADOW}
    deployment["metadata"]["labels"] = {**_shadow_labels(owner), **selector, REVISION_LABEL: revision}
    deployment["spec"]["selector"]["matchLabels"] = selector
    deployment["spec"]["template"]["metadata"]["labels"] = {
        **_shadow_labels(owner),
        **selector,
        REVISION_LABEL: revision,
    }
    return deployment


def shadow_service(owner: Owner) -> dict[str, Any]:
    """A headless Service over a ModelDeployment's shadow servers (none outside a shadow stage): its DNS name is
    where the stable servers send copies of requests."""
    service = peers_service(owner)
    service["metadata"]["name"] = child_name(owner, SHADOW)
    service["spec"]["selector"] = {SHADOW_OF_LABEL: owner.name}
    return service


def shadow_address(owner: Owner) -> str:
    """Where a server sends copies of requests (`ServeConfig.mirror`)."""
    return f"dns://{child_name(owner, SHADOW)}.{owner.namespace}.svc.cluster.local:{SERVER_PORT}"
