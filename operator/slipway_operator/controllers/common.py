"""What every controller needs: the operator's settings and where each resource's artifacts live."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from slipway_operator import builders
from slipway_operator.api.common import FailurePolicy, Phase, Resources, TrackingSpec
from slipway_operator.runstatus import Observed
from slipway_operator.workloads import tracking_config
from slipway_trainer.config.base import Tracking


@dataclass(frozen=True)
class Settings:
    """The operator's flags, passed in (read from the environment only by `from_env`, at the edge)."""

    image: str  # the trainer image: RayJob pods (prep, train, tune), and servers of TorchScript models
    store_uri: str  # e.g. s3://slipway: artifacts go under <store>/<plural>/<namespace>/<name>
    storage_secret: str | None = None  # the Secret with the store's credentials, when the resource names none
    allow_file_uris: bool = True  # file:// in specs; the kubernetes backend refuses them unless allowed
    server_image: str = ""  # the serving-only image (ONNX Runtime, no torch) for ONNX models; "" = `image`
    gpu: builders.GpuPool = field(default_factory=builders.GpuPool)
    tracking_uri: str | None = None  # MLflow: where runs are logged when their spec does not say
    tracking_secret: str | None = None  # the Secret with MLflow's credentials, when the resource names none
    # The operator process's own (read by handlers.py, never by a controller):
    backend: str = "kubernetes"  # kubernetes | local: where children run
    state: str = ".slipway/state"  # the local backend's folder
    metrics_address: str | None = None  # host:port of the operator's /metrics, when served
    workers: int = 8  # Kopf's handler threads
    strict_status: bool = False  # a status field the kind's model lacks is an error (tests), else dropped and logged

    def serving_image(self, model_format: str) -> str:
        """The server image has no torch: it serves ONNX; TorchScript models are served from the trainer image."""
        return self.server_image if self.server_image and model_format == "onnx" else self.image

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """The operator's settings from its environment (the chart sets these); a malformed value is an error
        that names the variable."""
        tolerations = _json_env(env, "SLIPWAY_GPU_TOLERATIONS", list, None)
        backend = env.get("SLIPWAY_BACKEND") or "kubernetes"
        if backend not in ("kubernetes", "local"):
            raise ValueError(f"SLIPWAY_BACKEND must be kubernetes or local, got {backend!r}")
        workers = env.get("SLIPWAY_WORKERS") or "8"
        if not workers.isdigit() or int(workers) < 1:
            raise ValueError(f"SLIPWAY_WORKERS must be a whole number of at least 1, got {workers!r}")
        return cls(
            image=env.get("SLIPWAY_IMAGE", "ghcr.io/slipway/trainer:0.1.0"),
            server_image=env.get("SLIPWAY_SERVER_IMAGE", ""),
            store_uri=env.get("SLIPWAY_STORE", "file:///var/lib/slipway"),
            storage_secret=env.get("SLIPWAY_STORAGE_SECRET") or None,
            allow_file_uris=backend == "local"
            or env.get("SLIPWAY_ALLOW_FILE_URIS", "").lower() in ("1", "true", "yes"),
            gpu=builders.GpuPool(
                resource=env.get("SLIPWAY_GPU_RESOURCE") or builders.GPU_RESOURCE,
                node_selector=_json_env(env, "SLIPWAY_GPU_NODE_SELECTOR", dict, {}),
                tolerations=None if tolerations is None else tuple(tolerations),
            ),
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            tracking_secret=env.get("SLIPWAY_TRACKING_SECRET") or None,
            backend=backend,
            state=env.get("SLIPWAY_STATE") or ".slipway/state",
            metrics_address=env.get("SLIPWAY_METRICS_ADDRESS") or None,
            workers=int(workers),
            strict_status=env.get("SLIPWAY_STRICT_STATUS", "").lower() in ("1", "true", "yes"),
        )


