"""What a data preparation accepts: source, cleaning, transforms, privacy, split, output."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from slipway_trainer.config.base import ColumnName, ConfigModel

DataFormat = Literal["csv", "parquet", "jsonl", "imagefolder", "idx", "payloads"]
MissingStrategy = Literal["drop", "mean", "median", "mode", "constant"]
TransformType = Literal["standardize", "minMax", "oneHot", "ordinal", "normalize", "resize", "log"]


class Source(ConfigModel):
    """Where the raw data comes from."""

    uri: str = Field(min_length=1, max_length=2048)
    """Location of the data: `s3://bucket/prefix`, `https://host/file.csv`, `file:///path`, or a built-in
    set (`builtin://fashion-mnist`, `builtin://sklearn/<digits|iris|wine|breast_cancer|diabetes>`,
    `builtin://vega/cars`). A folder or glob of files is read as one dataset."""

    format: DataFormat | None = None
    """File format: csv, parquet, jsonl, imagefolder (a folder per class), idx, or payloads (a ModelDeployment's
    payload log, `monitoring.payloadLog`, joined with the feedback sent for it: the logged inputs of the rows that got
    a true label or value, in a `truth` column to use as the label). Inferred from the file extension or the
    built-in set when left out."""


class Sample(ConfigModel):
    """Keep a seeded random subset of the rows (before splitting): quick experiments on big data."""

    rows: int | None = Field(default=None, ge=1)
    """Keep at most this many rows."""

    fraction: float | None = Field(default=None, gt=0, le=1)
    """Keep this fraction of the rows."""

    seed: int = 42
    """Seed of the random choice; the same seed keeps the same rows."""


class MissingValues(ConfigModel):
    """How to treat missing values, per column or by default."""

    default: MissingStrategy = "drop"
    """Strategy for columns not listed in `columns`: drop the row, or fill with the column's mean, median,
    mode, or a constant from `values`."""

    columns: dict[ColumnName, MissingStrategy] = Field(default_factory=dict, max_length=512)
    """Strategy per column, e.g. `{hp: median}`."""

    values: dict[ColumnName, str] = Field(default_factory=dict, max_length=512)
    """The fill value of each column whose strategy is `constant` (`*` for the default), written as a string
    (`"0"`, `"usa"`) and converted to the column's type."""


class Cleaning(ConfigModel):
    """Rows removed or repaired before transforms. Every dropped row is counted by reason."""

    drop_duplicates: bool = True
    """Drop rows identical to an earlier row."""

    drop_invalid: bool = True
    """Drop rows whose values cannot be read as their column's type, and unreadable images."""

    missing: MissingValues = Field(default_factory=MissingValues)
    """How missing values are treated."""


class Transform(ConfigModel):
    """A feature transform. Fitted on the train split only and saved with the data, so training and
    serving apply exactly the same one."""

    type: TransformType
    """standardize (zero mean, unit variance), minMax (to [0, 1]), oneHot, ordinal (categories to integers),
    normalize (image pixels to [0, 1]), resize (images, needs `size`), log (log1p of non-negative values)."""

    columns: list[ColumnName] = Field(default_factory=list, max_length=512)
    """Columns to transform; empty means every column the transform applies to (numeric for scaling,
    categorical for encoding, the image column for image transforms)."""

    size: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(default=None, min_length=2, max_length=2)
    """Target `[height, width]` of `resize`."""


class Privacy(ConfigModel):
    """Columns that must not reach the model as they are."""

    drop_columns: list[ColumnName] = Field(default_factory=list, max_length=512)
    """Columns removed before anything else."""

    hash_columns: list[ColumnName] = Field(default_factory=list, max_length=512)
    """Columns replaced by a salted SHA-256 of their value. The salt comes from `saltSecretRef`."""


class Split(ConfigModel):
    """How rows are split into train, validation and test. Seeded and deterministic."""

    train: float = Field(default=0.8, gt=0, le=1)
    """Fraction of rows for training."""

    validation: float = Field(default=0.1, ge=0, lt=1)
    """Fraction of rows for validation (early stopping, model selection)."""

    test: float = Field(default=0.1, ge=0, lt=1)
    """Fraction of rows held out for the final evaluation."""

    stratify_by: ColumnName | None = None
    """Keep this column's class balance equal across the splits."""

    seed: int = 42
    """Seed of the shuffle; the same seed and data give the same split."""


class Output(ConfigModel):
    """Where the prepared dataset is written."""

    uri: str | None = Field(default=None, min_length=1, max_length=2048)
    """Destination folder (`s3://...` or `file://...`). Default: `<store>/datasets/<namespace>/<name>`."""


class PrepSpec(ConfigModel):
    """Acquire, clean, transform and split a dataset into versioned Parquet with a data profile."""

    source: Source
    """Where the raw data comes from."""

    extra_sources: list[Source] = Field(default_factory=list, max_length=8)
    """More tabular sources whose rows are added to `source`'s, read with the store's credentials: typically a
    ModelDeployment's payload log (`format: payloads`, its `truth` becomes the label column) added to the original
    data. Their columns are matched by name and converted to `source`'s types; a column `source` lacks is left
    out, one they lack is missing (and cleaned like any missing value)."""

    label: ColumnName | None = None
    """The column to predict. Built-in sets name theirs (`label` for images, `target` for scikit-learn's)."""

    sample: Sample | None = None
    """Keep only a seeded subset of the rows."""

    cleaning: Cleaning = Field(default_factory=Cleaning)
    """Duplicates, missing values and invalid rows."""

    transforms: list[Transform] = Field(default_factory=list, max_length=64)
    """Feature transforms, applied in order."""

    privacy: Privacy = Field(default_factory=Privacy)
    """Columns dropped or hashed."""

    split: Split = Field(default_factory=Split)
    """Train/validation/test split."""

    output: Output = Field(default_factory=Output)
    """Where the prepared dataset goes."""


class PrepConfig(ConfigModel):
    """The config file of `python -m slipway_trainer prep`."""

    name: str = Field(default="dataset", min_length=1, max_length=253)
    """The dataset's name (the DatasetPrep's name on Kubernetes)."""

    spec: PrepSpec
    """What to prepare."""

    output_uri: str = Field(min_length=1, max_length=2048)
    """Where the prepared dataset goes (`file://...` or `s3://...`)."""

    artifact_uri: str | None = Field(default=None, max_length=2048)
    """Where progress.json and result.json go; default: `<outputUri>/_run`."""

    batch_rows: int = Field(default=65536, ge=1, le=10_000_000)
    """Rows per Arrow record batch: peak memory grows with it."""

    workers: int = Field(default=1, ge=1, le=1024)
    """With more than one, csv/parquet/jsonl sources are read and cleaned in parallel by Ray Data."""

    refresh: bool = False
    """A refresh of a dataset prepared before: when the source's content (its digest) and the spec are those of the
    current version, nothing is read or written and the result says `changed: false`."""
