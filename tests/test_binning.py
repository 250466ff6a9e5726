"""Bin edge convention: right-closed, within 1e-9 of an edge goes lower, 0 first, 1.0 last."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from verbcal.binning import bins_from_edges, equal_mass_edges, equal_width_bins


def exact_right_closed(k: int, m: int, n_bins: int) -> int:
    """Bin of the rational k/m under (b/B, (b+1)/B], in integer arithmetic."""
    return max(0, -(-k * n_bins // m) - 1)


@pytest.mark.parametrize("value", [0.8, 0.8000000000000002, 0.7999999999, 0.8 + 5e-10])
def test_values_at_edge_0_8_go_to_the_lower_bin(value: float) -> None:
    # 0.8 = 12/15 is the upper edge of bin 11 = (11/15, 12/15].
    assert equal_width_bins([value], 15)[0] == 11
    assert equal_width_bins([value], 10)[0] == 7
    assert equal_width_bins([value], 20)[0] == 15


def test_beyond_tolerance_goes_up() -> None:
    assert equal_width_bins([0.8 + 2e-9], 15)[0] == 12
    assert equal_width_bins([0.8 - 2e-9], 15)[0] == 11


def test_zero_first_bin_one_last_bin() -> None:
    bins = equal_width_bins([0.0, 1e-12, 1.0, 1.0 - 1e-12, 0.9999], 15)
    assert bins.tolist() == [0, 0, 14, 14, 14]


def test_every_bin_count() -> None:
    with pytest.raises(ValueError, match="n_bins"):
        equal_width_bins([0.5], 0)
    assert equal_width_bins([0.0, 0.5, 1.0], 1).tolist() == [0, 0, 0]


def test_grid_of_0_05_matches_exact_rationals() -> None:
    grid = np.arange(21) / 20
    for n_bins in (5, 10, 15, 20):
        expected = [exact_right_closed(k, 20, n_bins) for k in range(21)]
        assert equal_width_bins(grid, n_bins).tolist() == expected


def test_grid_values_built_by_arithmetic_land_like_exact_ones() -> None:
    # 3 * 0.05 = 0.15000000000000002 and 1 - 0.2 = 0.8 etc. must not move across an edge.
    computed = np.array([k * 0.05 for k in range(21)])
    complement = np.array([1.0 - k * 0.05 for k in range(21)])[::-1]
    for n_bins in (10, 15, 20):
        expected = equal_width_bins(np.arange(21) / 20, n_bins)
        assert np.array_equal(equal_width_bins(computed, n_bins), expected)
        assert np.array_equal(equal_width_bins(complement, n_bins), expected)


@given(
    m=st.integers(1, 200),
    data=st.data(),
    n_bins=st.integers(1, 40),
    jitter=st.sampled_from([0.0, 1e-12, -1e-12, 4e-16, -4e-16]),
)
def test_rationals_with_float_noise(
    m: int, data: st.DataObject, n_bins: int, jitter: float
) -> None:
    k = data.draw(st.integers(0, m))
    value = min(1.0, max(0.0, k / m + jitter))
    assert equal_width_bins([value], n_bins)[0] == exact_right_closed(k, m, n_bins)


def test_equal_mass_edges_on_distinct_values_give_equal_counts() -> None:
    values = np.random.default_rng(3).uniform(size=1500)
    edges = equal_mass_edges(values, 15)
    assert len(edges) == 15
    assert edges[-1] == values.max()
    counts = np.bincount(bins_from_edges(values, edges), minlength=15)
    assert counts.tolist() == [100] * 15


def test_equal_mass_on_a_coarse_grid_keeps_equal_values_together() -> None:
    values = np.repeat([0.6, 0.8, 0.9, 1.0], [10, 50, 30, 10])
    edges = equal_mass_edges(values, 15)
    assert edges.tolist() == [0.6, 0.8, 0.9, 1.0]
    bins = bins_from_edges(values, edges)
    for v in (0.6, 0.8, 0.9, 1.0):
        assert len(set(bins[values == v].tolist())) == 1
    assert np.bincount(bins).tolist() == [10, 50, 30, 10]


def test_bins_from_edges_right_closed_with_tolerance() -> None:
    edges = np.array([0.25, 0.5, 1.0])
    values = [0.0, 0.25, 0.25 + 1e-10, 0.25 + 1e-8, 0.5, 0.75, 1.0, 1.5]
    assert bins_from_edges(values, edges).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


def test_equal_mass_merges_edges_within_tolerance() -> None:
    values = np.array([0.2] * 5 + [0.8] * 5 + [0.8000000000000002] * 5 + [1.0] * 5)
    edges = equal_mass_edges(values, 4)
    assert edges.tolist() == [0.2, 0.8, 1.0]
    assert np.bincount(bins_from_edges(values, edges)).tolist() == [5, 10, 5]


def test_equal_mass_small_n_has_no_empty_bin() -> None:
    values = np.array([0.9, 0.3, 0.55, 0.7, 0.31, 0.99, 0.6])
    edges = equal_mass_edges(values, 15)
    assert edges.tolist() == sorted(values.tolist())
    assert np.bincount(bins_from_edges(values, edges)).tolist() == [1] * 7


def test_equal_mass_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="n_bins"):
        equal_mass_edges([0.5], 0)
    with pytest.raises(ValueError, match="at least one"):
        equal_mass_edges([], 5)


@pytest.mark.parametrize("bad", [2.5, 0, True, "10"])
def test_bin_counts_are_integers_not_coerced(bad: object) -> None:
    """Before: bins=2.5 was used as 2.5 (scaled confidences by a fraction)."""
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1"):
        equal_width_bins([0.5], bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1"):
        equal_mass_edges([0.5], bad)  # type: ignore[arg-type]
    assert equal_width_bins([0.5], np.int64(2)).tolist() == [0]
