"""Metrics against hand computations and independent implementations (sklearn, relplot)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from relplot.metrics import binnedECE
from relplot.metrics import binning as relplot_binning
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    roc_auc_score,
)

from verbcal import metrics as m
from verbcal.binning import equal_width_bins
from verbcal.predictions import read_predictions

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]
TOL = 1e-9


def random_case(n: int, k: int, seed: int, grid: bool = False) -> tuple[Array, IntArray]:
    """Dirichlet rows, or with ``grid`` rows of exact multiples k/20 (a 0.05 grid)."""
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.ones(k), size=n)
    if grid:
        q = np.array([rng.multinomial(20, row) for row in q]) / 20
    return q, rng.integers(0, k, n)


def calibrated_binary(n: int, seed: int) -> tuple[Array, IntArray]:
    """Top-label confidence uniform on [0.5, 1], correct with exactly that probability."""
    rng = np.random.default_rng(seed)
    p1 = rng.uniform(0.0, 1.0, n)
    y = (rng.uniform(size=n) < p1).astype(np.int64)
    return np.column_stack([1 - p1, p1]), y


def reference_ece(
    conf: Array, correct: Array, n_bins: int, closed: Literal["right", "left"] = "right"
) -> float:
    """Plain numpy ECE with exact float edges b/B and no tolerance.

    ``right``: bins (b/B, (b+1)/B], 0 in the first. ``left``: bins [b/B, (b+1)/B) and 1.0
    in an extra bin of its own (relplot's convention on exact grid values).
    """
    edges = np.arange(1, n_bins + 1) / n_bins
    if closed == "right":
        idx = np.minimum(np.searchsorted(edges, conf, side="left"), n_bins - 1)
    else:
        idx = np.searchsorted(edges, conf, side="right")
    total = 0.0
    for b in range(n_bins + 1):
        inside = idx == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return total


def top_label(q: Array, y: IntArray) -> tuple[Array, Array]:
    pred = q.argmax(axis=1)
    return q.max(axis=1), (pred == y).astype(np.float64)


@st.composite
def cases(draw: st.DrawFn, min_n: int = 1, max_n: int = 60) -> tuple[Array, IntArray]:
    """Rows of integer weights 0..20 normalised: grid-like values, ties and zeros."""
    n = draw(st.integers(min_n, max_n))
    k = draw(st.integers(2, 5))
    weights = np.array(
        draw(
            st.lists(st.lists(st.integers(0, 20), min_size=k, max_size=k), min_size=n, max_size=n)
        ),
        dtype=np.float64,
    )
    weights[weights.sum(axis=1) == 0] = 1.0
    y = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), dtype=np.int64)
    return weights / weights.sum(axis=1, keepdims=True), y


# ---------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    "func",
    [m.accuracy, m.macro_f1, m.nll, m.brier, m.auroc, m.ece, m.mce, m.classwise_ece, m.summary],
)
def test_no_items_is_a_clear_error(func: object) -> None:
    with pytest.raises(ValueError, match="n = 0"):
        func(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))  # type: ignore[operator]


def test_bad_inputs() -> None:
    q = np.array([[0.5, 0.5]])
    with pytest.raises(ValueError, match="2-d"):
        m.accuracy(np.array([0.5, 0.5]), np.array([0]))
    with pytest.raises(ValueError, match="shape"):
        m.accuracy(q, np.array([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        m.accuracy(q, np.array([0.0]))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        m.accuracy(q, np.array([2]))
    with pytest.raises(ValueError, match="binning"):
        m.ece(q, np.array([0]), binning="quantile")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown metrics"):
        m.bootstrap_ci(q, np.array([0]), metrics=["f2"])


# ---------------------------------------------------------------- hand computations


def test_argmax_ties_go_to_the_first_label() -> None:
    q = np.array([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [0.5, 0.0, 0.5]])
    assert m.predicted(q).tolist() == [0, 1, 0]
    assert m.accuracy(q, np.array([0, 2, 2])) == pytest.approx(1 / 3, abs=1e-15)


def test_brier_by_hand() -> None:
    q = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    # (0.09 + 0.04 + 0.01 + 0.01 + 0.09 + 0.16) / 2
    assert m.brier(q, np.array([0, 2])) == pytest.approx(0.2, abs=1e-15)
    assert m.brier(np.array([[0.0, 1.0]]), np.array([0])) == 2.0


def test_nll_clips_at_1e_12() -> None:
    q = np.array([[0.0, 1.0], [0.5, 0.5]])
    assert m.NLL_CLIP == 1e-12
    assert m.nll(q, np.array([0, 0])) == pytest.approx(
        (-np.log(1e-12) - np.log(0.5)) / 2, abs=1e-12
    )


def test_macro_f1_counts_unseen_labels_as_zero() -> None:
    # K = 3, label 2 never predicted and never gold: F1 = (1 + 0 + 0) / 3 for labels 0, 1, 2.
    q = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0]])
    assert m.macro_f1(q, np.array([0, 0])) == pytest.approx(1 / 3, abs=1e-15)


def test_auroc_binary_by_hand_with_ties() -> None:
    q1 = np.array([0.1, 0.4, 0.4, 0.8])
    y = np.array([0, 0, 1, 1])
    # pairs (pos, neg): (0.4, 0.1) 1, (0.4, 0.4) 0.5, (0.8, 0.1) 1, (0.8, 0.4) 1 -> 3.5 / 4
    assert m.auroc(np.column_stack([1 - q1, q1]), y) == 0.875


def test_auroc_undefined_is_nan() -> None:
    q = np.array([[0.3, 0.7], [0.6, 0.4]])
    assert np.isnan(m.auroc(q, np.array([1, 1])))
    assert np.isnan(m.auroc(np.full((2, 3), 1 / 3), np.array([2, 2])))


def test_ece_mce_reliability_by_hand() -> None:
    # 10 bins: 0.6 x2 (both right) in (0.5, 0.6]; 0.65 x2 (one right) in (0.6, 0.7].
    q1 = np.array([0.6, 0.6, 0.65, 0.65])
    q = np.column_stack([1 - q1, q1])
    y = np.array([1, 1, 1, 0])
    assert m.ece(q, y, n_bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.15, abs=1e-15)
    assert m.mce(q, y, n_bins=10) == pytest.approx(0.4, abs=1e-15)
    bins = m.reliability(q, y, n_bins=10)
    assert len(bins) == 10
    assert [b.count for b in bins] == [0, 0, 0, 0, 0, 2, 1 + 1, 0, 0, 0]
    assert (bins[5].lower, bins[5].upper) == (0.5, 0.6)
    assert bins[5].confidence == pytest.approx(0.6) and bins[5].accuracy == 1.0
    assert bins[6].confidence == pytest.approx(0.65) and bins[6].accuracy == 0.5
    assert np.isnan(bins[0].confidence) and np.isnan(bins[0].accuracy)


def test_right_closed_vs_left_closed_on_a_0_05_grid() -> None:
    # Same data as above: left-closed [0.6, 0.7) would pool all four rows.
    q1 = np.array([0.6, 0.6, 0.65, 0.65])
    q = np.column_stack([1 - q1, q1])
    y = np.array([1, 1, 1, 0])
    conf, correct = top_label(q, y)
    right = reference_ece(conf, correct, 10, "right")
    left = reference_ece(conf, correct, 10, "left")
    assert right == pytest.approx(0.275, abs=1e-15)
    assert left == pytest.approx(0.125, abs=1e-15)
    assert m.ece(q, y, n_bins=10) == pytest.approx(right, abs=1e-15)


def test_0_8_edge_with_15_bins() -> None:
    # 0.8 = 12/15: as 0.8, 0.8000000000000002 or 0.7999999999 it sits in bin (11/15, 12/15].
    q1 = np.array([0.8, 0.8000000000000002, 0.7999999999, 0.81])
    q = np.column_stack([1 - q1, q1])
    y = np.array([1, 1, 1, 0])
    counts = [b.count for b in m.reliability(q, y, n_bins=15)]
    assert counts[11] == 3 and counts[12] == 1
    expected = 0.75 * abs(1 - (0.8 + 0.8000000000000002 + 0.7999999999) / 3) + 0.25 * 0.81
    assert m.ece(q, y, n_bins=15) == pytest.approx(expected, abs=1e-15)


def test_zero_and_one_confidences() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = np.array([0, 1, 1])
    bins = m.reliability(q, y, n_bins=15)
    assert bins[14].count == 3 and bins[14].accuracy == pytest.approx(2 / 3)
    assert m.ece(q, y) == pytest.approx(1 / 3, abs=1e-15)
    # classwise: column value 0 lands in the first bin, 1 in the last
    assert m.classwise_ece(q, y) == pytest.approx(1 / 3, abs=1e-15)


def test_classwise_ece_against_reference() -> None:
    q, y = random_case(500, 4, seed=7)
    expected = np.mean([reference_ece(q[:, c], (y == c).astype(np.float64), 15) for c in range(4)])
    assert m.classwise_ece(q, y) == pytest.approx(expected, abs=TOL)


def test_equal_mass_ece_against_sorted_chunks() -> None:
    q, y = random_case(1500, 3, seed=8)
    conf, correct = top_label(q, y)
    order = np.argsort(conf)
    expected = sum(
        len(c) / 1500 * abs(correct[c].mean() - conf[c].mean()) for c in np.split(order, 15)
    )
    assert m.ece(q, y, binning="equal_mass") == pytest.approx(expected, abs=TOL)
    assert len(m.reliability(q, y, binning="equal_mass")) == 15


def test_summary_keys_and_values() -> None:
    q, y = random_case(200, 5, seed=1)
    result = m.summary(q, y)
    assert tuple(result) == m.METRICS
    assert m.METRICS == ("accuracy", "macro_f1", "ece", "mce", "nll", "brier", "auroc")
    assert result["ece"] == m.ece(q, y) and result["auroc"] == m.auroc(q, y)


# ---------------------------------------------------------------- independent implementations


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("grid", [False, True])
def test_agrees_with_sklearn(k: int, grid: bool) -> None:
    q, y = random_case(400, k, seed=k, grid=grid)
    labels = list(range(k))
    pred = q.argmax(axis=1)
    assert m.accuracy(q, y) == pytest.approx(accuracy_score(y, pred), abs=TOL)
    f1 = f1_score(y, pred, average="macro", labels=labels, zero_division=0)
    assert m.macro_f1(q, y) == pytest.approx(f1, abs=TOL)
    assert m.brier(q, y) == pytest.approx(
        brier_score_loss(y, q, labels=labels, scale_by_half=False), abs=TOL
    )
    if k == 2:
        assert m.auroc(q, y) == pytest.approx(roc_auc_score(y, q[:, 1]), abs=TOL)
    else:
        ovr = roc_auc_score(y, q, multi_class="ovr", average="macro", labels=labels)
        assert m.auroc(q, y) == pytest.approx(ovr, abs=TOL)
    if not grid:  # no zeros: the clipping conventions agree
        assert m.nll(q, y) == pytest.approx(log_loss(y, q, labels=labels), abs=TOL)


@settings(max_examples=60, deadline=None)
@given(cases(min_n=2))
def test_agrees_with_sklearn_on_arbitrary_grids(case: tuple[Array, IntArray]) -> None:
    q, y = case
    k = q.shape[1]
    pred = q.argmax(axis=1)
    f1 = f1_score(y, pred, average="macro", labels=list(range(k)), zero_division=0)
    assert m.macro_f1(q, y) == pytest.approx(f1, abs=TOL)
    assert m.accuracy(q, y) == pytest.approx(accuracy_score(y, pred), abs=TOL)
    if k == 2 and len(set(y.tolist())) == 2:
        assert m.auroc(q, y) == pytest.approx(roc_auc_score(y, q[:, 1]), abs=TOL)


def test_sklearn_brier_halves_binary() -> None:
    # Convention difference: sklearn's default scale_by_half="auto" halves the K = 2 score.
    q, y = random_case(300, 2, seed=5)
    assert brier_score_loss(y, q[:, 1]) == pytest.approx(m.brier(q, y) / 2, abs=TOL)


def test_sklearn_log_loss_clips_at_machine_epsilon() -> None:
    # Convention difference: sklearn clips at float64 eps (2.2e-16), verbcal at 1e-12.
    q = np.array([[0.0, 1.0], [0.5, 0.5]])
    y = np.array([0, 1])
    eps = np.finfo(np.float64).eps
    assert log_loss(y, q) == pytest.approx((-np.log(eps) - np.log(0.5)) / 2, abs=TOL)
    assert m.nll(q, y) == pytest.approx((-np.log(1e-12) - np.log(0.5)) / 2, abs=TOL)
    assert log_loss(y, q) - m.nll(q, y) == pytest.approx(np.log(1e-12 / eps) / 2, abs=TOL)


def test_subsets_missing_a_class() -> None:
    q, y = random_case(300, 5, seed=11)
    keep = y < 3  # classes 3 and 4 absent from the gold labels
    q, y = q[keep], y[keep]
    result = m.summary(q, y)
    assert all(np.isfinite(v) for v in result.values())
    f1 = f1_score(y, q.argmax(axis=1), average="macro", labels=list(range(5)), zero_division=0)
    assert result["macro_f1"] == pytest.approx(f1, abs=TOL)
    present = [roc_auc_score(y == c, q[:, c]) for c in range(3)]
    assert result["auroc"] == pytest.approx(np.mean(present), abs=TOL)
    assert np.isfinite(m.classwise_ece(q, y))
    ci = m.bootstrap_ci(q, y, n_boot=200)
    assert all(lo <= hi for lo, hi in ci.values())


@pytest.mark.parametrize("k", [2, 5])
def test_ece_agrees_with_numpy_reference(k: int) -> None:
    q, y = random_case(2000, k, seed=k, grid=True)
    conf, correct = top_label(q, y)
    for n_bins in (10, 15, 20):
        assert m.ece(q, y, n_bins) == pytest.approx(reference_ece(conf, correct, n_bins), abs=TOL)


def test_ece_agrees_with_relplot_off_the_edges() -> None:
    q, y = random_case(5000, 4, seed=2)
    conf, correct = top_label(q, y)
    scaled = conf * 15
    assert np.min(np.abs(scaled - np.round(scaled))) > 1e-6 and conf.max() < 1.0
    assert m.ece(q, y) == pytest.approx(binnedECE(conf, correct, nbins=15), abs=TOL)


def relplot_bin(value: float, n_bins: int) -> int:
    """Bin relplot's binnedECE puts one value in (probe with one item, label 0)."""
    sums = relplot_binning(np.array([value]), np.array([0.0]), bin_size=1.0 / n_bins)
    return int(np.flatnonzero(sums)[0])


@pytest.mark.parametrize(
    ("n_bins", "differing"),
    [
        # relplot bins by int(f / (1/B)): left-closed where the division rounds up to the
        # edge, right-closed by accident where it rounds down (0.3, 0.6, 0.7 at B = 10),
        # and 1.0 in an extra bin B of its own.
        (10, [0.1, 0.2, 0.4, 0.5, 0.8, 0.9, 1.0]),
        (15, [0.2, 0.4, 0.6, 0.8, 1.0]),
    ],
)
def test_relplot_bins_0_05_grid_edges_differently(n_bins: int, differing: list[float]) -> None:
    grid = np.arange(1, 21) / 20
    ours = equal_width_bins(grid, n_bins)
    theirs = np.array([relplot_bin(v, n_bins) for v in grid])
    assert grid[ours != theirs].tolist() == differing
    assert relplot_bin(1.0, n_bins) == n_bins  # bin index B: past our last bin B - 1


def test_relplot_ece_differs_only_through_edge_values() -> None:
    q, _ = random_case(3000, 4, seed=4, grid=True)
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=(3000, 1)) > np.cumsum(q, axis=1)).sum(axis=1)  # y ~ q: mixed gaps
    conf, correct = top_label(q, y)
    ours, theirs = m.ece(q, y), binnedECE(conf, correct, nbins=15)
    assert np.isin([0.4, 0.6, 0.8, 1.0], conf).all()  # top label of K = 4: >= 0.25
    assert abs(ours - theirs) > 1e-3
    assert ours == pytest.approx(reference_ece(conf, correct, 15, "right"), abs=TOL)
    assert theirs == pytest.approx(reference_ece(conf, correct, 15, "left"), abs=TOL)
    off_edge = ~np.isin(conf, [0.2, 0.4, 0.6, 0.8, 1.0])
    q_off, y_off = q[off_edge], y[off_edge]
    c_off, r_off = top_label(q_off, y_off)
    assert m.ece(q_off, y_off) == pytest.approx(binnedECE(c_off, r_off, nbins=15), abs=TOL)