def _json_env(env: Mapping[str, str], name: str, kind: type, default: Any) -> Any:
    """A JSON object of label strings (kind dict) or a list of objects (kind list) from `env[name]`."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} is not valid JSON ({err.msg} at character {err.pos}): {raw[:80]!r}") from None
    if isinstance(value, dict) and kind is dict and all(isinstance(v, str) for v in value.values()):
        return value
    if isinstance(value, list) and kind is list and all(isinstance(t, dict) for t in value):
        return value
    shape = "an object of label strings" if kind is dict else "a list of toleration objects"
    raise ValueError(f"{name} must be {shape} in JSON, got {raw[:80]!r}")


def file_uri_paths(spec: Any, prefix: str = "spec") -> list[str]:
    """Where a spec names a `file://` URI: on a cluster that is a path on whichever node a pod lands on."""
    if isinstance(spec, dict):
        return [p for k, v in spec.items() for p in file_uri_paths(v, f"{prefix}.{k}")]
    if isinstance(spec, list):
        return [p for i, v in enumerate(spec) for p in file_uri_paths(v, f"{prefix}[{i}]")]
    return [prefix] if isinstance(spec, str) and spec.startswith("file://") else []


RETRAIN_REASON = "slipway.dev/retrain-reason"  # annotation of a run a ModelDeployment's autoUpdate.retrain made


def retrain_lineage(obj: dict[str, Any]) -> dict[str, str]:
    """`retrainReason` for the lineage of a run that autoUpdate.retrain created (its annotation), else nothing."""
    reason = ((obj.get("metadata") or {}).get("annotations") or {}).get(RETRAIN_REASON)
    return {"retrainReason": str(reason)} if reason else {}


def artifact_uri(settings: Settings, folder: str, namespace: str, name: str) -> str:
    """`<store>/<folder>/<namespace>/<name>`, e.g. s3://slipway/runs/ml/fashion-mlp."""
    return f"{settings.store_uri.rstrip('/')}/{folder}/{namespace}/{name}"


def phase_of(obj: dict[str, Any] | None) -> str:
    return str(((obj or {}).get("status") or {}).get("phase") or Phase.PENDING)


@dataclass(frozen=True)
class Desired:
    """The children a resource should have now, or why it has to wait for them."""

    children: list[dict[str, Any]]
    waiting_for: str | None = None


Ref = tuple[str, str]  # (kind, name) of a resource in the same namespace
Found = Mapping[Ref, dict[str, Any] | None]  # each reference as read (None: it does not exist)
Child = tuple[str, str, str]  # (apiVersion, kind, name) of a child


@dataclass(frozen=True)
class RunController:
    """A kind whose work is one workload, run as a RayJob: DatasetPrep, TrainingRun, TuningSweep.

    `reconcile.reconcile_run` drives any of them the same way: read `references`, apply `desired_children`, read
    the workload's progress.json and result.json under `artifacts`, and add `status_fields` to the run status.
    """

    kind: str
    step: str  # the workload (`python -m slipway_trainer <step>`) and the suffix of its RayJob
    artifact_folder: str  # its artifacts live under <store>/<artifact_folder>/<namespace>/<name>
    references: Callable[[dict[str, Any]], list[Ref]]  # spec -> the resources it needs first
    desired_children: Callable[[dict[str, Any], Found, Settings], Desired]
    status_fields: Callable[[dict[str, Any], Settings, Observed], dict[str, Any]]  # its own, from what was seen
    produces_model: bool = False  # a ModelDeployment may serve what it made
    artifacts: Callable[[dict[str, Any], Settings], str] | None = None  # where progress/result go, if not default
    stops: Callable[[dict[str, Any]], list[Child]] | None = None  # its RayJobs, if not the one `<name>-<step>`
    refreshes: bool = False  # a Succeeded one runs again on a schedule (DatasetPrep's spec.refresh)

    def artifacts_of(self, obj: dict[str, Any], settings: Settings) -> str:
        if self.artifacts is not None:
            return self.artifacts(obj, settings)
        meta = obj["metadata"]
        return artifact_uri(settings, self.artifact_folder, meta["namespace"], meta["name"])

    def children_to_stop(self, obj: dict[str, Any]) -> list[Child]:
        """What a deleted resource leaves outside Kubernetes' garbage collector (the local backend)."""
        if self.stops is not None:
            return self.stops(obj)
        return [("ray.io/v1", "RayJob", builders.suffixed(obj["metadata"]["name"], self.step))]


