"""Streaming column statistics: the sample kept in bounded memory is the one a whole-column pass would keep."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from slipway_trainer.data import stats
from slipway_trainer.data.stats import CategoricalStats, NumericStats


def test_the_numeric_sample_is_the_bottom_k_of_every_value_seen_whatever_the_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stats, "SAMPLE_SIZE", 50)
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=n) for n in (7, 120, 3, 90, 260, 1, 75)]
    batches[1][::9] = np.nan
    acc = NumericStats(seed=11)
    for values in batches:
        acc.add(values)
    # The same keys, drawn per batch as `add` draws them, ranked over all values at once.
    present = [v[~np.isnan(v)] for v in batches]
    keys = np.concatenate([np.random.default_rng([11, i]).random(v.size) for i, v in enumerate(present)])
    everything = np.concatenate(present)
    expected = np.sort(everything[np.argsort(keys)[:50]])
    assert np.array_equal(np.sort(acc.sample), expected)
    assert acc.count == everything.size and acc.missing == int(np.isnan(batches[1]).sum())
    assert acc.quantiles([0.0, 0.5, 1.0]) == [float(np.quantile(expected, q)) for q in (0.0, 0.5, 1.0)]
    assert acc.total == pytest.approx(float(everything.sum()))


def test_a_small_column_is_sampled_whole() -> None:
    acc = NumericStats()
    acc.add(np.array([3.0, np.nan, 1.0]))
    acc.add(np.array([2.0]))
    assert sorted(acc.sample.tolist()) == [1.0, 2.0, 3.0] and acc.quantile(0.5) == 2.0
    assert NumericStats().sample.size == 0 and NumericStats().quantile(0.5) == 0.0


def test_categories_are_counted_without_their_missing_values() -> None:
    acc = CategoricalStats()
    acc.add(pa.array(["b", None, "a", "b"]))
    acc.add(pa.chunked_array([pa.array([None, None], pa.string())]))
    acc.add(pa.array([1, 1, None]))  # not text: counted as its text form
    assert acc.count == 5 and acc.missing == 4
    assert dict(acc.counts) == {"a": 1, "b": 2, "1": 2} and acc.categories() == ["1", "b", "a"]
