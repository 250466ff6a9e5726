"""The scaling family: maps of the estimated logits z = log(floored p).

``identity`` (the uncalibrated baseline), ``floor`` (a fitted clip floor only),
``temperature`` (the paper's method), ``resoftmax`` (the paper's baseline error),
``vector`` and ``matrix`` scaling.
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from verbcal.calibration.base import Calibrator, register
from verbcal.calibration.constraints import (
    FLOOR,
    FLOOR_MODE,
    PRIOR_SD,
    REG,
    Interval,
    ParamConstraints,
    array,
    field,
    number,
)
from verbcal.calibration.rows import (
    BETA_BOUNDS,
    SMALLEST_FLOOR,
    Array,
    Counts,
    FloorMode,
    fit_inverse_temperature,
    log_softmax_rows,
    minimize_lbfgsb,
    softmax,
    weighted_nll,
)

DEFAULT_PRIOR_SD = 1.0
"""Standard deviation of the default prior log T ~ Normal(0, sd^2) of ``temperature``."""


@register
class Identity(Calibrator):
    """The verbalized distribution itself, normalised to sum 1: the uncalibrated baseline.

    Nothing is fitted. A fixed clip floor of 1e-12 only keeps logs finite. Every "before",
    "raw" or "uncalibrated" figure in verbcal is this calibrator's output.
    """

    method = "identity"
    summary = "verbalized distribution, normalised (the uncalibrated baseline)"
    complexity = 0

    def __init__(self) -> None:
        pass

    def _choose_floor(self, data: Counts) -> float | None:
        return SMALLEST_FLOOR

    def _fit(self, data: Counts) -> None:
        pass

    def _predict(self, rows: Array) -> Array:
        return softmax(self.logits(rows))

    @classmethod
    def for_labels(cls, labels: Sequence[str]) -> Identity:
        """The baseline, ready to use: it learns nothing, so it needs no data."""
        identity = cls()
        identity.labels_ = tuple(labels)
        identity.classes_ = np.arange(len(identity.labels_))
        identity.floor_ = SMALLEST_FLOOR
        identity.warnings_ = []
        identity.fit_info_ = {}
        return identity


def uncalibrated(probs: ArrayLike) -> Array:
    """The uncalibrated baseline of ``probs`` (n, K): what ``identity`` outputs.

    The rows normalised to sum 1 (a clip floor of 1e-12 only keeps logs finite). Every
    "before" / "raw" / "uncalibrated" figure in verbcal is computed by this one definition.
    """
    matrix = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    labels = [str(k) for k in range(matrix.shape[1])]
    return np.asarray(Identity.for_labels(labels).predict_proba(matrix), dtype=np.float64)


@register
class FloorCalibration(Calibrator):
    """Only a floor: ``max(p, floor)`` renormalised, the floor fitted by NLL (at T = 1).

    Caps every confidence at 1 / (1 + (K - 1) floor): often most of what calibrating an
    overconfident LLM needs.
    """

    method = "floor"
    summary = "clip floor fitted by NLL, nothing else"
    complexity = 10
    _parameter_constraints: ClassVar[ParamConstraints] = {"floor": FLOOR, "floor_mode": FLOOR_MODE}

    def __init__(self, floor: float | str = "fit", floor_mode: FloorMode = "clip") -> None:
        self.floor = floor
        self.floor_mode = floor_mode

    def _objective(self, data: Counts, floor: float) -> float:
        self.floor_ = floor
        return weighted_nll(self.logits(data.rows), data.counts)

    def _fit(self, data: Counts) -> None:
        pass

    def _predict(self, rows: Array) -> Array:
        return softmax(self.logits(rows))


@register
class TemperatureScaling(Calibrator):
    """Invert softmax, then ``softmax(z / T)``: the paper's method; q_i ∝ p_i^(1/T).

    By default T is the maximum a posteriori estimate under a weak prior
    log T ~ Normal(0, ``prior_sd``^2) (sd 1: T within a factor e of 1 a priori). The prior
    weighs as much as about one item, so with hundreds of items T is the maximum-likelihood
    T; on small separable calibration sets, where the likelihood alone sends T to 0 and
    one wrong test item then costs -ln(1e-12) = 27.6 nats, it keeps T finite.
    ``prior_sd=None`` gives the paper's exact maximum-likelihood estimate.
    ``floor="fit"`` picks the floor by the same objective, jointly with T.
    ``temperature_`` is T itself, not 1/T.
    """

    method = "temperature"
    summary = "invert softmax + temperature scaling (the paper's method; MAP T by default)"
    complexity = 20
    floor_fitted_with_temperature = True
    _parameter_constraints: ClassVar[ParamConstraints] = {
        "floor": FLOOR,
        "floor_mode": FLOOR_MODE,
        "prior_sd": PRIOR_SD,
    }

    def __init__(
        self,
        floor: float | str = "fit",
        floor_mode: FloorMode = "clip",
        prior_sd: float | None = DEFAULT_PRIOR_SD,
    ) -> None:
        self.floor = floor
        self.floor_mode = floor_mode
        self.prior_sd = prior_sd

    def _features(self, rows: Array) -> Array:
        return self.logits(rows)

    def _beta(self, z: Array, counts: Array) -> float:
        return fit_inverse_temperature(z, counts, self.prior_sd)

    def _objective(self, data: Counts, floor: float) -> float:
        self.floor_ = floor
        z = self._features(data.rows)
        beta = self._beta(z, data.counts)
        prior = 0.0 if self.prior_sd is None else 0.5 * (np.log(beta) / self.prior_sd) ** 2
        return weighted_nll(beta * z, data.counts) + float(prior)

    def _fit(self, data: Counts) -> None:
        beta = self._beta(self._features(data.rows), data.counts)
        self.temperature_ = 1.0 / beta
        if beta == BETA_BOUNDS[1]:  # smallest T
            self.warnings_.append(
                f"T = {self.temperature_:.3g} is at the lower edge of the search range: the NLL"
                " keeps falling as T -> 0, so no finite best T exists (every calibration item"
                " is already ranked right, and T -> 0 sharpens every answer to certainty)."
                " Label more items (including some errors) or prefer another calibrator"
                " (temperature's default MAP fit, prior_sd=1, stays finite)"
            )
        elif beta == BETA_BOUNDS[0]:  # largest T
            self.warnings_.append(
                f"T = {self.temperature_:.3g} is at the upper edge of the search range: the NLL"
                " keeps falling as T -> infinity, so no finite best T exists (the distributions"
                " rank the gold label no better than chance on these items, and T -> infinity"
                " flattens every answer to uniform). Check that the labels and the"
                " probabilities belong together, label more items, or prefer another calibrator"
            )

    def _predict(self, rows: Array) -> Array:
        return softmax(self._features(rows) / self.temperature_)

    @property
    def temperature(self) -> float:
        """The fitted T (read-only view of ``temperature_``)."""
        return float(self.temperature_)

    def _state(self) -> dict[str, Any]:
        return {"temperature": self.temperature_}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.temperature_ = number(
            field(state, "temperature", "state"),
            "state.temperature",
            [Interval(float, 0, None, closed="neither")],
        )


@register
class ReSoftmax(TemperatureScaling):
    """``softmax(p / T)`` on the probabilities themselves: the paper's baseline *error*.

    Softmaxing probabilities twice squashes towards uniform: at T = 1 no output exceeds
    e / (e + K - 1). Kept only to show the difference; never use it. T by maximum likelihood.
    """

    method = "resoftmax"
    summary = "softmax(p / T) on probabilities (the error the paper warns about)"
    uses_floor = False
    complexity = 1000
    floor_fitted_with_temperature = False
    _parameter_constraints: ClassVar[ParamConstraints] = {}

    prior_sd = None  # maximum likelihood, fixed

    def __init__(self) -> None:
        pass

    def _features(self, rows: Array) -> Array:
        return rows


class _LogitModel(Calibrator):
    """Affine maps of the estimated logits fitted by L-BFGS over distinct rows.

    ``prior_sd`` (default None: no prior) makes the fit a MAP estimate under independent
    normal priors centred on the identity map: every weight ~ N(its identity value,
    ``prior_sd``^2) and every bias ~ N(0, ``prior_sd``^2), the analogue of
    ``temperature``'s prior on log T. Its weight falls as 1/n, so it matters on small or
    separable calibration sets (where the plain fit sharpens without bound) and fades
    with data. ``floor="fit"`` chooses the floor by this model's own penalised NLL,
    refitting the map for each floor on a grid every two decades (each fit warm-started
    from the last).
    """

    floor_grid_step = 2.0
    floor_refine = False
    _warm: Array | None = None
    _parameter_constraints: ClassVar[ParamConstraints] = {
        "floor": FLOOR,
        "floor_mode": FLOOR_MODE,
        "reg": REG,
        "prior_sd": PRIOR_SD,
    }

    def __init__(
        self,
        floor: float | str = "fit",
        floor_mode: FloorMode = "clip",
        reg: float = 0.0,
        prior_sd: float | None = None,
    ):
        self.floor = floor
        self.floor_mode = floor_mode
        self.reg = reg
        self.prior_sd = prior_sd

    @abstractmethod
    def _initial(self, k: int) -> Array: ...

    @abstractmethod
    def _unpack(self, theta: Array, k: int) -> tuple[Array, Array]: ...

    @abstractmethod
    def _scores(self, z: Array, weights: Array, bias: Array) -> Array: ...

    @abstractmethod
    def _gradient(self, z: Array, residual: Array, weights: Array, bias: Array) -> Array: ...

    @abstractmethod
    def _penalty(self, weights: Array, bias: Array) -> tuple[float, Array]: ...

    def _solve(self, data: Counts, start: Array | None = None) -> tuple[Array, Array, float]:
        z = self.logits(data.rows)
        k, totals, n = z.shape[1], data.totals, data.n
        identity = self._initial(k)
        precision = self._prior_precision(n)

        def objective(theta: Array) -> tuple[float, Array]:
            weights, bias = self._unpack(theta, k)
            log_q = log_softmax_rows(self._scores(z, weights, bias))
            residual = totals[:, None] * np.exp(log_q) - data.counts
            penalty, penalty_grad = self._penalty(weights, bias)
            away = theta - identity
            value = -(data.counts * log_q).sum() / n + penalty + 0.5 * precision * away @ away
            gradient = self._gradient(z, residual, weights, bias) / n + penalty_grad
            return value, gradient + precision * away

        initial = identity if start is None else start
        x, value = minimize_lbfgsb(objective, initial)
        self._warm = x
        weights, bias = self._unpack(x, k)
        return weights, bias, value

    def _prior_precision(self, n: float) -> float:
        """1 / (sd^2 n): the prior's weight in the per-item objective (0 without a prior)."""
        if self.prior_sd is None:
            return 0.0
        return 1.0 / (self.prior_sd**2 * n)

    def _choose_floor(self, data: Counts) -> float | None:
        self._warm = None
        try:
            return super()._choose_floor(data)
        finally:
            self._warm = None

    def _objective(self, data: Counts, floor: float) -> float:
        self.floor_ = floor
        return self._solve(data, self._warm)[2]

    def _fit(self, data: Counts) -> None:
        self.weights_, self.bias_, _ = self._solve(data)

    def _predict(self, rows: Array) -> Array:
        return softmax(self._scores(self.logits(rows), self.weights_, self.bias_))

    def _state(self) -> dict[str, Any]:
        return {"weights": self.weights_.tolist(), "bias": self.bias_.tolist()}

    def _load_state(self, state: dict[str, Any]) -> None:
        k = len(self.labels_)
        self.weights_ = array(field(state, "weights", "state"), "state.weights", self._shape(k))
        self.bias_ = array(field(state, "bias", "state"), "state.bias", (k,))

    @abstractmethod
    def _shape(self, k: int) -> tuple[int, ...]:
        """The shape of the weights for K classes."""


