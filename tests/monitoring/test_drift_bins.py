"""PSI bins on awkward distributions: zero-inflated features (Adult's capital-gain), point
masses, constant references and missing values. Pure functions, no database."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from auditapp.monitoring import metrics, thresholds
from tests.datasets import adult

DECILES = np.linspace(0, 1, 11)[1:-1]


def decile_psi(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI as it was before bins were built from distinct values: the reference's deciles."""
    edges = np.unique(np.quantile(reference, DECILES))
    return metrics.psi(metrics.binned(reference, edges), metrics.binned(current, edges))


def zero_inflated(rng: np.random.Generator, n: int, nonzero_share: float) -> np.ndarray:
    """Zeros, and a lognormal tail (a capital gain of a few thousand) for `nonzero_share`."""
    values = np.zeros(n)
    tail = round(n * nonzero_share)
    values[:tail] = np.round(rng.lognormal(mean=8.0, sigma=1.0, size=tail))
    return rng.permutation(values)


def test_a_shift_in_the_share_of_zeros_is_flagged():
    rng = np.random.default_rng(7)
    reference = zero_inflated(rng, 5000, 0.08)  # 92 % zeros, as Adult's capital-gain
    current = zero_inflated(rng, 1000, 0.30)

    entry = metrics.numeric_drift(reference, current)

    ks = stats.ks_2samp(reference, current)
    assert ks.pvalue < 1e-30
    assert entry["ks_p"] == pytest.approx(ks.pvalue, rel=1e-9)
    assert decile_psi(reference, current) < 1e-3  # the defect: every decile edge is 0
    assert entry["psi"] > 0.25
    assert entry["drifted"] is True


def test_the_same_zero_inflated_distribution_is_not_flagged():
    rng = np.random.default_rng(8)
    reference = zero_inflated(rng, 5000, 0.08)
    current = zero_inflated(rng, 1000, 0.08)

    entry = metrics.numeric_drift(reference, current)

    assert entry["psi"] < 0.1
    assert entry["drifted"] is False


def test_capital_gain_on_adult_is_flagged_when_gains_become_common():
    """Adult's training rows as the reference (92 % without capital gains); the window is its
    test rows with every row that has capital gains counted four times (30 % with gains)."""
    frame = adult()
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    gains = test["capital-gain"] > 0
    window = np.concatenate(
        [test.loc[~gains, "capital-gain"]] + 4 * [test.loc[gains, "capital-gain"]]
    )
    reference = train["capital-gain"].to_numpy(dtype=float)
    current = window.astype(float)
    assert (reference == 0).mean() == pytest.approx(0.9158)
    assert (current > 0).mean() == pytest.approx(0.2949, abs=1e-4)

    entry = metrics.numeric_drift(reference, current)

    assert entry["ks_p"] == pytest.approx(stats.ks_2samp(reference, current).pvalue, rel=1e-9)
    assert entry["ks_p"] < 1e-80
    assert decile_psi(reference, current) < 1e-4  # before: one bin held every value
    assert entry["psi"] == pytest.approx(0.323, abs=1e-3)
    assert entry["drifted"] is True
    # Adult's own test split against its training split is no drift.
    unshifted = metrics.numeric_drift(reference, test["capital-gain"].to_numpy(dtype=float))
    assert unshifted["psi"] < 0.01
    assert unshifted["drifted"] is False


def test_a_mass_gets_a_bin_of_its_own_and_deciles_stay_deciles():
    rng = np.random.default_rng(3)
    continuous = rng.normal(size=2000)
    assert metrics.quantile_edges(continuous) == pytest.approx(np.quantile(continuous, DECILES))

    hours = np.concatenate([np.full(450, 40.0), rng.integers(1, 99, size=550).astype(float)])
    edges = metrics.quantile_edges(hours)
    counts = metrics.binned(hours, edges)
    assert counts.sum() == 1000
    forty = np.searchsorted(edges, 40.0, side="right")
    assert counts[forty] == np.count_nonzero(hours == 40.0)  # 40 and nothing else
    assert 10 <= np.count_nonzero(counts) <= 11  # the other values keep nine bins


def test_a_constant_reference_still_sees_values_above_it():
    reference = np.full(500, 3.0)

    assert list(metrics.quantile_edges(reference)) == [3.0, np.nextafter(3.0, np.inf)]
    same = metrics.numeric_drift(reference, np.full(200, 3.0))
    moved = metrics.numeric_drift(reference, np.repeat([3.0, 4.0], 100))
    assert same["psi"] < 0.01  # not 0: the pseudo-counts weigh more in the smaller sample
    assert same["drifted"] is False
    assert moved["psi"] > 1.0
    assert moved["ks_p"] < 1e-20
    assert moved["drifted"] is True
    assert decile_psi(reference, np.repeat([3.0, 4.0], 100)) < 0.01  # before: 3 and 4 in one bin


def test_missing_values_are_in_no_bin():
    values = np.array([0.0, 0.0, 0.0, np.nan, 1.0, 2.0, np.nan, np.inf])

    edges = metrics.quantile_edges(values)
    entry = metrics.numeric_drift(values, values)

    assert np.isfinite(edges).all()
    assert metrics.binned(values, edges).sum() == 6
    assert metrics.quantile_edges(np.array([np.nan, np.nan])).size == 0
    assert entry["missing"] == 2
    assert entry["psi"] == pytest.approx(0.0, abs=1e-12)


# --- properties --------------------------------------------------------------------------

# A few values drawn from a small pool make masses; the others are spread out.
pooled = st.sampled_from([0.0, 1.0, 40.0, -2.5])
spread = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
samples = st.lists(st.one_of(pooled, spread, st.just(np.nan)), min_size=1, max_size=300)


@settings(max_examples=50, deadline=None)
@given(samples)
def test_bins_hold_every_value_once_and_a_sample_does_not_drift_from_itself(values):
    values = np.array(values, dtype=float)
    present = values[~np.isnan(values)]

    edges = metrics.quantile_edges(values)
    counts = metrics.binned(values, edges)
    entry = metrics.numeric_drift(values, values.copy())

    assert np.all(np.diff(edges) > 0)
    assert counts.sum() == present.size
    distinct, mass = np.unique(present, return_counts=True)
    for value in distinct[mass * metrics.PSI_BINS > present.size]:
        index = np.searchsorted(edges, present, side="right")
        assert set(present[index == np.searchsorted(edges, value, side="right")]) == {value}
    if present.size:
        assert entry["psi"] == pytest.approx(0.0, abs=1e-12)
        assert entry["drifted"] is False


positive = st.floats(min_value=1.0, max_value=1e6, allow_nan=False)
tails = st.lists(positive, min_size=20, max_size=100)


@settings(max_examples=50, deadline=None)
@given(tails, tails, st.sampled_from([9, 12, 19]))
def test_a_point_mass_that_shrinks_to_half_is_a_significant_shift(before, after, zeros_per_value):
    """90 %, 92 % or 95 % zeros in the reference, 50 % in the window."""
    reference = np.concatenate([np.zeros(zeros_per_value * len(before)), before])
    current = np.concatenate([np.zeros(len(after)), after])

    entry = metrics.numeric_drift(reference, current)

    assert entry["psi"] > thresholds.PSI_SHIFT
    assert entry["ks_p"] < thresholds.DRIFT_P_VALUE
    assert entry["drifted"] is True
