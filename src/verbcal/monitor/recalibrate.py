"""Guarded recalibration: refit on labelled feedback, keep the new calibrator only if it is
better on held-out feedback by a paired test.

The feedback is split (seeded, stratified by gold label) into a fitting part and a held-out
part. A calibrator of the old one's method and constructor parameters is fitted on the
fitting part; both are scored on the held-out part by per-item log loss
(``-ln max(q_y, 1e-12)``). The new one wins when the mean loss difference (old - new) is
positive and a one-sided paired t-test rejects "no improvement" at ``alpha``. The
calibrator that was tested (fitted on the fitting part) is the one returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from verbcal.calibration.base import Calibrator, CalibratorError

NLL_CLIP = 1e-12


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`guarded_refit`; ``reason`` says it in words."""

    better: bool
    new: Calibrator
    n_fit: int
    n_holdout: int
    old_nll: float
    new_nll: float
    p_value: float
    reason: str

    def summary(self) -> dict[str, float | int | bool | str]:
        return {
            "better": self.better,
            "n_fit": self.n_fit,
            "n_holdout": self.n_holdout,
            "old_nll": self.old_nll,
            "new_nll": self.new_nll,
            "p_value": self.p_value,
            "test": "one-sided paired t-test on held-out per-item log loss",
        }


def split(
    y: NDArray[np.int64], holdout: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Stratified (fit, held-out) indices; each label keeps at least one item for fitting."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_held = min(len(idx) - 1, round(holdout * len(idx)))
        held.append(idx[:n_held])
        fit.append(idx[n_held:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


def item_losses(
    calibrator: Calibrator, probs: NDArray[np.float64], y: NDArray[np.int64]
) -> NDArray[np.float64]:
    q = calibrator.predict_proba(probs)
    return np.asarray(-np.log(np.maximum(q[np.arange(len(y)), y], NLL_CLIP)), dtype=np.float64)


def guarded_refit(
    old: Calibrator,
    probs: NDArray[np.float64],
    y: NDArray[np.int64],
    labels: Sequence[str],
    holdout: float = 0.3,
    alpha: float = 0.05,
    seed: int = 0,
) -> Decision:
    """Refit ``old``'s method on part of the feedback and test it against ``old`` on the rest."""
    if tuple(labels) != tuple(old.labels or ()):
        raise CalibratorError(
            f"the feedback's labels {list(labels)} differ from the calibrator's {list(old.labels or ())}"
        )
    if not 0 < holdout < 1:
        raise CalibratorError(f"holdout must lie in (0, 1), got {holdout}")
    y = np.asarray(y, dtype=np.int64)
    fit_idx, held_idx = split(y, holdout, seed)
    if len(held_idx) < 10 or len(fit_idx) < 10:
        raise CalibratorError(
            f"{len(y)} labelled feedback items: too few to refit and test (need 10 on each side"
            f" of the {holdout:.0%} hold-out); collect more feedback"
        )
    new = type(old)(**old.get_params())
    new.fit(probs[fit_idx], y[fit_idx], labels=list(labels))
    old_loss = item_losses(old, probs[held_idx], y[held_idx])
    new_loss = item_losses(new, probs[held_idx], y[held_idx])
    diff = old_loss - new_loss
    if np.all(diff == diff[0]):
        p = 0.0 if diff[0] > 0 else 1.0
    else:
        p = float(stats.ttest_rel(old_loss, new_loss, alternative="greater").pvalue)
    old_nll, new_nll = float(old_loss.mean()), float(new_loss.mean())
    better = bool(new_nll < old_nll and p < alpha)
    if better:
        reason = (
            f"the refitted calibrator is better on {len(held_idx)} held-out items: NLL "
            f"{new_nll:.4f} vs {old_nll:.4f} (paired t-test p = {p:.3g} < {alpha})"
        )
    elif new_nll >= old_nll:
        reason = (
            f"the refitted calibrator is not better on {len(held_idx)} held-out items: NLL "
            f"{new_nll:.4f} vs the current {old_nll:.4f}"
        )
    else:
        reason = (
            f"the improvement on {len(held_idx)} held-out items is not significant: NLL "
            f"{new_nll:.4f} vs {old_nll:.4f}, paired t-test p = {p:.3g} >= {alpha}"
        )
    return Decision(better, new, len(fit_idx), len(held_idx), old_nll, new_nll, p, reason)
