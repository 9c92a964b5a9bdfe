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
    # The sample: the values with the SAMPLE_SIZE smallest random keys (a bottom-k sample). Values arrive in
    # parts and are cut back to the sample only when four times its size is held, so a batch costs a comparison, not
    # a partition of the whole sample; once the sample is full only values keyed below its largest key enter.
    _parts: list[np.ndarray] = field(default_factory=list)
    _key_parts: list[np.ndarray] = field(default_factory=list)
    _held: int = 0
    _threshold: float = 1.0
    _batches: int = 0

    def add(self, values: np.ndarray) -> None:
        missing = np.isnan(values)
        present = values[~missing] if missing.any() else values
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
        if self._threshold < 1.0:
            entering = keys < self._threshold
            present, keys = present[entering], keys[entering]
        self._parts.append(present)
        self._key_parts.append(keys)
        self._held += present.size
        if self._held > 4 * SAMPLE_SIZE:
            self._cut()

    def _cut(self) -> None:
        values, keys = np.concatenate(self._parts), np.concatenate(self._key_parts)
        if values.size > SAMPLE_SIZE:
            keep = np.argpartition(keys, SAMPLE_SIZE)[:SAMPLE_SIZE]
            values, keys = values[keep], keys[keep]
            self._threshold = float(keys.max())
        self._parts, self._key_parts, self._held = [values], [keys], values.size

    @property
    def sample(self) -> np.ndarray:
        """At most SAMPLE_SIZE of the values (all of them below that), in no particular order."""
        if len(self._parts) != 1 or self._held > SAMPLE_SIZE:
            if not self._parts:
                return np.empty(0)
            self._cut()
        return self._parts[0]

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
        return self.quantiles([q])[0]

    def quantiles(self, qs: list[float] | tuple[float, ...]) -> list[float]:
        """Several quantiles of the sample at once (one partial sort, not one per quantile)."""
        sample = self.sample
        return [float(v) for v in np.quantile(sample, qs)] if sample.size else [0.0] * len(qs)

    def mode(self) -> float:
        sample = self.sample
        if not sample.size:
            return 0.0
        values, counts = np.unique(sample, return_counts=True)
        return float(values[int(np.argmax(counts))])


@dataclass
class CategoricalStats:
    count: int = 0
    missing: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    overflow: int = 0  # values not tracked once MAX_TRACKED_CATEGORIES distinct ones are known

    def add(self, array: pa.Array | pa.ChunkedArray) -> None:
        self.missing += int(array.null_count)
        self.count += len(array) - array.null_count
        if len(array) == array.null_count:
            return
        text = array if pa.types.is_string(array.type) else pc.cast(array, pa.string())
        counted = pc.value_counts(text)  # null is counted too: skipped below
        for value, n in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True):
            if value is None:
                continue
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
