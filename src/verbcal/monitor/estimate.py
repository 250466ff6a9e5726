"""Label-free accuracy estimates for a window of calibrated predictions, with their CIs.

Conventions. ``q`` holds calibrated distributions, (n, K), rows summing to 1; the
prediction of a row is ``argmax q`` (ties to the lowest index, as :mod:`verbcal.metrics`);
its confidence is ``max q``. Accuracy is the fraction of rows whose prediction equals the
gold label. A :class:`Reference` is a labelled sample the deployed calibrator is trusted
on; every estimate's CI is for the window's *realised* accuracy (what labels would show)
and counts two sources of error: the window's own Bernoulli noise and the reference's
finite size (the estimators read thresholds, gaps and confusion rates off it).

* **CBPE** (confidence-based performance estimation): mean top-label confidence, plus the
  reference's calibration gap per confidence bin (shrunk towards 0 for sparse bins).
  Variance: the Poisson-binomial variance ``sum c(1-c) / m^2`` plus the gaps' variance.
* **ATC** (Garg et al. 2022): the confidence threshold ``t`` at which the share of the
  reference above it equals the reference accuracy; ties at ``t`` count with the fraction
  ``phi`` that makes the share exact, so heavily tied verbalized values are handled.
* **BBSE** (Lipton et al. 2018): label-shift weights ``w = C^-1 mu`` from the reference
  confusion matrix ``C[i, j] = P(pred = i, y = j)`` and the window's predicted-label mix
  ``mu``; the calibrated rows are re-weighted by ``w`` (the prior-shift correction of
  Saerens et al. 2002) and CBPE is taken of them. CI by a seeded parametric bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from verbcal.metrics import tie_scores

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]

CONF_BINS = 10
"""Equal-width confidence bins on [0, 1] for the reference's per-bin calibration gap."""
SHRINK = 20.0
"""Pseudo-items pulling a bin's gap towards 0: a bin of n items keeps n / (n + SHRINK)."""
BOOTSTRAP = 200
"""Parametric bootstrap draws for the BBSE interval."""


class MonitorError(ValueError):
    """Inputs the monitor cannot use; the message says what to change."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided ``level`` CI ``[low, high]`` and standard error."""

    value: float
    low: float
    high: float
    se: float

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high


@lru_cache(maxsize=16)
def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2))


def _interval(value: float, se: float, level: float) -> Estimate:
    half = _z(level) * se
    return Estimate(value, max(0.0, value - half), min(1.0, value + half), se)


