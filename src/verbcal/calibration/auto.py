"""``auto``: the calibrator chosen by cross-validated NLL on the calibration data only.

Every candidate is scored by repeated stratified K-fold cross-validation: each item's
NLL comes from a fit that did not see it (averaged over the repeats). The one-standard-
error rule then picks the *simplest* candidate whose mean out-of-fold NLL is within one
standard error of the best candidate's (the paired standard error of the per-item
differences), with simplicity ordered identity < floor < temperature < vector < matrix <
one-vs-rest.
Small calibration sets make selection noisy; the rule keeps a flexible calibrator out
unless the data show it clearly helps. The table and the reason are saved with the fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from verbcal.calibration.base import Calibrator, register
from verbcal.calibration.rows import Array, CalibratorError, Counts
from verbcal.calibration.specs import parse_spec

DEFAULT_CANDIDATES: tuple[str, ...] = ("identity", "floor", "temperature", "vector[reg=0.1]")
"""The scaling family, with vector scaling regularised towards the identity map.

Unregularised ``vector`` and ``matrix`` (ODIR leaves W's diagonal free) are left out by
default: on 25-50 calibration items they sometimes fit a sharp map that cross-validation
cannot see and that costs 1-2 nats of test NLL (measured on the bundled drug reviews).
Add them, or ``platt``, ``isotonic``, ``histogram``, through ``candidates``."""
NLL_CLIP = 1e-12
"""Per-item NLL is -ln(max(q_y, NLL_CLIP)), as in :func:`verbcal.metrics.nll`."""


def stratified_folds(y: NDArray[np.int64], k: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """A fold index in [0, k) per item; each label is dealt round-robin after shuffling."""
    folds = np.empty(len(y), dtype=np.int64)
    offset = 0
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        folds[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)
    return folds


def out_of_fold_losses(
    candidate: Calibrator,
    probs: Array,
    y: NDArray[np.int64],
    labels: Sequence[str],
    folds: NDArray[np.int64],
    weight: Array | None = None,
) -> Array:
    """Per-item NLL of ``candidate`` fitted without the item's fold (inf where a fit fails)."""
    from verbcal.calibration import clone

    losses = np.full(len(y), np.inf)
    for fold in np.unique(folds):
        train, held = folds != fold, folds == fold
        try:
            fitted = clone(candidate).fit(
                probs[train],
                y[train],
                sample_weight=None if weight is None else weight[train],
                labels=labels,
            )
            q = fitted.predict_proba(probs[held])
        except (CalibratorError, ValueError, FloatingPointError, np.linalg.LinAlgError):
            return np.full(len(y), np.inf)
        gold = q[np.arange(len(q)), y[held]]
        losses[held] = -np.log(np.maximum(gold, NLL_CLIP))
    return losses


@register
class AutoCalibrator(Calibrator):
    """The simplest candidate within one standard error of the best cross-validated NLL.

    ``candidates``: method names (default: :data:`DEFAULT_CANDIDATES`); ``folds``: K of the
    stratified K-fold (lowered to the smallest label count, at least 2); ``repeats``: how
    many shufflings the per-item losses are averaged over; ``seed``: of the shufflings.
    After ``fit``: ``calibrator_`` (the chosen one, fitted on all data), ``chosen_``,
    ``cv_`` (a row per candidate) and ``reason_``.
    """

    method = "auto"
    summary = "chosen by cross-validated NLL with the one-standard-error rule"
    uses_floor = False
    complexity = 10_000

    def __init__(
        self,
        candidates: Sequence[str] | None = None,
        folds: int = 5,
        repeats: int = 2,
        seed: int = 0,
    ) -> None:
        self.candidates = candidates
        self.folds = folds
        self.repeats = repeats
        self.seed = seed

    def fit(
        self,
        X: Any,
        y: Any,
        sample_weight: ArrayLike | None = None,
        labels: Sequence[str] | None = None,
    ) -> Calibrator:
        """Score every candidate by cross-validation, then fit the chosen one on all data."""
        p, gold, weight = self._prepare(X, y, sample_weight, labels)
        candidates = self._candidates()
        table, losses = self._cross_validate(candidates, p, gold, weight)
        chosen, reason = one_standard_error_choice(table, losses, weight)
        self.cv_: list[dict[str, Any]] = table
        self.chosen_: str = chosen
        self.reason_: str = reason
        self.calibrator_: Calibrator = candidates[chosen].fit(
            p, gold, sample_weight=weight, labels=self.labels_
        )
        self.floor_ = self.calibrator_.floor_
        self.warnings_ = self.calibrator_.warnings
        self.fit_info_ = dict(self.calibrator_.fit_info_)
        return self

    def _candidates(self) -> dict[str, Calibrator]:
        """Candidates by spec (``name`` or ``name[key=value,...]``), unfitted."""
        specs = list(self.candidates) if self.candidates is not None else list(DEFAULT_CANDIDATES)
        if not specs:
            raise CalibratorError("auto: give at least one candidate")
        out: dict[str, Calibrator] = {}
        for spec in dict.fromkeys(specs):
            variant = parse_spec(spec)
            if variant.method == self.method:
                raise CalibratorError("auto cannot be its own candidate")
            out[spec] = variant.make()
        return out

    def _cross_validate(
        self,
        candidates: dict[str, Calibrator],
        p: Array,
        gold: NDArray[np.int64],
        weight: Array | None,
    ) -> tuple[list[dict[str, Any]], dict[str, Array]]:
        """A row per candidate (mean out-of-fold NLL) and its per-item out-of-fold losses."""
        per_label = np.bincount(gold, minlength=len(self.labels_))
        k = max(2, min(int(self.folds), int(per_label[per_label > 0].min()), len(gold) // 2))
        rng = np.random.default_rng(self.seed)
        splits = [stratified_folds(gold, k, rng) for _ in range(max(1, int(self.repeats)))]
        table, losses = [], {}
        for spec, candidate in candidates.items():
            per_item = np.mean(
                [out_of_fold_losses(candidate, p, gold, self.labels_, f, weight) for f in splits],
                axis=0,
            )
            mean = _weighted_mean(per_item, weight)
            losses[spec] = per_item
            table.append(
                {
                    "method": spec,
                    "complexity": candidate.complexity,
                    "cv_nll": mean if math.isfinite(mean) else None,
                    "se": None,
                    "folds": k,
                    "repeats": len(splits),
                }
            )
        return table, losses

    def _fit(self, data: Counts) -> None:  # fit() is overridden
        raise NotImplementedError

    def _predict(self, rows: Array) -> Array:
        return self.calibrator_._predict(rows)

    def describe_floor(self) -> str:
        return self.calibrator_.describe_floor() if self.is_fitted else "not used"

    def _state(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen_,
            "reason": self.reason_,
            "cv": self.cv_,
            "calibrator": self.calibrator_.to_dict(),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.chosen_ = str(state["chosen"])
        self.reason_ = str(state["reason"])
        self.cv_ = list(state["cv"])
        self.calibrator_ = Calibrator.from_dict(state["calibrator"])


def _weighted_mean(values: Array, weight: Array | None) -> float:
    if not np.all(np.isfinite(values)):
        return math.inf
    return float(np.average(values, weights=weight))


def _paired_se(diff: Array, weight: Array | None) -> float:
    """Standard error of the (weighted) mean of per-item differences."""
    w = np.ones(len(diff)) if weight is None else weight
    mean = float(np.average(diff, weights=w))
    n_eff = float(w.sum() ** 2 / np.sum(w * w))
    spread = math.sqrt(float(np.average((diff - mean) ** 2, weights=w)))
    return spread / math.sqrt(max(n_eff - 1.0, 1.0))


def one_standard_error_choice(
    table: Sequence[dict[str, Any]],
    losses: dict[str, Array],
    weight: Array | None = None,
) -> tuple[str, str]:
    """The simplest candidate within one standard error of the best; and why.

    The standard error is the paired one: of the mean per-item difference between a
    candidate's out-of-fold losses and the best candidate's (same items, same folds).
    Each row's ``se`` is filled in with it.
    """
    scored = [r for r in table if r["cv_nll"] is not None]
    if not scored:
        raise CalibratorError("auto: no candidate could be fitted in every fold")
    best = min(scored, key=lambda r: (r["cv_nll"], r["complexity"]))
    for row in scored:
        row["se"] = _paired_se(losses[row["method"]] - losses[best["method"]], weight)
    chosen = min(
        (r for r in scored if r["cv_nll"] <= best["cv_nll"] + r["se"]),
        key=lambda r: (r["complexity"], r["cv_nll"]),
    )
    folds = f"{best['folds']}-fold CV x {best['repeats']}"
    if chosen is best:
        reason = (
            f"{chosen['method']} has the lowest cross-validated NLL ({best['cv_nll']:.4f}, "
            f"{folds}) and every simpler candidate is worse by more than one paired "
            "standard error"
        )
    else:
        reason = (
            f"{chosen['method']} is the simplest candidate within one paired standard error "
            f"of the best ({best['method']} {best['cv_nll']:.4f}; {chosen['method']} "
            f"{chosen['cv_nll']:.4f} ± {chosen['se']:.4f}, {folds})"
        )
    return str(chosen["method"]), reason


__all__ = [
    "DEFAULT_CANDIDATES",
    "AutoCalibrator",
    "one_standard_error_choice",
    "out_of_fold_losses",
    "stratified_folds",
]