# ---------------------------------------------------------------- properties


@settings(max_examples=100, deadline=None)
@given(cases(), st.integers(1, 30), st.sampled_from(["equal_width", "equal_mass"]))
def test_ece_bounds(case: tuple[Array, IntArray], n_bins: int, binning: m.Binning) -> None:
    q, y = case
    ece = m.ece(q, y, n_bins, binning)
    mce = m.mce(q, y, n_bins, binning)
    assert 0.0 <= ece <= 1.0
    assert ece <= mce + 1e-12 <= 1.0 + 1e-12
    assert 0.0 <= m.classwise_ece(q, y, n_bins, binning) <= 1.0
    bins = m.reliability(q, y, n_bins, binning)
    assert sum(b.count for b in bins) == len(y)
    from_bins = sum(b.count * abs(b.accuracy - b.confidence) for b in bins if b.count) / len(y)
    assert from_bins == pytest.approx(ece, abs=1e-12)
    assert 0.0 <= m.brier(q, y) <= 2.0


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_calibrated_data_has_small_ece(seed: int) -> None:
    q, y = calibrated_binary(50_000, seed)
    assert m.ece(q, y) < 0.015
    assert m.classwise_ece(q, y) < 0.015


def test_miscalibrated_data_has_large_ece() -> None:
    q, y = calibrated_binary(50_000, 0)
    sharpened = q**4 / np.sum(q**4, axis=1, keepdims=True)
    assert m.ece(sharpened, y) > 0.1


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded() -> None:
    q, y = random_case(300, 3, seed=3, grid=True)
    a = m.bootstrap_ci(q, y, n_boot=300, seed=42)
    assert a == m.bootstrap_ci(q, y, n_boot=300, seed=42)
    assert a != m.bootstrap_ci(q, y, n_boot=300, seed=43)


