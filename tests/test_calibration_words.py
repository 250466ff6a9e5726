"""``words``: Beta posterior per phrase around its lexicon value, pooled in lexicon order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from verbcal import datasets
from verbcal.calibration import Calibrator, make_calibrator
from verbcal.calibration.auto import VERBAL_CANDIDATES
from verbcal.calibration.words import PRIOR_GRID, WordsCalibration, fit_levels, predict_levels
from verbcal.predictions import ReadOptions, reading


def binary(
    values: list[float], n: list[int], positives: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Rows [1 - v, v] repeated n times, with ``positives`` of them gold class 1."""
    rows, gold = [], []
    for v, count, k in zip(values, n, positives, strict=True):
        rows += [[1 - v, v]] * count
        gold += [1] * k + [0] * (count - k)
    return np.array(rows), np.array(gold)


def test_posterior_mean_per_phrase_with_a_fixed_prior() -> None:
    """In order already: each level is (k + m v) / (n + m), by hand."""
    p, y = binary([0.1, 0.5, 0.9], [10, 4, 20], [2, 2, 15])
    cal = WordsCalibration(strength=4).fit(p, y)
    levels = cal.levels()
    expected = [(2 + 0.4) / 14, (2 + 2.0) / 8, (15 + 3.6) / 24]
    np.testing.assert_allclose([lv["fitted"] for lv in levels], expected)
    np.testing.assert_allclose(cal.predict_proba(np.array([[0.9, 0.1]]))[:, 1], expected[0])


def test_pooling_keeps_the_lexicon_order_like_weighted_isotonic() -> None:
    """Posterior means out of order are pooled with weights n + m (checked against sklearn)."""
    v = np.array([0.1, 0.3, 0.7, 0.9])
    n = np.array([30.0, 5.0, 10.0, 40.0])
    k = np.array([10.0, 0.0, 3.0, 30.0])
    m = 2.0
    got = fit_levels(v, k, n, m)
    post = (k + m * v) / (n + m)
    want = IsotonicRegression().fit(v, post, sample_weight=n + m).predict(v)
    np.testing.assert_allclose(got, want)
    assert np.all(np.diff(got) >= 0)


def test_unseen_phrases_go_through_a_monotone_map() -> None:
    fv, fq = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.45, 0.7])
    probe = np.linspace(0.001, 0.999, 101)
    q = predict_levels(probe, fv, fq, slope=0.8, intercept=0.1)
    assert np.all(np.diff(q) >= -1e-15)
    np.testing.assert_allclose(predict_levels(fv, fv, fq, 0.8, 0.1), fq)
    # between neighbours: in between their values
    mid = predict_levels(np.array([0.7]), fv, fq, 0.8, 0.1)[0]
    assert 0.45 < mid < 0.7


def test_prior_by_leave_one_out_and_a_fixed_prior_round_trip(tmp_path: Path) -> None:
    p, y = binary([0.05, 0.3, 0.7, 0.95], [20, 15, 25, 40], [6, 6, 14, 30])
    cal = WordsCalibration().fit(p, y)
    params = cal.maps_[0]
    assert set(params["cv"]) == {f"{m:g}" for m in PRIOR_GRID}
    assert params["prior"] == min(PRIOR_GRID, key=lambda m: params["cv"][f"{m:g}"])
    path = tmp_path / "words.json"
    cal.save(path)
    loaded = Calibrator.load(path)
    probe = np.array([[0.5, 0.5], [0.99, 0.01], [0.3, 0.7], [0.02, 0.98]])
    np.testing.assert_array_equal(loaded.predict_proba(probe), cal.predict_proba(probe))
    assert make_calibrator("words[strength=8]").fit(p, y).maps_[0]["prior"] == 8


def test_bad_prior_is_an_error() -> None:
    p, y = binary([0.2, 0.8], [5, 5], [1, 4])
    with pytest.raises(ValueError, match="strength must be 'cv' or a number"):
        WordsCalibration(strength="lots").fit(p, y)


def test_auto_offers_words_for_verbal_data_only() -> None:
    assert "words" in VERBAL_CANDIDATES
    auto = make_calibrator("auto", reply="verbal")
    assert "words" in auto.get_params()["candidates"]
    assert make_calibrator("auto").get_params()["candidates"] is None
    own = make_calibrator("auto[rule=1se]", reply="verbal", candidates=["temperature"])
    assert own.get_params()["candidates"] == ["temperature"]


@pytest.mark.parametrize("name", sorted(datasets.JUDGES))
def test_words_learns_the_bundled_phrases(name: str) -> None:
    """Fitted on a bundled judge set, the values follow how often each phrase was right."""
    with reading(ReadOptions(source="verbal")):
        preds = datasets.load(f"recorded:{name}")
    cal = make_calibrator("words").fit(preds.probs, preds.y, labels=preds.labels)
    levels = cal.levels()
    assert np.all(np.diff([lv["fitted"] for lv in levels]) >= 0)
    q = cal.predict_proba(preds.probs)
    nll_raw = -np.mean(np.log(preds.probs[np.arange(len(preds)), preds.y]))
    nll_words = -np.mean(np.log(q[np.arange(len(preds)), preds.y]))
    assert nll_words < nll_raw
