"""The hash of `privacy.hashColumns`, shared by data preparation and the inference server (which has no pandas)."""

from __future__ import annotations

import hashlib

import pyarrow as pa

# Schema metadata of a batch whose hashed columns are hashed already (a payload log added to a source: the server
# hashed them with the same salt), so that preparing it does not hash them twice: b"col,col".
PREHASHED = b"slipway.prehashed"


def hash_values(column: pa.ChunkedArray | pa.Array, salt: bytes) -> pa.Array:
    """`sha256(salt + value)` in hex for each value of a column; nulls stay null."""
    return pa.array(
        [None if v is None else hashlib.sha256(salt + str(v).encode()).hexdigest() for v in column.to_pylist()],
        pa.string(),
    )
