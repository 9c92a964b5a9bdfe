"""The cleaning pieces prep is built on, each on a case built so the right answer is known: row hashes, duplicates
found across batches, numbers read from text, and reading ahead on a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from slipway_trainer.data import cleaning
from slipway_trainer.data.cleaning import Cleaner, _parse_floats, _rows_of_repeated, row_hashes
from slipway_trainer.data.prep import _ahead


def test_equal_rows_hash_equal_whatever_their_batch_or_storage_and_unequal_rows_do_not() -> None:
    first = pa.table({"x": [1.0, 2.0, -0.0, None], "kind": ["a", "b", None, "a"], "raw": [b"1", b"2", b"3", b"4"]})
    second = pa.table(
        {
            "x": pa.array([0, 2, 1, None], pa.int64()),  # integers hash like the same numbers as floats
            "kind": pa.array([None, "b", "a", "a"]).dictionary_encode(),  # dictionary text like plain text
            "raw": pa.array([b"3", b"2", b"1", b"4"], pa.large_binary()),
        }
    )
    a, b = row_hashes(first), row_hashes(second)
    assert list(a) == [b[2], b[1], b[0], b[3]]  # -0.0 is 0.0; a null number is NaN; a null text is null
    assert len(set(a.tolist())) == 4
    # A missing text is not the text "None", and a column's values do not move into another column.
    assert row_hashes(pa.table({"k": [None]}))[0] != row_hashes(pa.table({"k": ["None"]}))[0]
    assert row_hashes(pa.table({"a": ["x"], "b": ["y"]}))[0] != row_hashes(pa.table({"a": ["y"], "b": ["x"]}))[0]
    assert row_hashes(pa.table({"a": [1.0], "b": [2.0]}))[0] != row_hashes(pa.table({"a": [-1.0], "b": [-2.0]}))[0]


def test_duplicates_are_found_across_batches_and_the_earliest_row_stays() -> None:
    cleaner = Cleaner(label="y", drop_columns=[], hash_columns=[], salt=b"", missing={}, default_missing="drop",
                      drop_invalid=False, drop_duplicates=True)  # fmt: skip
    batches = [
        pa.record_batch({"x": [1.0, 2.0, 1.0], "y": ["a", "b", "a"]}),  # row 2 repeats row 0
        pa.record_batch({"x": [3.0, 2.0], "y": ["c", "b"]}),  # row 4 repeats row 1
        pa.record_batch({"x": [2.0, None], "y": ["b", "d"]}),  # row 5 too; row 6 goes for its missing x
    ]
    kept = [cleaner.clean(b).num_rows for b in batches]
    stays, hashes = cleaner.first_occurrences()
    assert kept == [3, 2, 1] and len(hashes) == 6
    assert stays.tolist() == [True, True, False, True, False, False]
    assert dict(cleaner.dropped) == {"duplicate": 3, "missing:x": 1}


def test_rows_of_repeated_values_are_all_found_when_buckets_collide_and_chunks_split_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cleaning, "MIN_BUCKET_BITS", 2)  # four buckets: most rows share one with a repeated value
    monkeypatch.setattr(cleaning, "MAX_BUCKET_BITS", 2)
    monkeypatch.setattr(cleaning, "CHUNK_ROWS", 7)
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 100, dtype=np.uint64).astype(np.uint64)
    hashes[[10, 55, 99]] = hashes[3]
    hashes[70] = hashes[64]
    assert _rows_of_repeated(hashes, np.sort(hashes)).tolist() == [3, 10, 55, 64, 70, 99]
    assert _rows_of_repeated(hashes[:3], np.sort(hashes[:3])).size == 0


def test_numbers_in_text_are_read_with_spaces_signs_and_exponents_and_the_rest_is_nan() -> None:
    text = pa.chunked_array([[" 1", "+2.5", "-.5e-3", "3.", "inf", "x", "", None, "1_000", "0x10"], ["7"]])
    numbers = _parse_floats(text)
    assert numbers[:5].tolist() == [1.0, 2.5, -0.0005, 3.0, float("inf")]
    assert np.isnan(numbers[5:10]).all() and numbers[10] == 7.0


def test_reading_ahead_keeps_the_order_and_raises_the_readers_error_where_it_is_read() -> None:
    assert list(_ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("the source broke")

    items = _ahead(failing())
    assert next(items) == 1
    with pytest.raises(ValueError, match="the source broke"):
        next(items)
    endless = _ahead(iter(range(10**9)), depth=1)
    assert next(endless) == 0
    endless.close()  # a consumer that stops early stops the thread (close joins it)


def test_a_reader_feeding_a_cleaner_stops_with_it_and_its_error_reaches_the_consumer() -> None:
    def failing() -> Iterator[int]:
        yield from range(3)
        raise ValueError("the source broke")

    staged = _ahead((i * 10 for i in _ahead(failing(), depth=1, name="stage-read")), name="stage-clean")
    assert [next(staged) for _ in range(3)] == [0, 10, 20]
    with pytest.raises(ValueError, match="the source broke"):
        next(staged)
    endless = _ahead((i for i in _ahead(iter(range(10**9)), depth=1, name="stage-read")), name="stage-clean")
    assert next(endless) == 0
    endless.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("stage-")]  # both threads are gone
