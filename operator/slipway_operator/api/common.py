"""Pieces every kind shares: resources, scheduling, conditions, status basics and lineage."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from slipway_trainer.config.base import ConfigModel, Cores

GROUP = "slipway.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# A Kubernetes quantity such as `2`, `500m`, `4Gi`.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=32)]
_SUFFIXES = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}  # fmt: skip


def quantity(value: Any) -> float | None:
    """A Kubernetes quantity (`500m`, `2`, `4Gi`, as specs and the HPA's status write them) as a number; None when
    it is not one."""
    text = str(value or "")
    suffix = next((s for s in sorted(_SUFFIXES, key=len, reverse=True) if text.endswith(s)), "")
    try:
        return float(text.removesuffix(suffix)) * _SUFFIXES.get(suffix, 1.0) if text else None
    except ValueError:
        return None


# A Kubernetes object name in the same namespace.
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]


class Toleration(ConfigModel):
    """A Kubernetes toleration, as in a pod spec."""

    key: str | None = Field(default=None, max_length=316)
    """The taint key to tolerate; empty with operator Exists tolerates everything."""

    operator: Literal["Exists", "Equal"] = "Equal"
    """Equal (key and value match) or Exists (any value)."""

    value: str | None = Field(default=None, max_length=63)
    """The taint value to match with operator Equal."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to match; empty matches all."""

    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


class Resources(ConfigModel):
    """Compute for a workload: the Ray workers it runs on and where they may be scheduled."""

    workers: int = Field(default=1, ge=1, le=1024)
    """Ray workers (pods). Training is data-parallel across them."""

    cpus_per_worker: Cores = 1
    """CPU cores per worker. A fraction (0.5) shares a core: Ray places fractional workers side by side, so two
    such workers run data-parallel where one whole core is free."""

    gpus_per_worker: int = Field(default=0, ge=0, le=16)
    """GPUs per worker, requested as the cluster's GPU resource (`nvidia.com/gpu` unless the operator is set up
    otherwise). Workers with GPUs land on the operator's GPU pool (its node selector and tolerations)."""

    memory: Quantity = "4Gi"
    """Memory per worker, a Kubernetes quantity such as 4Gi."""

    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    """Node labels the workers must match, e.g. `{nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}`."""

    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Tolerations added to the worker pods."""

    priority_class_name: str = Field(default="", max_length=253)
    """PriorityClass of the pods."""

    queue: str = Field(default="", max_length=63)
    """Kueue LocalQueue to submit to (sets the `kueue.x-k8s.io/queue-name` label)."""


class FailurePolicy(ConfigModel):
    """Retries and deadlines."""

    max_failures: int = Field(default=3, ge=0, le=100)
    """Worker failures Ray Train recovers from within one job (restarting from the newest checkpoint): a worker
    process that dies (a crash, the kernel's OOM killer, Ray's memory monitor). A worker pod deleted or drained
    (its Ray node gets SIGTERM: a preemption, to Ray) is resumed from the checkpoint without counting."""

    backoff_limit: int = Field(default=2, ge=0, le=100)
    """Times the whole job is retried (a fresh RayJob that resumes from the newest checkpoint)."""

    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Fail the job if it runs longer than this."""

    pending_timeout_seconds: int = Field(default=300, ge=10, le=86400)
    """Fail the run when a pod of it cannot start for this long (an image that cannot be pulled, no node with the
    resources it asks for, a Secret that is not there) instead of waiting forever; its RayJob is suspended, which
    frees what it holds."""


class SecretKeyRef(ConfigModel):
    """A key of a Secret in the same namespace."""

    name: ObjectName
    """The Secret's name."""

    key: str = Field(min_length=1, max_length=253)
    """The key inside the Secret."""


class TrackingSpec(ConfigModel):
    """Log the finished run to an MLflow tracking server: parameters, every epoch's metrics, test metrics, the
    dataset version, the report and the model (a sweep: a parent run with its trials as child runs)."""

    enabled: bool = True
    """false: not logged, even when the operator has a default server (`MLFLOW_TRACKING_URI`)."""

    uri: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    """The tracking server, `http(s)://host[:port]`; default: the operator's `MLFLOW_TRACKING_URI`."""

    experiment: str | None = Field(default=None, min_length=1, max_length=500)
    """The MLflow experiment (made when missing); default: the resource's namespace."""

    credentials_secret: ObjectName | None = None
    """A Secret in the same namespace holding `MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and
    `MLFLOW_TRACKING_PASSWORD`; default: the operator's (`SLIPWAY_TRACKING_SECRET`), if any."""


class TrackingStatus(ConfigModel):
    """The MLflow run a finished run was logged as."""

    run_id: str = Field(max_length=64)
    """The MLflow run's id."""

    experiment_id: str | None = Field(default=None, max_length=64)
    """The experiment's id."""

    url: str = Field(max_length=2048)
    """The run's page on the tracking server."""


class LabelSelectorRequirement(ConfigModel):
    """A label selector requirement, as in Kubernetes."""

    key: str = Field(min_length=1, max_length=316)
    """The label key."""

    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""

    values: list[str] = Field(default_factory=list, max_length=64)
    """Values for In and NotIn."""


class LabelSelector(ConfigModel):
    """A Kubernetes label selector."""

    match_labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    """Labels that must all match."""

    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=16)
    """Requirements that must all hold."""


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ConfigModel):
    """A kstatus-style condition: Ready, Reconciling, Stalled and the kind's own."""

    type: str = Field(max_length=316)
    """Ready, Reconciling, Stalled, Succeeded, Failed, Available, Degraded or Drifted."""

    status: ConditionStatus
    """True, False or Unknown."""

    reason: str = Field(default="", max_length=1024)
    """A CamelCase word for machines, e.g. WaitingForDependency, InvalidSpec."""

    message: str = Field(default="", max_length=32768)
    """What happened and what to do about it, for people."""

    last_transition_time: str | None = None
    """When the status last changed (RFC 3339)."""

    observed_generation: int | None = None
    """The spec generation this condition was computed from."""


