"""DatasetPrep: acquire, clean, transform and split data into versioned Parquet."""

from __future__ import annotations

from pydantic import Field

from slipway_operator.api.common import ObjectName, Resources, RunStatusBase, SecretKeyRef
from slipway_operator.api.kind import COMMON_COLUMNS_AGE, Kind, PrinterColumn, Rule, immutable, uri_rule
from slipway_trainer.config.base import ConfigModel
from slipway_trainer.config.prep import (
    MissingValues,
    Output,
    PrepSpec,
    Privacy,
    Sample,
    Source,
    Split,
    Transform,
)


class SourceSpec(Source):
    """Where the raw data comes from, and the credentials to read it."""

    secret_ref: ObjectName | None = None
    """A Secret in the same namespace with the source's own S3 credentials (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, AWS_SESSION_TOKEN), used to read the source only; the
    output is still written with the store's Secret. Never copied into configs or status."""


class PrivacySpec(Privacy):
    """Columns that must not reach the model as they are."""

    salt_secret_ref: SecretKeyRef | None = None
    """The Secret key holding the salt for `hashColumns` (required when hashing)."""


class Refresh(ConfigModel):
    """Prepare the source again on a schedule: a source whose content changed gives a new version beside the old
    ones; an unchanged one (the same content digest) is not read again."""

    interval_seconds: int = Field(ge=10, le=31_536_000)
    """Seconds between the end of one preparation and the next check of the source."""

    keep_versions: int = Field(default=3, ge=1, le=50)
    """Versions kept in the store, newest first; older ones are removed, except a version a serving model was
    trained on (a ModelDeployment's current or canary revision names it)."""


class DatasetPrepSpec(PrepSpec):
    """Acquire, clean, transform and split a dataset into versioned Parquet with a data profile."""

    source: SourceSpec
    """Where the raw data comes from."""

    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    """Columns dropped or hashed."""

    resources: Resources = Field(default_factory=Resources)
    """Workers for the preparation (more than one distributes it with Ray Data)."""

    refresh: Refresh | None = None
    """Check the source again every `intervalSeconds` and write a new version when its content changed. The dataset
    stays Succeeded and usable (its last version) while a refresh runs or when one fails."""


class SplitRows(ConfigModel):
    """Rows per split."""

    train: int = 0
    validation: int = 0
    test: int = 0
    total: int = 0
    """All rows written."""


class DatasetVersion(ConfigModel):
    """One version of the prepared dataset in the store."""

    version: str
    """Its folder under outputUri, `v-<12 hex digits of the fingerprint>`."""

    fingerprint: str
    """Content fingerprint."""

    rows: int = 0
    """Rows written across all splits."""

    created_at: str | None = None
    """When the preparation that wrote it finished (RFC 3339)."""

    round: int = 0
    """The refresh round that wrote it (0: the first preparation)."""


class RefreshStatus(ConfigModel):
    """Where the refresh schedule stands."""

    round: int = 0
    """The latest refresh round started (0: none yet)."""

    state: str | None = None
    """Running, Unchanged, NewVersion or Failed."""

    message: str | None = None
    """What the latest round found, or why it failed and what to do."""

    ray_job_name: str | None = None
    """The RayJob of the latest round."""

    log_uri: str | None = None
    """The latest round's log."""

    start_time: str | None = None
    """When the latest round started (RFC 3339)."""

    completion_time: str | None = None
    """When the latest round finished (RFC 3339)."""

    next_time: str | None = None
    """When the source is checked next (RFC 3339)."""

    pruned: list[str] = Field(default_factory=list, max_length=50)
    """Versions the latest round removed from the store (past keepVersions)."""


class DatasetPrepStatus(RunStatusBase):
    """What the preparation did and where its output is."""

    output_uri: str | None = None
    """The prepared dataset: one Parquet folder per split and manifest.json."""

    manifest_uri: str | None = None
    """manifest.json: schema, row counts, class balance, per-feature profile, fingerprint."""

    fingerprint: str | None = None
    """Content fingerprint of the prepared data: the same data and config give the same fingerprint."""

    rows: SplitRows | None = None
    """Rows per split."""

    dropped_rows: dict[str, int] = Field(default_factory=dict)
    """Rows dropped while cleaning, by reason."""

    version: str | None = None
    """The current version's folder under outputUri (what the root manifest names)."""

    versions: list[DatasetVersion] = Field(default_factory=list, max_length=60)
    """The versions kept in the store, newest first."""

    refresh: RefreshStatus | None = None
    """The refresh schedule (spec.refresh)."""


KIND = Kind(
    kind="DatasetPrep",
    plural="datasetpreps",
    short_names=("dsprep", "dsp"),
    spec=DatasetPrepSpec,
    status=DatasetPrepStatus,
    description=(
        "DatasetPrep acquires data (S3, HTTPS, files, built-in sets), cleans, transforms and splits it, and "
        "writes versioned Parquet with a data profile and a content fingerprint."
    ),
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", description="Where the preparation stands"),
        PrinterColumn("Progress", ".status.progress", description="Rows read or written"),
        PrinterColumn("Rows", ".status.rows.total", "integer", "Rows written across all splits"),
        PrinterColumn("Version", ".status.version", description="The current version"),
        PrinterColumn("Refresh", ".status.refresh.state", description="What the latest refresh found", priority=1),
        PrinterColumn("Fingerprint", ".status.fingerprint", description="Content fingerprint", priority=1),
        COMMON_COLUMNS_AGE,
    ),
    rules={
        (Source, "uri"): (uri_rule(("s3", "https", "file", "builtin")),),
        (Output, "uri"): (uri_rule(("s3", "file")),),
        Split: (
            Rule(
                "self.train + self.validation + self.test > 0.999 && self.train + self.validation + self.test < 1.001",
                "split fractions train + validation + test must add up to 1",
            ),
        ),
        Sample: (Rule("has(self.rows) != has(self.fraction)", "sample: set exactly one of rows or fraction"),),
        MissingValues: (
            Rule(
                "self.columns.all(c, self.columns[c] != 'constant' || c in self.values)",
                "every column whose missing-value strategy is constant needs its fill value in values",
            ),
            Rule(
                "self.default != 'constant' || '*' in self.values",
                "default: constant needs the fill value under '*' in values",
            ),
        ),
        Transform: (
            Rule("self.type != 'resize' || has(self.size)", "a resize transform needs size: [height, width]"),
            Rule("!has(self.size) || self.type == 'resize'", "size applies only to the resize transform"),
        ),
        PrivacySpec: (
            Rule(
                "size(self.hashColumns) == 0 || has(self.saltSecretRef)",
                "hashColumns needs saltSecretRef: the Secret key that holds the salt",
            ),
            Rule(
                "self.hashColumns.all(c, !(c in self.dropColumns))",
                "a column cannot be both dropped and hashed",
            ),
        ),
        DatasetPrepSpec: (
            Rule(
                "!has(self.split.stratifyBy) || !(self.split.stratifyBy in self.privacy.dropColumns)",
                "split.stratifyBy names a column that privacy.dropColumns removes",
            ),
            *immutable(
                "DatasetPrep",
                "source",
                "extraSources",
                "label",
                "sample",
                "cleaning",
                "transforms",
                "privacy",
                "split",
                "output",
            ),
        ),
    },
)
