"""ModelDeployment: serve a model over the Open Inference Protocol v2, watch it, roll it out and update it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from slipway_operator.api.common import LabelSelector, ObjectName, Quantity, SecretKeyRef, StatusBase
from slipway_operator.api.kind import COMMON_COLUMNS_AGE, Kind, PrinterColumn, Rule, exactly_one
from slipway_operator.api.trainingrun import Lineage, TrainingRunSpec
from slipway_operator.api.tuningsweep import TuningSweepSpec
from slipway_trainer.config.base import ConfigModel, MetricName
from slipway_trainer.config.serve import Monitoring, Quality, ServerSpec

MAX_CANARY_STEPS = 10


class ModelSource(ConfigModel):
    """The model to serve. Exactly one field is set."""

    from_training_run: ObjectName | None = None
    """A TrainingRun in the same namespace: its exported model, once it has succeeded."""

    from_tuning_sweep: ObjectName | None = None
    """A TuningSweep in the same namespace: its best trial's model, once it has succeeded."""

    uri: str | None = Field(default=None, max_length=2048)
    """An exported model folder (`s3://...` or `file://...`) with its transform spec, or a version of a model in an
    MLflow registry that Slipway registered: `models:/<name>/<version>` or `models:/<name>@<alias>` (an alias is
    followed as it moves)."""


class RegistrySpec(ConfigModel):
    """Keep the served model in an MLflow model registry: every model this deployment rolls out is a version of
    `name` (its lineage as tags), and `alias` points at the one served."""

    name: str = Field(min_length=1, max_length=256)
    """The registered model (made when missing)."""

    alias: str = Field(default="champion", min_length=1, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    """Moved to the served version on every promotion (and back when an earlier model is served again)."""

    uri: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    """The MLflow server; default: the operator's `MLFLOW_TRACKING_URI` (its credentials are the operator's)."""


class Replicas(ConfigModel):
    """How many server pods run."""

    min: int = Field(default=1, ge=0, le=1000)
    """Replicas at least."""

    max: int | None = Field(default=None, ge=1, le=1000)
    """Replicas at most (scaling between min and max); default: min."""


AUTOSCALING_TARGETS = {"cpu": 70, "concurrency": 4}  # the target of each metric when `target` is not given


class Autoscaling(ConfigModel):
    """How the stable track scales between replicas.min and replicas.max: an `autoscaling/v2`
    HorizontalPodAutoscaler on its Deployment (`slipway run`: the same rule, applied by the local backend)."""

    metric: Literal["cpu", "concurrency"] = "cpu"
    """`cpu`: the servers' CPU use as a percent of resources.cpu (needs metrics-server); `concurrency`: requests in
    flight per server, the servers' `slipway_inference_in_flight` gauge (needs a custom-metrics adapter, such as
    prometheus-adapter, serving it as a pods metric)."""

    target: int | None = Field(default=None, ge=1, le=1000)
    """The value per server the autoscaler keeps: CPU percent (default 70) or requests in flight (default 4)."""

    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600)
    """Replicas are removed only when every recommendation of this window agrees (the HPA's
    behavior.scaleDown.stabilizationWindowSeconds); scaling up is immediate."""

    def target_value(self) -> int:
        return self.target or AUTOSCALING_TARGETS[self.metric]


class ServingResources(ConfigModel):
    """Compute of each server pod."""

    cpu: Quantity = "1"
    """CPU per pod, a Kubernetes quantity."""

    memory: Quantity = "2Gi"
    """Memory per pod, a Kubernetes quantity."""

    gpus: int = Field(default=0, ge=0, le=16)
    """GPUs per pod, requested as the cluster's GPU resource (`nvidia.com/gpu` unless the operator is set up
    otherwise); such pods land on the operator's GPU pool."""


