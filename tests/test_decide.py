"""verbcal.decide: hand-checked PR curves and thresholds, Clopper-Pearson against scipy,
selective prediction, and the threshold guarantee measured in simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy.stats import binomtest

from verbcal.decide import (
    DEFAULT_PRECISION,
    abstain_band,
    accuracy_at_coverage,
    aurc,
    candidate_ranks,
    clopper_pearson_lower,
    items_needed,
    pr_curve,
    risk_coverage,
    selective_threshold,
    threshold_for,
)

Array = NDArray[np.float64]


def binary(scores: list[float] | Array) -> Array:
    """(n, 2) probabilities whose class-1 column is ``scores``."""
    s = np.asarray(scores, dtype=np.float64)
    return np.c_[1.0 - s, s]


def blocks(*parts: tuple[float, int, int]) -> tuple[Array, NDArray[np.int64]]:
    """Binary data from (score, n items, n positives) blocks."""
    scores: list[float] = []
    y: list[int] = []
    for score, n, pos in parts:
        scores += [score] * n
        y += [1] * pos + [0] * (n - pos)
    return binary(scores), np.array(y, dtype=np.int64)


def scipy_lower(k: int, n: int, confidence: float) -> float:
    ci = binomtest(k, n, alternative="greater").proportion_ci(
        confidence_level=confidence, method="exact"
    )
    return float(ci.low)


# ------------------------------------------------------------------------------------ PR curve


def test_pr_curve_by_hand() -> None:
    probs = binary([0.3, 0.9, 0.6, 0.9, 0.8])
    y = np.array([0, 1, 1, 0, 1])
    curve = pr_curve(probs, y, 1)
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.8, 0.6, 0.3])
    np.testing.assert_array_equal(curve.n_predicted, [2, 3, 4, 5])
    np.testing.assert_array_equal(curve.true_positives, [1, 2, 3, 3])
    np.testing.assert_allclose(curve.precision, [1 / 2, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(curve.recall, [1 / 3, 2 / 3, 1, 1])
    assert curve.support == 3
    assert curve.n_operating_points == 4
    assert "4 operating points" in curve.note and "coarse grid" in curve.note
    # the other class: its own scores, its own positives
    other = pr_curve(probs, y, 0)
    np.testing.assert_allclose(other.thresholds, [0.7, 0.4, 0.2, 0.1])
    assert other.support == 2


def test_pr_curve_ties_within_float_noise_are_one_operating_point() -> None:
    from verbcal.decide import apply_threshold

    # 62 * 1.05 / 105 is 0.62 written as percentages adding to 105: float noise, one score
    probs = binary([0.62, 62 * 1.05 / 105, 0.62 - 1e-14, 0.62 - 1e-11, 0.5])
    assert len(set(probs[:, 1])) == 5  # three raw values for the one score 0.62
    curve = pr_curve(probs, np.array([1, 0, 1, 0, 1]), 1)
    # the tie rule: 12 decimals, so 0.62 - 1e-11 is a score of its own
    np.testing.assert_array_equal(curve.thresholds, [0.62, 0.61999999999, 0.5])
    np.testing.assert_array_equal(curve.n_predicted, [3, 4, 5])
    # the one rule applies a threshold to the whole group, a bare ">=" would not
    assert apply_threshold(probs[:, 1], curve.thresholds[0]).sum() == 3
    assert np.sum(probs[:, 1] >= curve.thresholds[0]) < 3


def proportional(n: int = 3000, seed: int = 1) -> tuple[Array, NDArray[np.int64], Array]:
    """K = 3 rows on a 5% grid written as probabilities adding to a random sum (0.9 ... 1.2)
    and normalised as files are; their labels; and the grid rows themselves."""
    from verbcal.predictions import from_arrays

    rng = np.random.default_rng(seed)
    grid = np.array([rng.multinomial(20, rng.dirichlet(np.ones(3))) for _ in range(n)]) / 20
    written = grid * rng.choice([0.9, 0.95, 1.05, 1.1, 1.2], size=(n, 1))
    y = np.array([rng.choice(3, p=row) for row in grid], dtype=np.int64)
    q = from_arrays(written, y, ["a", "b", "c"]).probs
    return q, y, grid


def test_rows_written_with_other_sums_tie_in_thresholds_and_sets() -> None:
    from verbcal.decide import apply_threshold, fit_sets

    q, y, grid = proportional()
    assert len(np.unique(q)) > len(np.unique(grid))  # normalising left float noise
    for cls in range(3):
        curve = pr_curve(q, y, cls)
        exact = pr_curve(grid, y, cls)
        # one operating point per grid value, with the counts of the exact grid rows
        assert curve.n_operating_points == len(np.unique(grid[:, cls]))
        np.testing.assert_array_equal(curve.thresholds, exact.thresholds)
        np.testing.assert_array_equal(curve.n_predicted, exact.n_predicted)
        np.testing.assert_array_equal(curve.true_positives, exact.true_positives)
        result = threshold_for(q, y, cls, precision=0.8)
        assert result == threshold_for(grid, y, cls, precision=0.8)
        if result.threshold is not None:
            np.testing.assert_array_equal(
                apply_threshold(q[:, cls], result.threshold),
                apply_threshold(grid[:, cls], result.threshold),
            )
    rc, rc_exact = risk_coverage(q, y), risk_coverage(grid, y)
    np.testing.assert_array_equal(rc.n_kept, rc_exact.n_kept)
    for score in ("lac", "aps"):
        sets = fit_sets(q[:1500], y[:1500], alpha=0.2, score=score)  # type: ignore[arg-type]
        exact_sets = fit_sets(grid[:1500], y[:1500], alpha=0.2, score=score)  # type: ignore[arg-type]
        np.testing.assert_array_equal(sets.quantiles, exact_sets.quantiles)
        np.testing.assert_array_equal(sets.predict(q[1500:]), exact_sets.predict(grid[1500:]))


def test_pr_curve_many_points_no_coarse_warning() -> None:
    rng = np.random.default_rng(0)
    curve = pr_curve(binary(rng.random(100)), rng.integers(0, 2, 100), 1)
    assert curve.n_operating_points == 100 and "coarse" not in curve.note


@pytest.mark.parametrize(
    ("probs", "y", "cls", "match"),
    [
        (np.ones(3), np.zeros(3, dtype=int), 0, "2-d"),
        (binary([0.5, 0.5]), np.array([0, 1, 1]), 0, "shape"),
        (binary([0.5, 0.5]), np.array([0.0, 1.0]), 0, "integer"),
        (binary([0.5, 0.5]), np.array([0, 2]), 0, r"\[0, 2\)"),
        (binary([0.5, np.nan]), np.array([0, 1]), 0, "NaN"),
        (binary([0.5, 0.5]), np.array([0, 1]), 2, "class index"),
    ],
)
def test_bad_inputs_raise(probs: Array, y: NDArray[np.int64], cls: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pr_curve(probs, y, cls)


# ----------------------------------------------------------------------------- Clopper-Pearson


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_clopper_pearson_matches_scipy_binomtest(confidence: float) -> None:
    cases = [(k, n) for n in (1, 2, 5, 17, 59, 200, 1000) for k in {0, 1, n // 3, n - 1, n}]
    ks, ns = np.array(cases).T
    ours = clopper_pearson_lower(ks, ns, confidence)
    ref = [scipy_lower(int(k), int(n), confidence) for k, n in cases]
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_clopper_pearson_edge_values() -> None:
    low = clopper_pearson_lower([0, 5, 0], [10, 5, 0], 0.95)
    assert low[0] == 0.0
    assert low[1] == pytest.approx(0.05 ** (1 / 5))  # all successes: (1 - c)^(1/n)
    assert np.isnan(low[2])
    with pytest.raises(ValueError, match="confidence"):
        clopper_pearson_lower([1], [2], 1.0)


def test_items_needed_is_the_first_n_whose_all_correct_bound_reaches_the_target() -> None:
    for target, confidence in [(0.95, 0.95), (0.9, 0.95), (0.99, 0.9), (0.8, 0.99)]:
        n = items_needed(target, confidence)
        assert clopper_pearson_lower(n, n, confidence) >= target
        assert clopper_pearson_lower(n - 1, n - 1, confidence) < target
    assert items_needed(0.95, 0.95) == 59


# ------------------------------------------------------------------------------ threshold_for


def test_candidate_ranks_are_geometric_and_each_can_pass() -> None:
    ranks = candidate_ranks(200, 0.95)
    np.testing.assert_array_equal(ranks, [200, 141, 100])
    delta_each = 0.05 / len(ranks)
    # the last rank leaves enough items for an all-correct pass; one more rank would not
    assert ranks[-1] - 1 >= items_needed(0.95, 1 - delta_each)
    assert items_needed(0.95, 1 - 0.05 / 4) > 71 - 1
    np.testing.assert_array_equal(
        candidate_ranks(1000, 0.9), [1000, 707, 500, 354, 250, 177, 125, 88, 62]
    )
    assert list(candidate_ranks(10, 0.95)) == [10]  # too few items: one test, which will fail
    with pytest.raises(ValueError, match="ratio"):
        candidate_ranks(100, 0.9, ratio=1.0)


def test_precision_threshold_by_hand() -> None:
    # n = 200: ranks 200, 141, 100, each tested at confidence 1 - 0.05 / 3
    # rank 141 falls in the 0.5 block: above it, 100 items at 0.9, all positive
    probs, y = blocks((0.9, 100, 100), (0.5, 50, 25), (0.1, 50, 0))
    result = threshold_for(probs, y, 1, precision=0.95)
    c = 1 - 0.05 / 3
    assert result.reachable and result.metric == "precision" and result.procedure == "ltt-ranks"
    assert result.n_tests == 3 and result.test_confidence == pytest.approx(c)
    assert result.above == 0.5 and result.threshold is not None
    assert 0.5 < result.threshold < 0.5 + 1e-8  # the rule is P > 0.5
    assert result.precision == 1.0
    assert result.precision_lower_bound == pytest.approx((1 - c) ** (1 / 100))
    assert result.recall == pytest.approx(100 / 125)
    assert result.recall_lower_bound == pytest.approx(scipy_lower(100, 125, c))
    assert result.support == 125 and result.n_predicted == 100 and result.true_positives == 100
    assert result.n_operating_points == 3
    # a lower target: rank 200 (above 0.1: 125 of 150) passes iff its bound reaches it
    lower = threshold_for(probs, y, 1, precision=0.7)
    assert lower.above == 0.1 and lower.precision == pytest.approx(125 / 150)
    assert scipy_lower(125, 150, lower.test_confidence) >= 0.7
    assert lower.precision_lower_bound == pytest.approx(
        scipy_lower(125, 150, lower.test_confidence)
    )
    assert lower.recall == 1.0


def test_precision_threshold_takes_the_lowest_passing_rank() -> None:
    # the top block fails alone (5 of 10), pooled with the 0.9 block it passes (205 of 210)
    probs, y = blocks((0.95, 10, 5), (0.9, 200, 200), (0.4, 100, 10))
    result = threshold_for(probs, y, 1, precision=0.9)
    assert result.n_tests == 6
    assert scipy_lower(205, 210, result.test_confidence) >= 0.9
    assert scipy_lower(215, 310, result.test_confidence) < 0.9
    assert result.above == 0.4 and result.precision == pytest.approx(205 / 210)


def test_pointwise_procedure_is_kept_for_comparison() -> None:
    probs, y = blocks((0.9, 100, 100), (0.5, 50, 25), (0.1, 50, 0))
    result = threshold_for(probs, y, 1, precision=0.95, procedure="pointwise")
    assert result.procedure == "pointwise" and result.threshold == 0.9
    assert result.precision_lower_bound == pytest.approx(0.05 ** (1 / 100))
    assert "not corrected for the scan" in result.note
    with pytest.raises(ValueError, match="procedure"):
        threshold_for(probs, y, 1, procedure="holm")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "procedure"),
    [
        ({"precision": 0.8}, "pointwise"),
        ({"recall": 0.5}, "ltt-ranks"),
        ({"recall": 0.5}, "pointwise"),
    ],
)
def test_test_confidence_is_the_requested_confidence_without_a_scan_correction(
    target: dict[str, float], procedure: str
) -> None:
    probs, y = blocks((0.9, 100, 100), (0.5, 50, 25), (0.1, 50, 0))
    result = threshold_for(probs, y, 1, confidence=0.6, procedure=procedure, **target)  # type: ignore[arg-type]
    assert result.test_confidence == 0.6  # was the dataclass default 0.95
    k, m = result.true_positives, result.n_predicted
    assert result.precision_lower_bound == pytest.approx(scipy_lower(k, m, 0.6))


def test_the_bound_is_stricter_than_the_point_estimate() -> None:
    # 40 items at 0.9, 39 positive: point precision 0.975 >= 0.95, bound 0.887 < 0.95
    probs, y = blocks((0.9, 40, 39), (0.3, 60, 10))
    result = threshold_for(probs, y, 1, precision=0.95)
    assert not result.reachable
    assert result.threshold is None
    assert result.precision == pytest.approx(39 / 40)  # the closest point, for information
    assert result.precision_lower_bound == pytest.approx(
        scipy_lower(39, 40, result.test_confidence)
    )
    assert "no threshold reaches precision 0.95" in result.note
    assert "label more items" in result.note and "candidate ranks" in result.note
    # a lower target makes the same data enough
    assert threshold_for(probs, y, 1, precision=0.85).reachable


def test_unreachable_when_the_class_never_occurs() -> None:
    probs, y = blocks((0.9, 10, 0), (0.2, 10, 0))
    result = threshold_for(probs, y, 1, precision=0.9)
    assert not result.reachable and result.support == 0
    assert result.precision_lower_bound == 0.0


def test_recall_threshold_by_hand() -> None:
    # 100 positives: 60 at 0.9, 35 at 0.6, 5 at 0.2; negatives 50 at 0.6, 50 at 0.1
    probs, y = blocks((0.9, 60, 60), (0.6, 85, 35), (0.2, 5, 5), (0.1, 50, 0))
    result = threshold_for(probs, y, 1, recall=0.8)
    assert scipy_lower(60, 100, 0.95) < 0.8 <= scipy_lower(95, 100, 0.95)
    assert result.reachable and result.metric == "recall"
    assert result.threshold == 0.6  # the largest threshold whose recall bound passes
    assert result.recall == pytest.approx(0.95)
    assert result.recall_lower_bound == pytest.approx(scipy_lower(95, 100, 0.95))
    assert result.precision == pytest.approx(95 / 145)
    assert result.precision_lower_bound == pytest.approx(scipy_lower(95, 145, 0.95))
    # with recall 1 needed the bound says 100 positives are not enough for 0.99
    strict = threshold_for(probs, y, 1, recall=0.99)
    assert not strict.reachable
    assert "label more items of this class" in strict.note


def test_recall_unreachable_with_few_positives_and_undefined_without() -> None:
    probs, y = blocks((0.9, 20, 20), (0.1, 80, 0))
    result = threshold_for(probs, y, 1, recall=0.9)  # best bound 0.05^(1/20) = 0.861
    assert not result.reachable and result.threshold is None
    assert result.recall_lower_bound == pytest.approx(0.05 ** (1 / 20))
    assert "20 items" in result.note and "at least 29" in result.note
    with pytest.raises(ValueError, match="recall is undefined"):
        threshold_for(*blocks((0.9, 5, 0)), 1, recall=0.5)


def test_threshold_for_arguments() -> None:
    probs, y = blocks((0.9, 100, 100), (0.2, 10, 0))
    assert threshold_for(probs, y, 1).target == DEFAULT_PRECISION == 0.9  # one default everywhere
    with pytest.raises(ValueError, match="not both"):
        threshold_for(probs, y, 1, precision=0.9, recall=0.9)
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            threshold_for(probs, y, 1, precision=bad)
        with pytest.raises(ValueError, match="confidence"):
            threshold_for(probs, y, 1, confidence=bad)


def test_to_dict_is_json_ready_with_the_promised_keys() -> None:
    probs, y = blocks((0.9, 100, 100), (0.2, 10, 0))
    for result in (threshold_for(probs, y, 1), threshold_for(probs, y, 1, precision=0.999)):
        d = json.loads(json.dumps(result.to_dict()))
        assert {
            "threshold",
            "precision",
            "precision_lower_bound",
            "recall",
            "support",
            "reachable",
        } <= set(d)
    assert d["reachable"] is False and d["threshold"] is None


# ------------------------------------------------------------------------ selective prediction


def selective_data() -> tuple[Array, NDArray[np.int64]]:
    # confidences 0.9 (correct), 0.9 (wrong), 0.8 (correct), 0.7 (wrong)
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.7, 0.3]])
    return probs, np.array([0, 0, 1, 1])


def test_risk_coverage_by_hand_keeps_ties_together() -> None:
    rc = risk_coverage(*selective_data())
    np.testing.assert_allclose(rc.thresholds, [0.9, 0.8, 0.7])
    np.testing.assert_allclose(rc.coverage, [0.5, 0.75, 1.0])
    np.testing.assert_allclose(rc.risk, [0.5, 1 / 3, 0.5])
    np.testing.assert_array_equal(rc.n_kept, [2, 3, 4])
    assert rc.n_operating_points == 3
    assert aurc(*selective_data()) == pytest.approx(0.5 * 0.5 + 0.25 / 3 + 0.25 * 0.5)


def test_aurc_without_ties_is_the_mean_selective_risk() -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), 300)
    y = rng.integers(0, 3, 300)
    order = np.argsort(-probs.max(axis=1))
    wrong = (probs.argmax(axis=1) != y)[order]
    expected = np.mean(np.cumsum(wrong) / np.arange(1, 301))
    assert aurc(probs, y) == pytest.approx(expected)
    # a perfect ranking (errors last) beats the reverse ranking
    assert aurc(probs, y) >= 0


def test_accuracy_at_coverage_shares_a_tie_out_evenly() -> None:
    probs, y = selective_data()
    assert accuracy_at_coverage(probs, y, 0.25) == pytest.approx(0.5)  # 1 of the tied pair
    assert accuracy_at_coverage(probs, y, 0.5) == pytest.approx(0.5)
    assert accuracy_at_coverage(probs, y, 0.75) == pytest.approx(2 / 3)
    assert accuracy_at_coverage(probs, y, 1.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="coverage"):
        accuracy_at_coverage(probs, y, 0.0)


def test_accuracy_at_coverage_equals_random_tie_breaking_on_average() -> None:
    rng = np.random.default_rng(5)
    probs = np.round(rng.dirichlet(np.ones(3), 200) * 10) / 10  # heavy ties
    probs[:, 0] += 1e-3 * rng.integers(0, 2, 200)  # break argmax ties, keep confidence ties
    y = rng.integers(0, 3, 200)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    keep = 130
    draws = []
    for _ in range(2000):
        order = np.lexsort((rng.random(200), -conf))
        draws.append(correct[order[:keep]].mean())
    assert accuracy_at_coverage(probs, y, keep / 200) == pytest.approx(np.mean(draws), abs=2e-3)


def test_selective_threshold_by_hand() -> None:
    # 100 items at confidence 0.95 all correct, 100 at 0.6 with 50 correct
    probs = np.r_[np.tile([0.95, 0.05], (100, 1)), np.tile([0.6, 0.4], (100, 1))]
    y = np.r_[np.zeros(100), np.zeros(50), np.ones(50)].astype(np.int64)
    result = selective_threshold(probs, y, accuracy=0.9)
    assert result.reachable and result.threshold == 0.95
    assert result.coverage == 0.5 and result.n_kept == 100 and result.accuracy == 1.0
    assert result.accuracy_lower_bound == pytest.approx(0.05 ** (1 / 100))
    loose = selective_threshold(probs, y, accuracy=0.65)
    assert loose.threshold == 0.6 and loose.coverage == 1.0
    assert loose.accuracy_lower_bound == pytest.approx(scipy_lower(150, 200, 0.95))
    strict = selective_threshold(probs, y, accuracy=0.99)
    assert not strict.reachable and strict.threshold is None
    assert "no confidence threshold reaches accuracy 0.99" in strict.note
    assert "label more items" in strict.note
    assert json.loads(json.dumps(strict.to_dict()))["reachable"] is False


# -------------------------------------------------------------------- the guarantee, simulated

REPEATS, N_CALIB, N_TEST = 400, 300, 5000
TARGET, CONFIDENCE = 0.9, 0.95
MAX_FAIL = 0.08  # 5% nominal plus binomial slack: sd of a 5% rate over 400 repeats is 1.1%


SCENARIOS = {
    # name: (a of the Beta(a, 1) scores, power g in P(y = 1 | s) = s^g)
    "calibrated": (4.0, 1.0),
    "overconfident": (6.0, 2.0),
    "underconfident": (4.0, 0.5),
}


def simulate(
    rng: np.random.Generator, shape: tuple[int, int], scenario: str, grid: bool
) -> tuple[Array, NDArray[np.bool_]]:
    """Scores s = P(class 1) ~ Beta(a, 1) and labels with P(y = 1 | s) = s^g (g = 1: calibrated)."""
    a, power = SCENARIOS[scenario]
    s = rng.beta(a, 1.0, shape)
    if grid:  # a verbalized 0.05 grid: few operating points
        s = np.round(s * 20) / 20
    return s, rng.random(shape) < s**power


def realised_precision(test_s: Array, test_y: NDArray[np.bool_], t: Array) -> Array:
    """Precision on each repeat's fresh test set at its threshold (nan where none chosen)."""
    chosen = test_s >= np.where(np.isnan(t), np.inf, t)[:, None]
    kept = chosen.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(kept > 0, (chosen & test_y).sum(axis=1) / kept, np.nan)


