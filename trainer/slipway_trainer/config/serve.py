"""What the inference server accepts: model format, batching, request limits, drift monitoring."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from slipway_trainer.config.base import ConfigModel

ModelFormat = Literal["onnx", "torchscript"]
DriftMethod = Literal["psi", "ks"]


class Batching(ConfigModel):
    """Dynamic batching: concurrent requests merged into one model call."""

    max_batch_size: int = Field(default=32, ge=1, le=4096)
    """Rows in one model call at most."""

    max_latency_ms: float = Field(default=5.0, ge=0, le=10000)
    """How long a request may wait for others to join its batch."""


class Limits(ConfigModel):
    """Bounds on what one request may ask; beyond them the server answers 4xx and keeps serving."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    """Largest request body accepted."""

    max_rows_per_request: int = Field(default=1024, ge=1, le=1_000_000)
    """Largest number of rows (images, records) in one request."""


class ServerSpec(ConfigModel):
    """The inference server."""

    format: ModelFormat = "onnx"
    """Which export to serve: onnx (ONNX Runtime) or torchscript."""

    batching: Batching = Field(default_factory=Batching)
    """Dynamic batching."""

    limits: Limits = Field(default_factory=Limits)
    """Request limits."""

    startup_timeout_seconds: int = Field(default=600, ge=10, le=7200)
    """How long a server pod may take to fetch, load and warm up its model before its liveness probe counts
    (a Kubernetes startup probe); a pod not live by then is restarted. Raise it for large models."""


class Drift(ConfigModel):
    """Compares a rolling window of live inputs with the training data's profile."""

    enabled: bool = True
    """Watch for drift."""

    method: DriftMethod = "psi"
    """psi (population stability index per feature) or ks (Kolmogorov-Smirnov, numeric features)."""

    threshold: float = Field(default=0.2, gt=0)
    """Score above which a feature counts as drifted (psi: 0.1 moderate, 0.2 significant)."""

    window_size: int = Field(default=1000, ge=10, le=1_000_000)
    """Live rows kept in the rolling window."""


QualityMetric = Literal["accuracy", "macro_f1", "mae", "rmse"]
LOWER_IS_BETTER = ("mae", "rmse")


class Quality(ConfigModel):
    """Live quality from ground-truth feedback (`POST /v2/models/<name>/feedback`): the server remembers its
    recent predictions by request id, joins the true labels or values sent back, and measures accuracy and macro
    F1 (classification) or MAE and RMSE (regression) over a sliding window of the latest feedback rows."""

    window_size: int = Field(default=1000, ge=10, le=1_000_000)
    """Feedback rows in the sliding window."""

    max_predictions: int = Field(default=10000, ge=10, le=1_000_000)
    """Requests whose predictions are remembered for feedback (the oldest are forgotten first)."""

    metric: QualityMetric | None = None
    """The metric that decides QualityDropped: accuracy or macro_f1 (classification), mae or rmse (regression)."""

    threshold: float | None = None
    """The deployment is Degraded (reason QualityDropped) when `metric` is worse than this: below it for accuracy
    and macro_f1, above it for mae and rmse."""

    min_rows: int = Field(default=30, ge=1, le=1_000_000)
    """Feedback rows needed in the window before quality is judged."""


class PayloadLog(ConfigModel):
    """Sampled requests and their predictions (and the feedback sent for them) written to the artifact store as
    Parquet, partitioned by date: `<uri>/payloads/date=YYYY-MM-DD/part-*.parquet` and `<uri>/feedback/...`. Never
    on the request path: rows wait in a bounded buffer that a background thread flushes; when it is full, rows are
    dropped and counted (`slipway_payload_rows_total{outcome="dropped"}`), requests are never slowed or failed.
    Columns the dataset's privacy rules drop are never written; hashed ones are written hashed with the same salt,
    or left out when the server has no salt."""

    enabled: bool = False
    """Log payloads."""

    sample_rate: float = Field(default=1.0, gt=0, le=1)
    """Fraction of requests logged."""

    uri: str | None = Field(default=None, max_length=2048)
    """Where the parts go; default (on Kubernetes and `slipway run`): `<store>/payloads/<namespace>/<name>`."""

    max_buffer_rows: int = Field(default=10000, ge=1, le=10_000_000)
    """Rows held in memory waiting to be written; beyond it new rows are dropped and counted."""

    flush_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    """How often the buffer is written out (and always on shutdown)."""


class Monitoring(ConfigModel):
    """Model monitoring."""

    drift: Drift = Field(default_factory=Drift)
    """Data drift of live inputs."""

    quality: Quality = Field(default_factory=Quality)
    """Live quality from ground-truth feedback."""

    payload_log: PayloadLog = Field(default_factory=PayloadLog)
    """Sampled requests, predictions and feedback written to the store."""


class ServeConfig(ConfigModel):
    """The config file of `python -m slipway_trainer serve`."""

    model_uri: str = Field(min_length=1, max_length=2048)
    """The exported model folder (model.onnx / model.pt, transform.json, model_card.json)."""

    model_name: str = Field(default="model", min_length=1, max_length=253, pattern=r"^[a-zA-Z0-9][-a-zA-Z0-9_.]*$")
    """The model's name on the wire (a ModelDeployment's name)."""

    model_version: str = Field(default="1", max_length=63)
    """The version reported in the model metadata."""

    host: str = "127.0.0.1"
    """Address to listen on."""

    port: int = Field(default=8080, ge=0, le=65535)
    """Port to listen on (0: any free port; the chosen one is written to `readyFile`)."""

    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    """The port of the OIP v2 gRPC service (`inference.GRPCInferenceService`); 0: any free port (written to
    `readyFile` as `grpcPort`); unset: REST only."""

    server: ServerSpec = Field(default_factory=ServerSpec)
    """Model format, batching and limits."""

    monitoring: Monitoring = Field(default_factory=Monitoring)
    """Drift monitoring."""

    profile_uri: str | None = Field(default=None, max_length=2048)
    """The dataset manifest whose profile is the drift baseline; default: the one the model card names."""

    device: Literal["cpu", "cuda"] = "cpu"
    """Where the model runs: cuda when the ModelDeployment asks for GPUs (`resources.gpus`). A server that cannot
    use the GPU it was given refuses to start and says why; it never falls back to the CPU in silence."""

    ready_file: str | None = None
    """A local file the server writes `{"port": N}` to once it is ready (how a parent learns the port)."""

    peers: str | None = Field(default=None, max_length=2048)
    """The other servers of the same deployment, asked for feedback whose requests this one did not answer:
    `dns://<headless Service>:<port>` (its A records are the pods) or `file://<routes.json>` (`slipway run`'s
    router table). Set by the operator."""

    mirror: str | None = Field(default=None, max_length=2048)
    """Where a copy of each answered request goes when a candidate is in shadow (`rollout.shadow`), in the same
    forms as `peers`; its answers are compared with this server's and counted in /metrics. Set by the operator."""