class Analysis(ConfigModel):
    """The gate each canary step must pass, measured from the servers' metrics."""

    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    """Largest fraction of requests answered 5xx."""

    max_p99_latency_ms: float = Field(default=100.0, gt=0)
    """Largest 99th-percentile latency."""

    max_quality_drop: float | None = Field(default=None, ge=0)
    """With feedback flowing: how much worse the canary's live `monitoring.quality.metric` may be than the stable
    track's (in the metric's units: 0.02 is two points of accuracy). Judged once both have
    `monitoring.quality.minRows` feedback rows; before that the step is inconclusive."""

    min_requests: int = Field(default=20, ge=1, le=10_000_000)
    """Requests the canary must serve during a step before the step is judged. With fewer, the step is
    inconclusive: the canary holds its weight (condition Paused) and is judged again as traffic arrives; it is never
    promoted unjudged."""


class Canary(ConfigModel):
    """A canary rollout: the new model gets a growing share of traffic while the gate holds."""

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 50, 100], min_length=1, max_length=MAX_CANARY_STEPS
    )
    """Percent of traffic on the new model at each step, increasing, e.g. [10, 50, 100]."""

    interval_seconds: int = Field(default=60, ge=1, le=86400)
    """Time at each step before the gate is judged."""

    analysis: Analysis = Field(default_factory=Analysis)
    """The gate."""


class Shadow(ConfigModel):
    """A stage before the canary: the candidate gets a copy of live requests, users only the stable answers."""

    interval_seconds: int = Field(default=60, ge=1, le=86400)
    """Time in shadow before the stage is judged (again on every pass while it is inconclusive)."""

    min_requests: int = Field(default=20, ge=1, le=10_000_000)
    """Copies the shadow must answer before it is judged; with fewer the rollout pauses (condition Paused)."""

    min_agreement: float = Field(default=0.9, ge=0, le=1)
    """Classification: the least fraction of rows on which the shadow's label equals the stable model's."""

    max_relative_difference: float = Field(default=0.1, ge=0)
    """Regression: the largest mean symmetric relative difference |a - b| / ((|a| + |b|) / 2) between the shadow's
    values and the stable model's."""

    replicas: int = Field(default=1, ge=1, le=100)
    """Shadow server pods (each stable server sends its copies to them in turn)."""


class Rollout(ConfigModel):
    """How a new model replaces the serving one."""

    strategy: Literal["rolling", "canary"] = "rolling"
    """rolling (Deployment rolling update) or canary (stepwise, gated, rolled back on failure)."""

    canary: Canary | None = None
    """Canary steps and gate; required for strategy canary."""

    shadow: Shadow | None = None
    """An optional shadow stage before the canary (strategy canary): its errors and p99 are judged by the canary's
    analysis, its answers against the stable model's by minAgreement or maxRelativeDifference."""


class Gate(ConfigModel):
    """When a newer model is good enough to roll out."""

    metric: MetricName = "test_accuracy"
    """The metric compared, from the candidate's status metrics."""

    min_improvement: float = 0.0
    """How much better than the serving model the candidate must be."""

    direction: Literal["maximize", "minimize"] = "maximize"
    """Whether larger is better."""

    max_fairness_gap: float | None = Field(default=None, ge=0)
    """The largest gap a candidate may show between the groups of a sensitive feature on its test split
    (`evaluation.sensitiveFeatures`, in its objective metric, from its model card); a wider one is not rolled out and
    `status.rejected` says which groups and by how much. Candidates evaluated without groups pass."""


class RetrainTriggers(ConfigModel):
    """What starts a retrain: any one of them, once no retrain is running and the cooldown has passed."""

    dataset_changed: bool = True
    """The template's DatasetPrep has a new version: its fingerprint differs from the serving model's dataset and
    from every earlier retrain's."""

    drift: bool = False
    """Input drift above monitoring.drift.threshold (the Drifted condition)."""

    quality_dropped: bool = True
    """Live quality below monitoring.quality.threshold (Degraded, reason QualityDropped)."""

    schedule_seconds: int | None = Field(default=None, ge=1)
    """Retrain when the last retrain (or, before any, the serving revision) is older than this, e.g. 604800 for
    weekly."""


class Retrain(ConfigModel):
    """Train new candidates from a template when a trigger fires; autoUpdate's gate decides whether they serve."""

    training_run: TrainingRunSpec | None = None
    """The TrainingRun spec each retrain creates (`dataset.ref` names the DatasetPrep: its newest version)."""

    tuning_sweep: TuningSweepSpec | None = None
    """Or a TuningSweep spec: each retrain is a sweep."""

    triggers: RetrainTriggers = Field(default_factory=RetrainTriggers)
    """When to retrain."""

    cooldown_seconds: int = Field(default=3600, ge=0, le=31_536_000)
    """Least time between two retrains."""

    keep: int = Field(default=3, ge=1, le=100)
    """Finished retrain runs kept; older ones are deleted (never the one serving or in a canary)."""


