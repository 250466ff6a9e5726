"""The one-vs-rest family: a binary map per class (class 1 only when K = 2), renormalised.

``platt``, ``isotonic`` and ``histogram``. Each class output is clipped to
[OUTPUT_FLOOR, 1] before renormalising, so no calibrated probability is exactly 0.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

from verbcal.binning import equal_width_bins
from verbcal.calibration.base import Calibrator, register
from verbcal.calibration.constraints import (
    FLOOR,
    FLOOR_MODE,
    Interval,
    ParamConstraints,
    ParameterError,
    array,
    field,
    number,
)
from verbcal.calibration.rows import Array, Counts, FloorMode

OUTPUT_FLOOR = 1e-6
"""One-vs-rest calibrators clip each class output to [OUTPUT_FLOOR, 1] before renormalising."""


class _OneVsRest(Calibrator):
    """A binary map per class, outputs renormalised."""

    uses_floor = False

    @abstractmethod
    def _fit_binary(self, score: Array, positives: Array, totals: Array) -> dict[str, Any]: ...

    @abstractmethod
    def _apply_binary(self, params: dict[str, Any], score: Array) -> Array: ...

    def _score(self, rows: Array, k: int) -> Array:
        return rows[:, k]

    @staticmethod
    def _classes(k: int) -> list[int]:
        return [1] if k == 2 else list(range(k))

    def _binary_data(self, data: Counts) -> list[tuple[Array, Array, Array]]:
        out = []
        for k in self._classes(data.rows.shape[1]):
            values, inverse = np.unique(self._score(data.rows, k), return_inverse=True)
            inverse = inverse.reshape(-1)
            positives: Array = np.bincount(inverse, data.counts[:, k], len(values)).astype(float)
            totals: Array = np.bincount(inverse, data.totals, len(values)).astype(float)
            out.append((values, positives, totals))
        return out

    def _fit(self, data: Counts) -> None:
        self.maps_ = [self._fit_binary(*binary) for binary in self._binary_data(data)]

    def _predict(self, rows: Array) -> Array:
        k = rows.shape[1]
        outputs = [
            self._apply_binary(m, self._score(rows, c))
            for m, c in zip(self.maps_, self._classes(k), strict=True)
        ]
        if k == 2:
            q1 = np.clip(outputs[0], OUTPUT_FLOOR, 1 - OUTPUT_FLOOR)
            return np.column_stack([1 - q1, q1])
        q = np.clip(np.column_stack(outputs), OUTPUT_FLOOR, 1.0)
        return q / q.sum(axis=1, keepdims=True)

    def _state(self) -> dict[str, Any]:
        return {"maps": self.maps_}

    def _load_state(self, state: dict[str, Any]) -> None:
        maps = field(state, "maps", "state")
        expected = len(self._classes(len(self.labels_)))
        if not isinstance(maps, list) or len(maps) != expected:
            raise ParameterError(
                f"state.maps must be a list of {expected} maps (one per class, one for K = 2), "
                f"got {maps!r:.80}"
            )
        self.maps_ = [self._check_map(m, f"state.maps[{i}]") for i, m in enumerate(maps)]

    @abstractmethod
    def _check_map(self, params: Any, where: str) -> dict[str, Any]:
        """One loaded binary map, checked (what :meth:`_fit_binary` returns)."""


@register
class PlattScaling(_OneVsRest):
    """Logistic regression ``sigmoid(a s + b)`` on the floored log-odds s of each class.

    Fitted with Platt's (1999) smoothed targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2),
    which keep the fit finite on separable data. ``floor="fit"`` chooses the floor by
    Platt's own loss (the sum of the per-class smoothed log-losses).
    """

    method = "platt"
    summary = "Platt scaling of each class's log-odds (one-vs-rest for K > 2)"
    uses_floor = True
    complexity = 50
    floor_grid_step = 2.0
    floor_refine = False
    _parameter_constraints: ClassVar[ParamConstraints] = {"floor": FLOOR, "floor_mode": FLOOR_MODE}

    def __init__(self, floor: float | str = "fit", floor_mode: FloorMode = "clip") -> None:
        self.floor = floor
        self.floor_mode = floor_mode

    def _score(self, rows: Array, k: int) -> Array:
        z = self.logits(rows)
        return np.asarray(z[:, k] - logsumexp(np.delete(z, k, axis=1), axis=1))

    def _objective(self, data: Counts, floor: float) -> float:
        self.floor_ = floor
        return sum(_platt(*binary)[1] for binary in self._binary_data(data))

    def _fit_binary(self, score: Array, positives: Array, totals: Array) -> dict[str, Any]:
        return _platt(score, positives, totals)[0]

    def _n_parameters(self, k: int) -> int:
        return 2 * len(self._classes(k))

    def _check_map(self, params: Any, where: str) -> dict[str, Any]:
        real = [Interval(float, None, None)]
        return {
            key: number(field(params, key, where), f"{where}.{key}", real)
            for key in ("slope", "intercept")
        }

    def _apply_binary(self, params: dict[str, Any], score: Array) -> Array:
        s = params["slope"] * score + params["intercept"]
        return np.asarray(np.exp(-np.logaddexp(0, -s)), dtype=np.float64)


def _platt(score: Array, positives: Array, totals: Array) -> tuple[dict[str, float], float]:
    """Platt's fit of one class and its loss."""
    n_pos, n_neg = positives.sum(), (totals - positives).sum()
    hi, lo = (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2)
    target = (positives * hi + (totals - positives) * lo) / np.maximum(totals, 1e-300)

    def loss(theta: Array) -> tuple[float, Array]:
        s = theta[0] * score + theta[1]
        log_p, log_not = -np.logaddexp(0, -s), -np.logaddexp(0, s)
        value = -np.sum(totals * (target * log_p + (1 - target) * log_not))
        residual = totals * (np.exp(log_p) - target)
        return float(value), np.array([residual @ score, residual.sum()])

    result = optimize.minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return {"slope": float(result.x[0]), "intercept": float(result.x[1])}, float(result.fun)


