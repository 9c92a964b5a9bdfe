"""Drift scores of live inputs against the training profile, with both methods (PSI and Kolmogorov-Smirnov), on a
profile built by the prep's own statistics from a known distribution."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from slipway_trainer.data.profile import numeric_profile
from slipway_trainer.data.stats import NumericStats
from slipway_trainer.serve.drift import DriftMonitor


def profile_of(values: np.ndarray) -> dict[str, object]:
    stats = NumericStats()
    stats.add(values)
    return {"x": numeric_profile(stats)}


@pytest.mark.parametrize("method", ["psi", "ks"])
def test_inputs_like_training_stay_calm_and_shifted_inputs_drift(method: str) -> None:
    rng = np.random.default_rng(0)
    profile = profile_of(rng.normal(0.0, 1.0, 5000))
    calm = DriftMonitor(profile, method=method, threshold=0.2, window_size=500)
    calm.observe(pa.table({"x": rng.normal(0.0, 1.0, 500)}))
    shifted = DriftMonitor(profile, method=method, threshold=0.2, window_size=500)
    shifted.observe(pa.table({"x": rng.normal(1.0, 1.0, 500)}))  # one standard deviation to the right

    calm_score, shifted_score = calm.scores()["x"], shifted.scores()["x"]
    assert calm_score < 0.1 and "x" not in calm.drifted
    assert shifted_score > 0.2 and "x" in shifted.drifted
    if method == "ks":
        # The KS distance of N(1, 1) from N(0, 1) is 2 * Phi(0.5) - 1 = 0.383 (SciPy's kstest against the CDF the
        # profile's quantiles describe; 500 live values give it to within a few hundredths).
        assert shifted_score == pytest.approx(0.383, abs=0.04)
        assert 0.0 <= calm_score <= 1.0
    assert shifted.report()["method"] == method


def test_ks_sees_a_change_of_spread_that_keeps_the_mean() -> None:
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(profile_of(rng.normal(0.0, 1.0, 5000)), method="ks", threshold=0.1, window_size=1000)
    monitor.observe(pa.table({"x": rng.normal(0.0, 3.0, 1000)}))
    assert monitor.scores()["x"] > 0.1  # the tails moved though the mean did not


def test_ks_is_scipys_statistic_against_the_profiles_distribution() -> None:
    """Uniform(0, 1) training data: the profile's CDF is the identity on [0, 1], so the score is SciPy's two-sided KS
    statistic of the live values against the uniform distribution, computed here independently."""
    from scipy.stats import kstest

    rng = np.random.default_rng(2)
    monitor = DriftMonitor(profile_of(rng.uniform(0.0, 1.0, 20000)), method="ks", window_size=400)
    live = rng.uniform(0.1, 1.1, 400)  # shifted by 0.1: the true distance is 0.1
    monitor.observe(pa.table({"x": live}))
    expected = kstest(live, "uniform").statistic
    assert monitor.scores()["x"] == pytest.approx(expected, abs=0.02)
    assert monitor.scores()["x"] == pytest.approx(0.1, abs=0.05)


def test_no_score_before_the_window_holds_enough_rows() -> None:
    monitor = DriftMonitor(profile_of(np.arange(100, dtype=np.float64)), method="ks")
    monitor.observe(pa.table({"x": np.arange(10, dtype=np.float64)}))
    assert monitor.scores() == {}
