"""``words``: a calibrator for confidence stated in words (binary tasks).

Input rows are the distributions a lexicon gives the phrases (see :mod:`verbcal.lexicon`):
each phrase is one *level*, identified by its lexicon value v = P(first label); two phrases
with the same lexicon value are one level. For each level seen at fit time, with n items of
which k carry the first label:

1. **Beta posterior centred on the lexicon.** Prior Beta(m·v, m·(1 - v)) (mean v, strength
   m pseudo-items), posterior mean ``(k + m·v) / (n + m)``: a phrase used rarely stays near
   what people read it as; one used often moves to how often it was right.
2. **Pooled in the lexicon's order.** Weighted isotonic regression (pool adjacent
   violators, weights n + m) over the levels sorted by v, so the values keep the lexicon's
   order unless the data contradict it (then adjacent levels share one value).
3. **Unseen phrases.** A level absent at fit time is interpolated in logit space between
   its fitted neighbours; beyond the fitted range, a logistic map
   ``logit q = a·logit v + b`` (a >= 0, fitted by weighted least squares on the fitted
   levels) is used, bounded by the nearest fitted level so the map stays monotone.

``strength`` is m: ``"cv"`` (default) picks it from :data:`PRIOR_GRID` by exact leave-one-item-out
log loss on the fitting data (:data:`DEFAULT_PRIOR` beyond :data:`MAX_CV_LEVELS` distinct
values); a number fixes it (:data:`DEFAULT_PRIOR` = 4 is a documented
fallback, ``words[strength=4]``: the lexicon value counts as four items). Outputs are clipped to
[OUTPUT_FLOOR, 1 - OUTPUT_FLOOR]. Like the one-vs-rest calibrators it maps class 1 when
K = 2 (its levels are 1 - the lexicon values when the phrase speaks of class 0: the same
fit, mirrored). After ``fit``: ``maps_`` (per class: ``prior``, level ``value``, ``n``,
``positives``, ``fitted``, ``slope``, ``intercept``, ``cv``); :meth:`levels` lists them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy import optimize

try:  # scipy's PAVA routine behind optimize.isotonic_regression (see _isotonic)
    from scipy.optimize._pava_pybind import pava as _pava
except ImportError:  # pragma: no cover (a scipy without it: the public function runs)
    _pava = None

from verbcal.calibration.base import register
from verbcal.calibration.constraints import (
    Interval,
    Options,
    ParamConstraints,
    ParameterError,
    array,
    field,
    number,
)
from verbcal.calibration.one_vs_rest import OUTPUT_FLOOR, _OneVsRest
from verbcal.calibration.rows import Array, CalibratorError

PRIOR_GRID: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""Prior strengths (pseudo-items) that ``strength="cv"`` chooses from."""
MAX_CV_LEVELS = 60
"""With more distinct values than this (numbers, not phrases), ``strength="cv"`` uses
:data:`DEFAULT_PRIOR` instead of the leave-one-out search (whose cost grows as levels²)."""
DEFAULT_PRIOR = 4.0
"""The documented fixed prior strength (``words[strength=4]``)."""
_EPS = 1e-9


def _logit(p: Array) -> Array:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(q) - np.log1p(-q), dtype=np.float64)


def _sigmoid(z: Array) -> Array:
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def fit_levels(v: Array, k: Array, n: Array, m: float) -> Array:
    """Pooled posterior means per level (``v`` sorted ascending, every n + m > 0)."""
    post = (k + m * v) / np.maximum(n + m, _EPS)
    return _isotonic(post, n + m)


def _isotonic(y: Array, w: Array) -> Array:
    """``scipy.optimize.isotonic_regression(y, weights=w).x``: scipy's own PAVA routine on
    the arrays that function gives it (so bit-equal), without its checks and result object,
    which cost more than PAVA on a few levels (leave-one-out runs it thousands of times)."""
    if _pava is None or not np.all(w > 0):  # scipy's function itself (it raises on w <= 0)
        return np.asarray(optimize.isotonic_regression(y, weights=w).x, dtype=np.float64)
    x = np.array(y, order="C", dtype=np.float64, copy=True)
    wx = np.array(w, order="C", dtype=np.float64, copy=True)
    blocks = np.full(len(x) + 1, -1, dtype=np.intp)
    return np.asarray(_pava(x, wx, blocks)[0], dtype=np.float64)