def realised_recall(test_s: Array, test_y: NDArray[np.bool_], t: Array) -> Array:
    chosen = test_s >= np.where(np.isnan(t), np.inf, t)[:, None]
    return (chosen & test_y).sum(axis=1) / test_y.sum(axis=1)


@pytest.mark.parametrize("scenario", ["calibrated", "overconfident"])
def test_recall_guarantee_holds_in_simulation(scenario: str) -> None:
    rng = np.random.default_rng([7, len(scenario)])
    cal_s, cal_y = simulate(rng, (REPEATS, N_CALIB), scenario, grid=False)
    test_s, test_y = simulate(rng, (REPEATS, N_TEST), scenario, grid=False)
    bound_t = np.full(REPEATS, np.nan)
    naive_t = np.full(REPEATS, np.nan)
    for r in range(REPEATS):
        y = cal_y[r].astype(np.int64)
        result = threshold_for(binary(cal_s[r]), y, 1, recall=TARGET, confidence=CONFIDENCE)
        bound_t[r] = np.nan if result.threshold is None else result.threshold
        curve = pr_curve(binary(cal_s[r]), y, 1)
        naive_t[r] = curve.thresholds[np.flatnonzero(curve.recall >= TARGET)[0]]
    bound_fail = np.mean(~np.isnan(bound_t) & (realised_recall(test_s, test_y, bound_t) < TARGET))
    naive_fail = np.mean(realised_recall(test_s, test_y, naive_t) < TARGET)
    assert np.mean(~np.isnan(bound_t)) >= 0.95
    assert bound_fail <= MAX_FAIL
    assert naive_fail >= 0.25