@pytest.mark.parametrize("k", [2, 5])
def test_bootstrap_matches_a_loop_over_resamples(k: int) -> None:
    q, y = random_case(150, k, seed=k, grid=True)
    ci = m.bootstrap_ci(q, y, n_boot=200, level=0.9, seed=5)
    idx = np.concatenate(list(m.bootstrap_indices(150, 200, 5)))
    assert idx.shape == (200, 150)
    values = [m.summary(q[rows], y[rows]) for rows in idx]
    for name in m.METRICS:
        column = np.array([v[name] for v in values])
        lo, hi = np.percentile(column[~np.isnan(column)], [5.0, 95.0])
        point = m.summary(q, y)[name]  # the interval is widened to hold the estimate
        assert ci[name] == pytest.approx((min(lo, point), max(hi, point)), abs=TOL), name


def test_bootstrap_ci_contains_point_estimate() -> None:
    q, y = random_case(1000, 4, seed=9, grid=True)
    point = m.summary(q, y)
    ci = m.bootstrap_ci(q, y)
    for name in m.METRICS:
        lo, hi = ci[name]
        assert lo <= point[name] <= hi, name


def test_bootstrap_ci_holds_a_skewed_estimate_and_stays_non_negative() -> None:
    """MCE is a max over bins: resamples put few items in a sparse bin and inflate it, so
    its percentile interval can lie above the estimate (issue 14: MCE 0.1533, [0.160, 0.650])."""
    from verbcal import datasets
    from verbcal.calibration import make_calibrator

    data = datasets.load("recorded:tweets")
    q = make_calibrator("temperature").fit(data.probs, data.y).predict_proba(data.probs)
    point = m.summary(q, data.y)
    ci = m.bootstrap_ci(q, data.y, n_boot=300)
    resamples = np.concatenate(list(m.bootstrap_indices(len(data.y), 300, 0)))
    column = np.array([m.mce(q[rows], data.y[rows]) for rows in resamples])
    assert np.percentile(column, 2.5) > point["mce"]  # the plain percentile bound misses it
    assert ci["mce"] == pytest.approx((point["mce"], np.percentile(column, 97.5)), abs=TOL)
    for name in m.METRICS:
        lo, hi = ci[name]
        assert 0.0 <= lo <= point[name] <= hi, name