@register
class VectorScaling(_LogitModel):
    """``softmax(a ⊙ z + b)`` on the estimated logits; L2 penalty ``reg`` on (a - 1) and b.

    ``reg`` is a fixed penalty; ``prior_sd`` a normal prior on the same (a - 1, b) whose
    weight falls as 1/n (see the base class).

    ``floor="fit"`` chooses the floor by vector scaling's own penalised NLL.
    """

    method = "vector"
    summary = "vector scaling of the estimated logits"
    complexity = 30

    def _initial(self, k: int) -> Array:
        return np.concatenate([np.ones(k), np.zeros(k)])

    def _shape(self, k: int) -> tuple[int, ...]:
        return (k,)

    def _n_parameters(self, k: int) -> int:
        return 2 * k

    def _unpack(self, theta: Array, k: int) -> tuple[Array, Array]:
        return theta[:k], theta[k:]

    def _scores(self, z: Array, weights: Array, bias: Array) -> Array:
        return z * weights + bias

    def _gradient(self, z: Array, residual: Array, weights: Array, bias: Array) -> Array:
        return np.concatenate([(residual * z).sum(axis=0), residual.sum(axis=0)])

    def _penalty(self, weights: Array, bias: Array) -> tuple[float, Array]:
        k = len(weights)
        value = self.reg * (((weights - 1) ** 2).sum() + (bias**2).sum()) / k
        return value, 2 * self.reg * np.concatenate([weights - 1, bias]) / k