def test_selective_guarantee_holds_in_simulation() -> None:
    rng = np.random.default_rng(11)
    cal_s, cal_y = simulate(rng, (REPEATS, N_CALIB), "overconfident", grid=False)
    test_s, test_y = simulate(rng, (REPEATS, N_TEST), "overconfident", grid=False)
    # binary: confidence max(s, 1 - s), correct when the argmax matches
    fails = 0
    claimed = 0
    test_conf = np.maximum(test_s, 1 - test_s)
    test_correct = (test_s >= 0.5) == test_y
    for r in range(REPEATS):
        probs = binary(cal_s[r])
        result = selective_threshold(probs, cal_y[r].astype(np.int64), accuracy=0.85)
        if result.threshold is None:
            continue
        claimed += 1
        kept = test_conf[r] >= result.threshold
        fails += test_correct[r][kept].mean() < 0.85
    assert claimed >= 0.75 * REPEATS
    assert fails / REPEATS <= MAX_FAIL


# ---------------------------------------------------------------------------- abstain band


def test_abstain_band_by_hand() -> None:
    # 100 sure positives at 0.95, 100 sure negatives at 0.05, 100 coin flips at 0.5
    probs, y = blocks((0.95, 100, 100), (0.5, 100, 50), (0.05, 100, 0))
    band = abstain_band(probs, y, 1, precision=0.9)
    assert band.accept.above == 0.5 and band.upper is not None and 0.5 < band.upper < 0.51
    assert band.lower is not None and 0.49 < band.lower < 0.5  # reject when P < 0.5
    np.testing.assert_array_equal(band.decide(binary([0.95, 0.5, 0.05])), [1, -1, 0])
    assert band.abstain_rate == pytest.approx(1 / 3)
    on_data = band.evaluate(probs, y)
    assert on_data["accept_precision"] == 1.0 and on_data["reject_precision"] == 1.0
    assert on_data["accepted"] == on_data["rejected"] == 100
    assert json.loads(json.dumps(band.to_dict()))["abstain_rate"] == pytest.approx(1 / 3)
    # too few items: neither side decides, everything is abstained
    few = abstain_band(*blocks((0.95, 10, 10), (0.05, 10, 0)), 1, precision=0.9)
    assert few.upper is None and few.lower is None and few.abstain_rate == 1.0


