"""What a training run accepts: model, objective, optimizer, training loop, regularization,
evaluation, checkpoints and export."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from slipway_trainer.config.base import ColumnName, ConfigModel, Cores, Direction, MetricName, Tracking

Architecture = Literal["mlp", "cnn", "resnet", "rnn", "lstm", "gru", "transformer", "gan"]
Loss = Literal["cross_entropy", "mse", "mae", "huber", "bce"]
OptimizerName = Literal["sgd", "adam", "adamw"]
ScheduleType = Literal["constant", "cosine", "step"]
Augmentation = Literal["hflip", "vflip", "crop", "rotate", "noise"]
ExportFormat = Literal["onnx", "torchscript"]
ALL_EXPORT_FORMATS: tuple[ExportFormat, ...] = ("onnx", "torchscript")


class ModelSpec(ConfigModel):
    """The network. Input and output shapes come from the dataset, not from here."""

    architecture: Architecture
    """mlp, cnn, resnet (small), rnn, lstm, gru, transformer (encoder), or gan (generator and
    discriminator, for generative modelling of image sets)."""

    params: dict[str, Any] = Field(default_factory=dict)
    """Architecture parameters, e.g. `{channels: [32, 64], hidden: 128, dropout: 0.25}` for a cnn."""


class Objective(ConfigModel):
    """What training minimizes and which metric decides what is best."""

    loss: Loss = "cross_entropy"
    """cross_entropy (classification), mse, mae, huber (regression), bce (binary)."""

    metric: MetricName = "accuracy"
    """The metric that picks the best checkpoint, e.g. accuracy, f1_macro, mse, r2."""

    direction: Direction = "maximize"
    """Whether a larger metric is better (maximize) or a smaller one (minimize)."""


class Schedule(ConfigModel):
    """How the learning rate changes over epochs."""

    type: ScheduleType = "constant"
    """constant, cosine (annealing to zero) or step (multiply by `gamma` every `stepSize` epochs)."""

    warmup_epochs: int = Field(default=0, ge=0)
    """Epochs of linear warmup from zero before the schedule starts."""

    step_size: int = Field(default=10, ge=1)
    """For `step`: epochs between decays."""

    gamma: float = Field(default=0.1, gt=0, le=1)
    """For `step`: the factor applied at each decay."""


class Optimizer(ConfigModel):
    """The optimizer and its learning-rate schedule."""

    name: OptimizerName = "adamw"
    """sgd (with momentum), adam or adamw."""

    learning_rate: float = Field(default=0.001, gt=0, le=10)
    """Initial learning rate."""

    weight_decay: float = Field(default=0.0, ge=0, le=1)
    """Decoupled weight decay (adamw) or L2 penalty folded into the gradient (sgd, adam)."""

    momentum: float = Field(default=0.9, ge=0, lt=1)
    """Momentum of sgd (ignored by adam and adamw)."""

    schedule: Schedule = Field(default_factory=Schedule)
    """Learning-rate schedule."""


class EarlyStopping(ConfigModel):
    """Stop when a validation metric stops improving."""

    metric: MetricName = "val_loss"
    """The validation metric to watch, e.g. val_loss or val_accuracy."""

    patience: int = Field(default=3, ge=1)
    """Epochs without improvement before stopping."""

    min_delta: float = Field(default=0.0, ge=0)
    """The smallest change that counts as an improvement."""

    direction: Direction | None = None
    """Whether larger is better; inferred from the metric's name when left out (loss and errors: minimize)."""


class Training(ConfigModel):
    """The training loop."""

    epochs: int = Field(default=10, ge=1, le=10000)
    """Passes over the training split."""

    batch_size: int = Field(default=128, ge=1, le=65536)
    """Samples per step on each worker."""

    early_stopping: EarlyStopping | None = None
    """Stop early when validation stops improving."""

    seed: int = 0
    """Seed of initialization, shuffling and augmentation."""