def test_bootstrap_ci_lower_bound_of_a_perfect_nll_is_plain_zero() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    ci = m.bootstrap_ci(q, np.array([0, 1, 0]), metrics=["nll", "ece"], n_boot=20)
    assert ci["nll"] == (0.0, 0.0) and f"{ci['nll'][0]:.3f}" == "0.000"


def test_bootstrap_all_nan_metric() -> None:
    q = np.array([[0.3, 0.7], [0.6, 0.4]])
    ci = m.bootstrap_ci(q, np.array([1, 1]), metrics=["auroc", "accuracy"], n_boot=50)
    assert np.isnan(ci["auroc"][0]) and np.isnan(ci["auroc"][1])
    assert 0.0 <= ci["accuracy"][0] <= ci["accuracy"][1] <= 1.0


def bincount_ece(q: Array, y: IntArray, n_bins: int = 15) -> float:
    conf = q.max(axis=1)
    correct = (q.argmax(axis=1) == y).astype(np.float64)
    idx = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / len(y))


def test_ece_matches_numpy_bincount_on_a_million_rows() -> None:
    """Same value as the plain bincount ECE (speed is compared in benchmarks/, not here)."""
    q, y = random_case(1_000_000, 4, seed=0)
    assert m.ece(q, y) == pytest.approx(bincount_ece(q, y), abs=1e-9)  # no edge values