def check_q(q: ArrayLike, where: str = "window") -> Array:
    """Calibrated rows as a float (n, K) array; errors say which input is wrong."""
    arr = np.asarray(q, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise MonitorError(f"{where}: expected an (n, K) array of distributions with K >= 2")
    if not np.all(np.isfinite(arr)) or arr.min(initial=0.0) < 0:
        raise MonitorError(f"{where}: probabilities must be finite and non-negative")
    sums = arr.sum(axis=1)
    if np.any(sums <= 0):
        raise MonitorError(f"{where}: a row has every probability 0")
    return np.asarray(arr / sums[:, None], dtype=np.float64)


def top_label(q: Array) -> tuple[IntArray, Array]:
    """Prediction (argmax, ties to the first label) and confidence (max) per row."""
    pred = np.asarray(np.argmax(q, axis=1), dtype=np.int64)
    return pred, q[np.arange(len(q)), pred]


def multiplicity(groups: ArrayLike | None, m: int) -> Array:
    """Per row, how many rows of the window are the same item (same group id); all 1 when
    ``groups`` is None. Repeated items share one outcome, so a window's Bernoulli variance is
    ``sum_i mult_i v_i / m^2`` and its effective size (Kish) ``m^2 / sum_i mult_i``."""
    if groups is None:
        return np.ones(m)
    g = np.asarray(groups)
    if len(g) != m:
        raise MonitorError(f"{len(g)} group ids for {m} rows")
    _, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
    return np.asarray(counts[inverse.reshape(-1)], dtype=np.float64)


def effective_size(mult: Array) -> float:
    """Kish's effective number of distinct items, ``m^2 / sum_i mult_i``."""
    return float(len(mult) ** 2 / np.sum(mult)) if len(mult) else 0.0


def _bin_of(conf: Array) -> IntArray:
    return np.asarray(np.clip(np.ceil(conf * CONF_BINS) - 1, 0, CONF_BINS - 1), dtype=np.int64)


@dataclass(frozen=True)
class Reference:
    """What the monitor needs from a labelled reference sample of calibrated predictions."""

    q: Array
    y: IntArray
    pred: IntArray
    conf: Array
    correct: Array
    accuracy: float
    labels: tuple[str, ...]
    gap: Array
    """Per confidence bin: shrunk mean of (correct - confidence) on the reference."""
    gap_var: Array
    """Per confidence bin: the variance of that shrunk gap."""
    atc_threshold: float
    atc_tie_fraction: float
    atc_boot: Array
    """(BOOTSTRAP, 2): the ATC threshold and tie fraction refitted on seeded resamples of
    the reference, for the reference's share of the ATC interval."""
    confusion: Array
    """``C[i, j]``: the reference share predicted ``i`` with gold ``j``."""

    @property
    def n(self) -> int:
        return len(self.y)

    @classmethod
    def build(
        cls,
        q: ArrayLike,
        y: ArrayLike,
        labels: tuple[str, ...] | None = None,
        boot: int = BOOTSTRAP,
    ) -> Reference:
        """The reference of calibrated rows ``q`` with gold label indices ``y``; ``boot``
        bootstrap refits of the ATC threshold (0: none, for a reference that never
        estimates ATC, as the alarm simulation's resampled ones)."""
        qa = check_q(q, "reference")
        ya = np.asarray(y, dtype=np.int64).reshape(-1)
        k = qa.shape[1]
        if len(ya) != len(qa):
            raise MonitorError(f"reference: {len(qa)} rows but {len(ya)} labels")
        if len(ya) < 20:
            raise MonitorError(f"reference: {len(ya)} labelled rows; give at least 20")
        if ya.min() < 0 or ya.max() >= k:
            raise MonitorError("reference: every row needs a gold label index in [0, K)")
        pred, conf = top_label(qa)
        correct = (pred == ya).astype(np.float64)
        bins = _bin_of(conf)
        n_b = np.bincount(bins, minlength=CONF_BINS).astype(np.float64)
        resid = np.bincount(bins, weights=correct - conf, minlength=CONF_BINS)
        var_i = np.bincount(bins, weights=conf * (1 - conf), minlength=CONF_BINS)
        gap = resid / (n_b + SHRINK)
        gap_var = var_i / (n_b + SHRINK) ** 2
        threshold, phi = atc_fit(conf, float(correct.mean()))
        rng = np.random.default_rng(0)
        refits = np.array(
            [
                atc_fit(conf[idx], float(correct[idx].mean()))
                for idx in rng.integers(0, len(ya), (boot, len(ya)))
            ]
        ).reshape(boot, 2)
        confusion = np.zeros((k, k))
        np.add.at(confusion, (pred, ya), 1.0)
        return cls(
            q=qa,
            y=ya,
            pred=pred,
            conf=conf,
            correct=correct,
            accuracy=float(correct.mean()),
            labels=labels or tuple(str(i) for i in range(k)),
            gap=gap,
            gap_var=gap_var,
            atc_threshold=threshold,
            atc_tie_fraction=phi,
            atc_boot=refits,
            confusion=confusion / len(ya),
        )


# ---------------------------------------------------------------- CBPE


def cbpe_items(q: ArrayLike, ref: Reference | None, corrected: bool = True) -> Array:
    """Each row's estimated probability of being right: its confidence, plus the reference
    gap of its confidence bin when ``corrected``."""
    _, conf = top_label(check_q(q))
    if not corrected or ref is None:
        return conf
    return np.asarray(np.clip(conf + ref.gap[_bin_of(conf)], 0.0, 1.0), dtype=np.float64)


def cbpe(
    q: ArrayLike,
    ref: Reference | None,
    level: float = 0.95,
    corrected: bool = True,
    groups: ArrayLike | None = None,
) -> Estimate:
    """Estimated accuracy: mean confidence (+ the reference's per-bin gap when ``corrected``).

    The CI is for the realised accuracy of these rows: the Poisson-binomial variance of the
    window plus the variance of the gap estimates, weighted by the window's bin shares
    (uncorrected: the variance of the reference's overall calibration gap; without a
    reference, ``ref=None``, the Poisson-binomial variance alone, which trusts the
    calibrator fully). Rows with the same ``groups`` id are one item seen again (its outcome
    is shared): see :func:`multiplicity`.
    """
    if ref is None and corrected:
        raise MonitorError("the corrected CBPE needs a reference: pass corrected=False")
    qa = check_q(q)
    m = len(qa)
    if m == 0:
        raise MonitorError("window: no rows")
    _, conf = top_label(qa)
    p = cbpe_items(qa, ref, corrected)
    if ref is None:
        ref_var = 0.0
    elif corrected:
        share = np.bincount(_bin_of(conf), minlength=CONF_BINS) / m
        ref_var = float(np.sum(share**2 * ref.gap_var))
    else:
        ref_var = float(np.mean(ref.conf * (1 - ref.conf))) / ref.n
    value = float(np.mean(p))
    var = float(np.sum(multiplicity(groups, m) * p * (1 - p))) / m**2 + ref_var
    return _interval(value, float(np.sqrt(var)), level)


# ---------------------------------------------------------------- ATC


def atc_fit(score: Array, accuracy: float) -> tuple[float, float]:
    """Threshold ``t`` and tie fraction ``phi`` with ``P(s > t) + phi P(s = t) = accuracy``.

    Scores tie heavily for verbalized probabilities, so a plain threshold cannot hit the
    accuracy; ``phi`` counts that share of the rows at exactly ``t`` as "above". Ties are
    :func:`verbcal.metrics.tie_scores`'s (equal after rounding to 12 decimals), so float
    noise from normalising a row never splits a tied value.
    """
    values, counts = np.unique(tie_scores(score), return_counts=True)
    n = float(len(score))
    above = (n - np.cumsum(counts)) / n  # share strictly above each distinct value
    target = accuracy
    for t, a, c in zip(values, above, counts, strict=True):
        at = c / n
        if a <= target <= a + at + 1e-12:
            return float(t), float(min(1.0, max(0.0, (target - a) / at)))
    return float(values[0]), 1.0


def atc_scores(conf: Array, threshold: float, phi: float) -> Array:
    """Each row's ATC credit: 1 above the threshold, ``phi`` at it, 0 below (ties as
    :func:`verbcal.metrics.tie_scores`)."""
    c, t = tie_scores(conf), float(tie_scores(threshold))
    return np.where(c > t, 1.0, np.where(c == t, phi, 0.0))


def atc(
    q: ArrayLike, ref: Reference, level: float = 0.95, groups: ArrayLike | None = None
) -> Estimate:
    """ATC estimate: the window's share of confidences above the reference threshold.

    Its error against the realised accuracy has two parts: the window's own, the variance of
    ``correct - credit`` on the reference over the window's effective size; and the
    threshold fit's, the spread of the window's estimate under the thresholds refitted on
    bootstrap resamples of the reference (:attr:`Reference.atc_boot`), so ties and the
    discrete threshold count as they are.
    """
    qa = check_q(q)
    _, conf = top_label(qa)
    credit = atc_scores(conf, ref.atc_threshold, ref.atc_tie_fraction)
    ref_credit = atc_scores(ref.conf, ref.atc_threshold, ref.atc_tie_fraction)
    d = ref.correct - ref_credit
    var_d = float(np.mean((d - d.mean()) ** 2))
    c = tie_scores(conf)[None, :]
    t, phi = tie_scores(ref.atc_boot[:, 0])[:, None], ref.atc_boot[:, 1][:, None]
    boot = np.where(c > t, 1.0, np.where(c == t, phi, 0.0)).mean(axis=1)  # atc_scores, each
    var = var_d / effective_size(multiplicity(groups, len(conf))) + float(np.var(boot))
    return _interval(float(np.mean(credit)), float(np.sqrt(var)), level)


# ---------------------------------------------------------------- BBSE


def bbse_weights(confusion: Array, pred_share: Array) -> Array:
    """Label-shift weights ``w_j = q(y=j) / p(y=j)``: least squares of ``C w = mu``, w >= 0,
    rescaled so that ``sum_j w_j p(y=j) = 1``.

    Stacked inputs ((B, K, K) and (B, K)) give (B, K). Classes absent from the reference
    get weight 1 (nothing can be said about them).
    """
    c = np.asarray(confusion, dtype=np.float64)
    mu = np.asarray(pred_share, dtype=np.float64)
    single = c.ndim == 2
    if single:
        c, mu = c[None], mu[None]
    prior = c.sum(axis=1)  # (B, K): reference share of each gold label
    w = np.einsum("bij,bj->bi", np.linalg.pinv(c), mu)
    w = np.where(prior > 0, np.clip(w, 0.0, None), 1.0)
    total = np.sum(w * prior, axis=1, keepdims=True)
    w = np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0)
    return np.asarray(w[0] if single else w, dtype=np.float64)


