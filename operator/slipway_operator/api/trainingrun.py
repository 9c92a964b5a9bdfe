"""TrainingRun: train one model data-parallel with Ray Train, evaluate it on the test split, export it."""

from __future__ import annotations

from pydantic import Field

from slipway_operator.api.common import (
    FailurePolicy,
    Metrics,
    ObjectName,
    Resources,
    RunStatusBase,
    TrackingSpec,
    TrackingStatus,
)
from slipway_operator.api.kind import (
    COMMON_COLUMNS_AGE,
    Kind,
    PrinterColumn,
    Rule,
    exactly_one,
    immutable,
    uri_rule,
)
from slipway_trainer.config.base import ConfigModel
from slipway_trainer.config.train import EarlyStopping, Objective, TrainSpec

ERROR_METRICS = "['mse', 'mae', 'rmse', 'loss']"
REGRESSION_LOSSES = "['mse', 'mae', 'huber']"
CLASSIFICATION_METRICS = "['accuracy', 'precision', 'recall', 'f1', 'f1_macro', 'roc_auc']"


class DatasetRef(ConfigModel):
    """The prepared dataset to train on: a DatasetPrep in the same namespace, or the URI of a prepared dataset."""

    ref: ObjectName | None = None
    """Name of a DatasetPrep in the same namespace; the run waits until it has succeeded."""

    uri: str | None = Field(default=None, max_length=2048)
    """Folder of a prepared dataset (with its manifest.json), `s3://...` or `file://...`."""


class TrialTemplate(TrainSpec):
    """A training run: the data, the model and how to train it, and the compute it runs on."""

    dataset: DatasetRef
    """The prepared dataset."""

    resources: Resources = Field(default_factory=Resources)
    """Ray workers for training; with more than one, training is data-parallel (DDP)."""

    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    """Retries and deadlines."""


class TrainingRunSpec(TrialTemplate):
    """Train one model data-parallel with Ray Train, evaluate it on the test split and export it."""

    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Delete the run's Ray cluster this long after it finishes (results stay in the artifact store)."""

    suspend: bool = False
    """Suspend the run (or keep it queued); set back to false to start or resume it from its checkpoint."""

    tracking: TrackingSpec | None = None
    """Log the finished run to MLflow (default: when the operator has `MLFLOW_TRACKING_URI`)."""


class Lineage(ConfigModel):
    """Where a model came from."""

    dataset_ref: str | None = None
    """The DatasetPrep it was trained on."""

    dataset_uri: str | None = None
    """The prepared dataset it was trained on."""

    dataset_fingerprint: str | None = None
    """Fingerprint of that dataset's content."""

    training_run: str | None = None
    """The TrainingRun that trained it."""

    tuning_sweep: str | None = None
    """The TuningSweep it won (if any)."""

    trial: str | None = None
    """The sweep trial that trained it (if any)."""

    retrain_reason: str | None = None
    """Why a ModelDeployment's autoUpdate.retrain started it (if it did)."""

    mlflow_run_id: str | None = None
    """The MLflow run it was logged as (when tracked): a registered version of it links to that run."""


class ModelRunStatus(RunStatusBase):
    """What a run that produces a model reports: metrics, the exported model and where it came from."""

    metrics: Metrics = Field(default_factory=dict)
    """Latest metrics: train and validation while training, test metrics after evaluation."""

    key_metric: str = Field(default="", max_length=128)
    """The objective's metric in words, e.g. `test_accuracy=0.912`."""

    model_uri: str | None = None
    """The exported model (ONNX and/or TorchScript, transform spec and model card)."""

    lineage: Lineage = Field(default_factory=Lineage)
    """Dataset and fingerprint the model was trained on."""

    checkpoint_uri: str | None = None
    """The newest checkpoint (of a sweep: its best trial's), to resume or fine-tune from."""

    resumed_from: list[int] = Field(default_factory=list, max_length=1000)
    """Epochs whose checkpoints training resumed from after losing a worker (Ray Train restarts the worker
    group), a retry of the job or a preemption: what each failure cost (of a sweep: its best model's export, which
    continues from the best trial's checkpoint)."""

    tracking: TrackingStatus | None = None
    """The MLflow run it was logged as (when tracking is on and logging worked; else the Tracked condition says
    why not)."""

    epochs_lost: int | None = None
    """Finished epochs trained again after those resumes, because no checkpoint held them (0 when a preempted
    run's pods wrote their checkpoint on the way out)."""


class TrainingRunStatus(ModelRunStatus):
    """Progress, metrics, the exported model and where it came from."""

    epoch: int | None = None
    """The last finished epoch."""

    total_epochs: int | None = None
    """Epochs planned."""


KIND = Kind(
    kind="TrainingRun",
    plural="trainingruns",
    short_names=("trun", "tr"),
    spec=TrainingRunSpec,
    status=TrainingRunStatus,
    description=(
        "TrainingRun trains one model data-parallel on Ray Train (MLP, CNN, ResNet, RNN/LSTM/GRU, Transformer, "
        "GAN), validates every epoch, checkpoints, evaluates on the test split and exports ONNX/TorchScript."
    ),
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", description="Where the run stands"),
        PrinterColumn("Progress", ".status.progress", description="Epochs done"),
        PrinterColumn("Metric", ".status.keyMetric", description="The objective's metric"),
        PrinterColumn("Dataset", ".status.lineage.datasetFingerprint", priority=1),
        COMMON_COLUMNS_AGE,
    ),
    rules={
        DatasetRef: (
            exactly_one("ref", "uri", what="dataset.ref (a DatasetPrep) or dataset.uri (a prepared dataset)"),
        ),
        (DatasetRef, "uri"): (uri_rule(("s3", "file")),),
        Objective: (
            Rule(
                f"!(self.metric in {ERROR_METRICS}) || self.direction == 'minimize'",
                "objective.direction must be minimize for an error metric (mse, mae, rmse, loss)",
            ),
            Rule(
                f"!(self.loss in {REGRESSION_LOSSES}) || !(self.metric in {CLASSIFICATION_METRICS})",
                "objective.metric is a classification metric but the loss is a regression loss: "
                "use mse, mae, rmse or r2 as the metric",
            ),
        ),
        EarlyStopping: (
            Rule(
                "self.metric.startsWith('val_')",
                "earlyStopping.metric must be a validation metric, e.g. val_loss or val_accuracy",
            ),
        ),
        TrialTemplate: (
            Rule(
                "size(self.regularization.augmentation) == 0 || self.model.architecture in ['cnn', 'resnet', 'gan']",
                "regularization.augmentation applies to image models only (cnn, resnet, gan)",
            ),
            Rule(
                "!has(self.training.earlyStopping) || self.training.earlyStopping.patience < self.training.epochs",
                "training.earlyStopping.patience must be smaller than training.epochs",
            ),
        ),
        TrainingRunSpec: immutable(
            "TrainingRun",
            "dataset",
            "model",
            "objective",
            "optimizer",
            "training",
            "regularization",
            "evaluation",
            "checkpoint",
            "export",
        ),
    },
)