# ------------------------------------------------------------------ per band and per slice


def test_by_band_by_hand_with_values_on_the_edges() -> None:
    q = np.array([[0.6, 0.4], [0.9, 0.1], [0.55, 0.45], [0.2, 0.8], [0.8 - 1e-12, 0.2]])
    y = np.array([0, 1, 0, 1, 0])
    low, medium, high = m.by_band(q, y)
    assert (low["band"], low["lower"], low["upper"]) == ("low", 0.0, 0.6)
    assert low["n"] == 1 and low["accuracy"] == 1.0 and low["mean_confidence"] == 0.55
    # 0.6 opens the medium band; 0.8 - 1e-12 counts as on the edge 0.8: high
    assert medium["n"] == 1 and medium["mean_confidence"] == 0.6
    assert high["n"] == 3 and high["accuracy"] == pytest.approx(2 / 3)
    assert high["share"] == pytest.approx(0.6)
    assert high["gap"] == pytest.approx(np.mean([0.9, 0.8, 0.8 - 1e-12]) - 2 / 3)
    # the band's ECE is the ECE of its items
    rows = [1, 3, 4]
    assert high["ece"] == pytest.approx(m.ece(q[rows], y[rows]))
    empty = m.by_band(np.array([[0.95, 0.05]]), np.array([0]))[0]
    assert empty["n"] == 0 and np.isnan(empty["accuracy"]) and np.isnan(empty["ece"])


