"""verbcal.decide.sets: by-hand sets, MAPIE's SplitConformalClassifier (prefit) on the same
data, and the coverage guarantee in a seeded simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from verbcal.decide.sets import (
    conformal_quantile,
    conformity_scores,
    coverage_by_class,
    fit_sets,
    set_summary,
)


def test_scores_by_hand() -> None:
    p = np.array([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2]])
    np.testing.assert_allclose(conformity_scores(p, "lac"), 1 - p)
    # APS: own probability plus those strictly above it
    np.testing.assert_allclose(conformity_scores(p, "aps"), [[0.5, 0.8, 1.0], [0.4, 0.4, 1.0]])
    with pytest.raises(ValueError, match="score must be one of"):
        conformity_scores(p, "raps")  # type: ignore[arg-type]


def test_quantile_rank_by_hand() -> None:
    s = np.arange(1, 10) / 10  # 9 scores 0.1 .. 0.9
    assert conformal_quantile(s, 0.2) == 0.8  # ceil(10 * 0.8) = 8th smallest
    assert conformal_quantile(s, 0.25) == 0.8  # ceil(7.5) = 8
    assert math.isinf(conformal_quantile(s, 0.05))  # ceil(9.5) = 10 > 9: every label


def test_sets_by_hand_and_summary() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    y = np.array([0, 0, 1, 0])
    sets = fit_sets(probs, y, alpha=0.4)  # gold LAC scores 0.1, 0.4, 0.3, 0.5: 3rd = 0.4
    assert sets.quantiles.tolist() == [0.4, 0.4]
    membership = sets.predict(probs)
    np.testing.assert_array_equal(membership, [[1, 0], [1, 0], [0, 1], [0, 0]])
    summary = set_summary(membership, y)
    assert summary == {
        "n": 4,
        "mean_size": 0.75,
        "singleton_rate": 0.75,
        "empty_rate": 0.25,
        "coverage": 0.75,
    }
    assert set_summary(membership)["coverage"] is None
    with pytest.raises(ValueError, match="alpha"):
        fit_sets(probs, y, alpha=1.0)


def test_mondrian_quantiles_per_class() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])
    y = np.array([0, 0, 1, 1])
    sets = fit_sets(probs, y, alpha=0.5, by_class=True)  # ceil(3 * 0.5) = 2nd of each class
    np.testing.assert_allclose(sets.quantiles, [0.2, 0.4])
    assert sets.n_calib.tolist() == [2, 2]
    assert sets.to_dict()["quantiles"] == pytest.approx([0.2, 0.4])


def dirichlet_data(
    rng: np.random.Generator, n: int, k: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Calibrated continuous probabilities: y drawn from each row's own distribution."""
    p = rng.dirichlet(np.full(k, 0.7), n)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1).astype(np.int64)
    return p, np.minimum(y, k - 1)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_lac_matches_mapie_split_conformal_prefit(alpha: float) -> None:
    base = pytest.importorskip("sklearn.base")
    classification = pytest.importorskip("mapie.classification")

    class Estimator(base.ClassifierMixin, base.BaseEstimator):  # type: ignore[misc]
        def __init__(self, k: int = 4) -> None:
            self.k = k

        def fit(self, x: NDArray[np.float64], y: NDArray[np.int64] | None = None) -> object:
            self.classes_ = np.arange(self.k)
            return self

        def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
            return np.asarray(x)

        def predict(self, x: NDArray[np.float64]) -> NDArray[np.int64]:
            return np.argmax(x, axis=1)

    rng = np.random.default_rng(int(alpha * 100))
    p_cal, y_cal = dirichlet_data(rng, 500, 4)
    p_test, _ = dirichlet_data(rng, 400, 4)
    estimator = Estimator(4).fit(p_cal, y_cal)
    mapie = classification.SplitConformalClassifier(
        estimator, confidence_level=1 - alpha, conformity_score="lac", prefit=True
    ).conformalize(p_cal, y_cal)
    _, mapie_sets = mapie.predict_set(p_test)
    ours = fit_sets(p_cal, y_cal, alpha=alpha, score="lac")
    assert ours.quantiles[0] == pytest.approx(
        float(mapie._mapie_classifier.quantiles_[0]), abs=1e-12
    )
    np.testing.assert_array_equal(ours.predict(p_test), mapie_sets[:, :, 0])


@pytest.mark.parametrize(("score", "by_class"), [("lac", False), ("aps", False), ("lac", True)])
def test_coverage_holds_in_simulation(score: str, by_class: bool) -> None:
    # 400 seeded repeats of 200 calibration and 200 test items; coverage averages to
    # between 1 - alpha and 1 - alpha + 1/(n + 1) (continuous scores, no ties)
    alpha, repeats, n = 0.1, 400, 200
    rng = np.random.default_rng([5, len(score), by_class])
    covered = np.zeros(repeats)
    per_class = np.zeros((repeats, 3))
    for r in range(repeats):
        p_cal, y_cal = dirichlet_data(rng, n, 3)
        p_test, y_test = dirichlet_data(rng, n, 3)
        sets = fit_sets(p_cal, y_cal, alpha=alpha, score=score, by_class=by_class)  # type: ignore[arg-type]
        membership = sets.predict(p_test)
        covered[r] = set_summary(membership, y_test)["coverage"]  # type: ignore[assignment]
        per_class[r] = coverage_by_class(membership, y_test)
    se = covered.std(ddof=1) / math.sqrt(repeats)
    assert covered.mean() >= 1 - alpha - 3 * se
    assert covered.mean() <= 1 - alpha + 1 / (n + 1) + 3 * se + (0.03 if by_class else 0.0)
    if by_class:
        assert np.all(np.nanmean(per_class, axis=0) >= 1 - alpha - 0.01)


def test_lac_with_too_small_alpha_gives_full_sets_and_says_so() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    sets = fit_sets(probs, np.array([0, 1]), alpha=0.1)
    assert math.isinf(sets.quantiles[0]) and sets.to_dict()["quantiles"] == [None, None]
    assert sets.predict(probs).all()
