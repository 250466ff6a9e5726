"""The bakeoff's scoring: same splits for every arm, means checked against scikit-learn,
paired bootstrap CIs of the difference to the best, alignment on common items."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from verbcal.bakeoff.score import DecisionSpec, align, score_arms, within_best
from verbcal.evaluation import repeated_splits


def data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    sharp = np.where(y == 1, rng.uniform(0.6, 0.95, n), rng.uniform(0.05, 0.4, n))
    noise = rng.uniform(0.05, 0.95, n)
    as_rows = lambda p: np.c_[1 - p, p]  # noqa: E731
    return y, as_rows(sharp), as_rows(noise)


def test_means_over_repeats_match_scikit_learn_on_the_same_splits() -> None:
    y, good, bad = data()
    scores = score_arms(
        {"good": good, "bad": bad},
        y,
        DecisionSpec(positive=1, precision=0.8),
        repeats=3,
        n_boot=50,
        method="identity",
    )
    nlls, accs, aucs = [], [], []
    for split in repeated_splits(y, 0.5, 3, 0):
        test = split.test
        nlls.append(log_loss(y[test], bad[test], labels=[0, 1]))
        accs.append(accuracy_score(y[test], bad[test].argmax(axis=1)))
        aucs.append(roc_auc_score(y[test], bad[test][:, 1]))
    arm = scores.arms["bad"]
    assert arm.means["nll"] == pytest.approx(np.mean(nlls))
    assert arm.means["nll_raw"] == pytest.approx(np.mean(nlls))  # identity: raw = calibrated
    assert arm.means["accuracy"] == pytest.approx(np.mean(accs))
    assert arm.means["auroc"] == pytest.approx(np.mean(aucs))
    assert arm.n == len(y) and len(arm.per_repeat["nll"]) == 3


def test_paired_cis_show_the_worse_arm_and_not_a_twin() -> None:
    y, good, bad = data()
    scores = score_arms(
        {"good": good, "twin": good.copy(), "bad": bad},
        y,
        DecisionSpec(positive=1, precision=0.8),
        repeats=3,
        n_boot=200,
        method="temperature",
    )
    assert scores.best["nll"] == "good" and scores.best["decision_metric"] == "good"
    assert scores.arms["good"].diff_ci["nll"] == (0.0, 0.0)
    assert scores.arms["twin"].diff_ci["nll"] == (0.0, 0.0)  # the same replies: no difference
    lo, hi = scores.arms["bad"].diff_ci["nll"]
    assert 0 < lo < hi  # worse NLL, and the CI says so
    lo, hi = scores.arms["bad"].diff_ci["decision_metric"]
    assert hi < 0  # lower recall at the precision target
    assert within_best(scores, "twin") and not within_best(scores, "bad")
    assert scores.arms["good"].decision_reachable == 1.0
    precision = scores.arms["good"].decision_precision
    assert precision is not None and precision > 0.8


def test_review_rate_is_lower_is_better() -> None:
    y, good, bad = data()
    scores = score_arms(
        {"bad": bad, "good": good},
        y,
        DecisionSpec(positive=1, precision=0.85, metric="review_rate"),
        repeats=2,
        n_boot=100,
        method="temperature",
    )
    assert scores.best["decision_metric"] == "good"
    assert (
        scores.arms["good"].means["decision_metric"] < scores.arms["bad"].means["decision_metric"]
    )


def test_align_keeps_items_usable_by_every_arm() -> None:
    nan = np.nan
    probs = {
        "a": np.array([[0.9, 0.1], [nan, nan], [0.2, 0.8], [0.5, 0.5]]),
        "b": np.array([[0.6, 0.6], [0.3, 0.7], [0.4, 0.6]]),
    }
    ids = {"a": ["x", "y", "z", "w"], "b": ["z", "x", "y"]}
    gold = {"a": np.array([0, 1, 1, 0]), "b": np.array([1, 0, 1])}
    common, y, rows, dropped = align(probs, ids, gold)
    assert common == ["x", "z"] and y.tolist() == [0, 1]
    assert rows["b"].tolist() == [[0.3, 0.7], [0.5, 0.5]]  # normalised, in a's order
    assert dropped == {"a": 2, "b": 1}
    gold["b"] = np.array([0, 0, 1])
    with pytest.raises(ValueError, match="different gold labels"):
        align(probs, ids, gold)