class Phase(StrEnum):
    """Where a resource stands, for people and printer columns. Conditions are the contract."""

    PENDING = "Pending"
    WAITING = "Waiting"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DEPLOYING = "Deploying"
    AVAILABLE = "Available"
    DEGRADED = "Degraded"
    INVALID = "Invalid"


class StatusBase(ConfigModel):
    """What every kind's status has."""

    observed_generation: int | None = None
    """The spec generation the status describes."""

    phase: Phase | None = None
    """Pending, Waiting, Running, Suspended, Succeeded, Failed (runs), Deploying, Available, Degraded
    (deployments) or Invalid."""

    conditions: list[Condition] = Field(default_factory=list, max_length=32)
    """kstatus conditions: Ready, Reconciling, Stalled, and the kind's own."""

    message: str = Field(default="", max_length=32768)
    """A one-line summary of the latest event worth knowing."""


class QueueStatus(ConfigModel):
    """Where a queued run (spec.resources.queue) stands in Kueue."""

    name: str = Field(max_length=63)
    """The LocalQueue."""

    admitted: bool = False
    """Kueue reserved quota for it and let it start."""

    position: int | None = None
    """While waiting: its place among the LocalQueue's pending workloads (1 = next)."""

    message: str | None = Field(default=None, max_length=4096)
    """While waiting: what it waits for, in Kueue's words (e.g. the quota that does not fit yet)."""


class RunStatusBase(StatusBase):
    """What a status of a run (data prep, training, sweep) adds."""

    queue: QueueStatus | None = None
    """Set for a run with spec.resources.queue on a cluster: its place in Kueue."""

    start_time: str | None = None
    """When the workload started (RFC 3339)."""

    completion_time: str | None = None
    """When the workload finished (RFC 3339)."""

    ray_job_name: str | None = None
    """The RayJob running the workload (kubernetes backend)."""

    artifact_uri: str | None = None
    """Where the workload writes progress.json, result.json and its outputs."""

    log_uri: str | None = None
    """The workload's log (its driver's output, every worker's lines with it), copied there as it runs: still
    there after its RayCluster is gone. `slipway logs NAME` prints it."""

    progress: str = Field(default="", max_length=256)
    """Progress in words, e.g. `epoch 3/10` or `1.2M rows`."""


Metrics = dict[str, float]
FreeForm = dict[str, Any]
