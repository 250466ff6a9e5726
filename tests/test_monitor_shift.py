"""Shift tests (tie handling) and the alarm policy's false-alarm control."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from verbcal.monitor import (
    SIGNALS,
    AlarmPolicy,
    confidence_groups,
    confidence_shift,
    cusum_threshold,
    label_mix_shift,
)


def test_confidence_shift_handles_ties_and_detects_a_shift() -> None:
    rng = np.random.default_rng(0)
    grid = np.array([0.6, 0.7, 0.8, 0.9, 0.95])
    ref = rng.choice(grid, 300)
    assert confidence_shift(ref, np.full(100, 0.9)) < 1e-6  # same median, other shape
    assert confidence_shift(np.full(10, 0.9), np.full(10, 0.9)) == 1.0
    edges = confidence_groups(ref)
    assert set(edges) <= set(grid)  # groups end at distinct values: ties never split
    same = [confidence_shift(ref, rng.choice(grid, 500)) for _ in range(200)]
    assert np.mean(np.array(same) < 0.05) < 0.1  # about 5 % under no shift, despite ties


def test_label_mix_shift_matches_scipy_chi_square() -> None:
    ref, win = np.array([0] * 50 + [1] * 30 + [2] * 20), np.array([0] * 20 + [1] * 30 + [2] * 50)
    table = np.array([[50, 30, 20], [20, 30, 50]])
    assert label_mix_shift(ref, win, 4) == pytest.approx(
        stats.chi2_contingency(table, correction=False)[1]
    )
    assert label_mix_shift(np.zeros(5, dtype=np.int64), np.zeros(5, dtype=np.int64), 3) == 1.0


def test_cusum_threshold_holds_its_false_alarm_rate_on_fresh_streams() -> None:
    h = cusum_threshold(20, 5, 0.05, 2.0)
    rng = np.random.default_rng(99)  # not the seed the threshold was set with
    alarms = 0
    for _ in range(2000):
        policy = AlarmPolicy(alpha=0.05 * len(SIGNALS), horizon=20)
        assert policy.threshold == pytest.approx(h)
        stat = [policy.cusum(float(x), 1.0) for x in rng.standard_normal(20)]
        alarms += any(s is not None and s > h for s in stat)
    assert alarms / 2000 == pytest.approx(0.05, abs=0.015)


def test_policy_names_what_fired_and_uses_bonferroni() -> None:
    policy = AlarmPolicy(alpha=0.05, horizon=20)
    assert policy.per_test == pytest.approx(0.05 / (len(SIGNALS) * 20))
    fired = policy.fired({"label_mix_shift": 1e-9, "confidence_shift": 0.01}, None)
    assert fired == ["label_mix_shift"]
    with pytest.raises(ValueError, match="alpha"):
        AlarmPolicy(alpha=0)


def test_label_mix_change_cusum_fires_on_a_new_mix_and_not_on_the_same_one() -> None:
    rng = np.random.default_rng(5)
    same, moved = AlarmPolicy(horizon=20), AlarmPolicy(horizon=20)
    stat_same, stat_moved = [], []
    for t in range(12):
        counts = rng.multinomial(300, [0.5, 0.3, 0.2]).astype(float)
        shifted = rng.multinomial(300, [0.3, 0.3, 0.4] if t >= 6 else [0.5, 0.3, 0.2]).astype(float)
        stat_same.append(same.change("label_mix_change", counts, 300.0))
        stat_moved.append(moved.change("label_mix_change", shifted, 300.0))
    assert stat_same[:5] == [None] * 5 and stat_moved[:5] == [None] * 5
    assert max(stat_same[5:]) < same.threshold  # type: ignore[type-var]
    assert stat_moved[6] > moved.threshold  # type: ignore[operator]
    assert moved.fired({}, None, {"label_mix_change": stat_moved[6]}) == ["label_mix_change"]


def test_bbse_contrast_is_the_label_shift_accuracy_of_bbse_weights() -> None:
    from verbcal.monitor import bbse_accuracy_contrast, bbse_weights

    conf = np.array([[0.30, 0.05, 0.02], [0.03, 0.20, 0.08], [0.02, 0.05, 0.25]])
    b = bbse_accuracy_contrast(conf)
    rng = np.random.default_rng(3)
    for _ in range(20):
        w_true = rng.uniform(0.5, 1.5, 3)
        w_true /= w_true @ conf.sum(axis=0)  # a label shift of the reference prior
        mu = conf @ w_true  # the predicted-label mix it implies
        w = bbse_weights(conf, mu)
        assert np.allclose(w, w_true)
        assert b @ mu == pytest.approx(float(np.sum(w * np.diag(conf))))


def test_contrast_and_mean_tests_hold_alpha_and_see_a_drop() -> None:
    from verbcal.monitor.shift import contrast_below_past, mean_below_past

    rng = np.random.default_rng(11)
    b = np.array([1.2, 0.4, 0.9])
    mix = np.array([0.5, 0.2, 0.3])
    p_same = [
        contrast_below_past(b, rng.multinomial(4000, mix), rng.multinomial(500, mix))
        for _ in range(2000)
    ]
    assert np.mean(np.array(p_same) < 0.05) == pytest.approx(0.05, abs=0.015)
    moved = np.array([0.4, 0.35, 0.25])  # towards the label b counts least
    assert contrast_below_past(b, rng.multinomial(4000, mix), rng.multinomial(500, moved)) < 1e-4
    # a constant b (every label as accurate) has nothing to test
    assert contrast_below_past(np.ones(3), np.array([10.0, 5, 5]), np.array([1.0, 8, 1])) == 1.0

    def summary(x: np.ndarray) -> np.ndarray:
        return np.array([len(x), x.sum(), np.sum(x * x)])

    p_mean = [
        mean_below_past(summary(rng.beta(8, 2, 4000)), summary(rng.beta(8, 2, 500)))
        for _ in range(2000)
    ]
    assert np.mean(np.array(p_mean) < 0.05) == pytest.approx(0.05, abs=0.015)
    assert mean_below_past(summary(rng.beta(8, 2, 4000)), summary(rng.beta(7, 3, 500))) < 1e-6
    assert mean_below_past(summary(rng.beta(7, 3, 4000)), summary(rng.beta(8, 2, 500))) > 0.99


def test_versus_past_pools_earlier_windows_and_restarts_on_firing() -> None:
    policy = AlarmPolicy(alpha=0.05, horizon=20)
    b = np.array([1.0, 0.5])
    conf, items = np.array([50.0, 50.0]), np.full(100, 0.8)
    first = policy.versus_past(conf, np.array([60.0, 40.0]), items, b)
    assert set(first) == {
        "confidence_vs_past",
        "label_mix_vs_past",
        "accuracy_vs_past",
        "label_shift_vs_past",
    }
    assert all(p is None for p in first.values())  # nothing pooled before the first window
    policy.pool([])
    policy.versus_past(conf, np.array([60.0, 40.0]), items, b)
    policy.pool([])
    assert policy.pooled("label_mix_vs_past").tolist() == [120.0, 40.0 * 2]  # type: ignore[union-attr]
    moved = policy.versus_past(conf, np.array([20.0, 80.0]), items, b)
    assert moved["label_mix_vs_past"] < 1e-6 and moved["label_shift_vs_past"] < 1e-6  # type: ignore[operator]
    fired = policy.fired(moved, None)
    assert fired == ["label_mix_vs_past", "label_shift_vs_past"]
    policy.pool(fired)  # the fired signals start a new pool with this window
    assert policy.pooled("label_mix_vs_past").tolist() == [20.0, 80.0]  # type: ignore[union-attr]
    assert policy.pooled("confidence_vs_past").tolist() == [150.0, 150.0]  # type: ignore[union-attr]
    again = policy.versus_past(conf, np.array([20.0, 80.0]), items, b)
    assert again["label_mix_vs_past"] == pytest.approx(1.0)  # the new regime is the baseline


def test_reply_vs_past_sees_a_change_of_the_joint_cells_the_marginals_miss() -> None:
    policy = AlarmPolicy(alpha=0.05, horizon=20)
    b = np.array([1.0, 1.0])
    items = np.full(500, 0.8)
    # cells: (label 0, low), (label 0, high), (label 1, low), (label 1, high)
    before, after = np.array([50.0, 200, 200, 50]), np.array([200.0, 50, 50, 200])
    conf_of = lambda cells: np.array([cells[0] + cells[2], cells[1] + cells[3]])  # noqa: E731
    pred_of = lambda cells: np.array([cells[0] + cells[1], cells[2] + cells[3]])  # noqa: E731
    for _ in range(3):
        policy.versus_past(conf_of(before), pred_of(before), items, b, before)
        policy.pool([])
    p = policy.versus_past(conf_of(after), pred_of(after), items, b, after)
    assert p["confidence_vs_past"] == pytest.approx(1.0)  # same marginals
    assert p["label_mix_vs_past"] == pytest.approx(1.0)
    assert policy.fired(p, None) == ["reply_vs_past"]


def test_vs_past_chi_square_merges_rare_cells_and_skips_tiny_windows() -> None:
    from verbcal.monitor.shift import PAST_MIN_ROWS, homogeneity_vs_past

    def unmerged(past: np.ndarray, window: np.ndarray) -> float:
        table = np.vstack([past, window])
        return float(stats.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)[1])

    rng = np.random.default_rng(8)
    mix = np.array([0.6, 0.3, 0.099, 0.001])  # a cell the past holds a few rows of
    past = rng.multinomial(5000, mix).astype(float)
    windows = rng.multinomial(40, mix, size=4000).astype(float)
    merged = np.array([homogeneity_vs_past(past, w) for w in windows])
    raw = np.array([unmerged(past, w) for w in windows])
    assert np.mean(merged < 1e-3) <= 0.003  # holds its level
    assert np.mean(raw < 1e-3) > 0.005  # unmerged: 5x its level and more (one rare row)
    assert homogeneity_vs_past(past, np.array([5.0, 35, 0, 0])) < 1e-4  # a real shift
    # the reference-based label-mix test merges the same way: one row of a label the
    # reference predicted twice in 100 is no shift
    ref_pred = np.array([0] * 60 + [1] * 38 + [2] * 2)
    assert label_mix_shift(ref_pred, np.array([2]), 3) > 0.05

    policy = AlarmPolicy(horizon=20)
    b, items = np.array([1.0, 0.5]), np.full(PAST_MIN_ROWS, 0.8)
    policy.versus_past(np.array([20.0, 10]), np.array([20.0, 10]), items, b)
    policy.pool([])
    tiny = policy.versus_past(np.array([0.0, 5]), np.array([0.0, 5]), items[:5], b)
    assert all(p is None for p in tiny.values())  # 5 rows: pooled, not tested
    policy.pool([])
    assert policy.pooled("label_mix_vs_past").tolist() == [20.0, 15.0]  # type: ignore[union-attr]


def test_chi2_homogeneity_is_scipys_chi_square() -> None:
    from verbcal.monitor.shift import chi2_homogeneity

    rng = np.random.default_rng(21)
    for _ in range(50):
        table = rng.integers(1, 60, (2, int(rng.integers(2, 9)))).astype(float)
        expected = stats.chi2_contingency(table, correction=False)[1]
        assert chi2_homogeneity(table) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_policy_splits_alpha_between_the_cusums_and_the_p_value_family() -> None:
    from verbcal.monitor import CUSUM_SIGNALS, P_SIGNALS, Cutoff

    assert set(P_SIGNALS) | set(CUSUM_SIGNALS) == set(SIGNALS)
    assert not set(P_SIGNALS) & set(CUSUM_SIGNALS)
    policy = AlarmPolicy(alpha=0.05, horizon=20)
    assert policy.p_share == pytest.approx(0.05 * 9 / 12)
    assert policy.bonferroni == pytest.approx(0.05 / (12 * 20))  # as before the split
    assert policy.rule_used == "bonferroni"  # no cutoff given yet
    policy.use(Cutoff(1e-3, "min-p", policy.p_share, policy.bonferroni, sims=300))
    assert policy.per_test == 1e-3 and policy.rule_used == "min-p"
    assert policy.fired({"accuracy_drop": 5e-4, "confidence_vs_past": 2e-3}, None) == [
        "accuracy_drop"
    ]
    # the CUSUM family keeps its own threshold, set for alpha / 12 per CUSUM
    assert policy.threshold == pytest.approx(cusum_threshold(20, 5, 0.05 / 12, 2.0))


def test_reply_cells_split_frequent_replies_and_keep_rare_ones_coarse() -> None:
    from verbcal.monitor.shift import reply_cells

    edges = np.array([0.7])  # confidence groups (.., 0.7], (0.7, ..)
    often_a, often_b = [0.8, 0.2], [0.9, 0.1]  # the same coarse cell: label 0, high
    rare = [[0.75 + i / 1000, 0.25 - i / 1000] for i in range(10)]  # label 0, high too
    q = np.array([often_a] * 100 + [often_b] * 100 + rare + [[0.35, 0.65]] * 10)
    cells, n_cells = reply_cells(q, edges, window_rows=50)
    # expected per window of 50 from 220 rows: 22.7 (own cells), 0.23 each (coarse)
    assert n_cells == 2 + 2 * 2
    assert len(set(cells[:100])) == 1 and len(set(cells[100:200])) == 1
    assert cells[0] != cells[100] and max(cells[0], cells[100]) < 2
    assert set(cells[200:210]) == {2 + 0 * 2 + 1}  # label 0, group above 0.7
    assert set(cells[210:]) == {2 + 1 * 2 + 0}  # label 1 at 0.65: group at or below 0.7
    # a change between the two frequent replies is invisible to the coarse cells only
    coarse, _ = reply_cells(q, edges, window_rows=1)  # nothing frequent enough
    assert set(coarse[:200]) == {1}
    empty, none = reply_cells(np.zeros((0, 2)), edges, 50)
    assert len(empty) == 0 and none == 0


def test_versus_past_pools_the_last_two_windows_against_the_rest() -> None:
    """A change that began a window ago has two windows of rows by now: the two pooled
    against the rest find what each alone misses; the p-value pays 2x for the choice."""
    from verbcal.monitor.shift import homogeneity_vs_past

    b, items = np.array([1.0, 1.0]), np.full(500, 0.8)
    conf = np.array([250.0, 250.0])
    before, after = np.array([250.0, 250.0]), np.array([228.0, 272.0])
    policy = AlarmPolicy(alpha=0.05, horizon=20)
    for _ in range(8):
        policy.versus_past(conf, before, items, b)
        policy.pool([])
    one = policy.versus_past(conf, after, items, b)
    policy.pool([])
    assert one["label_mix_vs_past"] == pytest.approx(
        2
        * min(
            homogeneity_vs_past(before * 8, after), homogeneity_vs_past(before * 7, before + after)
        )
    )
    two = policy.versus_past(conf, after, items, b)
    alone = homogeneity_vs_past(before * 8 + after, after)
    pooled = homogeneity_vs_past(before * 8, after * 2)
    assert pooled < alone / 5 and pooled < 0.05 < alone
    assert two["label_mix_vs_past"] == pytest.approx(2 * pooled)
    # with one window pooled so far there is one span, and no doubling
    fresh = AlarmPolicy()
    fresh.versus_past(conf, before, items, b)
    fresh.pool([])
    single = fresh.versus_past(conf, after, items, b)
    assert single["label_mix_vs_past"] == pytest.approx(homogeneity_vs_past(before, after))