def test_abstain_band_never_overlaps_where_both_sides_once_reached_across() -> None:
    # 1000 sure positives at 0.95, 1000 sure negatives at 0.05, 40 coin flips at 0.5: each
    # side alone passes its lowest rank ("P > 0.05", "P < 0.95"), and the two rules used to
    # overlap (upper 0.05, lower 0.95): the coin flips were accepted, nothing abstained
    probs, y = blocks((0.95, 1000, 1000), (0.5, 40, 20), (0.05, 1000, 0))
    alone = threshold_for(probs, y, 1, precision=0.95)
    assert alone.above == 0.05  # the accept side alone reaches into the coin flips
    band = abstain_band(probs, y, 1, precision=0.95)
    assert band.upper is not None and band.lower is not None and band.lower < band.upper
    assert band.accept.above == 0.5 and band.reject.above == 0.5  # accept P > 0.5, reject P < 0.5
    np.testing.assert_array_equal(band.decide(binary([0.95, 0.5, 0.05])), [1, -1, 0])
    assert band.abstain_rate == pytest.approx(40 / 2040)
    assert "accept when P > 0.5; reject when P < 0.5" in band.note


@st.composite
def band_cases(draw: st.DrawFn) -> tuple[Array, NDArray[np.int64], float, float]:
    n = draw(st.integers(2, 400))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    grid = draw(st.sampled_from([0, 2, 10, 20, 100]))  # 0: continuous scores
    s = rng.random(n) ** draw(st.sampled_from([0.3, 1.0, 3.0]))
    if grid:
        s = np.round(s * grid) / grid
    labels = draw(st.sampled_from(["calibrated", "random", "inverted", "coin-middle"]))
    if labels == "calibrated":
        y = rng.random(n) < s
    elif labels == "random":
        y = rng.random(n) < 0.5
    elif labels == "inverted":
        y = rng.random(n) < 1 - s
    else:  # sure at the ends, coin flips in the middle
        y = np.where(np.abs(s - 0.5) < 0.2, rng.random(n) < 0.5, s > 0.5)
    target = draw(st.floats(0.3, 0.99))
    confidence = draw(st.floats(0.5, 0.99))
    return binary(s), y.astype(np.int64), target, confidence