@register
class IsotonicCalibration(_OneVsRest):
    """Isotonic regression of each class's outcome on its probability; linear between knots."""

    method = "isotonic"
    summary = "isotonic regression per class (one-vs-rest for K > 2)"
    complexity = 60

    def __init__(self) -> None:
        pass

    def _fit_binary(self, score: Array, positives: Array, totals: Array) -> dict[str, Any]:
        keep = totals > 0
        fitted = optimize.isotonic_regression(positives[keep] / totals[keep], weights=totals[keep])
        return {"x": score[keep].tolist(), "y": fitted.x.tolist()}

    def _check_map(self, params: Any, where: str) -> dict[str, Any]:
        x, y = field(params, "x", where), field(params, "y", where)
        size = len(x) if isinstance(x, list) and x else 1
        xs = array(x, f"{where}.x", (size,))
        ys = array(y, f"{where}.y", (size,), 0.0, 1.0)
        if np.any(np.diff(xs) < 0) or np.any(np.diff(ys) < 0):
            raise ParameterError(f"{where}: x and y must be non-decreasing (an isotonic map)")
        return {"x": xs.tolist(), "y": ys.tolist()}

    def _apply_binary(self, params: dict[str, Any], score: Array) -> Array:
        return np.interp(score, params["x"], params["y"])


@register
class HistogramBinning(_OneVsRest):
    """Equal-width histogram binning per class: output is the bin's observed frequency.

    Bins follow :mod:`verbcal.binning` (right-closed); an empty bin outputs its midpoint.
    """

    method = "histogram"
    summary = "histogram binning per class (one-vs-rest for K > 2)"
    complexity = 70
    _parameter_constraints: ClassVar[ParamConstraints] = {"bins": [Interval(int, 1, None)]}

    def __init__(self, bins: int = 10) -> None:
        self.bins = bins

    def _n_parameters(self, k: int) -> int:
        return self.bins * len(self._classes(k))

    def _fit_binary(self, score: Array, positives: Array, totals: Array) -> dict[str, Any]:
        bins = int(self.bins)
        index = equal_width_bins(score, bins)
        pos = np.bincount(index, weights=positives, minlength=bins)
        tot = np.bincount(index, weights=totals, minlength=bins)
        midpoints = (np.arange(bins) + 0.5) / bins
        values = np.where(tot > 0, pos / np.maximum(tot, 1e-300), midpoints)
        return {"bins": bins, "values": values.tolist()}

    def _check_map(self, params: Any, where: str) -> dict[str, Any]:
        bins = field(params, "bins", where)
        if bins != self.bins:
            raise ParameterError(f"{where}.bins is {bins!r} but params.bins is {self.bins!r}")
        values = array(field(params, "values", where), f"{where}.values", (self.bins,), 0.0, 1.0)
        return {"bins": self.bins, "values": values.tolist()}

    def _apply_binary(self, params: dict[str, Any], score: Array) -> Array:
        return np.asarray(params["values"])[equal_width_bins(score, int(params["bins"]))]


__all__ = ["OUTPUT_FLOOR", "HistogramBinning", "IsotonicCalibration", "PlattScaling"]
