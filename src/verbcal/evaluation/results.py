"""Typed results of an evaluation: a score per (method, split), paired differences.

Every figure here was computed on a test part by a calibrator fitted on the matching
calibration part only. Renderers (the CLI tables, ``metrics.json``, the study's tidy
rows and findings) read these objects; none of them recomputes a score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal.calibration import Calibrator
from verbcal.evaluation.splits import Split
from verbcal.metrics import METRICS

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class MethodScore:
    """One method on one split: test metrics and the calibrator that produced them.

    ``metrics``: :func:`verbcal.metrics.summary` of ``q_test`` (every name in
    :data:`verbcal.metrics.METRICS`). ``calibrator``: fitted on the calibration part of
    split ``repeat`` only. ``q_test``: its calibrated distributions of the test items, in
    the order of the split's ``test`` indices. ``ci``: percentile bootstrap intervals over
    the test items (:func:`verbcal.metrics.bootstrap_ci`), when asked for.
    """

    method: str
    repeat: int
    metrics: dict[str, float]
    calibrator: Calibrator
    q_test: FloatArray = field(repr=False)
    ci: dict[str, tuple[float, float]] | None = None

    @property
    def warnings(self) -> tuple[str, ...]:
        """The calibrator's fit warnings on this split (e.g. T at the edge of its range)."""
        return tuple(self.calibrator.warnings)

    @property
    def fitted(self) -> dict[str, Any]:
        """The learned parameters (JSON-ready) plus ``floor``, the floor value used."""
        return {**self.calibrator.state, "floor": self.calibrator.floor_}


@dataclass(frozen=True)
class PairedDifference:
    """Method ``a`` minus method ``b`` on ``metric``, paired (same splits, same items).

    ``over`` says what varies: ``"splits"`` (the per-split differences: ``mean`` is
    their mean, ``lo``/``hi`` their 2.5th and 97.5th percentiles, ``n`` how many splits)
    or ``"bootstrap"`` (one test part resampled ``n`` times, the same resample for both
    methods: ``mean`` is the difference on the test part itself, ``lo``/``hi`` the
    percentile interval of the resampled differences at ``level``). ``share_positive``:
    the share of splits or resamples where a > b.
    """

    a: str
    b: str
    metric: str
    mean: float
    lo: float
    hi: float
    share_positive: float
    n: int
    over: str = "splits"
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "metric": self.metric,
            "mean": self.mean,
            "lo": self.lo,
            "hi": self.hi,
            "share_positive": self.share_positive,
            "n": self.n,
            "over": self.over,
            "level": self.level,
        }


def percentile_interval(values: Sequence[float] | FloatArray) -> tuple[float, float, float]:
    """Mean and the 2.5th / 97.5th percentiles of the non-nan values (nan for none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return math.nan, math.nan, math.nan
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(v.mean()), float(lo), float(hi)


def paired_over_splits(
    a: dict[int, float], b: dict[int, float], metric: str = "", names: tuple[str, str] = ("a", "b")
) -> PairedDifference:
    """Paired difference a − b over the splits (repeat → value) both have."""
    common = sorted(set(a) & set(b))
    diff = np.array([a[r] - b[r] for r in common])
    mean, lo, hi = percentile_interval(diff)
    share = float(np.mean(diff > 0)) if len(diff) else math.nan
    return PairedDifference(names[0], names[1], metric, mean, lo, hi, share, len(diff))


def mean_sd_rows(
    methods: Sequence[str], scored: Sequence[tuple[str, dict[str, float]]]
) -> list[dict[str, Any]]:
    """Mean and sample sd (ddof = 1; 0 for one value) per (method, metric) of
    ``(method, metrics)`` pairs, nan values left out, in ``methods`` order then
    :data:`~verbcal.metrics.METRICS` order: ``{"method", "metric", "mean", "sd"}``."""
    rows = []
    for method in methods:
        mine = [metrics for name, metrics in scored if name == method]
        for metric in METRICS:
            values = np.array([m[metric] for m in mine], dtype=np.float64)
            values = values[~np.isnan(values)]
            mean = float(values.mean()) if len(values) else float("nan")
            sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            rows.append({"method": method, "metric": metric, "mean": mean, "sd": sd})
    return rows


@dataclass(frozen=True)
class Evaluation:
    """Every method scored on every split (see :func:`verbcal.evaluation.evaluate_splits`).

    ``scores`` are ordered by split, then by method in ``methods`` order. ``y`` holds the
    gold labels of all items (a split's test labels are ``y[split.test]``).
    """

    methods: tuple[str, ...]
    splits: tuple[Split, ...]
    scores: tuple[MethodScore, ...]
    y: IntArray = field(repr=False)
    n_bins: int = 15

    def score(self, method: str, repeat: int = 0) -> MethodScore:
        """The score of ``method`` on split ``repeat``."""
        for s in self.scores:
            if s.method == method and s.repeat == repeat:
                return s
        raise KeyError(f"no score for method {method!r} on split {repeat}")

    def of(self, method: str) -> list[MethodScore]:
        """The scores of one method, in split order."""
        return [s for s in self.scores if s.method == method]

    def values(self, method: str, metric: str) -> dict[int, float]:
        """repeat → the test value of ``metric`` for ``method``."""
        return {s.repeat: s.metrics[metric] for s in self.of(method)}

    def summary(self) -> list[dict[str, Any]]:
        """Mean and sd per (method, metric) over the splits: see :func:`mean_sd_rows`."""
        return mean_sd_rows(self.methods, [(s.method, s.metrics) for s in self.scores])

    def paired(self, a: str, b: str, metric: str) -> PairedDifference:
        """a − b over the splits (see :class:`PairedDifference`, ``over="splits"``)."""
        return paired_over_splits(self.values(a, metric), self.values(b, metric), metric, (a, b))

    def fit_warnings(self) -> list[str]:
        """One line per (method, warning): in how many of the splits it came up."""
        counts: dict[tuple[str, str], int] = {}
        for s in self.scores:
            for warning in s.warnings:
                counts[(s.method, warning)] = counts.get((s.method, warning), 0) + 1
        return [
            f"{method}, {n} of {len(self.splits)} splits: {text}"
            for (method, text), n in counts.items()
        ]


__all__ = [
    "Evaluation",
    "MethodScore",
    "PairedDifference",
    "mean_sd_rows",
    "paired_over_splits",
    "percentile_interval",
]