@settings(max_examples=150, deadline=None)
@given(band_cases())
def test_abstain_band_properties(case: tuple[Array, NDArray[np.int64], float, float]) -> None:
    from verbcal.decide import apply_threshold

    probs, y, target, confidence = case
    band = abstain_band(probs, y, 1, precision=target, confidence=confidence)
    s = probs[:, 1]
    # 1. the two rules never meet: lower < upper, and on any score at most one side decides
    if band.upper is not None and band.lower is not None:
        assert band.lower < band.upper
        every = np.r_[np.linspace(0.0, 1.0, 1001), s, s + 1e-15, s - 1e-15]
        accepted = apply_threshold(every, band.upper)
        rejected = apply_threshold(1.0 - every, 1.0 - band.lower)
        assert not np.any(accepted & rejected)
    # 2. each deciding side passed its own Learn-then-Test rank test, and decides exactly
    #    the items its result counts
    decision = band.decide(probs)
    for side, code, positive in ((band.accept, 1, y == 1), (band.reject, 0, y != 1)):
        assert (side.threshold is not None) == side.reachable
        if side.reachable:
            assert side.procedure == "ltt-ranks" and side.precision_lower_bound is not None
            assert side.precision_lower_bound >= target
            assert side.test_confidence == pytest.approx(1 - (1 - confidence) / side.n_tests)
            assert int(np.sum(decision == code)) == side.n_predicted
            assert int(np.sum(positive[decision == code])) == side.true_positives
        else:
            assert not np.any(decision == code)
    assert band.abstain_rate == pytest.approx(float(np.mean(decision == -1)))
    # 3. the band decides at least as many items as either side alone would
    decided = int(np.sum(decision != -1))
    alone_accept = threshold_for(probs, y, 1, precision=target, confidence=confidence)
    flipped = np.c_[s, 1 - s]
    alone_reject = threshold_for(
        flipped, (y != 1).astype(np.int64), 1, precision=target, confidence=confidence
    )
    for alone in (alone_accept, alone_reject):
        if alone.reachable:
            assert decided >= alone.n_predicted


