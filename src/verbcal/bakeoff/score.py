"""Score every arm after calibration on the same repeated splits, with paired bootstrap CIs.

:func:`score_arms` is the one place that turns aligned distributions into scores
(an integration seam: it could equally call a shared evaluation core). Protocol:

1. Items: those with a gold label and a usable distribution from *every* arm (so all
   arms are compared on the same items; :func:`align` counts what each arm lost).
2. R repeats (``repeats``): stratified splits into a calibration part (``calib_frac`` of
   the items) and a test part, :func:`verbcal.evaluation.repeated_splits` (repeat 0 is the
   split of ``verbcal run`` with the same seed), the same for every arm.
3. Per arm and repeat: the calibrator (``method``, default ``auto``) is fitted on the
   calibration part only (:func:`verbcal.evaluation.fit_methods`); on the test part the calibrated and the raw distributions are scored:
   accuracy, top-label ECE (15 equal-width bins), NLL, Brier, AUROC (:mod:`verbcal.metrics`),
   ``ece_raw`` and ``nll_raw``, and the decision metric: the threshold(s) are chosen on the
   calibrated calibration part with Learn-then-Test (:func:`verbcal.decide.threshold_for`,
   :func:`~verbcal.decide.abstain_band`) and applied to the test part (see
   :data:`verbcal.bakeoff.config.DECISION_METRICS`). A reported value is the mean over R.
4. Paired bootstrap: per repeat, ``n_boot`` resamples of the test items, the *same*
   resamples for every arm; a resample's difference (arm − best arm) is averaged over the
   R repeats, and the 2.5th / 97.5th percentiles of those averages are the 95% CI of the
   difference (``diff_to_best_<metric>_ci``). The best arm of a metric is the one with the
   best mean (lowest for ECE, NLL, Brier, review rate; highest otherwise); its own CI is
   [0, 0]. The CI is over test items given the fitted calibrators: the variation between
   calibration parts enters only through the average over repeats.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal.calibration import Calibrator, normalise
from verbcal.decide import abstain_band, apply_threshold, threshold_for
from verbcal.evaluation import check_split, fit_methods, repeated_splits
from verbcal.metrics import DEFAULT_BINS, _boot_chunk, ece, nll, summary

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

CALIBRATED = ("accuracy", "ece", "nll", "brier", "auroc")
"""Metrics of the calibrated distributions on the test part."""
RAW = ("ece_raw", "nll_raw")
"""The same for the raw (uncalibrated, normalised) distributions."""
SCORED = (*CALIBRATED, *RAW, "decision_metric")
LOWER_IS_BETTER = frozenset({"ece", "nll", "brier", "ece_raw", "nll_raw"})


@dataclass(frozen=True)
class DecisionSpec:
    """Which decision: label index ``positive``, precision target, LTT confidence, metric."""

    positive: int
    precision: float = 0.9
    confidence: float = 0.95
    metric: str = "recall"

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "review_rate"


@dataclass
class ArmScores:
    """One arm's means over repeats, the CIs of its differences to the best, and what to plot.

    ``pooled_q`` / ``pooled_raw`` / ``pooled_y``: the calibrated and raw test-part
    distributions and gold labels of every repeat, concatenated (an item appears once per
    repeat it was tested in), for reliability diagrams.
    """

    name: str
    n: int
    means: dict[str, float]
    per_repeat: dict[str, list[float]]
    diff_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    decision_precision: float | None = None
    decision_reachable: float = 0.0
    pooled_q: FloatArray | None = None
    pooled_raw: FloatArray | None = None
    pooled_y: IntArray | None = None


@dataclass
class Scores:
    """Every arm's scores, the best arm per metric, and the protocol used."""

    arms: dict[str, ArmScores]
    best: dict[str, str]
    n_items: int
    calib_frac: float
    repeats: int
    seed: int
    n_boot: int
    method: str
    decision: DecisionSpec


