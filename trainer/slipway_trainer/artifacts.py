"""The files and names the workloads and the operator share: one definition, read and written by both sides.

A workload writes `progress.json` while it runs and `result.json` once, last; a DatasetPrep commits a dataset
with its `manifest.json`; a TuningSweep writes `report/leaderboard.json`. The operator (and `slipway run`, the
report, the demo) reads them back. Both sides import this module, so it needs pydantic and nothing else.

Writers build a model and `dump()` it: a field the model lacks is an error there, so the contract cannot drift
silently. Readers `read()` what they find: a field a newer writer added is dropped, a malformed one is an
`ArtifactError` that names the file and the field.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from slipway_trainer import storage

PROGRESS = "progress.json"
RESULT = "result.json"
RUN = "run.json"  # the config whose outputs the folder holds (workload.claim)
DRIVER_LOG = "logs/driver.log"  # the workload's stdout and stderr, Ray's forwarded worker lines with them
MANIFEST = "manifest.json"
HISTORY = "history.json"  # a training loop's every epoch's metrics so far, rewritten each epoch
LEADERBOARD = "leaderboard.json"  # under a sweep's report/

# The environment variable that carries a DatasetPrep's hashing salt (from its Secret) into the prep workload.
SALT_ENV = "SLIPWAY_HASH_SALT"
# A RayJob's label naming its workload (`python -m slipway_trainer <step>`): prep, train or tune.
STEP_LABEL = "slipway.dev/step"

# A stop request: the Ray pods' preStop hook creates STOP_FILE (its path in STOP_FILE_ENV) when the pod is deleted
# (Kueue's preemption, a drained node). A training loop keeps STOP_FILE + STOP_ARMED_SUFFIX + its pid while it
# trains; one that sees the stop file writes a checkpoint of its last finished epoch at once, removes its armed
# file and waits to be killed. The hook waits (within the grace period) until no armed file is left.
STOP_FILE_ENV = "SLIPWAY_STOP_FILE"
STOP_FILE = "/tmp/slipway-stop"
STOP_ARMED_SUFFIX = ".armed."

# A Ray resource each worker pod of a Slipway RayJob advertises once (the operator's rayStartParams): a training
# worker asks for it, so `workers: N` means one worker per pod, however the pods' CPUs would pack them.
WORKER_RESOURCE = "slipway_worker"

# The inference server's Prometheus metrics the operator reads to judge a rollout.
REQUESTS_METRIC = "slipway_inference_requests"  # a counter: exposed as <name>_total
LATENCY_METRIC = "slipway_inference_request_seconds"  # a histogram: <name>_bucket
DRIFT_METRIC = "slipway_drift_score"  # a gauge per feature
IN_FLIGHT_METRIC = "slipway_inference_in_flight"  # a gauge: requests being answered now (autoscaling: concurrency)
QUALITY_METRIC = "slipway_live_quality"  # a gauge per metric (accuracy, macro_f1, mae, rmse) from feedback
QUALITY_ROWS_METRIC = "slipway_live_quality_rows"  # a gauge: feedback rows in the quality window
PAYLOAD_IMAGE = "slipway.image"  # payload parts' schema metadata: "<column>:<height>,<width>,<channels>"
PAYLOAD_CLASS_NAMES = "slipway.classNames"  # and the model's class names (JSON), so a retrain on them keeps them
GROUP_QUALITY_METRIC = "slipway_live_quality_group"  # a gauge per group and metric, for feedback naming a group
GROUP_ROWS_METRIC = "slipway_live_quality_group_rows"  # a gauge per group: its feedback rows in the window
# A stable server's copies of requests to a shadow candidate (rollout.shadow), counted where they were answered:
SHADOW_REQUESTS_METRIC = "slipway_shadow_requests"  # a counter by outcome: answered, failed, dropped
SHADOW_ROWS_METRIC = "slipway_shadow_rows"  # a counter: rows the shadow answered, compared with this server's
SHADOW_AGREED_METRIC = "slipway_shadow_agreed_rows"  # a counter: classification rows whose labels agree
SHADOW_DIFFERENCE_METRIC = "slipway_shadow_relative_difference"  # a counter: regression, summed per row


class ArtifactError(ValueError):
    """An artifact that does not match its contract; the message names the file and the field."""


def problems(err: ValidationError) -> str:
    """A pydantic error in one line: `field.path: what is wrong; ...`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors())