def test_by_slice_matches_summary_per_slice() -> None:
    rng = np.random.default_rng(8)
    q = rng.dirichlet([1, 1, 1], 90)
    y = rng.integers(0, 3, 90)
    keys: list[object] = ["en"] * 50 + ["fr"] * 30 + [None] * 10
    out = m.by_slice(q, y, keys, n_boot=50)
    assert list(out) == ["en", "fr", "(missing)"]  # largest first
    for name, rows in (("en", slice(0, 50)), ("fr", slice(50, 80)), ("(missing)", slice(80, 90))):
        entry = out[name]
        assert entry["n"] == rows.stop - rows.start
        for metric, value in m.summary(q[rows], y[rows]).items():
            assert entry[metric] == pytest.approx(value, nan_ok=True)
        assert entry["ci"] == m.bootstrap_ci(q[rows], y[rows], n_boot=50)  # type: ignore[comparison-overlap]
    with pytest.raises(ValueError, match="one entry per row"):
        m.by_slice(q, y, keys[:-1])


def proportional_rows(
    tmp_path: Path, n: int = 3000, seed: int = 0
) -> tuple[Path, list[list[Fraction]]]:
    """A JSONL file of ``n`` K = 3 rows on a 5% grid, each written as probabilities adding to
    a random sum (0.9 ... 1.2, as percentages adding to 105 would be), with labels drawn from
    the row; and the exact normalised rows (the 5% grid)."""
    rng = np.random.default_rng(seed)
    labels = ("a", "b", "c")
    lines, exact = [], []
    for i in range(n):
        counts = rng.multinomial(20, rng.dirichlet(np.ones(3)))  # units of 5%
        total = Fraction(int(rng.choice([90, 95, 100, 105, 110, 120])), 100)
        written = [Fraction(int(c), 20) * total for c in counts]  # e.g. 0.63, 0.315, 0.105
        gold = labels[int(rng.choice(3, p=counts / 20))]
        probs = {name: float(value) for name, value in zip(labels, written, strict=True)}
        lines.append(json.dumps({"id": str(i), "probs": probs, "label": gold}))
        exact.append([value / sum(written) for value in written])
    path = tmp_path / "proportional.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, exact