class AutoUpdate(ConfigModel):
    """Roll out newer models automatically."""

    enabled: bool = False
    """Watch for newer succeeded TrainingRuns or TuningSweeps matching the selector."""

    selector: LabelSelector | None = None
    """Labels of the TrainingRuns and TuningSweeps that may replace the model."""

    gate: Gate = Field(default_factory=Gate)
    """The improvement a candidate must show."""

    retrain: Retrain | None = None
    """Create candidates: TrainingRuns (or TuningSweeps) of this deployment's own, labelled with the selector's
    matchLabels, when a trigger fires."""


class ServingPrivacy(ConfigModel):
    """The dataset's privacy rules at serving time."""

    salt_secret_ref: SecretKeyRef | None = None
    """The Secret key the DatasetPrep hashed `privacy.hashColumns` with: the server hashes those columns of each
    request the same way before the model and the payload log see them. Without it, requests reach the model
    unhashed and hashed columns are left out of payload logs."""


class ModelDeploymentSpec(ConfigModel):
    """Serve a model over the Open Inference Protocol v2 with batching, metrics, drift watch and rollouts."""

    model: ModelSource
    """The model to serve."""

    replicas: Replicas = Field(default_factory=Replicas)
    """Server pods."""

    autoscaling: Autoscaling | None = None
    """How replicas move between replicas.min and replicas.max (the defaults, when only max is above min)."""

    resources: ServingResources = Field(default_factory=ServingResources)
    """Compute per pod."""

    server: ServerSpec = Field(default_factory=ServerSpec)
    """Model format, batching and request limits."""

    rollout: Rollout = Field(default_factory=Rollout)
    """How a new model is rolled out."""

    monitoring: Monitoring = Field(default_factory=Monitoring)
    """Drift, live quality from feedback, and payload logging."""

    privacy: ServingPrivacy = Field(default_factory=ServingPrivacy)
    """The salt of the dataset's hashed columns."""

    auto_update: AutoUpdate = Field(default_factory=AutoUpdate)
    """Roll out better models as they are trained."""

    registry: RegistrySpec | None = None
    """Register the models it rolls out in MLflow and keep an alias on the one served."""


class Revision(ConfigModel):
    """A model revision being served."""

    name: str = ""
    """The revision's name (its Deployment)."""

    model_uri: str | None = None
    """The model it serves."""

    lineage: Lineage = Field(default_factory=Lineage)
    """Where the model came from."""

    metrics: dict[str, float] = Field(default_factory=dict)
    """The model's test metrics when it was trained."""

    source: str = ""
    """What supplied the model: `TrainingRun/<name>`, `TuningSweep/<name>` or `uri`."""

    outcome: str = ""
    """For history entries: Replaced (by a newer revision) or RolledBack (a canary that failed its gate)."""

    reason: str = ""
    """Why, in words (the failed gate, the promotion)."""

    at: str | None = None
    """When it started serving, or when its outcome was decided."""


class ReplicaCounts(ConfigModel):
    desired: int = 0
    ready: int = 0
    restarts: int = 0
    """Container restarts across the stable track's pods."""

    last_crash: str | None = None
    """The stable track's latest container crash: pod, container, reason, exit code and when."""


class AutoscalingStatus(ConfigModel):
    """What the stable track's autoscaler sees and wants, as it reports it."""

    min: int = 0
    max: int = 0
    metric: str = ""
    target: int = 0
    """Per server: CPU percent or requests in flight."""

    current: float | None = None
    """The metric now, averaged over the servers (None until the autoscaler has read it)."""

    desired_replicas: int | None = None
    """What the autoscaler last asked for."""

    message: str | None = None
    """Why it cannot scale, when it cannot (no metrics yet, no metrics adapter)."""


