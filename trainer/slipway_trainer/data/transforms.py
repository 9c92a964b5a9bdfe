"""The transform spec: fitted on the train split, saved beside the data, applied identically by training and
by the inference server (this module is the one implementation both call).

The prepared Parquet keeps cleaned raw values; `TransformSpec.features(table)` turns raw values (from the
Parquet or from a client request) into the model's float32 input, and `encode_labels` the labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slipway_trainer.config.prep import Transform
from slipway_trainer.data.stats import CategoricalStats, ImageStats, NumericStats, image_pixels, numeric_values

VERSION = 1
MAX_AUTO_CATEGORIES = 50  # a text column with more distinct values is left out unless a transform names it
MAX_ONE_HOT = 100
Task = Literal["classification", "regression"]


class TransformError(ValueError):
    """Input that the transform spec cannot turn into features (names the column and what is wrong)."""


@dataclass
class ColumnTransform:
    name: str
    kind: Literal["numeric", "categorical"]
    impute: Literal["none", "mean", "median", "mode", "constant"] = "none"
    fill: float | str | None = None
    scale: dict[str, Any] | None = None  # {"type": "standardize", "mean", "std"} | minMax | log
    encode: dict[str, Any] | None = None  # {"type": "oneHot"|"ordinal", "categories": [...]}

    def output_names(self) -> list[str]:
        if self.encode and self.encode["type"] == "oneHot":
            return [f"{self.name}={c}" for c in self.encode["categories"]]
        return [self.name]


@dataclass
class ImageTransform:
    column: str
    height: int
    width: int
    channels: int
    resize: list[int] | None = None
    mean: list[float] | None = None  # per-channel standardization of [0, 1] pixels
    std: list[float] | None = None


@dataclass
class LabelSpec:
    column: str
    task: Task
    classes: list[Any] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)


@dataclass
class TransformSpec:
    version: int
    kind: Literal["tabular", "image"]
    label: LabelSpec | None
    columns: list[ColumnTransform] = field(default_factory=list)
    image: ImageTransform | None = None
    unused: dict[str, str] = field(default_factory=dict)  # columns left out of the features, and why

    # --- (de)serialisation ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = self.feature_names()
        out["inputShape"] = self.input_shape()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TransformSpec:
        if data.get("version") != VERSION:
            raise TransformError(f"transform spec version {data.get('version')} is not supported (want {VERSION})")
        return cls(
            version=VERSION,
            kind=data["kind"],
            label=LabelSpec(**data["label"]) if data.get("label") else None,
            columns=[ColumnTransform(**c) for c in data.get("columns", [])],
            image=ImageTransform(**data["image"]) if data.get("image") else None,
            unused=dict(data.get("unused", {})),
        )

    # --- shape ------------------------------------------------------------------------------------

    def feature_names(self) -> list[str]:
        return [n for c in self.columns for n in c.output_names()]

    def input_columns(self) -> list[str]:
        return [self.image.column] if self.image else [c.name for c in self.columns]

    def input_shape(self) -> list[int]:
        if self.image:
            return [self.image.channels, self.image.height, self.image.width]
        return [len(self.feature_names())]

    @property
    def num_classes(self) -> int:
        return len(self.label.classes) if self.label and self.label.task == "classification" else 0

    # --- application ------------------------------------------------------------------------------

    def features(self, table: pa.Table | dict[str, Any]) -> np.ndarray:
        """Model input (float32): (rows, features) for tabular data, (rows, C, H, W) for images."""
        if isinstance(table, dict):
            table = pa.table(table)
        if self.image:
            return self._image_features(table)
        blocks = [self._column_features(c, self._column(table, c.name)) for c in self.columns]
        if not blocks:
            return np.zeros((table.num_rows, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32, copy=False)

    def encode_labels(self, values: pa.Array | pa.ChunkedArray | list[Any]) -> np.ndarray:
        if self.label is None:
            raise TransformError("this dataset has no label")
        array = pa.array(values) if isinstance(values, list) else values
        if self.label.task == "regression":
            return numeric_values(array).astype(np.float32)
        index = {v: i for i, v in enumerate(self.label.classes)}
        out = np.array([index.get(v, -1) for v in array.to_pylist()], dtype=np.int64)
        if (out < 0).any():
            unknown = array.to_pylist()[int(np.argmax(out < 0))]
            raise TransformError(f"label {unknown!r} is not one of the dataset's classes")
        return out

    def decode_classes(self, indices: np.ndarray) -> list[Any]:
        assert self.label is not None
        return [self.label.classes[int(i)] for i in indices]

    def _column(self, table: pa.Table, name: str) -> pa.ChunkedArray:
        if name not in table.column_names:
            raise TransformError(f"column {name!r} is missing (expected columns: {', '.join(self.input_columns())})")
        return table.column(name)

    def _column_features(self, c: ColumnTransform, array: pa.ChunkedArray) -> np.ndarray:
        if c.kind == "numeric":
            try:
                x = numeric_values(array)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise TransformError(f"column {c.name!r} must be numeric: {err}") from err
            missing = np.isnan(x)
            if missing.any():
                if c.fill is None:
                    raise TransformError(
                        f"column {c.name!r} has a missing value; the model was trained without "
                        "missing values in it (its missing-value strategy is drop)"
                    )
                x = np.where(missing, np.float64(c.fill), x).astype(np.float64)
            return _scale(x, c.scale)[:, None]
        values = pc.cast(array, pa.string()) if not pa.types.is_string(array.type) else array
        if values.null_count:
            if c.fill is None:
                raise TransformError(
                    f"column {c.name!r} has a missing value; the model was trained without "
                    "missing values in it (its missing-value strategy is drop)"
                )
            values = pc.fill_null(values, str(c.fill))
        assert c.encode is not None
        categories = pa.array(c.encode["categories"], pa.string())
        index = pc.index_in(values, value_set=categories).to_numpy(zero_copy_only=False)
        index = np.where(np.isnan(index.astype(np.float64)), -1, index).astype(np.int64)
        if c.encode["type"] == "ordinal":
            return index[:, None].astype(np.float32)
        onehot = np.zeros((len(index), len(categories)), dtype=np.float32)
        known = index >= 0
        onehot[np.nonzero(known)[0], index[known]] = 1.0  # an unseen category is all zeros
        return onehot

    def _image_features(self, table: pa.Table) -> np.ndarray:
        assert self.image is not None
        im = self.image
        size = im.height * im.width * im.channels
        try:
            pixels = image_pixels(self._column(table, im.column), size)
        except ValueError as err:
            raise TransformError(f"column {im.column!r}: {err} ({im.height}x{im.width}x{im.channels} uint8)") from err
        x: np.ndarray = pixels.reshape(-1, im.height, im.width, im.channels).astype(np.float32) / 255.0
        if im.mean is not None and im.std is not None:
            x = (x - np.asarray(im.mean, dtype=np.float32)) / np.asarray(im.std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _scale(x: np.ndarray, scale: dict[str, Any] | None) -> np.ndarray:
    if scale is None:
        return x
    if scale["type"] == "log":
        return np.asarray(np.log1p(np.maximum(x, 0.0)), dtype=np.float64)
    if scale["type"] == "standardize":
        return np.asarray((x - scale["mean"]) / (scale["std"] or 1.0), dtype=np.float64)
    span = (scale["max"] - scale["min"]) or 1.0
    return np.asarray((x - scale["min"]) / span, dtype=np.float64)


# --- fitting ---------------------------------------------------------------------------------------


@dataclass
class FitInput:
    """What fitting needs: the train split's statistics, column kinds, and the user's choices."""

    numeric: dict[str, NumericStats]
    categorical: dict[str, CategoricalStats]
    image: ImageStats | None
    image_shape: tuple[int, int, int] | None
    image_column: str | None
    columns: list[str]  # feature columns in order
    transforms: list[Transform]
    missing: dict[str, str]  # strategy per column
    fill_values: dict[str, str]
    label: LabelSpec | None


def fit(inp: FitInput) -> TransformSpec:
    if inp.image_shape is not None and inp.image_column is not None:
        return _fit_image(inp)
    named: dict[str, list[Transform]] = {}
    for t in inp.transforms:
        if t.type in ("normalize", "resize"):
            continue
        targets = t.columns or [
            c for c in inp.columns if (c in inp.numeric) == (t.type in ("standardize", "minMax", "log"))
        ]
        for col in targets:
            named.setdefault(col, []).append(t)
    columns: list[ColumnTransform] = []
    unused: dict[str, str] = {}
    for name in inp.columns:
        chosen = named.get(name, [])
        strategy = inp.missing.get(name, "drop")
        if name in inp.numeric:
            columns.append(_fit_numeric(name, inp.numeric[name], chosen, strategy, inp.fill_values))
            continue
        stats = inp.categorical[name]
        encode = next((t.type for t in chosen if t.type in ("oneHot", "ordinal")), None)
        if encode is None and len(stats.counts) > MAX_AUTO_CATEGORIES:
            unused[name] = (
                f"text with {len(stats.counts)} distinct values in train; name it in a oneHot or ordinal "
                "transform to use it"
            )
            continue
        limit = MAX_ONE_HOT if encode != "ordinal" else None
        fill: str | None = None
        if strategy in ("mode", "mean", "median"):
            fill = stats.mode()
        elif strategy == "constant":
            fill = inp.fill_values.get(name, inp.fill_values.get("*", ""))
        columns.append(
            ColumnTransform(
                name=name,
                kind="categorical",
                impute="mode"
                if strategy in ("mean", "median", "mode")
                else ("constant" if fill is not None else "none"),
                fill=fill,
                encode={"type": encode or "oneHot", "categories": stats.categories(limit)},
            )
        )
    for name in named:
        if name not in inp.columns:
            raise TransformError(
                f"a transform names column {name!r}, which the data does not have (columns: {', '.join(inp.columns)})"
            )
    return TransformSpec(version=VERSION, kind="tabular", label=inp.label, columns=columns, unused=unused)


def _fit_numeric(
    name: str, stats: NumericStats, chosen: list[Transform], strategy: str, fill_values: dict[str, str]
) -> ColumnTransform:
    fill: float | None = None
    if strategy == "mean":
        fill = stats.mean
    elif strategy == "median":
        fill = stats.quantile(0.5)
    elif strategy == "mode":
        fill = stats.mode()
    elif strategy == "constant":
        raw = fill_values.get(name, fill_values.get("*"))
        try:
            fill = float(raw) if raw is not None else None
        except ValueError as err:
            raise TransformError(
                f"cleaning.missing.values[{name}] = {raw!r} is not a number, but {name} is numeric"
            ) from err
    scale: dict[str, Any] | None = None
    for t in chosen:
        if t.type == "standardize":
            scale = {"type": "standardize", "mean": stats.mean, "std": stats.std or 1.0}
        elif t.type == "minMax":
            scale = {"type": "minMax", "min": stats.minimum, "max": stats.maximum}
        elif t.type == "log":
            scale = {"type": "log"}
        elif t.type in ("oneHot", "ordinal"):
            raise TransformError(f"{t.type} applies to text columns; {name} is numeric")
    if fill is not None and not math.isfinite(fill):
        fill = 0.0
    return ColumnTransform(
        name=name,
        kind="numeric",
        impute=strategy if fill is not None else "none",  # type: ignore[arg-type]
        fill=fill,
        scale=scale,
    )


def _fit_image(inp: FitInput) -> TransformSpec:
    assert inp.image_shape is not None and inp.image_column is not None
    height, width, channels = inp.image_shape
    resize = next((t.size for t in inp.transforms if t.type == "resize"), None)
    standardize = any(t.type == "standardize" for t in inp.transforms)
    image = ImageTransform(
        column=inp.image_column, height=height, width=width, channels=channels, resize=list(resize) if resize else None
    )
    if standardize and inp.image is not None:
        image.mean, image.std = inp.image.mean, inp.image.std
    return TransformSpec(version=VERSION, kind="image", label=inp.label, image=image)