def align(
    probs: Mapping[str, FloatArray], ids: Mapping[str, list[str]], gold: Mapping[str, IntArray]
) -> tuple[list[str], IntArray, dict[str, FloatArray], dict[str, int]]:
    """The items usable by every arm, in the first arm's order.

    Returns ids, gold indices, each arm's (n, K) rows for them, and per arm how many of its
    own items were dropped (no usable distribution here or in another arm, or no gold).
    Raises ValueError when two arms disagree on an item's gold label.
    """
    names = list(probs)
    usable: dict[str, dict[str, int]] = {}
    for name in names:
        rows = probs[name]
        ok = ~np.isnan(rows).any(axis=1) & (gold[name] >= 0)
        usable[name] = {item: i for i, item in enumerate(ids[name]) if ok[i]}
    common = [item for item in ids[names[0]] if all(item in usable[n] for n in names)]
    y = np.asarray([gold[names[0]][usable[names[0]][item]] for item in common], dtype=np.int64)
    out: dict[str, FloatArray] = {}
    for name in names:
        index = np.asarray([usable[name][item] for item in common], dtype=np.int64)
        other = gold[name][index]
        if len(index) and not np.array_equal(other, y):
            bad = common[int(np.flatnonzero(other != y)[0])]
            raise ValueError(
                f"arms {names[0]!r} and {name!r} give item {bad!r} different gold labels;"
                " compare arms on the same labelled items"
            )
        out[name] = normalise(probs[name][index]) if len(index) else probs[name][index]
    dropped = {name: len(ids[name]) - len(common) for name in names}
    return common, y, out, dropped