class TrafficStatus(ConfigModel):
    """Inference traffic of the stable revision since its pods started, from their /metrics."""

    requests: int = 0
    """Requests answered."""

    error_rate: float = 0.0
    """Fraction answered 5xx."""

    p99_latency_ms: float | None = None
    """99th-percentile latency (the upper bound of its histogram bucket)."""


class DriftStatus(ConfigModel):
    """The latest drift measurement."""

    score: float | None = None
    """The largest per-feature drift score."""

    drifted_features: list[str] = Field(default_factory=list)
    """Features whose score is above the threshold."""

    checked_at: str | None = None
    """When it was measured."""


class GroupQuality(ConfigModel):
    """One group's live quality."""

    rows: int = 0
    """Its feedback rows in the servers' windows."""

    metrics: dict[str, float] = Field(default_factory=dict)
    """accuracy and macro_f1, or mae and rmse."""


class FairnessGap(ConfigModel):
    """The largest gap in a live metric between two groups."""

    metric: str
    """The metric compared (monitoring.quality.metric, else accuracy or mae)."""

    gap: float
    """The best group's value minus the worst's, in absolute terms."""

    worst: str
    """The group with the worst value."""

    best: str
    """The group with the best value."""

    worst_value: float
    """The worst group's value."""

    best_value: float
    """The best group's value."""


class QualityStatus(ConfigModel):
    """Live quality of the stable revision from ground-truth feedback, over its servers' sliding windows."""

    metrics: dict[str, float] = Field(default_factory=dict)
    """accuracy and macro_f1 (classification) or mae and rmse (regression)."""

    rows: int = 0
    """Feedback rows the metrics are measured on."""

    checked_at: str | None = None
    """When it was measured."""

    groups: dict[str, GroupQuality] = Field(default_factory=dict, max_length=20)
    """Live quality of each group that feedback named (`"group"` in the feedback body)."""

    fairness_gap: FairnessGap | None = None
    """The largest gap between groups with monitoring.quality.minRows rows each."""


class Counters(ConfigModel):
    """A track's request counters summed over its servers when a canary step or a shadow stage started (its window
    starts there)."""

    requests: int = 0
    errors: int = 0
    buckets: dict[str, float] = Field(default_factory=dict)
    """Latency histogram: upper bound in seconds -> cumulative count."""

    shadow: dict[str, float] = Field(default_factory=dict)
    """The servers' copies to a shadow: answered, failed, dropped (copies), rows, agreed (rows), difference (summed)."""


class CanaryTraffic(ConfigModel):
    """What the canary served during the step in progress (or the last judged one)."""

    requests: int = 0
    """Requests the canary answered during the step."""

    share: float | None = None
    """Its fraction of both tracks' requests during the step: the traffic split actually achieved (on Kubernetes the
    Service splits by ready replicas, so 10% of 2 replicas is about 50%)."""

    error_rate: float = 0.0
    """Fraction answered 5xx."""

    p99_latency_ms: float | None = None
    """99th-percentile latency (the upper bound of its histogram bucket)."""


class ShadowTraffic(ConfigModel):
    """What the shadow stage measured (kept after it ends, until the next one)."""

    revision: str = ""
    """The revision in shadow."""

    verdict: str = "Running"
    """Running, Inconclusive, Passed or Failed."""

    requests: int = 0
    """Copies the shadow answered (its own /metrics) since the stage started."""

    error_rate: float = 0.0
    """Fraction of them answered 5xx."""

    p99_latency_ms: float | None = None
    """The shadow's 99th-percentile latency."""

    stable_p99_latency_ms: float | None = None
    """The stable track's over the same time."""

    rows: int = 0
    """Rows whose answers were compared."""

    agreement: float | None = None
    """Classification: fraction of those rows with the same label."""

    relative_difference: float | None = None
    """Regression: mean symmetric relative difference of the values."""

    failed: int = 0
    """Copies the shadow did not answer (error, timeout, unreachable)."""

    dropped: int = 0
    """Copies dropped because the stable servers' queues were full."""


class RetrainRun(ConfigModel):
    """A run a retrain created."""

    name: str = ""
    kind: str = "TrainingRun"
    reason: str = ""
    """The trigger, in words."""

    dataset_fingerprint: str | None = None
    """The dataset version it trains on."""

    at: str | None = None
    """When it was created."""

    phase: str | None = None
    """Its phase when last seen."""