def reweight(q: Array, w: Array) -> Array:
    """Rows with the prior shifted by ``w`` (``q'_k ∝ w_k q_k``), renormalised."""
    shifted = q * w[None, :]
    sums = shifted.sum(axis=1, keepdims=True)
    return np.where(sums > 0, shifted / np.where(sums > 0, sums, 1.0), q)


def _shifted_confidence(q: Array, pred: IntArray, w: Array) -> Array:
    """``q'_pred`` per row for each weight vector in ``w`` (B, K): shape (B, m)."""
    top = q[np.arange(len(q)), pred]
    num = w[:, pred] * top[None, :]
    den = w @ q.T
    return np.asarray(np.where(den > 0, num / np.where(den > 0, den, 1.0), top), dtype=np.float64)


def bbse(
    q: ArrayLike,
    ref: Reference,
    level: float = 0.95,
    seed: int = 0,
    groups: ArrayLike | None = None,
) -> tuple[Estimate, Array]:
    """Label-shift-corrected CBPE and the estimated weights ``w`` (one per label).

    The model's prediction stays ``argmax q``; its probability of being right becomes
    ``q'_pred`` with ``q' ∝ w q``. The CI is a parametric bootstrap (the reference's
    confusion cells and the window's predicted-label counts drawn multinomially) plus the
    window's Poisson-binomial spread.
    """
    qa = check_q(q)
    pred, _ = top_label(qa)
    m, k = qa.shape
    mu = np.bincount(pred, minlength=k) / m
    w = bbse_weights(ref.confusion, mu)
    p = _shifted_confidence(qa, pred, w[None, :])[0]
    rng = np.random.default_rng(seed)
    cells = rng.multinomial(ref.n, ref.confusion.reshape(-1), size=BOOTSTRAP) / ref.n
    mult = multiplicity(groups, m)
    n_eff = max(1, round(effective_size(mult)))
    mus = rng.multinomial(n_eff, mu, size=BOOTSTRAP) / n_eff
    wb = bbse_weights(cells.reshape(BOOTSTRAP, k, k), mus)
    draws = _shifted_confidence(qa, pred, wb).mean(axis=1)
    var = float(np.var(draws)) + float(np.sum(mult * p * (1 - p))) / m**2
    return _interval(float(p.mean()), float(np.sqrt(var)), level), w


