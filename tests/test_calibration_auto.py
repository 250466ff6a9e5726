"""``auto`` (verbcal.calibration.auto): a planted overfitting candidate gets (near) zero weight.

The plant, ``memorise``, looks up each training row and returns its training labels'
frequencies (smoothed by 1e-6); a row it never saw gets a confident guess of the most
common training label. On its own training data it is nearly perfect, so an in-sample
choice would pick it; out of fold almost every row is new and its guesses cost many nats.
Cross-validation must see that: stacking gives it (near) zero weight, the 1-SE rule never
chooses it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from verbcal.calibration import AutoCalibrator, softmax
from verbcal.calibration.base import METHODS, Calibrator, register
from verbcal.calibration.rows import Array, Counts
from verbcal.metrics import nll


class Memorise(Calibrator):
    """Training rows' label frequencies, a confident majority guess for unseen rows."""

    method = "memorise"
    summary = "test plant: memorises its training rows"
    uses_floor = False
    complexity = 5  # simpler than temperature: the 1-SE rule would prefer it if it were close

    def __init__(self) -> None:
        pass

    def _fit(self, data: Counts) -> None:
        self.table_ = {
            row.tobytes(): count for row, count in zip(data.rows, data.counts, strict=True)
        }
        self.majority_ = int(np.argmax(data.counts.sum(axis=0)))

    def _predict(self, rows: Array) -> Array:
        k = rows.shape[1]
        out = np.full((len(rows), k), 1e-6)
        for i, row in enumerate(rows):
            seen = self.table_.get(row.tobytes())
            if seen is None:
                out[i, self.majority_] = 1.0
            else:
                out[i] += seen / seen.sum()
        return out / out.sum(axis=1, keepdims=True)


@pytest.fixture
def memorise() -> Iterator[str]:
    register(Memorise)
    try:
        yield Memorise.method
    finally:
        METHODS.pop(Memorise.method, None)


def overconfident(n: int = 240, seed: int = 5) -> tuple[Array, np.ndarray]:
    """Continuous (all rows distinct), over-confident distributions over 3 labels."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.2, size=(n, 3))
    truth = softmax(z)
    y = np.array([rng.choice(3, p=row) for row in truth])
    return softmax(2.0 * z), y


def test_the_plant_overfits_in_sample(memorise: str) -> None:
    """The premise: on its training data the plant beats every honest candidate."""
    probs, y = overconfident()
    plant = METHODS[memorise]().fit(probs, y)
    temperature = METHODS["temperature"]().fit(probs, y)
    assert nll(plant.predict_proba(probs), y) < 0.01
    assert nll(plant.predict_proba(probs), y) < nll(temperature.predict_proba(probs), y) / 10


def test_stacking_gives_an_overfitting_candidate_near_zero_weight(memorise: str) -> None:
    probs, y = overconfident()
    auto = AutoCalibrator(candidates=["identity", "temperature", memorise]).fit(probs, y)
    row = next(r for r in auto.cv_ if r["method"] == memorise)
    others = [r["cv_nll"] for r in auto.cv_ if r["method"] != memorise]
    assert row["cv_nll"] > 2 * max(others)  # cross-validation sees the overfit
    assert auto.weights_.get(memorise, 0.0) < 0.01  # below MIN_WEIGHT: dropped
    assert row["weight"] == auto.weights_.get(memorise, 0.0)
    assert memorise not in auto.members_
    assert sum(auto.weights_.values()) == pytest.approx(1.0)


def test_the_one_se_rule_never_chooses_an_overfitting_candidate(memorise: str) -> None:
    probs, y = overconfident()
    auto = AutoCalibrator(candidates=["identity", "temperature", memorise], rule="1se")
    auto.fit(probs, y)
    assert auto.chosen_ != memorise
    assert auto.weights_ == {auto.chosen_: 1.0}


def test_the_plant_would_win_on_in_sample_nll(memorise: str) -> None:
    """Control: scoring the same candidates in sample (no cross-validation) picks the plant,
    so the test above fails if auto ever scored candidates on the data they were fitted to."""
    probs, y = overconfident()
    in_sample = {
        spec: nll(METHODS[spec]().fit(probs, y).predict_proba(probs), y)
        for spec in ("identity", "temperature", memorise)
    }
    assert min(in_sample, key=in_sample.__getitem__) == memorise


def test_cross_validate_scores_other_candidates_on_the_same_folds_without_refitting() -> None:
    probs, y = overconfident(160)
    auto = AutoCalibrator(candidates=["identity", "temperature"], folds=4, seed=3).fit(probs, y)
    before = auto.to_dict()
    table = auto.cross_validate(probs, y, candidates=["temperature", "vector[reg=0.1]"])
    assert auto.to_dict() == before  # the fitted auto is left as it was
    alone = AutoCalibrator(candidates=["temperature", "vector[reg=0.1]"], folds=4, seed=3)
    alone.fit(probs, y)
    assert [r["method"] for r in table] == ["temperature", "vector[reg=0.1]"]
    assert [r["cv_nll"] for r in table] == [r["cv_nll"] for r in alone.cv_]
    # same folds as auto's own table: temperature scores the same in both
    own = next(r for r in auto.cv_ if r["method"] == "temperature")
    assert table[0]["cv_nll"] == own["cv_nll"] and table[0]["folds"] == own["folds"] == 4