@dataclass(frozen=True)
class ServingController:
    """A kind that serves: ModelDeployment, driven by `reconcile.reconcile_serving`."""

    kind: str
    references: Callable[[dict[str, Any]], list[Ref]]
    children_to_stop: Callable[[dict[str, Any]], list[Child]]


Controller = RunController | ServingController


def dataset_ref(dataset: Mapping[str, Any] | None) -> list[Ref]:
    """`[("DatasetPrep", ref)]` for a `dataset:` block that names one by `ref`, else `[]`."""
    ref = (dataset or {}).get("ref")
    return [("DatasetPrep", str(ref))] if ref else []


def tracking_of(spec: TrackingSpec | None, settings: Settings, namespace: str) -> tuple[Tracking | None, str | None]:
    """(where a run is logged in MLflow, the Secret with its credentials): both None when it is not tracked."""
    tracking = tracking_config(spec, settings.tracking_uri, namespace)
    if tracking is None:
        return None, None
    return tracking, (spec.credentials_secret if spec else None) or settings.tracking_secret


def run_job(
    owner: builders.Owner,
    step: str,
    settings: Settings,
    resources: Resources,
    config: BaseModel,
    failure_policy: FailurePolicy,
    ttl_seconds_after_finished: int | None,
    suspend: bool,
    tracking_secret: str | None = None,
) -> dict[str, Any]:
    """The RayJob of a TrainingRun or TuningSweep (`tracking_secret`: MLflow's credentials, when it is tracked)."""
    return builders.ray_job(
        owner,
        builders.Workload(
            step=step,
            image=settings.image,
            resources=resources,
            config=builders.config_text(config),
            storage_secret=settings.storage_secret,
            gpu=settings.gpu,
            ttl_seconds_after_finished=ttl_seconds_after_finished,
            backoff_limit=failure_policy.backoff_limit,
            active_deadline_seconds=failure_policy.active_deadline_seconds,
            suspend=suspend,
            tracking_secret=tracking_secret,
        ),
    )


CONFIG_HASH = "slipway.dev/config-hash"
APPLIED_HASH = "slipway.dev/applied-hash"


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_digest(config: str | None) -> str:
    """The hash of a workload config, as it was when the config was a ConfigMap's data (so a run started by an
    operator of that time keeps its hash)."""
    return _digest({builders.CONFIG_FILE: config} if config is not None else {})


def stamp(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The children with two annotations on the one that runs (RayJob): the hash of the workload config it was
    started with (a started run's config never changes silently) and the hash of everything applied (so a pass
    that changes nothing sends nothing)."""
    config = next((builders.job_config(c) for c in children if c["kind"] == "RayJob"), None)
    hashes = {CONFIG_HASH: config_digest(config), APPLIED_HASH: _digest(children)}

    def stamped(child: dict[str, Any]) -> dict[str, Any]:  # a new object and metadata, the rest shared
        meta = child["metadata"]
        return {**child, "metadata": {**meta, "annotations": {**meta.get("annotations", {}), **hashes}}}

    return [stamped(c) if c["kind"] == "RayJob" else c for c in children]


def changed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON documents differ, e.g. ['spec.model.params.dropout']."""
    if isinstance(before, dict) and isinstance(after, dict):
        paths: list[str] = []
        for key in sorted(set(before) | set(after)):
            paths += changed_paths(before.get(key), after.get(key), f"{prefix}{key}.")
        return paths
    return [] if before == after else [prefix.rstrip(".") or "(all)"]
