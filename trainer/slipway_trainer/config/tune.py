"""What a hyperparameter sweep accepts: the search space, the algorithm, the scheduler and budgets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from slipway_trainer.config.base import ConfigModel, Cores, Direction, MetricName, Tracking
from slipway_trainer.config.train import TrainSpec

Algorithm = Literal["random", "grid", "tpe"]
SchedulerType = Literal["fifo", "asha", "median"]
PARAMETER_KINDS = ("uniform", "loguniform", "randint", "choice", "grid")


class Parameter(ConfigModel):
    """The values one hyperparameter may take. Exactly one of the fields is set."""

    uniform: list[float] | None = Field(default=None, min_length=2, max_length=2)
    """`[low, high]`: any real value between, equally likely."""

    loguniform: list[float] | None = Field(default=None, min_length=2, max_length=2)
    """`[low, high]` with 0 < low < high: uniform on a log scale (learning rates)."""

    randint: list[int] | None = Field(default=None, min_length=2, max_length=2)
    """`[low, high]`: an integer with low <= value < high."""

    choice: list[Any] | None = Field(default=None, min_length=1, max_length=256)
    """One of these values, sampled."""

    grid: list[Any] | None = Field(default=None, min_length=1, max_length=256)
    """Every one of these values, each tried (a grid dimension)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Parameter:
        # Also a CEL rule for the typed ranges; choice and grid hold values of any type, which the
        # API server's CEL cannot see, so this check lives here for every kind of parameter.
        given = [name for name in PARAMETER_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"set exactly one of {', '.join(PARAMETER_KINDS)} for each searchSpace parameter"
                + (f" (found {', '.join(given)})" if given else "")
            )
        return self

    @model_validator(mode="after")
    def _bounds(self) -> Parameter:
        # The same rules and words as the CRD's CEL rules, for configs that never passed an API server.
        for name in ("uniform", "randint"):
            bounds = getattr(self, name)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{name}: [low, high] needs low < high")
        if self.loguniform is not None and not 0 < self.loguniform[0] < self.loguniform[1]:
            raise ValueError("loguniform: [low, high] needs 0 < low < high (a log scale cannot reach 0 or below)")
        return self

    @property
    def kind(self) -> str:
        """Which of uniform, loguniform, randint, choice or grid this parameter is."""
        return next(name for name in PARAMETER_KINDS if getattr(self, name) is not None)


class Scheduler(ConfigModel):
    """Early stopping of poor trials, fed by per-epoch metrics."""

    type: SchedulerType = "fifo"
    """fifo (every trial runs to the end), asha (successive halving) or median (stop trials below the
    median of the others at the same epoch)."""

    grace_period: int = Field(default=1, ge=1)
    """Epochs every trial runs before it may be stopped."""

    reduction_factor: int = Field(default=3, ge=2)
    """For asha: the fraction 1/reductionFactor of trials promoted at each rung."""


class SweepObjective(ConfigModel):
    """The metric the sweep optimizes, and an optional goal that ends it early."""

    metric: MetricName = "val_accuracy"
    """A validation metric reported every epoch, e.g. val_accuracy or val_loss."""

    direction: Direction = "maximize"
    """Whether larger is better."""

    goal: float | None = None
    """Stop the sweep once a trial reaches this value."""


class TuneSpec(ConfigModel):
    """A hyperparameter search around a training template."""

    search_space: dict[str, Parameter] = Field(min_length=1, max_length=64)
    """Hyperparameters by the path of the field they set in the template, e.g.
    `optimizer.learningRate: {loguniform: [0.0001, 0.01]}` or `model.params.dropout: {uniform: [0, 0.5]}`."""

    algorithm: Algorithm = "random"
    """random, grid (every combination of grid/choice values) or tpe (Bayesian, Optuna)."""

    scheduler: Scheduler = Field(default_factory=Scheduler)
    """Early stopping of poor trials."""

    objective: SweepObjective = Field(default_factory=SweepObjective)
    """The metric to optimize."""

    max_trials: int = Field(default=10, ge=1, le=10000)
    """Trials to run at most (for grid: the number of repeats of the whole grid)."""

    parallel_trials: int = Field(default=1, ge=1, le=1000)
    """Trials running at once, bounded by the resources each trial asks for."""

    max_failed_trials: int = Field(default=0, ge=0)
    """Failed trials tolerated before the sweep fails."""

    time_budget_seconds: int | None = Field(default=None, ge=1)
    """Stop starting trials after this long; finished trials still count."""

    @model_validator(mode="after")
    def _grid_needs_lists(self) -> TuneSpec:
        if self.algorithm == "grid":
            ranged = [path for path, p in self.search_space.items() if p.kind not in ("grid", "choice")]
            if ranged:
                raise ValueError(
                    "algorithm grid needs every searchSpace parameter to be a grid or choice list "
                    f"(not: {', '.join(ranged)})"
                )
        return self