class RetrainStatus(ConfigModel):
    """The retrains autoUpdate.retrain started."""

    runs: list[RetrainRun] = Field(default_factory=list, max_length=100)
    """The retrain runs that exist, newest first."""

    next_allowed_at: str | None = None
    """When the cooldown ends."""

    waiting: str | None = None
    """A trigger that fired but waits (a retrain running, the cooldown), in words."""


class Rejected(ConfigModel):
    """A candidate the gate turned down."""

    source: str = ""
    """`TrainingRun/<name>` or `TuningSweep/<name>`."""

    reason: str = ""
    """Why, naming the groups and the gap."""


class RegistryStatus(ConfigModel):
    """What the MLflow registry says about this deployment's models."""

    name: str = ""
    """The registered model."""

    alias: str = ""
    """The alias kept on the served version."""

    version: str | None = None
    """The version the alias points at: the one served."""

    model_uri: str | None = None
    """The served model's folder (the version's source)."""

    versions: dict[str, str] = Field(default_factory=dict, max_length=20)
    """Revision name -> its registered version, for the revisions served or being rolled out."""

    message: str | None = Field(default=None, max_length=4096)
    """Why the registry is behind (a server that is down, credentials refused); cleared once it is in step."""


class ModelDeploymentStatus(StatusBase):
    """Where the model is served, which revision, and how it is doing."""

    endpoint: str | None = None
    """The base URL clients use (OIP v2: `<endpoint>/v2/models/<name>/infer`)."""

    grpc_endpoint: str | None = None
    """Where gRPC clients call `inference.GRPCInferenceService` (OIP v2 over gRPC): `grpc://host:port`."""

    model_name: str | None = None
    """The model's name on the wire: the ModelDeployment's name."""

    payload_uri: str | None = None
    """Where the servers log payloads and feedback (`monitoring.payloadLog`): a DatasetPrep source with
    `format: payloads` reads them back as training rows."""

    replicas: ReplicaCounts = Field(default_factory=ReplicaCounts)
    """Desired and ready server pods."""

    ready_replicas: str = ""
    """Ready/desired in words for printer columns, e.g. `2/2`."""

    autoscaling: AutoscalingStatus | None = None
    """The stable track's autoscaler, when replicas.max is above replicas.min."""

    current: Revision | None = None
    """The stable revision."""

    canary: Revision | None = None
    """The revision being rolled out, if any."""

    canary_step: int | None = None
    """Index of the canary step in progress."""

    canary_weight: int | None = None
    """Percent of traffic on the canary."""

    step_started_at: str | None = None
    """When the canary step in progress started (its gate is judged intervalSeconds later)."""

    step_baseline: dict[str, Counters] | None = None
    """Each track's counters when the canary step in progress started."""

    canary_traffic: CanaryTraffic | None = None
    """What the canary served during the step, and the share of traffic it actually got."""

    shadow: Revision | None = None
    """The revision in the shadow stage, if any."""

    shadow_started_at: str | None = None
    """When the shadow stage in progress started."""

    shadow_baseline: dict[str, Counters] | None = None
    """The stable and shadow tracks' counters when the shadow stage started."""

    shadow_traffic: ShadowTraffic | None = None
    """What the shadow stage measured."""

    source_revision: str | None = None
    """The revision spec.model resolved to when last rolled out (autoUpdate may serve a better one)."""

    traffic: TrafficStatus = Field(default_factory=TrafficStatus)
    """Requests, error rate and latency of the stable revision."""

    drift: DriftStatus = Field(default_factory=DriftStatus)
    """Data drift of live inputs."""

    quality: QualityStatus = Field(default_factory=QualityStatus)
    """Live quality from ground-truth feedback."""

    rejected: list[Rejected] = Field(default_factory=list, max_length=10)
    """autoUpdate candidates the fairness gate turns down, and why."""

    retraining: RetrainStatus | None = None
    """Retrains started by autoUpdate.retrain."""

    history: list[Revision] = Field(default_factory=list, max_length=10)
    """Earlier revisions, newest first (for rollback and audit)."""

    registry: RegistryStatus | None = None
    """The MLflow registry's versions of what this deployment serves (spec.registry)."""


