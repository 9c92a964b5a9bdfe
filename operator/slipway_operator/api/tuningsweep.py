"""TuningSweep: search hyperparameters with Ray Tune, compare the models soundly, keep the best."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from slipway_operator.api.common import FailurePolicy, TrackingSpec
from slipway_operator.api.kind import COMMON_COLUMNS_AGE, Kind, PrinterColumn, Rule, immutable
from slipway_operator.api.trainingrun import ModelRunStatus, TrialTemplate
from slipway_trainer.config.base import ConfigModel
from slipway_trainer.config.tune import Parameter, TuneSpec

# A search-space key is the path of a template field: `optimizer.learningRate`, `model.params.dropout`.
PATH_PATTERN = r"^[a-zA-Z][a-zA-Z0-9]*([.][a-zA-Z_][a-zA-Z0-9_]*)+$"


class TuningSweepSpec(TuneSpec):
    """Search hyperparameters around a training template with Ray Tune and keep the best model."""

    template: TrialTemplate
    """The TrainingRun spec every trial starts from; searchSpace paths set fields of it."""

    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    """Retries and deadlines of the sweep's job (trial failures are counted against maxFailedTrials)."""

    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Delete the sweep's Ray cluster this long after it finishes."""

    suspend: bool = False
    """Suspend the sweep; resuming continues where it stopped, without re-running finished trials."""

    tracking: TrackingSpec | None = None
    """Log the sweep to MLflow as a parent run with its trials as child runs (default: when the operator has
    `MLFLOW_TRACKING_URI`)."""


class Trials(ConfigModel):
    """Trial counts."""

    total: int = 0
    completed: int = 0
    running: int = 0
    failed: int = 0
    stopped_early: int = 0


class BestTrial(ConfigModel):
    """The best trial so far."""

    id: str = ""
    """The trial's id in the leaderboard."""

    params: dict[str, Any] = Field(default_factory=dict)
    """Its hyperparameters, by search-space path."""

    metric: float | None = None
    """Its objective metric."""


class TuningSweepStatus(ModelRunStatus):
    """Trials, the best so far and its exported model."""

    trials: Trials = Field(default_factory=Trials)
    """Trials done, running, failed and stopped early."""

    best_trial: BestTrial | None = None
    """The best trial so far."""

    leaderboard_uri: str | None = None
    """The leaderboard of every trial (JSON) and the comparison report."""


KIND = Kind(
    kind="TuningSweep",
    plural="tuningsweeps",
    short_names=("sweep", "ts"),
    spec=TuningSweepSpec,
    status=TuningSweepStatus,
    description=(
        "TuningSweep searches hyperparameters of a TrainingRun template with Ray Tune (random, grid, TPE; ASHA "
        "or median stopping), compares the models on the test split and keeps the best."
    ),
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", description="Where the sweep stands"),
        PrinterColumn("Progress", ".status.progress", description="Trials done"),
        PrinterColumn("Best", ".status.keyMetric", description="The best trial's metric"),
        PrinterColumn("Trial", ".status.bestTrial.id", priority=1),
        COMMON_COLUMNS_AGE,
    ),
    rules={
        # Exactly one kind per parameter, and non-empty choice/grid lists: pydantic validators of Parameter
        # (choice and grid hold values of any type, which the API server's CEL cannot see).
        Parameter: (
            Rule(
                "!has(self.uniform) || self.uniform[0] < self.uniform[1]",
                "uniform: [low, high] needs low < high",
            ),
            Rule(
                "!has(self.loguniform) || (self.loguniform[0] > 0.0 && self.loguniform[0] < self.loguniform[1])",
                "loguniform: [low, high] needs 0 < low < high (a log scale cannot reach 0 or below)",
            ),
            Rule(
                "!has(self.randint) || self.randint[0] < self.randint[1]",
                "randint: [low, high] needs low < high",
            ),
        ),
        (TuneSpec, "search_space"): (
            Rule(
                f"self.all(k, k.matches('{PATH_PATTERN}'))",
                "searchSpace keys must be paths of template fields, e.g. optimizer.learningRate or "
                "model.params.dropout",
            ),
        ),
        TuneSpec: (
            Rule("self.parallelTrials <= self.maxTrials", "parallelTrials must be at most maxTrials"),
            Rule(
                "self.scheduler.type == 'fifo' || self.objective.metric.startsWith('val_')",
                "objective.metric must be a validation metric (val_...) for the asha and median schedulers, "
                "which stop trials on per-epoch validation results",
            ),
        ),
        TuningSweepSpec: (
            Rule(
                "self.scheduler.type == 'fifo' || self.scheduler.gracePeriod < self.template.training.epochs",
                "scheduler.gracePeriod must be smaller than template.training.epochs, or no trial can be stopped early",
            ),
            *immutable("TuningSweep", "template", "searchSpace", "algorithm", "scheduler", "objective"),
        ),
    },
)