def _monotone_map(v: Array, q: Array, w: Array) -> tuple[float, float]:
    """(slope, intercept) of logit q = a logit v + b, weighted least squares, a >= 0."""
    return _line(_logit(v), _logit(q), w)


def _line(x: Array, y: Array, w: Array) -> tuple[float, float]:
    """:func:`_monotone_map` on logits (weighted means written as ``np.average`` computes them)."""
    total = w.sum()
    if total == 0:
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")
    if len(x) < 2 or np.ptp(x) < 1e-12:
        return 1.0, float(((y - x) * w).sum() / total)
    xm, ym = (x * w).sum() / total, (y * w).sum() / total
    a = float(np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2))
    a = max(a, 0.0)
    return a, float(ym - a * xm)


def predict_levels(
    value: Array, fitted_v: Array, fitted_q: Array, slope: float, intercept: float
) -> Array:
    """P(class) for lexicon values ``value``: a fitted level's estimate where it was seen,
    else logit interpolation between neighbours, else the bounded logistic map."""
    fv, fq = np.asarray(fitted_v, dtype=np.float64), np.asarray(fitted_q, dtype=np.float64)
    return _predict(value, fv, fq, _logit(fv), _logit(fq), slope, intercept)


def _predict(
    value: Array, fv: Array, fq: Array, lv: Array, lq: Array, slope: float, intercept: float
) -> Array:
    """:func:`predict_levels` with the fitted levels' logits ``lv``, ``lq`` given."""
    x = np.asarray(value, dtype=np.float64)
    lx = _logit(x)
    out = _sigmoid(np.interp(lx, lv, lq))
    mapped = _sigmoid(slope * lx + intercept)
    above, below = x > fv[-1], x < fv[0]
    out[above] = np.maximum(mapped[above], fq[-1])
    out[below] = np.minimum(mapped[below], fq[0])
    exact = np.searchsorted(fv, x)
    hit = (exact < len(fv)) & (np.abs(fv[np.minimum(exact, len(fv) - 1)] - x) <= 1e-12)
    out[hit] = fq[exact[hit]]
    return out