def _increasing_steps() -> Rule:
    pairs = " && ".join(f"(size(self) < {i + 2} || self[{i}] < self[{i + 1}])" for i in range(MAX_CANARY_STEPS - 1))
    return Rule(pairs, "canary steps must be strictly increasing percentages, e.g. [10, 50, 100]")


KIND = Kind(
    kind="ModelDeployment",
    plural="modeldeployments",
    short_names=("mdep", "md"),
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    description=(
        "ModelDeployment serves a model over the Open Inference Protocol v2 with dynamic batching and Prometheus "
        "metrics, watches its health and data drift, and rolls new models out (rolling or canary)."
    ),
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", description="Where the deployment stands"),
        PrinterColumn("Ready", ".status.readyReplicas", description="Ready/desired server pods"),
        PrinterColumn("Revision", ".status.current.name", description="The stable revision"),
        PrinterColumn("Canary", ".status.canaryWeight", "integer", "Percent of traffic on the canary"),
        PrinterColumn("Shadow", ".status.shadow.name", description="The revision in shadow", priority=1),
        PrinterColumn("Endpoint", ".status.endpoint", priority=1),
        COMMON_COLUMNS_AGE,
    ),
    rules={
        ModelSource: (
            exactly_one(
                "fromTrainingRun",
                "fromTuningSweep",
                "uri",
                what="model.fromTrainingRun, model.fromTuningSweep or model.uri",
            ),
        ),
        (ModelSource, "uri"): (
            Rule(
                "self.matches('^(s3|file)://.+') || self.matches('^models:/[^/@]+(/[0-9]+|@[A-Za-z_][A-Za-z0-9_-]*)$')",
                "must be a model folder (s3://... or file://...) or an MLflow registry version: "
                "models:/<name>/<version> or models:/<name>@<alias>",
            ),
        ),
        Quality: (
            Rule(
                "has(self.metric) == has(self.threshold)",
                "monitoring.quality.metric and monitoring.quality.threshold go together: the metric judged and the "
                "value it must not fall below (accuracy, macro_f1) or rise above (mae, rmse)",
            ),
        ),
        Replicas: (Rule("!has(self.max) || self.min <= self.max", "replicas.min must be at most replicas.max"),),
        RegistrySpec: (
            Rule(
                "!has(self.alias) || !self.alias.matches('^([lL][aA][tT][eE][sS][tT]|[vV][0-9]+)$')",
                "registry.alias cannot be latest or v<number>: MLflow keeps those for its versions; "
                "use e.g. champion or production",
            ),
        ),
        ModelDeploymentSpec: (
            Rule(
                "!has(self.autoscaling) || (has(self.replicas) && has(self.replicas.max) && "
                "self.replicas.max > self.replicas.min && self.replicas.min >= 1)",
                "autoscaling needs replicas.max above replicas.min (and replicas.min at least 1): it scales "
                "between them",
            ),
        ),
        (Canary, "steps"): (_increasing_steps(),),
        Rollout: (
            Rule(
                "self.strategy != 'canary' || has(self.canary)",
                "rollout strategy canary needs rollout.canary",
            ),
            Rule(
                "self.strategy == 'canary' || !has(self.canary)",
                "rollout.canary applies only to strategy canary",
            ),
            Rule(
                "self.strategy == 'canary' || !has(self.shadow)",
                "rollout.shadow is a stage before the canary: it needs strategy canary (and rollout.canary)",
            ),
        ),
        AutoUpdate: (
            Rule(
                "!self.enabled || has(self.selector)",
                "autoUpdate.enabled needs a selector naming the "
                "TrainingRuns or TuningSweeps that may replace the model",
            ),
            Rule(
                "!has(self.retrain) || (self.enabled && has(self.selector) && has(self.selector.matchLabels))",
                "autoUpdate.retrain needs autoUpdate.enabled and a selector with matchLabels: the runs it creates "
                "carry those labels, so the gate considers them",
            ),
        ),
        Retrain: (exactly_one("trainingRun", "tuningSweep", what="autoUpdate.retrain.trainingRun or tuningSweep"),),
    },
)