# --- search-space paths (pure: used by the operator's validator and by the tune workload) ---------------


def search_space_problems(
    template_model: type[BaseModel], template: dict[str, Any], search_space: dict[str, Parameter]
) -> list[tuple[str, str]]:
    """(path, problem) for each searchSpace path that names no field of the template, or whose values do not
    fit the field. `model.params.*` paths are free-form: the architecture reads what it knows."""
    problems = []
    for path, parameter in search_space.items():
        problem = path_problem(template_model, path.split("."))
        if problem:
            problems.append((path, problem))
            continue
        if path.startswith("model.params."):
            continue
        for sample in _samples(parameter):
            trial = with_value(template, path.split("."), sample)
            try:
                template_model.model_validate(trial)
            except ValidationError as err:
                problems.append((path, f"value {sample!r} does not fit {path}: {err.errors()[0]['msg']}"))
                break
    return problems


def path_problem(model: type[BaseModel], parts: list[str]) -> str | None:
    current: type[BaseModel] = model
    for i, part in enumerate(parts):
        by_alias = {(info.alias or name): info for name, info in current.model_fields.items()}
        where = ".".join(parts[:i]) or "the template"
        if part not in by_alias:
            return f'no field "{part}" in {where} (fields: {", ".join(sorted(by_alias))})'
        if ".".join(parts[: i + 1]) == "model.params":
            return None if i + 1 < len(parts) else "name a parameter under model.params, e.g. model.params.dropout"
        annotation = by_alias[part].annotation
        nested = [a for a in (annotation, *getattr(annotation, "__args__", ())) if _is_model(a)]
        if i + 1 < len(parts):
            if not nested:
                return f'"{".".join(parts[: i + 1])}" is a value, not a group of fields'
            current = nested[0]
        elif nested:
            return f'"{".".join(parts)}" is a group of fields: name one of them'
    return None


def with_value(template: dict[str, Any], parts: list[str], value: Any) -> dict[str, Any]:
    """A copy of `template` (camelCase JSON) with the field at `parts` set to `value`."""
    result = dict(template)
    node = result
    for part in parts[:-1]:
        node[part] = dict(node.get(part) or {})
        node = node[part]
    node[parts[-1]] = value
    return result


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _samples(parameter: Parameter) -> list[Any]:
    values = getattr(parameter, parameter.kind)
    return list(values) if parameter.kind in ("choice", "grid", "uniform", "loguniform") else [values[0]]


class TuneConfig(ConfigModel):
    """The config file of `python -m slipway_trainer tune`."""

    name: str = Field(default="sweep", min_length=1, max_length=253)
    """The sweep's name (the TuningSweep's name on Kubernetes)."""

    spec: TuneSpec
    """The search: space, algorithm, scheduler, budgets."""

    template: TrainSpec
    """The training every trial starts from; search-space paths set fields of it."""

    dataset_uri: str = Field(min_length=1, max_length=2048)
    """The prepared dataset."""

    artifact_uri: str = Field(min_length=1, max_length=2048)
    """Where progress.json, result.json, trials/, report/ and model/ (the best trial's) go."""

    cpus_per_trial: Cores = 1
    """CPUs each trial takes (bounds how many run at once on a machine)."""

    gpus_per_trial: int = Field(default=0, ge=0, le=16)
    """GPUs each trial takes."""

    lineage: dict[str, str] = Field(default_factory=dict)
    """Where this sweep comes from, for the model card."""

    tracking: Tracking | None = Field(default=None, exclude_if=lambda v: v is None)  # absent, not null, when off
    """Log the finished run to this MLflow server (none: not logged)."""
