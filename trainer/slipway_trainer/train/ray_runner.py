"""The training loop under Ray Train: a TorchTrainer with N workers (DDP: NCCL on GPUs, gloo on CPU).

Each worker runs `loop.train_loop` on its shard. Ray's FailureConfig restarts the worker group after a
failure; the loop then resumes from the newest checkpoint in the artifact store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slipway_trainer import storage
from slipway_trainer.config.train import TrainConfig
from slipway_trainer.raycluster import ensure_ray, one_per_pod
from slipway_trainer.train.loop import Worker, train_loop
from slipway_trainer.workload import WorkloadError

ERROR_FILE = "_worker_error.json"


def _worker_main(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    config = TrainConfig.model_validate(loop_config["config"])
    context = ray.train.get_context()
    worker = Worker(
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
        prepare=ray.train.torch.prepare_model,
        # No ray.train.report per epoch: the loop writes its own progress, history and checkpoints, and Ray Train
        # keeps one report at a time per worker, taken by its controller every health check (2 s): reporting each
        # epoch made an epoch of a small model last 2 s instead of milliseconds.
    )
    tensorboard = Path(loop_config["tensorboard"]) if worker.is_chief else None
    try:
        train_loop(config, worker, tensorboard)
    except WorkloadError as err:
        if worker.is_chief:
            storage.write_json_atomic(
                storage.join(config.artifact_uri, ERROR_FILE), {"reason": err.reason, "message": err.message}
            )
        raise


def fit(config: TrainConfig, workdir: Path, tensorboard: Path) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    error_uri = storage.join(config.artifact_uri, ERROR_FILE)
    storage.remove(error_uri)
    ensure_ray(math.ceil(config.workers * config.cpus_per_worker) + 1)
    gpus = config.gpus_per_worker
    trainer = TorchTrainer(
        _worker_main,
        train_loop_config={"config": config.model_dump(mode="json", by_alias=True), "tensorboard": str(tensorboard)},
        torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=config.workers,
            use_gpu=gpus > 0,
            resources_per_worker={
                "CPU": config.cpus_per_worker,
                **({"GPU": gpus} if gpus else {}),
                **one_per_pod(),
            },
        ),
        run_config=RunConfig(
            name=f"slipway-{config.name}",
            storage_path=str(workdir / "ray"),
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
    )
    try:
        trainer.fit()
    except Exception as err:
        if storage.exists(error_uri):
            detail = storage.read_json(error_uri)
            raise WorkloadError(detail["reason"], detail["message"]) from err
        oom = _out_of_memory(err)
        if oom is not None:
            raise WorkloadError(
                "OOMKilled",
                f"a training worker ran out of memory and Ray killed it ({oom}) {_retried(config.max_failures)}: "
                "raise spec.resources.memory (each worker pod's memory limit) or lower training.batchSize",
            ) from err
        if _worker_died(err):
            raise WorkloadError(
                "WorkerLost",
                f"a training worker died (its process or pod was lost) {_retried(config.max_failures)}: "
                f"{_first_line(err)}; "
                "see the run's log (`slipway logs NAME`) for the worker's last lines, and raise maxFailures or "
                "resources.memory if its pods were evicted or OOMKilled",
            ) from err
        raise WorkloadError("TrainingFailed", f"Ray Train gave up after {config.max_failures} retries: {err}") from err


def _chain(err: BaseException) -> list[BaseException]:
    """The error, its causes, and Ray Train v2's failure of each worker rank with what its health check met (at most
    32)."""
    pending: list[BaseException] = [err]
    seen: list[BaseException] = []
    while pending and len(seen) < 32:
        one = pending.pop()
        seen.append(one)
        pending += [e for e in (one.__cause__, one.__context__, getattr(one, "health_check_failure", None)) if e]
        pending += [e for e in (getattr(one, "worker_failures", None) or {}).values() if isinstance(e, BaseException)]
    return seen


def _worker_died(err: BaseException) -> bool:
    """Whether a Ray Train failure is a worker that died (an actor or node lost), not an error the loop raised."""
    import ray.exceptions

    lost = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)
    lost_names = ("WorkerHealthCheckFailedError", "WorkerHealthCheckTimeoutError", "PreemptionError")
    return any(isinstance(e, lost) or type(e).__name__ in lost_names for e in _chain(err))


def _out_of_memory(err: BaseException) -> str | None:
    """Ray's memory monitor's words when it killed a worker for using too much of its pod's memory, else None."""
    import ray.exceptions

    for e in _chain(err):
        text = str(e)
        if isinstance(e, ray.exceptions.OutOfMemoryError) or "running low on memory" in text:
            used = re.search(r"Memory on the node[^\n]*", text)  # how much of how much
            return (used.group(0) if used else _first_line(e)).strip()[:300]
    return None


def _retried(max_failures: int) -> str:
    if max_failures == 0:
        return "and failurePolicy.maxFailures 0 allows no restart"
    times = {1: "once", 2: "twice"}.get(max_failures, f"{max_failures} times")
    return f"and Ray Train restarted the group {times} (failurePolicy.maxFailures) before giving up"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def on_worker(config: TrainConfig, work: Callable[[TrainConfig], dict[str, Any]]) -> dict[str, Any]:
    """`work(config)` as one Ray task with a worker's CPUs and GPUs, for loops that are not data-parallel (the GAN):
    never in the driver, which on KubeRay is the head (no GPU, no Ray work). Ray reruns the task when the process
    or pod running it dies (up to `max_failures`); the work resumes from its newest checkpoint."""
    import ray

    ensure_ray(math.ceil(config.cpus_per_worker) + 1)
    gpus = config.gpus_per_worker
    task = ray.remote(num_cpus=config.cpus_per_worker, num_gpus=gpus, max_retries=config.max_failures)(work)
    try:
        result: dict[str, Any] = ray.get(task.remote(config))
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, WorkloadError):
            raise err.cause from None
        raise WorkloadError("TrainingFailed", f"the training task failed on its worker: {err.cause!r}") from err
    except ray.exceptions.WorkerCrashedError as err:
        raise WorkloadError(
            "WorkerLost", f"the training task's worker died {config.max_failures + 1} times: {err}"
        ) from err
    return result