def test_tie_scores_rounds_to_twelve_decimals() -> None:
    assert m.TIE_DECIMALS == 12
    noisy = np.array([0.6, 63 / 105, 0.6000000000000001, 0.6 - 1e-14, 0.6 - 1e-11, np.inf])
    np.testing.assert_array_equal(m.tie_scores(noisy), [0.6, 0.6, 0.6, 0.6, 0.59999999999, np.inf])


def test_auroc_ties_rows_written_with_other_sums(tmp_path: Path) -> None:
    # the same distribution written with another sum normalises to values that differ in
    # the last bits; they are equal, so AUROC must rank them as ties
    path, exact = proportional_rows(tmp_path)
    predictions = read_predictions(path)
    q, y = predictions.probs, predictions.y
    assert len(np.unique(q)) > len(np.unique(np.round(q, 12)))  # the file does carry noise
    exact_q = np.array([[float(v) for v in row] for row in exact])  # correctly rounded fractions
    np.testing.assert_array_equal(np.round(q, 12), np.round(exact_q, 12))
    labels = [0, 1, 2]
    tied = roc_auc_score(y, np.round(q, 12), multi_class="ovr", average="macro", labels=labels)
    exact_auc = roc_auc_score(y, exact_q, multi_class="ovr", average="macro", labels=labels)
    raw = roc_auc_score(y, q, multi_class="ovr", average="macro", labels=labels)
    assert tied == pytest.approx(exact_auc, abs=1e-12)
    assert abs(raw - tied) > 1e-5  # ranking the noise apart changes the AUROC
    assert m.auroc(q, y) == pytest.approx(tied, abs=1e-12)
    assert m.summary(q, y)["auroc"] == pytest.approx(tied, abs=1e-12)
    # the bootstrap's AUROC uses the same rule: the identity resample gives the same value
    identity = np.arange(len(y))[None, :]
    assert m._boot_auroc(q, y, identity)[0] == pytest.approx(tied, abs=1e-12)
    # binary, on the first label against the rest
    binary_q = np.c_[1 - q[:, 0], q[:, 0]]
    binary_y = (y == 0).astype(np.int64)
    assert m.auroc(binary_q, binary_y) == pytest.approx(
        roc_auc_score(binary_y, np.round(q[:, 0], 12)), abs=1e-12
    )
