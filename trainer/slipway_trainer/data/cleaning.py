"""Cleaning of record batches: privacy, type coercion, invalid and missing values, duplicates.

Every dropped row is counted by reason; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

NUMERIC_SHARE = 0.9  # a text column whose values are at least this share numbers is numeric


@dataclass
class Cleaner:
    """Cleans batches one at a time; the column types are decided on the first batch."""

    label: str | None
    drop_columns: list[str]
    hash_columns: list[str]
    salt: bytes
    missing: dict[str, str]  # column -> strategy; rows with a missing value in a `drop` column go
    default_missing: str
    drop_invalid: bool
    drop_duplicates: bool
    image_column: str | None = None
    dropped: Counter[str] = field(default_factory=Counter)
    numeric_text: set[str] = field(default_factory=set)  # text columns read as numbers
    _seen: set[int] = field(default_factory=set)
    _decided: bool = False

    def clean(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        table = pa.Table.from_batches([batch])
        table = table.drop_columns([c for c in self.drop_columns if c in table.column_names])
        for name in self.hash_columns:
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, self._hash(table.column(name)))
        if not self._decided:
            self._decide(table)
        keep = np.ones(table.num_rows, dtype=bool)
        table, keep = self._coerce(table, keep)
        keep &= self._missing_mask(table, keep)
        if self.drop_duplicates:
            keep &= self._unique_mask(table, keep)
        return table.filter(pa.array(keep)).combine_chunks().to_batches()[0] if table.num_rows else batch.slice(0, 0)

    def _hash(self, column: pa.ChunkedArray) -> pa.Array:
        values = column.to_pylist()
        return pa.array(
            [None if v is None else hashlib.sha256(self.salt + str(v).encode()).hexdigest() for v in values],
            pa.string(),
        )

    def _decide(self, table: pa.Table) -> None:
        self._decided = True
        for name in table.column_names:
            column = table.column(name)
            if name in (self.label, self.image_column) or not pa.types.is_string(column.type):
                continue
            present = pc.drop_null(column)
            if len(present) == 0:
                continue
            numbers = _parse_floats(present)
            if np.count_nonzero(~np.isnan(numbers)) >= NUMERIC_SHARE * len(present):
                self.numeric_text.add(name)

    def _coerce(self, table: pa.Table, keep: np.ndarray) -> tuple[pa.Table, np.ndarray]:
        for name in sorted(self.numeric_text & set(table.column_names)):
            column = table.column(name)
            numbers = _parse_floats(column)
            was_null = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            invalid = np.isnan(numbers) & ~was_null
            # Without dropInvalid, an unreadable value becomes missing and follows the missing-value strategy.
            if invalid.any() and self.drop_invalid:
                self.dropped[f"invalidValue:{name}"] += int(np.count_nonzero(invalid & keep))
                keep = keep & ~invalid
            array = pa.array(numbers, pa.float64(), mask=np.isnan(numbers))
            table = table.set_column(table.column_names.index(name), name, array)
        return table, keep

    def _missing_mask(self, table: pa.Table, keep: np.ndarray) -> np.ndarray:
        ok = np.ones(table.num_rows, dtype=bool)
        for name in table.column_names:
            column = table.column(name)
            if column.null_count == 0 and not _has_nan(column):
                continue
            strategy = "drop" if name == self.label else self.missing.get(name, self.default_missing)
            if strategy != "drop":
                continue
            missing = np.asarray(column.is_null(nan_is_null=True).to_numpy(zero_copy_only=False), dtype=bool)
            reason = "missingLabel" if name == self.label else f"missing:{name}"
            self.dropped[reason] += int(np.count_nonzero(missing & keep & ok))
            ok &= ~missing
        return ok

    def _unique_mask(self, table: pa.Table, keep: np.ndarray) -> np.ndarray:
        frame = table.to_pandas()
        hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        unique = np.ones(table.num_rows, dtype=bool)
        seen = self._seen
        for i, h in enumerate(hashes.tolist()):
            if not keep[i]:
                continue
            if h in seen:
                unique[i] = False
            else:
                seen.add(h)
        self.dropped["duplicate"] += int(np.count_nonzero(~unique))
        return unique


def _parse_floats(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """float64 with NaN where a value is null or not a number."""
    series = pd.Series(array.to_pandas() if hasattr(array, "to_pandas") else array, dtype="object")
    parsed = pd.to_numeric(series.astype("string").str.strip(), errors="coerce")
    return np.asarray(parsed.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def _has_nan(column: pa.ChunkedArray) -> bool:
    if not pa.types.is_floating(column.type):
        return False
    return bool(pc.any(pc.is_nan(column)).as_py())
