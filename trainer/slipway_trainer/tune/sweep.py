"""The search on Ray Tune. Every trial runs the training loop of `train/loop.py` on one worker, reporting
each epoch's metrics to Tune, so ASHA and the median rule can stop poor trials early."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from slipway_trainer import storage
from slipway_trainer.config.train import TrainConfig, TrainSpec
from slipway_trainer.config.tune import Parameter, TuneConfig, with_value
from slipway_trainer.train.data import keep_loaded_splits
from slipway_trainer.train.loop import Worker, train_loop
from slipway_trainer.workload import Progress, WorkloadError

EXPERIMENT = "sweep"
TRIALS = "trials"  # each trial's own artifacts (checkpoints, progress) under the sweep's
STATE = "tune"  # Ray Tune's experiment state, for resuming


def trial_spec(config: TuneConfig, params: dict[str, Any]) -> TrainSpec:
    template = config.template.model_dump(mode="json", by_alias=True, exclude_none=True)
    for path, value in params.items():
        template = with_value(template, path.split("."), value)
    return TrainSpec.model_validate(template)


def trial_config(config: TuneConfig, trial_id: str, params: dict[str, Any]) -> TrainConfig:
    return TrainConfig(
        name=f"{config.name}-{trial_id}",
        spec=trial_spec(config, params),
        dataset_uri=config.dataset_uri,
        artifact_uri=storage.join(config.artifact_uri, TRIALS, trial_id),
        use_ray=False,
        cpus_per_worker=config.cpus_per_trial,
        gpus_per_worker=config.gpus_per_trial,
        lineage={**config.lineage, "trial": trial_id},
    )


def _trial(params: dict[str, Any], config_json: dict[str, Any]) -> None:
    import ray.tune

    keep_loaded_splits()  # the actor runs trial after trial (reuse_actors): the data is read once
    config = TuneConfig.model_validate(config_json)
    trial_id = ray.tune.get_context().get_trial_id()
    train = trial_config(config, trial_id, params)
    device = torch.device("cuda" if config.gpus_per_trial and torch.cuda.is_available() else "cpu")
    train_loop(train, Worker(device=device, report=ray.tune.report), None)


def param_space(config: TuneConfig) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {}
    grid = config.spec.algorithm == "grid"
    for path, p in config.spec.search_space.items():
        space[path] = _domain(tune, p, grid)
    return space


def _domain(tune: Any, p: Parameter, grid: bool) -> Any:
    if p.grid is not None or (grid and p.choice is not None):
        return tune.grid_search(list(p.grid if p.grid is not None else p.choice or []))
    if p.uniform is not None:
        return tune.uniform(p.uniform[0], p.uniform[1])
    if p.loguniform is not None:
        return tune.loguniform(p.loguniform[0], p.loguniform[1])
    if p.randint is not None:
        return tune.randint(p.randint[0], p.randint[1])
    return tune.choice(list(p.choice or []))


def objective(config: TuneConfig) -> tuple[str, str]:
    metric = config.spec.objective.metric
    metric = metric if metric.startswith("val_") else f"val_{metric}"
    return metric, "max" if config.spec.objective.direction == "maximize" else "min"


def run(config: TuneConfig, progress: Progress, workdir: Path) -> Any:
    """Run (or resume) the sweep; returns Ray Tune's ResultGrid."""
    from ray import tune
    from ray.tune import Callback, FailureConfig, RunConfig, Tuner
    from ray.tune import TuneConfig as RayTuneConfig
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch
    from ray.tune.stopper import Stopper

    from slipway_trainer.raycluster import ensure_ray

    spec = config.spec
    metric, mode = objective(config)
    epochs = config.template.training.epochs
    ensure_ray(math.ceil(spec.parallel_trials * config.cpus_per_trial) + 1)

    class Tracker(Callback, Stopper):
        """Counts trials for progress.json, and ends the sweep at the goal or past maxFailedTrials."""

        def __init__(self) -> None:
            self.best: float | None = None
            self.failed: set[str] = set()
            self.done: set[str] = set()
            self.running: set[str] = set()
            self.goal_met = False

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            value = result.get(metric)
            if isinstance(value, int | float) and math.isfinite(value):
                if self.best is None or (value > self.best if mode == "max" else value < self.best):
                    self.best = float(value)
                goal = spec.objective.goal
                if goal is not None and (value >= goal if mode == "max" else value <= goal):
                    self.goal_met = True
            return False

        def stop_all(self) -> bool:
            return self.goal_met or len(self.failed) > spec.max_failed_trials

        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.running.add(trial.trial_id)
            self._write()

        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
        ) -> None:
            self._write()

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.running.discard(trial.trial_id)
            self.done.add(trial.trial_id)
            self._write()

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.running.discard(trial.trial_id)
            self.failed.add(trial.trial_id)
            self._write()

        def _write(self) -> None:
            progress.update(
                force=True,
                phase="Tuning",
                trialsDone=len(self.done),
                trialsRunning=len(self.running),
                trialsFailed=len(self.failed),
                maxTrials=spec.max_trials,
                best={metric: self.best} if self.best is not None else None,
            )

    tracker = Tracker()
    if spec.scheduler.type == "asha":
        scheduler: Any = ASHAScheduler(
            time_attr="training_iteration",
            max_t=epochs,
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    elif spec.scheduler.type == "median":
        scheduler = median_rule(spec.scheduler.grace_period)
    else:
        scheduler = FIFOScheduler()  # type: ignore[no-untyped-call]
    if spec.algorithm == "tpe":
        search: Any = OptunaSearch(seed=config.template.training.seed)
    else:
        # Tune ignores max_concurrent_trials for a search generator: it takes its own limit.
        search = BasicVariantGenerator(random_state=config.template.training.seed, max_concurrent=spec.parallel_trials)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, config_json=config.model_dump(mode="json", by_alias=True)),
        {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial},
    )
    storage_path = _storage_path(config)
    experiment = f"{storage_path}/{EXPERIMENT}"
    if Tuner.can_restore(experiment):
        tuner = Tuner.restore(
            experiment, trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
    else:
        tuner = Tuner(
            trainable,
            param_space=param_space(config),
            tune_config=RayTuneConfig(
                metric=metric,
                mode=mode,
                search_alg=search,
                scheduler=scheduler,
                num_samples=1 if spec.algorithm == "grid" else spec.max_trials,
                # A searcher (TPE) is limited here; the generator above limits itself (Tune warns if both).
                max_concurrent_trials=spec.parallel_trials if spec.algorithm == "tpe" else None,
                time_budget_s=spec.time_budget_seconds,
                # A trial's actor runs the next trial: no new process, imports or data load per trial (the
                # fixed cost of a small trial was ~12 s of its ~16 s on 2 cores).
                reuse_actors=True,
            ),
            run_config=RunConfig(
                name=EXPERIMENT,
                storage_path=storage_path,
                stop=tracker,
                callbacks=[tracker],
                failure_config=FailureConfig(max_failures=0, fail_fast=False),
                verbose=0,
            ),
        )
    try:
        return tuner.fit()
    except Exception as err:  # Tune's own failures (not a trial's): say so plainly
        raise WorkloadError("TuningFailed", f"Ray Tune failed: {err}") from err


def median_rule(grace_period: int) -> Any:
    """Ray Tune's median stopping rule without its time-sharing: by default a trial that cannot be judged yet
    (fewer than two others reached its epoch) is paused for a waiting trial and restarted later from its
    checkpoint; on the Auto MPG sweep most trials were restarted four times. Katib's median stop, like this
    one, lets such a trial run on."""
    from ray.tune.schedulers import MedianStoppingRule, TrialScheduler

    class MedianStopping(MedianStoppingRule):
        def _on_insufficient_samples(self, tune_controller: Any, trial: Any, time: float) -> str:
            return str(TrialScheduler.CONTINUE)

    return MedianStopping(time_attr="training_iteration", grace_period=grace_period, min_samples_required=2)


def _storage_path(config: TuneConfig) -> str:
    uri = storage.join(config.artifact_uri, STATE)
    return uri.removeprefix("file://") if uri.startswith("file://") else uri