@register
class WordsCalibration(_OneVsRest):
    """Per-phrase Beta posterior centred on the lexicon value, pooled in lexicon order.

    ``strength``: the prior strength m in pseudo-items, or ``"cv"`` (default) to choose it by
    leave-one-out log loss from :data:`PRIOR_GRID`. Made for binary tasks, where a phrase
    speaks of one label; for K > 2 it runs one-vs-rest on each class's distinct values,
    renormalised, like ``isotonic``. See the module doc for the method.
    """

    method = "words"
    summary = "confidence in words: Beta posterior per phrase around its lexicon value, isotonic"
    complexity = 65
    _parameter_constraints: ClassVar[ParamConstraints] = {
        "strength": [Options("cv"), Interval(float, 0, None)]
    }

    def __init__(self, strength: float | str = "cv") -> None:
        self.strength = strength

    def _prior_value(self) -> float | None:
        if self.strength == "cv":
            return None
        try:
            m = float(self.strength)
        except (TypeError, ValueError):
            raise CalibratorError(
                f"words: strength must be 'cv' or a number >= 0, got {self.strength!r}"
            ) from None
        if not (math.isfinite(m) and m >= 0):
            raise CalibratorError(f"words: strength must be 'cv' or a number >= 0, got {m}")
        return m

    def _fit_binary(self, score: Array, positives: Array, totals: Array) -> dict[str, Any]:
        keep = totals > 0
        v, k, n = score[keep], positives[keep], totals[keep]  # np.unique: v ascending
        fixed = self._prior_value()
        cv: dict[str, float] = {}
        if fixed is None and len(v) > MAX_CV_LEVELS:
            fixed = DEFAULT_PRIOR
        if fixed is None:
            losses = {m: _loo_loss(v, k, n, m) for m in PRIOR_GRID}
            cv = {f"{m:g}": float(loss) for m, loss in losses.items()}
            fixed = min(losses, key=lambda m: (losses[m], m))
        q = fit_levels(v, k, n, fixed)
        slope, intercept = _monotone_map(v, q, n + fixed)
        return {
            "prior": float(fixed),
            "value": v.tolist(),
            "n": n.tolist(),
            "positives": k.tolist(),
            "fitted": q.tolist(),
            "slope": slope,
            "intercept": intercept,
            "cv": cv,
        }

    def _check_map(self, params: Any, where: str) -> dict[str, Any]:
        values = field(params, "value", where)
        size = len(values) if isinstance(values, list) and values else 1
        v = array(values, f"{where}.value", (size,), 0.0, 1.0)
        fitted = array(field(params, "fitted", where), f"{where}.fitted", (size,), 0.0, 1.0)
        if np.any(np.diff(v) <= 0) or np.any(np.diff(fitted) < 0):
            raise ParameterError(
                f"{where}: value must increase and fitted must not decrease (the lexicon order)"
            )
        real = [Interval(float, None, None)]
        cv = params.get("cv", {}) if isinstance(params, dict) else {}
        return {
            "prior": number(
                field(params, "prior", where), f"{where}.prior", [Interval(float, 0, None)]
            ),
            "value": v.tolist(),
            "n": array(field(params, "n", where), f"{where}.n", (size,), 0.0).tolist(),
            "positives": array(
                field(params, "positives", where), f"{where}.positives", (size,), 0.0
            ).tolist(),
            "fitted": fitted.tolist(),
            "slope": number(
                field(params, "slope", where), f"{where}.slope", [Interval(float, 0, None)]
            ),
            "intercept": number(field(params, "intercept", where), f"{where}.intercept", real),
            "cv": {str(k): float(x) for k, x in cv.items()} if isinstance(cv, dict) else {},
        }

    def _apply_binary(self, params: dict[str, Any], score: Array) -> Array:
        return predict_levels(
            score,
            np.asarray(params["value"]),
            np.asarray(params["fitted"]),
            float(params["slope"]),
            float(params["intercept"]),
        )

    def levels(self) -> list[dict[str, float]]:
        """What was learned, per level of the (last) class map: lexicon value, items,
        positives, observed rate and fitted probability (of class 1 when K = 2)."""
        params = self.maps_[-1]
        return [
            {"value": v, "n": n, "positives": k, "observed": k / n if n else math.nan, "fitted": q}
            for v, n, k, q in zip(
                params["value"], params["n"], params["positives"], params["fitted"], strict=True
            )
        ]


def _loo_loss(v: Array, k: Array, n: Array, m: float) -> float:
    """Exact leave-one-item-out log loss of the pooled fit at prior strength ``m``.

    Items of one class at one level are exchangeable, so one refit per (level, class) is
    weighted by that count."""
    total = 0.0
    for level in range(len(v)):
        for positive, count in ((True, k[level]), (False, n[level] - k[level])):
            if count <= 0:
                continue
            drop = min(1.0, float(count))
            k2, n2 = k.copy(), n.copy()
            n2[level] -= drop
            if positive:
                k2[level] -= drop
            seen = n2 > _EPS
            if seen[level]:
                q = fit_levels(v, k2, n2, m)[level]
            elif not seen.any():
                q = v[level]
            else:  # the level's only item left: predicted as an unseen phrase would be
                vs = v[seen]
                qs = fit_levels(vs, k2[seen], n2[seen], m)
                lv, lq = _logit(vs), _logit(qs)
                a, b = _line(lv, lq, n2[seen] + m)
                q = _predict(np.array([v[level]]), vs, qs, lv, lq, a, b)[0]
            q = min(max(float(q), OUTPUT_FLOOR), 1 - OUTPUT_FLOOR)
            total -= count * math.log(q if positive else 1 - q)
    return total / max(float(n.sum()), _EPS)