def test_abstain_band_decides_by_the_one_rule() -> None:
    import dataclasses

    from verbcal.decide import apply_threshold
    from verbcal.predictions import from_arrays

    probs, y = blocks((0.95, 100, 100), (0.5, 100, 50), (0.05, 100, 0))
    band = dataclasses.replace(abstain_band(probs, y, 1, precision=0.9), upper=0.9, lower=0.1)
    # 0.9 and 0.1 written with the sums 1.05 and 0.7 normalise to 0.8999999999999999 and
    # 0.10000000000000002: tied with the thresholds, so accepted and rejected
    noisy = from_arrays([[0.105, 0.945], [0.63, 0.07], [0.5, 0.5]], None, ["no", "yes"]).probs
    assert noisy[0, 1] < 0.9 and noisy[1, 1] > 0.1
    np.testing.assert_array_equal(band.decide(noisy), [1, 0, -1])
    # on any scores, decide is apply_threshold on each side
    scores = np.r_[np.linspace(0, 1, 201), noisy[:, 1]]
    decided = band.decide(binary(scores))
    np.testing.assert_array_equal(decided == 1, apply_threshold(scores, 0.9))
    np.testing.assert_array_equal(decided == 0, apply_threshold(1 - scores, 0.9))


@pytest.mark.slow
def test_abstain_band_each_side_keeps_its_guarantee_in_simulation() -> None:
    # s ~ U(0, 1) on a 0.001 grid, P(y = 1 | s) = s: precision above v is (1 + v) / 2, of
    # "not 1" below w is 1 - w / 2; the 0.85 target holds exactly for v >= 0.7 and w <= 0.3
    rng = np.random.default_rng(12)
    repeats, limit = 300, 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)
    bad_accept = bad_reject = decided = 0
    for _ in range(repeats):
        s = np.floor(rng.random(1000) * 1000) / 1000
        y = (rng.random(1000) < s).astype(np.int64)
        band = abstain_band(binary(s), y, 1, precision=0.85)
        if band.upper is not None:  # rule: s > above, on the 0.001 grid
            v = band.accept.above
            assert v is not None
            bad_accept += (1 + (np.floor(v * 1000 + 1e-6) + 1) / 1000) / 2 < 0.85
            decided += 1
        if band.lower is not None:  # rule: s < 1 - above of the flipped score
            w = np.ceil(band.lower * 1000 - 1e-6) / 1000
            bad_reject += 1 - w / 2 < 0.85
    assert bad_accept / repeats <= limit and bad_reject / repeats <= limit
    assert decided >= 0.5 * repeats  # not vacuous


def test_apply_threshold_counts_float_noise_as_tied() -> None:
    from verbcal.decide import TIE_STEP, apply_threshold

    scores = np.array([0.62, 0.6200000000000001, 0.61999999999999994, 0.61, 0.9])
    assert apply_threshold(scores, 0.6200000000000001).tolist() == [1, 1, 1, 0, 1]
    assert apply_threshold(scores, 0.62).tolist() == [1, 1, 1, 0, 1]
    # "score > v" is the threshold v + TIE_STEP: above v only, float noise of v excluded
    assert apply_threshold(scores, 0.62 + TIE_STEP).tolist() == [0, 0, 0, 0, 1]
    assert not apply_threshold(scores, 0.9 + TIE_STEP).any()
