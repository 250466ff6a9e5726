"""The evaluation core (verbcal.evaluation): splits, fit-on-calibration-only, typed results,
paired differences checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from verbcal.calibration import make_calibrator, softmax
from verbcal.evaluation import (
    Split,
    check_split,
    evaluate_split,
    evaluate_splits,
    fit_methods,
    keyed_split,
    paired_bootstrap,
    repeated_splits,
    split_rng,
    stratified_split,
)
from verbcal.metrics import METRICS, nll, summary

LABELS = ("a", "b", "c")


def data(n: int = 300, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Over-confident distributions on a 0.05 grid (as LLMs write them), zeros included."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.3, size=(n, 3))
    truth = softmax(z)
    y = np.array([rng.choice(3, p=row) for row in truth], dtype=np.int64)
    sharp = softmax(2.5 * z)
    grid = np.round(sharp * 20) / 20
    grid[grid.sum(axis=1) == 0, 0] = 1.0
    return grid, y


def test_repeated_splits_are_the_seeded_sequence_of_stratified_splits() -> None:
    _, y = data()
    splits = repeated_splits(y, 0.5, 3, seed=7)
    rng = np.random.default_rng(7)
    for r, split in enumerate(splits):
        calib, test = stratified_split(y, 0.5, rng)
        assert split.repeat == r
        np.testing.assert_array_equal(split.calib, calib)
        np.testing.assert_array_equal(split.test, test)
        assert not set(split.calib.tolist()) & set(split.test.tolist())
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        repeated_splits(y, 0.5, 0, seed=0)


def test_keyed_split_depends_only_on_its_key() -> None:
    _, y = data()
    one = keyed_split(y, 50, 0, "tweets", 4)
    again = keyed_split(y, 50, 0, "tweets", 4)
    other = keyed_split(y, 50, 0, "tweets", 5)
    np.testing.assert_array_equal(one.calib, again.calib)
    assert not np.array_equal(one.calib, other.calib)
    calib, _ = stratified_split(y, 50, split_rng(0, "tweets", 50, 4))
    np.testing.assert_array_equal(one.calib, calib)
    assert len(one.calib) == 50 and len(one.test) == len(y) - 50


def test_check_split_names_the_label_that_cannot_be_split() -> None:
    y = np.array([0] * 20 + [1], dtype=np.int64)
    with pytest.raises(ValueError, match="label 'b' has only 1 labelled item"):
        check_split(y, 0.5, ["a", "b"])


def test_every_method_is_fitted_on_the_calibration_part_only_and_scored_on_the_test_part() -> None:
    probs, y = data()
    split = repeated_splits(y, 0.4, 1, seed=1)[0]
    scores = evaluate_split(probs, y, split, ["identity", "temperature", "vector"], labels=LABELS)
    assert [s.method for s in scores] == ["identity", "temperature", "vector"]
    for score in scores:
        # the fit saw exactly the calibration items ...
        assert score.calibrator.fit_info["n"] == len(split.calib)
        alone = make_calibrator(score.method).fit(probs[split.calib], y[split.calib])
        q = alone.predict_proba(probs[split.test])
        # ... and the scores are the metrics of its predictions on the test items
        np.testing.assert_array_equal(score.q_test, q)
        assert score.metrics == summary(q, y[split.test])
        assert set(score.metrics) == set(METRICS)
        assert score.ci is None


def test_shared_floors_equal_separate_fits_and_still_say_fitted() -> None:
    probs, y = data()
    methods = ["temperature", "temperature[floor=fit]", "temperature[mode=mix]"]
    shared = fit_methods(methods, probs, y)
    for name, calibrator in shared.items():
        alone = make_calibrator(name).fit(probs, y)
        assert calibrator.floor_ == alone.floor_
        assert calibrator.state == alone.state
        assert calibrator.floor_is_fitted and calibrator.get_params() == alone.get_params()
        np.testing.assert_array_equal(calibrator.predict_proba(probs), alone.predict_proba(probs))


def test_prefitted_calibrators_are_used_as_given() -> None:
    probs, y = data()
    split = repeated_splits(y, 0.5, 1, seed=0)[0]
    given = make_calibrator("temperature[floor=1e-3]").fit(probs[split.calib], y[split.calib])
    scores = evaluate_split(
        probs, y, split, ["identity", "temperature[floor=1e-3]"],
        prefitted={"temperature[floor=1e-3]": given},
    )  # fmt: skip
    assert scores[1].calibrator is given


def test_evaluation_summary_and_paired_differences_over_splits() -> None:
    probs, y = data()
    splits = repeated_splits(y, 0.5, 4, seed=3)
    seen: list[int] = []
    ev = evaluate_splits(
        probs, y, splits, ["identity", "temperature"], on_split=lambda s, _: seen.append(s.repeat)
    )
    assert seen == [0, 1, 2, 3] and len(ev.scores) == 8
    nlls = np.array([ev.score("temperature", r).metrics["nll"] for r in range(4)])
    row = next(r for r in ev.summary() if r["method"] == "temperature" and r["metric"] == "nll")
    assert row["mean"] == pytest.approx(nlls.mean()) and row["sd"] == pytest.approx(
        nlls.std(ddof=1)
    )
    raw = np.array([ev.score("identity", r).metrics["nll"] for r in range(4)])
    diff = ev.paired("temperature", "identity", "nll")
    assert diff.n == 4 and diff.over == "splits"
    assert diff.mean == pytest.approx(np.mean(nlls - raw))
    assert diff.lo == pytest.approx(np.percentile(nlls - raw, 2.5))
    assert diff.share_positive == np.mean(nlls > raw)
    assert diff.mean < 0 and diff.hi < 0  # sharpened input: temperature helps on every split
    with pytest.raises(KeyError):
        ev.score("vector", 0)


def test_paired_bootstrap_matches_a_direct_loop_over_the_same_resamples() -> None:
    from verbcal.metrics import bootstrap_indices

    probs, y = data(200)
    split = Split(np.arange(100), np.arange(100, 200))
    a, b = evaluate_split(probs, y, split, ["temperature", "identity"])
    y_test = y[split.test]
    result = paired_bootstrap(a, b, y_test, "nll", n_boot=200, seed=4)
    idx = np.concatenate(list(bootstrap_indices(len(y_test), 200, 4)))
    direct = np.array([nll(a.q_test[i], y_test[i]) - nll(b.q_test[i], y_test[i]) for i in idx])
    assert result.over == "bootstrap" and result.n == 200
    assert result.mean == pytest.approx(a.metrics["nll"] - b.metrics["nll"])
    lo, hi = np.percentile(direct, [2.5, 97.5])
    assert result.lo == pytest.approx(lo) and result.hi == pytest.approx(hi)
    assert result.share_positive == pytest.approx(np.mean(direct > 0))
    same = paired_bootstrap(a, a, y_test, "ece", n_boot=50)
    assert same.mean == same.lo == same.hi == 0.0


def test_auto_weighs_words_on_verbal_replies_unless_its_candidates_are_given() -> None:
    """As ``make_calibrator(..., reply="verbal")`` and ``verbcal fit --source verbal`` do."""
    from verbcal import datasets
    from verbcal.calibration import DEFAULT_CANDIDATES, VERBAL_CANDIDATES

    words = datasets.load("recorded:mt-quality#verbal").labelled()
    assert words.reply == "verbal"
    fitted = fit_methods(
        ["auto", "auto[candidates=temperature]"], words.probs, words.y, reply=words.reply
    )
    assert list(fitted["auto"].candidates) == list(VERBAL_CANDIDATES)  # type: ignore[attr-defined]
    assert "words" in {row["method"] for row in fitted["auto"].cv_}  # type: ignore[attr-defined]
    assert list(fitted["auto[candidates=temperature]"].candidates) == ["temperature"]  # type: ignore[attr-defined]
    numbers = fit_methods(["auto"], words.probs, words.y)
    assert numbers["auto"].candidates is None  # type: ignore[attr-defined]
    assert {row["method"] for row in numbers["auto"].cv_} == set(DEFAULT_CANDIDATES)  # type: ignore[attr-defined]
