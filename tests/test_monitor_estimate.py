"""CBPE, ATC (tie handling), BBSE and labelled-window metrics, against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from verbcal import metrics
from verbcal.monitor import (
    MonitorError,
    Reference,
    atc,
    atc_fit,
    atc_scores,
    bbse,
    bbse_weights,
    cbpe,
    labelled,
)


def calibrated_sample(
    rng: np.random.Generator, n: int, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows that are calibrated by construction: y ~ prior, q = the exact posterior of a
    Gaussian class-conditional model on a 1-d feature with a few distinct values."""
    k = len(prior)
    y = rng.choice(k, size=n, p=prior)
    x = np.round(y + rng.normal(0, 0.8, n), 1)  # rounded: ties, as verbalized values
    like = np.exp(-0.5 * ((x[:, None] - np.arange(k)[None, :]) / 0.8) ** 2) * prior[None, :]
    return like / like.sum(axis=1, keepdims=True), y


def test_atc_threshold_splits_ties_fractionally() -> None:
    score = np.array([0.6] * 10 + [0.9] * 10)
    t, phi = atc_fit(score, 0.75)
    assert t == 0.6 and phi == pytest.approx(0.5)
    assert np.mean(score > t) + phi * np.mean(score == t) == pytest.approx(0.75)


def test_atc_reproduces_reference_accuracy_on_the_reference() -> None:
    rng = np.random.default_rng(1)
    q, y = calibrated_sample(rng, 400, np.array([0.5, 0.3, 0.2]))
    ref = Reference.build(q, y)
    assert atc(q, ref).value == pytest.approx(ref.accuracy)


def test_cbpe_plain_is_mean_confidence_and_covers_realised_accuracy() -> None:
    rng = np.random.default_rng(2)
    prior = np.array([0.5, 0.3, 0.2])
    ref = Reference.build(*calibrated_sample(rng, 2000, prior))
    covered = 0
    for _ in range(200):
        q, y = calibrated_sample(rng, 500, prior)
        est = cbpe(q, ref)
        assert cbpe(q, ref, corrected=False).value == pytest.approx(float(q.max(axis=1).mean()))
        covered += est.covers(metrics.accuracy(q, y))
    assert covered / 200 >= 0.9


def test_bbse_recovers_label_shift_and_corrects_accuracy() -> None:
    rng = np.random.default_rng(3)
    prior, shifted = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    like_ref_q, y_ref = calibrated_sample(rng, 4000, prior)
    ref = Reference.build(like_ref_q, y_ref)
    # same class-conditionals, new prior: the deployed calibrator still uses the old prior
    y = rng.choice(3, size=3000, p=shifted)
    x = np.round(y + rng.normal(0, 0.8, 3000), 1)
    like = np.exp(-0.5 * ((x[:, None] - np.arange(3)[None, :]) / 0.8) ** 2)
    q = like * prior / (like * prior).sum(axis=1, keepdims=True)
    est, w = bbse(q, ref)
    assert w == pytest.approx(shifted / prior, rel=0.2)
    truth = metrics.accuracy(q, y)
    assert abs(est.value - truth) < abs(cbpe(q, ref, corrected=False).value - truth)
    assert est.covers(truth)


def test_bbse_weights_identity_confusion_is_the_ratio_of_mixes() -> None:
    confusion = np.diag([0.5, 0.25, 0.25])
    w = bbse_weights(confusion, np.array([0.25, 0.25, 0.5]))
    assert w == pytest.approx([0.5, 1.0, 2.0])


def test_labelled_metrics_match_independent_implementations() -> None:
    rng = np.random.default_rng(4)
    q, y = calibrated_sample(rng, 300, np.array([0.4, 0.4, 0.2]))
    real = labelled(q, y)
    correct = int(np.sum(q.argmax(axis=1) == y))
    wilson = stats.binomtest(correct, 300).proportion_ci(0.95, method="wilson")
    assert real.accuracy.value == pytest.approx(metrics.accuracy(q, y))
    assert (real.accuracy.low, real.accuracy.high) == pytest.approx((wilson.low, wilson.high))
    assert real.ece.value == pytest.approx(metrics.ece(q, y))
    assert real.nll.value == pytest.approx(metrics.nll(q, y))
    assert real.ece.low <= real.ece.value <= real.ece.high


def test_reference_errors_name_the_problem() -> None:
    with pytest.raises(MonitorError, match="at least 20"):
        Reference.build(np.full((5, 2), 0.5), np.zeros(5))
    with pytest.raises(MonitorError, match="rows but"):
        Reference.build(np.full((30, 2), 0.5), np.zeros(29))


def test_atc_and_confidence_groups_tie_float_noise_as_metrics_does() -> None:
    from verbcal.monitor import confidence_group, confidence_groups

    noisy = 0.1 * 6  # 0.6000000000000001: float noise on a verbalized 0.6
    assert noisy != 0.6
    conf = np.array([0.6] * 5 + [noisy] * 5 + [0.9] * 10)
    t, phi = atc_fit(conf, 0.75)  # 10 of 20 above 0.6; 5 of the 10 at 0.6 make 0.75
    assert t == pytest.approx(0.6) and phi == pytest.approx(0.5)
    credit = atc_scores(conf, t, phi)
    assert credit[:10].tolist() == [0.5] * 10 and credit.mean() == pytest.approx(0.75)
    edges = confidence_groups(conf, min_count=5)
    assert len(np.unique(confidence_group(edges, conf[:10]))) == 1  # one tied value, one group


def test_atc_interval_counts_the_small_references_threshold_fit() -> None:
    rng = np.random.default_rng(7)
    prior = np.array([0.5, 0.3, 0.2])
    covered, window_only = 0, 0
    for _ in range(150):
        ref = Reference.build(*calibrated_sample(rng, 60, prior))  # a small reference
        q, y = calibrated_sample(rng, 500, prior)
        est = atc(q, ref)
        truth = metrics.accuracy(q, y)
        covered += est.covers(truth)
        d = ref.correct - atc_scores(ref.conf, ref.atc_threshold, ref.atc_tie_fraction)
        half = 1.96 * float(np.std(d)) / np.sqrt(500)  # the window's part alone
        window_only += abs(est.value - truth) <= half
    assert covered / 150 >= 0.9
    assert window_only / 150 < 0.8  # without the reference's part it would not cover