class Regularization(ConfigModel):
    """Penalties and augmentation against overfitting. Dropout is a model parameter."""

    l1: float = Field(default=0.0, ge=0)
    """Weight of the L1 penalty on the weights."""

    l2: float = Field(default=0.0, ge=0)
    """Weight of the L2 penalty on the weights (added to the loss)."""

    augmentation: list[Augmentation] = Field(default_factory=list, max_length=8)
    """Image augmentations applied to training batches: hflip, vflip, crop, rotate, noise."""


class Evaluation(ConfigModel):
    """The final evaluation on the held-out test split."""

    metrics: list[MetricName] = Field(default_factory=list, max_length=32)
    """Metrics to report; empty means all that fit the task (accuracy, precision, recall, f1 and a
    confusion matrix for classification; mse, mae and r2 for regression)."""

    sensitive_features: list[ColumnName] = Field(default_factory=list, max_length=16)
    """Columns whose groups get their own metrics and a largest-gap figure (fairness)."""


class Checkpoint(ConfigModel):
    """Checkpoints written to the artifact store while training."""

    every_epochs: int = Field(default=1, ge=1)
    """Write a checkpoint every this many epochs."""

    keep: int = Field(default=3, ge=1, le=100)
    """Checkpoints to keep (the best is always kept)."""


class Export(ConfigModel):
    """How the trained model is exported for serving."""

    formats: list[ExportFormat] = Field(default_factory=lambda: list(ALL_EXPORT_FORMATS), min_length=1, max_length=2)
    """onnx and/or torchscript; each is loaded back and checked against the trained model."""


class TrainSpec(ConfigModel):
    """One model, trained, evaluated and exported."""

    model: ModelSpec
    """The network."""

    objective: Objective = Field(default_factory=Objective)
    """Loss and the metric that decides what is best."""

    optimizer: Optimizer = Field(default_factory=Optimizer)
    """Optimizer and learning-rate schedule."""

    training: Training = Field(default_factory=Training)
    """Epochs, batch size, early stopping."""

    regularization: Regularization = Field(default_factory=Regularization)
    """L1/L2 penalties and augmentation."""

    evaluation: Evaluation = Field(default_factory=Evaluation)
    """Test-split evaluation and fairness."""

    checkpoint: Checkpoint = Field(default_factory=Checkpoint)
    """Checkpoint frequency and retention."""

    export: Export = Field(default_factory=Export)
    """Export formats."""


class TrainConfig(ConfigModel):
    """The config file of `python -m slipway_trainer train`."""

    name: str = Field(default="model", min_length=1, max_length=253)
    """The run's name (the TrainingRun's name on Kubernetes)."""

    spec: TrainSpec
    """What to train."""

    dataset_uri: str = Field(min_length=1, max_length=2048)
    """The prepared dataset (the folder holding its manifest.json)."""

    artifact_uri: str = Field(min_length=1, max_length=2048)
    """Where progress.json, result.json, checkpoints/, model/, report/ and tensorboard/ go."""

    workers: int = Field(default=1, ge=1, le=1024)
    """Data-parallel workers. With `useRay`, each is a Ray Train worker."""

    gpus_per_worker: int = Field(default=0, ge=0, le=16)
    """GPUs per worker (NCCL and bf16 autocast when there are any)."""

    cpus_per_worker: Cores = 1
    """CPUs per worker (Ray's resource request; torch threads: at least one)."""

    max_failures: int = Field(default=3, ge=0, le=100)
    """Worker failures recovered within the job (from the newest checkpoint)."""

    use_ray: bool = True
    """Run under Ray Train's TorchTrainer; false runs the same loop in this process (one worker)."""

    lineage: dict[str, str] = Field(default_factory=dict)
    """Where this run comes from (names of the TrainingRun, DatasetPrep, sweep trial), for the model card."""

    tracking: Tracking | None = Field(default=None, exclude_if=lambda v: v is None)  # absent, not null, when off
    """Log the finished run to this MLflow server (none: not logged)."""
