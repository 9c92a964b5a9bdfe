"""What every config model shares: camelCase names on the wire, unknown fields refused."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel


class ConfigModel(BaseModel):
    """Base of every spec and config model.

    Fields are snake_case in Python and camelCase in manifests and JSON (``learning_rate`` is
    ``learningRate``); an unknown field is an error, never silently dropped.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
        defer_build=True,
    )

    def to_json_dict(self) -> dict[str, object]:
        """The camelCase form, without unset optional fields: what a manifest would hold."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


Direction = Literal["maximize", "minimize"]

# A metric name as the workloads report it: `accuracy`, `val_loss`, `test_f1_macro`, ...
MetricName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_]*$")]
# A column of a dataset.
ColumnName = Annotated[str, Field(min_length=1, max_length=253)]
# CPU cores: whole or a fraction (0.5 shares a core); whole ones are written back as integers.
Cores = Annotated[
    float,
    Field(ge=0.1, le=512),
    PlainSerializer(lambda v: int(v) if float(v).is_integer() else v, return_type=float | int),
]


class Tracking(ConfigModel):
    """Where a finished run is logged: an MLflow tracking server (credentials come from MLflow's own environment
    variables, never from here)."""

    uri: str = Field(min_length=1, max_length=2048, pattern=r"^https?://")
    """The tracking server, `http(s)://host[:port]` (what `MLFLOW_TRACKING_URI` holds)."""

    experiment: str = Field(default="slipway", min_length=1, max_length=500)
    """The MLflow experiment the run goes into (made when missing)."""

    tags: dict[str, str] = Field(default_factory=dict)
    """Tags every run gets, e.g. `slipway.dev/namespace`."""