def boot_rng(seed: int, repeat: int) -> np.random.Generator:
    """The generator of one repeat's bootstrap resamples (the same for every arm)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(repeat, 1)))


def _decision(
    q_cal: FloatArray, y_cal: IntArray, q_test: FloatArray, y_test: IntArray, spec: DecisionSpec
) -> tuple[FloatArray, FloatArray, bool, float | None]:
    """Per test item: (numerator, denominator) of the decision metric; reachable; precision.

    ``recall``: numerator = positive and accepted, denominator = positive.
    ``review_rate``: numerator = neither accepted nor rejected, denominator = 1.
    """
    positive = (y_test == spec.positive).astype(np.float64)
    if spec.metric == "recall":
        result = threshold_for(
            q_cal, y_cal, spec.positive, precision=spec.precision, confidence=spec.confidence
        )
        if result.threshold is None:
            accepted = np.zeros(len(y_test), dtype=bool)
        else:
            accepted = apply_threshold(q_test[:, spec.positive], result.threshold)
        hits = (accepted & (positive > 0)).astype(np.float64)
        precision = float(positive[accepted].mean()) if accepted.any() else None
        return hits, positive, result.reachable, precision
    band = abstain_band(
        q_cal, y_cal, spec.positive, precision=spec.precision, confidence=spec.confidence
    )
    decided = band.decide(q_test)
    reviewed = (decided == -1).astype(np.float64)
    right = ((decided == 1) & (positive > 0)) | ((decided == 0) & (positive == 0))
    n_decided = int((decided != -1).sum())
    precision = float(right.sum() / n_decided) if n_decided else None
    reachable = band.upper is not None or band.lower is not None
    return reviewed, np.ones(len(y_test)), reachable, precision


def score_arms(
    probs: Mapping[str, FloatArray],
    y: IntArray,
    decision: DecisionSpec,
    *,
    calib_frac: float = 0.5,
    repeats: int = 20,
    seed: int = 0,
    n_boot: int = 1000,
    method: str = "auto",
    n_bins: int = DEFAULT_BINS,
    labels: tuple[str, ...] | None = None,
) -> Scores:
    """Calibrate every arm on the same calibration parts, score it on the same test parts.

    ``probs``: arm name → (n, K) distributions over the same n items (see :func:`align`);
    ``y``: gold label indices. See the module for the protocol.
    """
    names = list(probs)
    if len(names) < 1 or len(y) == 0:
        raise ValueError("no items are usable by every arm: nothing to compare")
    check_split(y, calib_frac, labels or tuple(str(i) for i in range(int(y.max()) + 1)))
    per: dict[str, dict[str, list[float]]] = {n: {m: [] for m in SCORED} for n in names}
    boots: dict[str, dict[str, list[FloatArray]]] = {n: {m: [] for m in SCORED} for n in names}
    reach: dict[str, list[bool]] = {n: [] for n in names}
    precisions: dict[str, list[float]] = {n: [] for n in names}
    pooled: dict[str, tuple[list[FloatArray], list[FloatArray], list[IntArray]]] = {
        n: ([], [], []) for n in names
    }
    for split in repeated_splits(y, calib_frac, repeats, seed):
        calib, test, repeat = split.calib, split.test, split.repeat
        idx = boot_rng(seed, repeat).integers(0, len(test), size=(n_boot, len(test)))
        y_cal, y_test = y[calib], y[test]
        for name in names:
            rows = probs[name]
            calibrator = fit_methods([method], rows[calib], y_cal, labels=labels)[method]
            q_test = np.asarray(calibrator.predict_proba(rows[test]), dtype=np.float64)
            q_cal = np.asarray(calibrator.predict_proba(rows[calib]), dtype=np.float64)
            raw = rows[test]
            values = summary(q_test, y_test, n_bins=n_bins)
            values["ece_raw"] = ece(raw, y_test, n_bins)
            values["nll_raw"] = nll(raw, y_test)
            num, den, reachable, precision = _decision(q_cal, y_cal, q_test, y_test, decision)
            values["decision_metric"] = float(num.sum() / den.sum()) if den.sum() else math.nan
            for metric in SCORED:
                per[name][metric].append(float(values[metric]))
            reach[name].append(reachable)
            if precision is not None:
                precisions[name].append(precision)
            boot = _boot_chunk(q_test, y_test, idx, CALIBRATED, n_bins)
            raw_boot = _boot_chunk(raw, y_test, idx, ("ece", "nll"), n_bins)
            boot["ece_raw"], boot["nll_raw"] = raw_boot["ece"], raw_boot["nll"]
            with np.errstate(invalid="ignore", divide="ignore"):
                boot["decision_metric"] = num[idx].sum(axis=1) / den[idx].sum(axis=1)
            for metric in SCORED:
                boots[name][metric].append(np.asarray(boot[metric], dtype=np.float64))
            pooled[name][0].append(q_test)
            pooled[name][1].append(raw)
            pooled[name][2].append(y_test)
    arms: dict[str, ArmScores] = {}
    for name in names:
        means = {m: _nanmean(per[name][m]) for m in SCORED}
        arms[name] = ArmScores(
            name=name,
            n=len(y),
            means=means,
            per_repeat=per[name],
            decision_precision=_nanmean(precisions[name]) if precisions[name] else None,
            decision_reachable=float(np.mean(reach[name])),
            pooled_q=np.concatenate(pooled[name][0]),
            pooled_raw=np.concatenate(pooled[name][1]),
            pooled_y=np.concatenate(pooled[name][2]),
        )
    best: dict[str, str] = {}
    for metric in SCORED:
        lower = metric in LOWER_IS_BETTER or (
            metric == "decision_metric" and decision.lower_is_better
        )
        best[metric] = _best(arms, metric, lower)
        reference = np.stack(boots[best[metric]][metric])  # (repeats, n_boot)
        for name in names:
            diff = np.stack(boots[name][metric]) - reference
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns, dropped
                averaged = np.nanmean(diff, axis=0)
            averaged = averaged[~np.isnan(averaged)]
            if name == best[metric]:
                arms[name].diff_ci[metric] = (0.0, 0.0)
            elif len(averaged) == 0:
                arms[name].diff_ci[metric] = (math.nan, math.nan)
            else:
                lo, hi = np.percentile(averaged, [2.5, 97.5])
                arms[name].diff_ci[metric] = (float(lo), float(hi))
    return Scores(
        arms=arms,
        best=best,
        n_items=len(y),
        calib_frac=calib_frac,
        repeats=repeats,
        seed=seed,
        n_boot=n_boot,
        method=method,
        decision=decision,
    )


def _nanmean(values: list[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    return float(array.mean()) if len(array) else math.nan


def _best(arms: Mapping[str, ArmScores], metric: str, lower: bool) -> str:
    """The arm with the best mean (first in config order on ties; nan never best)."""

    def key(name: str) -> float:
        value = arms[name].means[metric]
        if math.isnan(value):
            return math.inf
        return value if lower else -value

    return min(arms, key=key)


def fit_final(rows: FloatArray, y: IntArray, method: str, labels: tuple[str, ...]) -> Calibrator:
    """The calibrator to deploy: ``method`` fitted on every aligned item of the arm."""
    return fit_methods([method], rows, y, labels=labels)[method]


def within_best(scores: Scores, name: str, metric: str = "decision_metric") -> bool:
    """True when the arm's CI of its difference to the best contains 0 (not shown worse)."""
    lo, hi = scores.arms[name].diff_ci[metric]
    if math.isnan(lo) or math.isnan(hi):
        return False
    return lo <= 0.0 <= hi


def to_json_value(value: Any) -> Any:
    """nan/inf → None, numpy scalars → Python numbers (for ``bakeoff.json``)."""
    if isinstance(value, float | np.floating):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else number
    if isinstance(value, np.integer):
        return int(value)
    return value


__all__ = [
    "CALIBRATED",
    "LOWER_IS_BETTER",
    "RAW",
    "SCORED",
    "ArmScores",
    "DecisionSpec",
    "Scores",
    "align",
    "boot_rng",
    "fit_final",
    "score_arms",
    "to_json_value",
    "within_best",
]
