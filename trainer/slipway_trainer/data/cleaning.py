"""Cleaning of record batches: privacy, type coercion, invalid and missing values, duplicates.

Every dropped row is counted by reason; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slipway_trainer.data.stats import is_numeric_type, numeric_values
from slipway_trainer.privacy import PREHASHED, hash_values

NUMERIC_SHARE = 0.9  # a text column whose values are at least this share numbers is numeric
DROP = "__slipway_drop_reason"
HASH = "__slipway_row_hash"


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
    _hashes: list[np.ndarray] = field(default_factory=list)  # of every row settled, in order: 8 bytes a row
    _sorted: list[np.ndarray] = field(default_factory=list)  # the same, each batch's sorted (to find duplicates)
    _decided: bool = False

    def clean(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The rows of `batch` that stay, cleaned; what went is counted in `dropped`."""
        return self.settle(self.annotate(batch))

    def annotate(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """Privacy, types and missing values for one batch, keeping no state: the rows, plus a `DROP` column
        saying why a row goes (null when it stays) and a `HASH` column of each row's hash (`row_hashes`).
        Safe to run in parallel, e.g. as Ray Data tasks or on a reading thread."""
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
        hashes = pa.array(row_hashes(table), pa.uint64())
        return table.append_column(DROP, pa.array(reasons, pa.string())).append_column(HASH, hashes)

    def settle(self, annotated: pa.Table) -> pa.RecordBatch:
        """Count the reasons rows go and return what stays; its row hashes are kept for `first_occurrences`."""
        reasons = annotated.column(DROP)
        counted = pc.value_counts(pc.drop_null(reasons))
        for value, n in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True):
            self.dropped[value] += n
        hashes = np.array(annotated.column(HASH).to_numpy(), dtype=np.uint64)  # a copy: the batch's memory goes
        table = annotated.drop_columns([DROP, HASH])
        keep = np.asarray(reasons.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        everything = bool(keep.all())
        kept = (table if everything else table.filter(pa.array(keep))).combine_chunks()
        settled = hashes if everything else hashes[keep]
        self._hashes.append(settled)
        if self.drop_duplicates:  # sorted here, while the next batch is read: the last sort only merges
            self._sorted.append(np.sort(settled))
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

    def first_occurrences(self) -> tuple[np.ndarray, np.ndarray]:
        """After the last batch: which settled rows stay (False for a row equal to an earlier one, when
        duplicates are dropped) and every settled row's hash. A merge of the batches' sorted hashes, at the end,
        finds duplicates across all batches."""
        hashes = np.concatenate(self._hashes) if self._hashes else np.empty(0, dtype=np.uint64)
        ordered = np.concatenate(self._sorted) if self._sorted else np.empty(0, dtype=np.uint64)
        self._hashes, self._sorted = [], []
        if not self.drop_duplicates:
            return np.ones(hashes.size, dtype=bool), hashes
        stays = np.ones(hashes.size, dtype=bool)
        ordered.sort(kind="stable")  # a merge of the sorted batches (timsort finds them as runs)
        rows = _rows_of_repeated(hashes, ordered)
        del ordered
        if rows.size:
            _, first = np.unique(hashes[rows], return_index=True)  # stable, rows in order: the earliest of each
            stays[rows] = False
            stays[rows[first]] = True
        self.dropped["duplicate"] += int(hashes.size - np.count_nonzero(stays))
        return stays, hashes


MIN_BUCKET_BITS, MAX_BUCKET_BITS = 16, 22  # the table of buckets holding a repeated value: 64 KiB to 4 MiB
CHUNK_ROWS = 1 << 20


def _rows_of_repeated(hashes: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """The rows, in order, whose hash some other row has too (`ordered`: the hashes sorted). The sorted hashes
    give the repeated values (few: duplicates are rare); a table of their low bits then picks the candidate rows
    a chunk at a time, so the memory beyond the hashes is the sorted copy, whatever the row count."""
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]  # sorted: a value repeated n times is here n - 1 times
    repeated = repeated[np.concatenate(([True], repeated[1:] != repeated[:-1]))] if repeated.size else repeated
    if repeated.size == 0:
        return np.empty(0, dtype=np.int64)
    # About 64 buckets per repeated value (few false candidates), in a table small enough for the cache.
    bits = min(MAX_BUCKET_BITS, max(MIN_BUCKET_BITS, int(repeated.size).bit_length() + 6))
    mask = np.uint64((1 << bits) - 1)
    buckets = np.zeros(1 << bits, dtype=bool)
    buckets[repeated & mask] = True
    candidates = np.concatenate(
        [
            np.flatnonzero(buckets[hashes[start : start + CHUNK_ROWS] & mask]) + start
            for start in range(0, hashes.size, CHUNK_ROWS)
        ]
    )
    return candidates[np.isin(hashes[candidates], repeated)]


def row_hashes(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """A 64-bit hash of each row's values: the same for equal rows whatever batch they are in (numbers are
    hashed as float64, so an integer column with a gap in one batch hashes like one without; a null number
    hashes like NaN). Vectorised: a text column's distinct values are hashed once (Arrow's dictionary
    encoding), never turned into Python objects row by row."""
    combined = np.full(table.num_rows, _SEED, dtype=np.uint64)
    for column in table.columns:  # each column's hashes are well mixed already: a multiply and xor folds them
        combined *= _PRIME
        combined ^= _column_hashes(column)
    return _mix(combined)


_SEED = np.uint64(0xCBF29CE484222325)
_PRIME = np.uint64(0x100000001B3)
_NULL = np.uint64(0x9E3779B97F4A7C15)


def _column_hashes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if is_numeric_type(column.type):
        values = numeric_values(column) + 0.0  # a copy of our own, and -0.0 + 0.0 is 0.0
        if column.null_count or pa.types.is_floating(column.type):
            values[np.isnan(values)] = np.nan  # one NaN, for a null too
        return _mix(values.view(np.uint64))
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    try:
        encoded = array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)
    except pa.ArrowNotImplementedError:  # e.g. a list column: hash its text form
        return _text_hashes([str(v).encode() for v in array.to_pylist()])
    distinct = _text_hashes(_as_bytes(encoded.dictionary))
    if len(distinct) == 0:
        return np.full(len(array), _NULL, dtype=np.uint64)
    hashes = distinct[np.asarray(encoded.indices.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)]
    if encoded.indices.null_count:
        hashes[np.asarray(encoded.indices.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = _NULL
    return hashes


def _as_bytes(values: pa.Array) -> list[bytes]:
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        values = values.cast(pa.large_binary())
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        return cast(list[bytes], values.to_pylist())
    return [str(v).encode() for v in values.to_pylist()]


def _text_hashes(values: list[bytes]) -> np.ndarray:
    """A stable 64-bit hash of each value (BLAKE2b), computed once per distinct value."""
    digests = b"".join(hashlib.blake2b(v, digest_size=8).digest() for v in values)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit. Works in place on `x` (a uint64 array)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


NUMBER = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"


def _parse_floats(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """float64 with NaN where a value is null or not a number (surrounding spaces allowed)."""
    trimmed = pc.utf8_trim_whitespace(array)
    numeric = pc.and_kleene(pc.match_substring_regex(trimmed, NUMBER), pc.is_valid(trimmed))  # null: False
    numbers = np.full(len(trimmed), np.nan)
    numbers[np.asarray(numeric.to_numpy(zero_copy_only=False), dtype=bool)] = pc.cast(
        trimmed.filter(numeric), pa.float64()
    ).to_numpy(zero_copy_only=False)  # only the numbers are cast: Arrow's cast refuses a column with one word
    return numbers


def _has_nan(column: pa.ChunkedArray) -> bool:
    if not pa.types.is_floating(column.type):
        return False
    return bool(pc.any(pc.is_nan(column)).as_py())
