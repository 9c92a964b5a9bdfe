"""Cleaning of record batches: privacy, type coercion, invalid and missing values, duplicates.

Every dropped row is counted by reason; nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from slipway_trainer.data.stats import is_numeric_type, numeric_values
from slipway_trainer.privacy import PREHASHED, hash_values

NUMERIC_SHARE = 0.9  # a text column whose values are at least this share numbers is numeric
DROP = "__slipway_drop_reason"


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
    _seen: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    _decided: bool = False

    def clean(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The rows of `batch` that stay, cleaned; what went is counted in `dropped`."""
        return self.settle(self.annotate(batch))

    def annotate(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """Privacy, types and missing values for one batch, keeping no state: the rows, plus a `DROP` column
        saying why a row goes (null when it stays). Safe to run in parallel, e.g. as Ray Data tasks."""
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        prehashed = ((table.schema.metadata or {}).get(PREHASHED) or b"").decode().split(",")
        table = table.replace_schema_metadata(None)
        table = table.drop_columns([c for c in self.drop_columns if c in table.column_names])
        for name in self.hash_columns:
            if name in table.column_names and name not in prehashed:  # a payload log's are hashed already
                table = table.set_column(table.column_names.index(name), name, self._hash(table.column(name)))
        if not self._decided:
            self.decide(table)
        reasons = np.full(table.num_rows, None, dtype=object)
        table = self._coerce(table, reasons)
        self._mark_missing(table, reasons)
        return table.append_column(DROP, pa.array(reasons, pa.string()))

    def settle(self, annotated: pa.Table) -> pa.RecordBatch:
        """Count the reasons rows go, drop duplicates (this needs every earlier row), return what stays."""
        reasons = annotated.column(DROP)
        counted = pc.value_counts(pc.drop_null(reasons))
        for value, n in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True):
            self.dropped[value] += n
        table = annotated.drop_columns([DROP])
        keep = np.asarray(reasons.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if self.drop_duplicates and table.num_rows:
            keep &= self._unique_mask(table, keep)
        kept = table.filter(pa.array(keep)).combine_chunks()
        return kept.to_batches()[0] if kept.num_rows else pa.RecordBatch.from_pylist([], schema=kept.schema)

    def _hash(self, column: pa.ChunkedArray) -> pa.Array:
        return hash_values(column, self.salt)

    def decide(self, table: pa.Table) -> None:
        """Decide which text columns hold numbers, from a head of the data (privacy already applied or not)."""
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

    def _coerce(self, table: pa.Table, reasons: np.ndarray) -> pa.Table:
        for name in sorted(self.numeric_text & set(table.column_names)):
            column = table.column(name)
            numbers = _parse_floats(column)
            was_null = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            invalid = np.isnan(numbers) & ~was_null
            # Without dropInvalid, an unreadable value becomes missing and follows the missing-value strategy.
            if self.drop_invalid:
                reasons[invalid & (reasons == None)] = f"invalidValue:{name}"  # noqa: E711 (elementwise)
            array = pa.array(numbers, pa.float64(), mask=np.isnan(numbers))
            table = table.set_column(table.column_names.index(name), name, array)
        return table

    def _mark_missing(self, table: pa.Table, reasons: np.ndarray) -> None:
        for name in table.column_names:
            column = table.column(name)
            if column.null_count == 0 and not _has_nan(column):
                continue
            strategy = "drop" if name == self.label else self.missing.get(name, self.default_missing)
            if strategy != "drop":
                continue
            missing = np.asarray(column.is_null(nan_is_null=True).to_numpy(zero_copy_only=False), dtype=bool)
            reasons[missing & (reasons == None)] = "missingLabel" if name == self.label else f"missing:{name}"  # noqa: E711

    def _unique_mask(self, table: pa.Table, keep: np.ndarray) -> np.ndarray:
        """False for rows equal to an earlier row (in this batch or any before). 8 bytes of memory per row."""
        hashes = row_hashes(table)
        candidates = np.nonzero(keep)[0]
        # First occurrence of each hash within the batch (a stable sort keeps the earliest row first).
        order = np.argsort(hashes[candidates], kind="stable")
        ordered = hashes[candidates][order]
        first = np.ones(ordered.size, dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
        firsts = np.sort(candidates[order[first]])
        new = ordered[first]  # sorted
        seen = self._seen
        if seen.size:
            position = np.minimum(np.searchsorted(seen, hashes[firsts]), seen.size - 1)
            fresh = seen[position] != hashes[firsts]
            firsts = firsts[fresh]
            new = np.sort(hashes[firsts])
        unique = ~keep.copy()
        unique[firsts] = True
        self._seen = np.insert(seen, np.searchsorted(seen, new), new)  # stays sorted; O(rows) per batch
        self.dropped["duplicate"] += int(np.count_nonzero(keep & ~unique))
        return unique


def row_hashes(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """A 64-bit hash of each row's values: the same for equal rows whatever batch they are in (numbers are
    hashed as float64, so an integer column with a gap in one batch hashes like one without)."""
    columns: dict[str, object] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if is_numeric_type(column.type):
            columns[name] = numeric_values(column)
        else:
            columns[name] = np.asarray(column.to_pylist(), dtype=object)
    frame = pd.DataFrame(columns)
    return np.asarray(pd.util.hash_pandas_object(frame, index=False).to_numpy(), dtype=np.uint64)


def _parse_floats(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """float64 with NaN where a value is null or not a number."""
    series = pd.Series(array.to_pandas() if hasattr(array, "to_pandas") else array, dtype="object")
    parsed = pd.to_numeric(series.astype("string").str.strip(), errors="coerce")
    return np.asarray(parsed.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def _has_nan(column: pa.ChunkedArray) -> bool:
    if not pa.types.is_floating(column.type):
        return False
    return bool(pc.any(pc.is_nan(column)).as_py())
