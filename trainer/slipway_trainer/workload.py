"""The workload contract: a JSON config in; progress.json while running; result.json last.

`progress.json` is rewritten as the work goes (phase, counters, ETA); `result.json` is written once, at the
end, atomically, with `status` Succeeded or Failed and, when it failed, a `reason` and a `message` a person
can act on. The operator and `slipway run` read nothing else. Both files are `slipway_trainer.artifacts`
models: what a workload writes is checked against them here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from slipway_trainer import artifacts, storage
from slipway_trainer.artifacts import PROGRESS, RESULT, RUN, Status, problems
from slipway_trainer.logship import LogShipper
from slipway_trainer.stop import StopRequest

__all__ = ["PROGRESS", "RESULT", "Progress", "Status", "WorkloadError", "main", "run", "run_staged"]


class WorkloadError(Exception):
    """A failure whose message tells the user what to fix. `reason` is a CamelCase word for machines."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[WorkloadError], tuple[str, str]]:
        # Picklable with both fields, so a failure inside a Ray worker or trial keeps its reason.
        return WorkloadError, (self.reason, self.message)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def config_hash(config: BaseModel) -> str:
    canonical = json.dumps(config.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Progress:
    """Writes progress.json, at most every `interval` seconds unless forced."""

    def __init__(self, artifact_uri: str, phase: str = "Starting", interval: float = 2.0) -> None:
        self.uri = storage.join(artifact_uri, PROGRESS)
        self.interval = interval
        self.started = time.monotonic()
        self.state: dict[str, Any] = {"phase": phase, "startedAt": now()}
        self._last_write = 0.0

    def update(self, force: bool = False, **fields: Any) -> None:
        self.state.update(fields)
        if force or time.monotonic() - self._last_write >= self.interval:
            self.flush()

    def refresh(self) -> None:
        """Take in what another writer (a training worker) put in progress.json meanwhile."""
        if storage.exists(self.uri):
            self.state.update(storage.read_json(self.uri))

    def flush(self) -> None:
        self.state["updatedAt"] = now()
        self.state["elapsedSeconds"] = round(time.monotonic() - self.started, 1)
        storage.write_json_atomic(self.uri, artifacts.Progress.model_validate(self.state).dump())
        self._last_write = time.monotonic()


C = TypeVar("C", bound=BaseModel)


def load_config(path: str, model: type[C]) -> C:
    try:
        text = storage.read_bytes(path)
    except FileNotFoundError as err:
        raise WorkloadError("ConfigNotFound", f"config file {path} does not exist") from err
    try:
        return model.model_validate_json(text)
    except ValidationError as err:
        raise WorkloadError("InvalidConfig", f"config file {path} is invalid: {problems(err)}") from err


def existing_result(artifact_uri: str, config: BaseModel) -> dict[str, Any] | None:
    """The result of an earlier successful run of the same config, if there is one (idempotence)."""
    uri = storage.join(artifact_uri, RESULT)
    if not storage.exists(uri):
        return None
    result: dict[str, Any] = storage.read_json(uri)
    if result.get("status") == Status.SUCCEEDED and result.get("configHash") == config_hash(config):
        return result
    return None


def claim(artifact_uri: str, config: BaseModel, resumable: tuple[str, ...]) -> None:
    """Make the folder this config's: `run.json` names the config whose outputs it holds. A folder left by another
    config (a resource deleted and re-created under the same name with another spec) loses its `resumable`
    subfolders (checkpoints, a sweep's state) first, so the new run starts from nothing instead of resuming the old
    one; the same config (a retried job, a restarted pod) keeps them and resumes."""
    marker = storage.join(artifact_uri, RUN)
    digest = config_hash(config)
    found = storage.read_json(marker).get("configHash") if storage.exists(marker) else None
    if found != digest:
        if found is not None:
            for folder in resumable:
                if storage.exists(storage.join(artifact_uri, folder)):
                    print(f"{storage.join(artifact_uri, folder)} holds an earlier run of another config: starting over")
                    storage.remove(storage.join(artifact_uri, folder))
        storage.write_json_atomic(marker, {"configHash": digest, "claimedAt": now()})


def run(
    artifact_uri: str,
    config: BaseModel,
    work: Callable[[Progress], dict[str, Any]],
    resumable: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run `work` under the contract. Returns the result it wrote (or the one already there). `resumable`: the
    subfolders an interrupted run of the same config resumes from (see `claim`)."""
    previous = existing_result(artifact_uri, config)
    if previous is not None:  # stamped: the reader can tell it is this run's answer, not an older one left there
        previous["reusedAt"] = now()
        storage.write_json_atomic(storage.join(artifact_uri, RESULT), previous)
        return previous
    storage.remove(storage.join(artifact_uri, RESULT))
    claim(artifact_uri, config, resumable)
    progress = Progress(artifact_uri)
    progress.update(force=True, phase="Running")
    base = {"configHash": config_hash(config), "startedAt": progress.state["startedAt"]}
    try:
        outcome = _unless_leaving(work, progress)
    except WorkloadError as err:  # the data or the config: running it again gives the same answer
        result = {**base, "status": Status.FAILED, "reason": err.reason, "message": err.message, "retryable": False}
    except Exception as err:  # an unexpected failure still ends with a result a person can read
        result = {
            **base,
            "status": Status.FAILED,
            "reason": "InternalError",
            "message": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=8),
            "retryable": True,  # it may be the machine (a lost node, the store away): a retry may get through
        }
    else:
        result = {**base, **outcome, "status": Status.SUCCEEDED}
    result["finishedAt"] = now()
    try:
        result = artifacts.Result.model_validate(result).dump()
    except ValidationError as err:  # a bug (a field the contract lacks): say so rather than write it
        result = {
            **base,
            "status": Status.FAILED,
            "reason": "InternalError",
            "retryable": False,
            "message": f"the workload's result breaks the result.json contract: {problems(err)}",
            "finishedAt": result["finishedAt"],
        }
    progress.update(force=True, phase=str(result["status"]))
    storage.write_json_atomic(storage.join(artifact_uri, RESULT), result)
    return result


def _unless_leaving(work: Callable[[Progress], dict[str, Any]], progress: Progress) -> dict[str, Any]:
    """`work(progress)`, armed (see slipway_trainer.stop): the pod's preStop hook waits a while for the workers'
    checkpoints before Ray goes. A failure once the pod is being deleted (preempted, drained) is that deletion, not
    the work's: no result is written, and the run resumes when it runs again."""
    leave = StopRequest()
    try:
        with leave.armed():
            return work(progress)
    except Exception:
        if leave.requested():
            print(
                f"{leave.path}: this pod is being deleted, so no result; the run resumes when it runs again", flush=True
            )
            leave.hold()
        raise


def run_staged(
    artifact_uri: str,
    config: BaseModel,
    work: Callable[[Progress, Path], dict[str, Any]],
    resumable: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`run` with a private local scratch folder for the work, removed afterwards whatever happened."""
    workdir = storage.staging_dir()
    try:
        return run(artifact_uri, config, lambda progress: work(progress, workdir), resumable)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(
    config_path: str, model: type[C], runner: Callable[[C], dict[str, Any]], artifact_uri: Callable[[C], str]
) -> int:
    """The command line of a workload: load the config, run, print the result, with the process's log copied to
    `<artifact_uri(config)>/logs/driver.log` as it goes. Exit 0 when it succeeded and when it failed in a way a retry
    cannot mend (its result.json says why): a non-zero exit makes KubeRay retry the job (`backoffLimit`), which
    only a retryable failure deserves."""
    try:
        config = load_config(config_path, model)
    except WorkloadError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    with LogShipper(storage.join(artifact_uri(config), artifacts.DRIVER_LOG)):
        result = runner(config)
        if result["status"] != Status.SUCCEEDED:
            print(f"error: {result.get('reason')}: {result.get('message')}", file=sys.stderr)
        print(json.dumps({k: v for k, v in result.items() if k != "traceback"}, indent=2, default=str))
    return 0 if result["status"] == Status.SUCCEEDED or not result.get("retryable", True) else 1
