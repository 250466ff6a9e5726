"""Conformal prediction sets: labels that hold the gold one with probability at least 1 - alpha.

Split conformal on (calibrated or raw) probabilities ``probs`` (n, K). Definitions:

* **Scores** (per item i and label k; low = conforming): ``lac`` = ``1 - probs[i, k]``;
  ``aps`` = ``probs[i, k]`` plus the probabilities of the labels strictly more probable than
  ``k`` (the non-randomised adaptive prediction sets of Romano et al. 2020).
* **Quantile** of n calibration scores at level alpha: the ``ceil((n + 1)(1 - alpha))``-th
  smallest score, +inf when that rank exceeds n (then every set holds every label).
* **Set** of an item: ``{k : score[i, k] <= quantile}`` (possibly empty for ``lac``).
* **Mondrian** (``by_class=True``): one quantile per label k from the calibration items whose
  gold label is k, and label k enters a set when its score is at most the quantile of k.

Guarantee: if calibration and test items are exchangeable, ``P(y in set) >= 1 - alpha``
(marginal, over the draw of both); with ``by_class``, ``P(y in set | y = k) >= 1 - alpha``
for every label k. Ties (verbalized grids) only make the sets larger. The guarantee is marginal:
it says nothing about a given item, and does not need calibrated probabilities (calibration
makes the sets smaller, not more valid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from verbcal.decide.thresholds import _check
from verbcal.metrics import tie_scores

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Score = Literal["lac", "aps"]
SCORES: tuple[Score, ...] = ("lac", "aps")


def conformity_scores(probs: ArrayLike, score: Score = "lac") -> FloatArray:
    """The (n, K) conformity score of every label of every item (see the module docstring).

    Probabilities and scores are rounded by :func:`verbcal.metrics.tie_scores` (12 decimals),
    so labels or items whose values differ by float noise only are tied, as everywhere else.
    """
    p = tie_scores(probs)
    if score == "lac":
        return tie_scores(1.0 - p)
    if score == "aps":
        # sum of the probabilities strictly above p[i, k], plus p[i, k] itself
        higher = p[:, None, :] > p[:, :, None]  # [i, k, j]: label j more probable than k
        return tie_scores(np.einsum("ikj,ij->ik", higher, p) + p)
    raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")


def conformal_quantile(scores: ArrayLike, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest of n scores, or +inf past n."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((len(s) + 1) * (1.0 - alpha) - 1e-12)
    return float(s[rank - 1]) if rank <= len(s) else math.inf


@dataclass(frozen=True)
class ConformalSets:
    """Fitted split-conformal sets: ``predict`` gives the (n, K) membership matrix.

    ``quantiles`` holds one value (marginal) or one per label (``by_class``); ``n_calib`` the
    calibration items used for each.
    """

    score: Score
    alpha: float
    by_class: bool
    quantiles: FloatArray
    n_calib: NDArray[np.int64]

    def predict(self, probs: ArrayLike) -> BoolArray:
        """Membership matrix: ``[i, k]`` True when label k is in item i's set."""
        return conformity_scores(probs, self.score) <= self.quantiles[None, :]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (an infinite quantile becomes None)."""
        return {
            "score": self.score,
            "alpha": self.alpha,
            "by_class": self.by_class,
            "quantiles": [None if math.isinf(q) else float(q) for q in self.quantiles],
            "n_calib": [int(n) for n in self.n_calib],
        }


def fit_sets(
    probs: ArrayLike,
    y: ArrayLike,
    alpha: float = 0.1,
    score: Score = "lac",
    by_class: bool = False,
) -> ConformalSets:
    """Calibrate split-conformal sets on labelled ``(probs, y)`` (see the module docstring)."""
    p, y_arr = _check(probs, y)
    if not (isinstance(alpha, int | float) and 0.0 < float(alpha) < 1.0):
        raise ValueError(f"alpha must be a number strictly between 0 and 1, got {alpha!r}")
    k = p.shape[1]
    gold = conformity_scores(p, score)[np.arange(len(y_arr)), y_arr]
    if by_class:
        counts = np.bincount(y_arr, minlength=k).astype(np.int64)
        quantiles = np.array(
            [
                conformal_quantile(gold[y_arr == c], alpha) if counts[c] else math.inf
                for c in range(k)
            ]
        )
    else:
        counts = np.array([len(y_arr)], dtype=np.int64)
        quantiles = np.full(k, conformal_quantile(gold, alpha))
    return ConformalSets(score, float(alpha), by_class, quantiles, counts)


def set_summary(sets: BoolArray, y: ArrayLike | None = None) -> dict[str, float | int | None]:
    """``n``, ``mean_size``, ``singleton_rate``, ``empty_rate`` and, with gold labels,
    ``coverage`` = share of items whose set holds their gold label."""
    size = sets.sum(axis=1)
    out: dict[str, float | int | None] = {
        "n": len(size),
        "mean_size": float(size.mean()) if len(size) else None,
        "singleton_rate": float(np.mean(size == 1)) if len(size) else None,
        "empty_rate": float(np.mean(size == 0)) if len(size) else None,
        "coverage": None,
    }
    if y is not None and len(size):
        y_arr = np.asarray(y, dtype=np.int64)
        out["coverage"] = float(np.mean(sets[np.arange(len(y_arr)), y_arr]))
    return out


def coverage_by_class(sets: BoolArray, y: ArrayLike) -> FloatArray:
    """Per label k: the share of items with gold label k whose set holds k (nan if none)."""
    y_arr = np.asarray(y, dtype=np.int64)
    hit = sets[np.arange(len(y_arr)), y_arr]
    k = sets.shape[1]
    n = np.bincount(y_arr, minlength=k).astype(np.float64)
    covered = np.bincount(y_arr, weights=hit.astype(np.float64), minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, covered / n, np.nan)


__all__ = [
    "SCORES",
    "ConformalSets",
    "Score",
    "conformal_quantile",
    "conformity_scores",
    "coverage_by_class",
    "fit_sets",
    "set_summary",
]