class Artifact(BaseModel):
    """camelCase on disk, snake_case in code; unknown fields are refused when writing, dropped when reading."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", defer_build=True)

    @classmethod
    def read(cls, data: Any, where: str = "") -> Self:
        """`data` as read from `where` (a URI, for the error message)."""
        try:
            return cls.model_validate(_known(cls, data))
        except ValidationError as err:
            what = where or cls.__name__
            raise ArtifactError(f"{what} does not match the {cls.__name__} contract: {problems(err)}") from None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _known(model: type[BaseModel], data: Any) -> Any:
    """`data` without the keys `model` (and its nested artifact models) does not know."""
    if not isinstance(data, dict):
        return data
    names = {f.alias or n: f for n, f in model.model_fields.items()} | dict(model.model_fields)
    out = {}
    for key, value in data.items():
        found = names.get(key)
        if found is None:
            continue
        nested = _artifact_in(found.annotation)
        if nested is None:
            out[key] = value
        elif isinstance(value, list):
            out[key] = [_known(nested, v) for v in value]
        else:
            out[key] = _known(nested, value)
    return out


def _artifact_in(annotation: Any) -> type[Artifact] | None:
    """The artifact model in `X`, `X | None` or `list[X]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, Artifact):
        return annotation
    return next((m for m in map(_artifact_in, get_args(annotation)) if m is not None), None)


# -- progress.json ---------------------------------------------------------------------------------------------


class Progress(Artifact):
    """Rewritten as the work goes; every field but `phase` belongs to one kind of workload."""

    phase: str = "Running"
    started_at: str | None = None
    updated_at: str | None = None
    elapsed_seconds: float | None = None
    # prep
    rows_read: int | None = None
    rows_cleaned: int | None = None
    rows_written: int | None = None
    # train (and each trial of a sweep)
    epoch: int | None = None
    total_epochs: int | None = None
    metrics: dict[str, float] | None = None
    samples_per_second: float | None = None
    eta_seconds: float | None = None
    best_epoch: int | None = None
    stopped_early: bool | None = None
    workers: int | None = None
    resumed_from: list[int] | None = None
    epochs_lost: int | None = None  # finished epochs trained again after resuming (no checkpoint held them)
    # tune
    trials_done: int | None = None
    trials_running: int | None = None
    trials_failed: int | None = None
    max_trials: int | None = None
    best: dict[str, float] | None = None


# -- result.json -----------------------------------------------------------------------------------------------


class Status(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class BestTrial(Artifact):
    id: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    metric: float | None = None
    objective: str | None = None


class TrialCounts(Artifact):
    total: int = 0
    completed: int = 0
    stopped_early: int = 0
    failed: int = 0
    not_started: int = 0


class Tracked(Artifact):
    """What logging a finished run to MLflow came to: `Logged` (its run id and URL) or `Failed` (why)."""

    state: Literal["Logged", "Failed"]
    run_id: str | None = None
    experiment_id: str | None = None
    url: str | None = None
    message: str | None = None


class Result(Artifact):
    """Written once, last. A failed workload says why (`reason`, `message`) and whether a retry may mend it;
    a successful one adds what its kind produced (the prep's dataset, the run's or sweep's model)."""

    status: Status
    config_hash: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    reused_at: str | None = None  # an identical config's result, handed out again by a later run
    # failed
    reason: str | None = None
    message: str | None = None
    retryable: bool | None = None
    traceback: str | None = None
    # prep
    output_uri: str | None = None
    manifest_uri: str | None = None
    fingerprint: str | None = None
    version: str | None = None
    changed: bool | None = None  # a refresh: whether it wrote a version other than the one it found
    rows: dict[str, int] | None = None
    dropped_rows: dict[str, int] | None = None
    task: str | None = None
    # train
    metrics: dict[str, float] | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    stopped_early: bool | None = None
    resumed_from: list[int] | None = None
    epochs_lost: int | None = None
    model_uri: str | None = None
    report_uri: str | None = None
    checkpoint_uri: str | None = None
    exports: dict[str, Any] | None = None
    lineage: dict[str, Any] | None = None
    history: list[dict[str, Any]] | None = None  # a GAN's losses per epoch
    train_seconds: float | None = None
    # tune
    best_trial: BestTrial | None = None
    trials: TrialCounts | None = None
    leaderboard_uri: str | None = None
    comparison: dict[str, Any] | None = None
    trial_epochs: int | None = None
    search_seconds: float | None = None  # the trials' wall time, Ray's start included
    # train, tune: the MLflow run, when tracking was asked for
    tracking: Tracked | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == Status.SUCCEEDED

    @property
    def written_at(self) -> str | None:
        return self.reused_at or self.finished_at


# -- manifest.json ---------------------------------------------------------------------------------------------


class Column(Artifact):
    name: str
    type: str


class ImageLayout(Artifact):
    column: str = "image"
    height: int
    width: int
    channels: int
    storage: str = "raw uint8 pixels, row-major HxWxC, as binary"


class DataProfile(Artifact):
    """Per-feature statistics of one split: the drift reference of the inference server."""

    split: str = "train"
    features: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Privacy(Artifact):
    dropped_columns: list[str] = Field(default_factory=list)
    hashed_columns: list[str] = Field(default_factory=list)
    hash: str = "sha256(salt + value)"


class Source(Artifact):
    uri: str | None = None
    format: str | None = None
    digest: str | None = None  # the source's content when it was read (data/sources.py: source_digest)


class Manifest(Artifact):
    """A prepared dataset, written last (the commit point): its splits, schema, profile and fingerprint."""

    kind: Literal["SlipwayDataset"] = "SlipwayDataset"
    format_version: int = 1
    name: str
    version: str
    fingerprint: str
    created_at: str | None = None
    source: Source = Field(default_factory=Source)
    task: str
    label: str | None = None
    classes: list[Any] = Field(default_factory=list)
    class_names: list[str] = Field(default_factory=list)
    columns: list[Column] = Field(default_factory=list, alias="schema")
    images: ImageLayout | None = None
    rows: dict[str, int] = Field(default_factory=dict)
    dropped: dict[str, int] = Field(default_factory=dict)
    class_balance: dict[str, dict[str, int]] = Field(default_factory=dict)
    splits: dict[str, str] = Field(default_factory=dict)
    transform_uri: str | None = None
    transform: dict[str, Any] = Field(default_factory=dict)
    profile: DataProfile = Field(default_factory=DataProfile)
    privacy: Privacy = Field(default_factory=Privacy)
    spec: dict[str, Any] = Field(default_factory=dict)

    def labels(self) -> list[str]:
        """The classes' display names: `classNames` when the source has them, else the class values."""
        return [str(n) for n in self.class_names] if self.class_names else [str(c) for c in self.classes]


# -- a sweep's report/leaderboard.json --------------------------------------------------------------------------


class TrialRow(Artifact):
    """One trial of a sweep: its parameters, its best objective value (and validation loss there), how it ended."""

    trial: str
    params: dict[str, Any] = Field(default_factory=dict)
    status: Literal["Completed", "StoppedEarly", "Failed", "NotStarted"]
    stopped_early: bool = False
    epochs: int = 0
    best: float | None = None
    best_loss: float | None = None
    last: dict[str, float] = Field(default_factory=dict)
    error: str | None = None


class Leaderboard(BaseModel):
    """Ranked best first; trials without an objective value last."""

    rows: list[TrialRow]

    @classmethod
    def read(cls, data: Any, where: str = "") -> Leaderboard:
        if not isinstance(data, list):
            raise ArtifactError(f"{where or 'the leaderboard'} is not a list of trials")
        return cls(rows=[TrialRow.read(row, f"{where} trial {i}") for i, row in enumerate(data)])

    def dump(self) -> list[dict[str, Any]]:
        return [row.model_dump(mode="json", by_alias=True) for row in self.rows]


def read_history(artifact_uri: str) -> list[dict[str, Any]]:
    """Every epoch's metrics a training loop recorded under `artifact_uri` (HISTORY); none yet: empty."""
    uri = storage.join(artifact_uri, HISTORY)
    return list(storage.read_json(uri)) if storage.exists(uri) else []
