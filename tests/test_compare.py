"""Repeated stratified comparison: split sizes and shares, determinism, summary statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verbcal.compare import SplitResult, compare, score_split, stratified_split, summarise
from verbcal.metrics import METRICS, summary


def labels_from_counts(counts: list[int], seed: int) -> np.ndarray:
    y = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(y).astype(np.int64)


def test_split_sizes_and_shares_exact() -> None:
    y = labels_from_counts([60, 30, 10], seed=0)
    calib, test = stratified_split(y, 0.5, np.random.default_rng(1))
    assert len(calib) == 50 and len(test) == 50
    assert np.bincount(y[calib]).tolist() == [30, 15, 5]
    assert np.bincount(y[test]).tolist() == [30, 15, 5]
    assert sorted(np.concatenate([calib, test]).tolist()) == list(range(100))
    calib, test = stratified_split(y, 20, np.random.default_rng(1))  # a count, not a fraction
    assert np.bincount(y[calib]).tolist() == [12, 6, 2]
    assert len(test) == 80
    # a small label keeps one item on each side without changing the requested size
    y = labels_from_counts([2, 10], seed=0)
    calib, test = stratified_split(y, 2, np.random.default_rng(0))
    assert np.bincount(y[calib]).tolist() == [1, 1]
    assert np.bincount(y[test]).tolist() == [1, 9]
    calib, _ = stratified_split(labels_from_counts([3, 100], seed=0), 100, np.random.default_rng(0))
    assert len(calib) == 100


@settings(max_examples=150, deadline=None)
@given(
    counts=st.lists(st.integers(2, 60), min_size=2, max_size=6),
    frac=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_properties(counts: list[int], frac: float, seed: int) -> None:
    y = labels_from_counts(counts, seed)
    n, k = len(y), len(counts)
    size = round(frac * n)
    if not k <= size <= n - k:
        return  # one item per label on each side would be impossible
    calib, test = stratified_split(y, frac, np.random.default_rng(seed))
    # exact size, disjoint and complete, sorted
    assert len(calib) == size and len(test) == n - size
    assert np.array_equal(np.sort(np.concatenate([calib, test])), np.arange(n))
    assert np.all(np.diff(calib) > 0) and np.all(np.diff(test) > 0)
    # every label on both sides; where that constraint does not bind, each label's
    # calibration count is its exact share rounded down or up
    per_label = np.bincount(y[calib], minlength=k)
    assert np.all(per_label >= 1) and np.all(per_label <= np.array(counts) - 1)
    exact = np.array(counts) * size / n
    if np.all(exact >= 1) and np.all(exact <= np.array(counts) - 1):
        assert np.all(np.abs(per_label - exact) < 1)
    # seeded: the same seed gives the same split
    again = stratified_split(y, frac, np.random.default_rng(seed))
    assert np.array_equal(again[0], calib) and np.array_equal(again[1], test)


def test_split_depends_on_the_seed_and_rejects_bad_sizes() -> None:
    y = labels_from_counts([50, 50], seed=2)
    a, _ = stratified_split(y, 0.5, np.random.default_rng(0))
    b, _ = stratified_split(y, 0.5, np.random.default_rng(1))
    assert not np.array_equal(a, b)
    for bad in (0, 100, 0.001, 150):
        with pytest.raises(ValueError, match="both sides"):
            stratified_split(y, bad, np.random.default_rng(0))


def grid_case(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.dirichlet(np.ones(k), size=n)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1), k - 1)
    p = np.round(truth**2 / (truth**2).sum(axis=1, keepdims=True) * 20) / 20
    p[p.sum(axis=1) == 0, 0] = 1.0
    return p, y.astype(np.int64)


def test_compare_is_seeded_and_scores_each_split() -> None:
    p, y = grid_case(300, 3, seed=3)
    labels = ["a", "b", "c"]
    methods = ["identity", "temperature", "histogram"]
    first = compare(p, y, labels, methods, repeats=3, seed=7)
    again = compare(p, y, labels, methods, repeats=3, seed=7)
    other = compare(p, y, labels, methods, repeats=3, seed=8)
    assert [(r.method, r.repeat) for r in first] == [(m, i) for i in range(3) for m in methods]
    assert [r.metrics for r in first] == [r.metrics for r in again]
    assert [r.metrics for r in first] != [r.metrics for r in other]
    assert all(set(r.metrics) == set(METRICS) for r in first)
    temperature = [r for r in first if r.method == "temperature"]
    assert all(r.params["temperature"] > 0 and r.params["floor"] > 0 for r in temperature)
    assert all(r.params["floor"] is None for r in first if r.method == "histogram")
    # each result is exactly the score of that method on that split's test part
    rng = np.random.default_rng(7)
    calib, test = stratified_split(y, 0.5, rng)
    normalised = p / p.sum(axis=1, keepdims=True)
    scored = score_split(normalised, y, calib, test, methods, labels)
    for method in methods:
        assert scored[method][0] == next(r.metrics for r in first if r.method == method)
    identity = scored["identity"][1].predict_proba(normalised[test])
    assert scored["identity"][0] == summary(identity, y[test])


def test_summarise_mean_and_sample_sd() -> None:
    def result(method: str, repeat: int, value: float) -> SplitResult:
        return SplitResult(method, repeat, dict.fromkeys(METRICS, value), {})

    results = [result("b", 0, 1.0), result("a", 0, 5.0), result("b", 1, 2.0), result("b", 2, 6.0)]
    results.append(SplitResult("a", 1, {**dict.fromkeys(METRICS, 7.0), "auroc": math.nan}, {}))
    rows = summarise(results)
    assert [(r["method"], r["metric"]) for r in rows] == [
        (m, metric) for m in ("b", "a") for metric in METRICS
    ]
    assert all(set(r) == {"method", "metric", "mean", "sd"} for r in rows)
    b = next(r for r in rows if r["method"] == "b" and r["metric"] == "ece")
    assert b["mean"] == 3.0
    assert b["sd"] == pytest.approx(math.sqrt(7.0), rel=1e-15)  # ddof = 1
    a_auroc = next(r for r in rows if r["method"] == "a" and r["metric"] == "auroc")
    assert (a_auroc["mean"], a_auroc["sd"]) == (5.0, 0.0)  # nan dropped, one value left
    a_nll = next(r for r in rows if r["method"] == "a" and r["metric"] == "nll")
    assert a_nll["mean"] == 6.0 and a_nll["sd"] == pytest.approx(math.sqrt(2.0), rel=1e-15)
