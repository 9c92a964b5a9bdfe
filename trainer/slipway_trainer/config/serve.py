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


class Monitoring(ConfigModel):
    """Model monitoring."""

    drift: Drift = Field(default_factory=Drift)
    """Data drift of live inputs."""


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
