"""The rule that picks a run's best epoch and a sweep's best trial (slipway_trainer.selection)."""

from __future__ import annotations

import pytest

from slipway_trainer import selection

# The 178-row case of a new user: val_accuracy 1.0 at epoch 1 barely trained, and again later, well trained.
HISTORY = [
    {"epoch": 1, "val_accuracy": 1.0, "val_loss": 0.69},
    {"epoch": 2, "val_accuracy": 0.97, "val_loss": 0.20},
    {"epoch": 3, "val_accuracy": 1.0, "val_loss": 0.05},
    {"epoch": 5, "val_accuracy": 1.0, "val_loss": 0.03},
    {"epoch": 6, "val_accuracy": 1.0, "val_loss": 0.04},
]


def test_a_tie_in_the_objective_goes_to_the_epoch_with_the_lower_validation_loss() -> None:
    best = selection.best_row(HISTORY, "val_accuracy", maximize=True)
    assert best is not None and best["epoch"] == 5


def test_a_real_gain_in_the_objective_wins_over_a_lower_loss() -> None:
    assert selection.beats(0.91, 0.50, best=0.90, best_loss=0.10, maximize=True)
    assert not selection.beats(0.89, 0.01, best=0.90, best_loss=0.10, maximize=True)  # worse is worse
    assert selection.beats(2.9, None, best=3.0, best_loss=None, maximize=False)  # an error metric: lower wins


def test_a_gain_under_min_delta_counts_as_a_tie_and_is_broken_by_the_loss() -> None:
    assert not selection.beats(0.905, 0.30, best=0.90, best_loss=0.20, maximize=True, tolerance=0.01)
    assert selection.beats(0.905, 0.10, best=0.90, best_loss=0.20, maximize=True, tolerance=0.01)
    assert selection.beats(0.92, 0.30, best=0.90, best_loss=0.20, maximize=True, tolerance=0.01)


def test_when_the_objective_is_the_loss_an_equal_loss_keeps_the_earlier_epoch() -> None:
    rows = [{"epoch": 1, "val_loss": 0.3}, {"epoch": 2, "val_loss": 0.3}]
    best = selection.best_row(rows, "val_loss", maximize=False)
    assert best is not None and best["epoch"] == 1


def test_trials_rank_by_the_objective_then_the_loss() -> None:
    trials = [("a", 1.0, 0.6), ("b", 1.0, 0.1), ("c", 0.95, 0.01), ("d", 1.0, None)]
    ranked = sorted(trials, key=lambda t: selection.rank_key(t[1], t[2], maximize=True))
    assert [t[0] for t in ranked] == ["b", "a", "d", "c"]


def test_the_paired_interval_of_two_models_is_scipys_bootstrap_and_covers_the_true_difference() -> None:
    """Two models' per-row errors built so the answer is known: model B's error is model A's plus 0.5 plus noise
    (sd 1) on the same 400 rows, so the difference of mean errors is 0.5 with a standard error of 1/sqrt(400). The
    percentile interval must match the normal one (0.5 +- 1.96 * 0.05) and a tie must include 0."""
    import numpy as np

    rng = np.random.default_rng(0)
    error_a = rng.exponential(1.0, 400)
    error_b = error_a + 0.5 + rng.normal(0.0, 1.0, 400)
    gaps = error_b - error_a
    low, high = selection.paired_interval(400, lambda rows: float(error_b[rows].mean() - error_a[rows].mean()), 7)
    centre, half = gaps.mean(), 1.96 * gaps.std(ddof=1) / np.sqrt(400)
    assert low == pytest.approx(centre - half, abs=0.02) and high == pytest.approx(centre + half, abs=0.02)
    assert 0.0 < low < 0.5 < high  # the true difference is inside, and B is told apart as worse

    centred = gaps - gaps.mean()  # the same noise with no difference left
    tie_low, tie_high = selection.paired_interval(400, lambda rows: float(centred[rows].mean()), 7)
    assert tie_low < 0.0 < tie_high  # no real difference: the interval includes 0
    again = selection.paired_interval(400, lambda rows: float(error_b[rows].mean() - error_a[rows].mean()), 7)
    assert again == (low, high)  # seeded: the same interval every time
