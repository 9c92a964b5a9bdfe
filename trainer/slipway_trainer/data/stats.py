"""Streaming column statistics, in bounded memory, deterministic for the same input order.

Used to fit transforms on the train split and to build the data profile. Quantiles come from a seeded
bottom-k sample of at most `SAMPLE_SIZE` values per column: exact for smaller columns, an unbiased sample
beyond that.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SAMPLE_SIZE = 100_000
MAX_TRACKED_CATEGORIES = 10_000
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def numeric_values(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """float64 values with NaN for nulls; booleans and timestamps become numbers (timestamps: decimal year)."""
    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        seconds = pc.cast(pc.cast(array, pa.timestamp("s")), pa.int64())
        years = pc.add(pc.divide(pc.cast(seconds, pa.float64()), 365.2425 * 86400), 1970.0)
        return np.asarray(years.to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_boolean(array.type):
        array = pc.cast(array, pa.int8())
    return np.asarray(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def is_numeric_type(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date(t)
        or pa.types.is_decimal(t)
    )


@dataclass
class NumericStats:
    seed: int = 0
    count: int = 0
    missing: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    minimum: float = float("inf")
    maximum: float = float("-inf")
    _sample: np.ndarray = field(default_factory=lambda: np.empty(0))
    _keys: np.ndarray = field(default_factory=lambda: np.empty(0))
    _batches: int = 0

    def add(self, values: np.ndarray) -> None:
        present = values[~np.isnan(values)]
        self.missing += int(values.size - present.size)
        if present.size == 0:
            return
        self.count += int(present.size)
        self.total += float(present.sum())
        self.total_sq += float(np.square(present).sum())
        self.minimum = min(self.minimum, float(present.min()))
        self.maximum = max(self.maximum, float(present.max()))
        rng = np.random.default_rng([self.seed, self._batches])
        self._batches += 1
        keys = rng.random(present.size)
        sample = np.concatenate([self._sample, present])
        all_keys = np.concatenate([self._keys, keys])
        if sample.size > SAMPLE_SIZE:
            keep = np.argpartition(all_keys, SAMPLE_SIZE)[:SAMPLE_SIZE]
            sample, all_keys = sample[keep], all_keys[keep]
        self._sample, self._keys = sample, all_keys

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        if self.count < 2:
            return 0.0
        variance = (self.total_sq - self.count * self.mean**2) / (self.count - 1)
        return float(np.sqrt(max(variance, 0.0)))

    def quantile(self, q: float) -> float:
        return float(np.quantile(self._sample, q)) if self._sample.size else 0.0

    def mode(self) -> float:
        if not self._sample.size:
            return 0.0
        values, counts = np.unique(self._sample, return_counts=True)
        return float(values[int(np.argmax(counts))])


@dataclass
class CategoricalStats:
    count: int = 0
    missing: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    overflow: int = 0  # values not tracked once MAX_TRACKED_CATEGORIES distinct ones are known

    def add(self, array: pa.Array | pa.ChunkedArray) -> None:
        self.missing += int(array.null_count)
        present = pc.drop_null(array)
        self.count += len(present)
        if len(present) == 0:
            return
        counted = pc.value_counts(pc.cast(present, pa.string()))
        for value, n in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True):
            if value in self.counts or len(self.counts) < MAX_TRACKED_CATEGORIES:
                self.counts[value] += n
            else:
                self.overflow += n

    def categories(self, limit: int | None = None) -> list[str]:
        """Most frequent first; ties by value, so the order is deterministic."""
        ordered = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [value for value, _ in ordered[:limit]]

    def mode(self) -> str:
        top = self.categories(1)
        return top[0] if top else ""


@dataclass
class ImageStats:
    """Per-channel pixel statistics (of values scaled to [0, 1]) and a 16-bin histogram of raw values."""

    channels: int
    count: int = 0
    total: np.ndarray = field(init=False)
    total_sq: np.ndarray = field(init=False)
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(16, dtype=np.int64))

    def __post_init__(self) -> None:
        self.total = np.zeros(self.channels)
        self.total_sq = np.zeros(self.channels)

    def add(self, pixels: np.ndarray) -> None:
        """`pixels`: uint8 of shape (rows, height * width * channels)."""
        if pixels.size == 0:
            return
        per_channel = pixels.reshape(-1, self.channels).astype(np.float64) / 255.0
        self.count += per_channel.shape[0]
        self.total += per_channel.sum(axis=0)
        self.total_sq += np.square(per_channel).sum(axis=0)
        self.histogram += np.bincount(pixels.reshape(-1) >> 4, minlength=16)

    @property
    def mean(self) -> list[float]:
        return [float(v) for v in self.total / max(self.count, 1)]

    @property
    def std(self) -> list[float]:
        mean = self.total / max(self.count, 1)
        variance = self.total_sq / max(self.count, 1) - mean**2
        return [float(v) for v in np.sqrt(np.maximum(variance, 1e-12))]


def image_pixels(array: pa.Array | pa.ChunkedArray, size: int) -> np.ndarray:
    """uint8 pixels of shape (rows, size) from a binary column of raw pixel bytes."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if len(array) == 0:
        return np.empty((0, size), dtype=np.uint8)
    data = array.cast(pa.binary())
    offsets = np.frombuffer(data.buffers()[1], dtype=np.int32)[data.offset : data.offset + len(data) + 1]
    raw = np.frombuffer(data.buffers()[2], dtype=np.uint8)
    lengths = np.diff(offsets)
    if not np.all(lengths == size):
        bad = int(np.argmax(lengths != size))
        raise ValueError(f"image {bad} has {int(lengths[bad])} bytes, expected {size}")
    return raw[offsets[0] : offsets[-1]].reshape(len(data), size)


def summary(values: Any) -> dict[str, float]:
    """Rounded figures for reports."""
    return {k: round(float(v), 6) for k, v in values.items()}