# ---------------------------------------------------------------- labelled windows


@dataclass(frozen=True)
class Labelled:
    """Realised metrics of a labelled window: accuracy (Wilson CI), top-label ECE and NLL."""

    n: int
    accuracy: Estimate
    ece: Estimate
    nll: Estimate


def wilson(successes: float, n: int, level: float = 0.95) -> Estimate:
    """Wilson score interval for a proportion."""
    z = _z(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Estimate(
        p,
        float(max(0.0, centre - half)),
        float(min(1.0, centre + half)),
        float(np.sqrt(p * (1 - p) / n)),
    )


def top_label_ece(conf: Array, correct: Array, n_bins: int = 15) -> float:
    """Top-label ECE, equal-width bins (lower, upper] as :func:`verbcal.metrics.ece`."""
    bins = np.asarray(np.clip(np.ceil(conf * n_bins) - 1, 0, n_bins - 1), dtype=np.int64)
    n_b = np.bincount(bins, minlength=n_bins)
    gap = np.bincount(bins, weights=correct - conf, minlength=n_bins)
    return float(np.sum(np.abs(gap)) / len(conf)) if n_b.sum() else 0.0


def labelled(q: ArrayLike, y: ArrayLike, level: float = 0.95, seed: int = 0) -> Labelled:
    """Accuracy (Wilson), ECE (15 equal-width bins, bootstrap percentile CI) and NLL
    (mean of ``-ln max(q_y, 1e-12)``, normal CI) of a labelled window."""
    qa = check_q(q)
    ya = np.asarray(y, dtype=np.int64)
    pred, conf = top_label(qa)
    correct = (pred == ya).astype(np.float64)
    n = len(ya)
    losses = -np.log(np.maximum(qa[np.arange(n), ya], 1e-12))
    nll_se = float(np.std(losses, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    ece = top_label_ece(conf, correct)
    rng = np.random.default_rng(seed)
    boots = [
        top_label_ece(conf[idx], correct[idx])
        for idx in (rng.integers(0, n, n) for _ in range(BOOTSTRAP))
    ]
    alpha = (1 - level) / 2
    return Labelled(
        n=n,
        accuracy=wilson(float(correct.sum()), n, level),
        ece=Estimate(
            ece,
            float(np.quantile(boots, alpha)),
            float(np.quantile(boots, 1 - alpha)),
            float(np.std(boots)),
        ),
        nll=_nll_interval(float(losses.mean()), nll_se, level),
    )


def _nll_interval(value: float, se: float, level: float) -> Estimate:
    half = _z(level) * se
    return Estimate(value, max(0.0, value - half), value + half, se)