@register
class MatrixScaling(_LogitModel):
    """``softmax(W z + b)`` on the estimated logits z = log p: Dirichlet calibration.

    Regularised as in Kull et al. (2019), ODIR: ``reg`` times the mean squared
    off-diagonal entry of W plus the mean squared bias; ODIR leaves W's diagonal free, so
    on a separable calibration set the fit sharpens without bound. ``prior_sd`` (e.g.
    ``matrix[prior=1]``) adds a normal prior towards the identity map that bounds it.
    ``floor="fit"`` chooses the floor by matrix scaling's own penalised NLL.
    """

    method = "matrix"
    summary = "matrix scaling of the estimated logits (Dirichlet calibration, ODIR)"
    complexity = 40

    def __init__(
        self,
        floor: float | str = "fit",
        floor_mode: FloorMode = "clip",
        reg: float = 1e-2,
        prior_sd: float | None = None,
    ) -> None:
        super().__init__(floor, floor_mode, reg, prior_sd)

    def _initial(self, k: int) -> Array:
        return np.concatenate([np.eye(k).ravel(), np.zeros(k)])

    def _shape(self, k: int) -> tuple[int, ...]:
        return (k, k)

    def _n_parameters(self, k: int) -> int:
        return k * k + k

    def _unpack(self, theta: Array, k: int) -> tuple[Array, Array]:
        return theta[: k * k].reshape(k, k), theta[k * k :]

    def _scores(self, z: Array, weights: Array, bias: Array) -> Array:
        """W z + b, summed column by column: a row's result does not depend on the batch
        (a BLAS matrix product may round differently for different batch sizes)."""
        scores = np.empty(z.shape)
        scores[...] = bias
        for j in range(z.shape[1]):
            scores += z[:, j, None] * weights[:, j]
        return scores

    def _gradient(self, z: Array, residual: Array, weights: Array, bias: Array) -> Array:
        return np.concatenate([(residual.T @ z).ravel(), residual.sum(axis=0)])

    def _penalty(self, weights: Array, bias: Array) -> tuple[float, Array]:
        k = len(bias)
        off = weights * _off_diagonal(k)
        scale_w = 1.0 / max(k * (k - 1), 1)
        value = self.reg * (scale_w * (off**2).sum() + (bias**2).sum() / k)
        grad = np.concatenate([2 * self.reg * scale_w * off.ravel(), 2 * self.reg * bias / k])
        return value, grad


@functools.cache
def _off_diagonal(k: int) -> Array:
    """1 - I_k (cached: the matrix penalty is evaluated at every solver step)."""
    mask = 1 - np.eye(k)
    mask.setflags(write=False)
    return mask


__all__ = [
    "DEFAULT_PRIOR_SD",
    "FloorCalibration",
    "Identity",
    "MatrixScaling",
    "ReSoftmax",
    "TemperatureScaling",
    "VectorScaling",
    "uncalibrated",
]
