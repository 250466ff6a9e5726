"""Calibrators for verbalized distributions: invert softmax, temperature scaling and friends.

The paper's method (Wang et al., arXiv 2410.06707): estimate logits from the verbalized
probabilities, ``z_i = log(max(p_i, floor))`` after normalising p to sum 1, then apply
temperature scaling ``softmax(z / T)``. ``resoftmax`` (``softmax(p / T)``) is the error
the paper warns about, kept as a baseline. Every calibrator fits over the *distinct*
rows of its input with per-label counts, because verbalized rows repeat: a fit on a
million predictions on a 0.05 grid works on a few hundred rows.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize
from scipy.special import log_softmax, logsumexp

from verbcal.binning import equal_width_bins

FORMAT = "verbcal-calibrator"
VERSION = 1
FloorMode = Literal["clip", "mix"]
FLOOR_GRID_STEP = 0.25
"""Spacing, in decades, of the floor grid searched before the final refinement."""
SMALLEST_FLOOR = 1e-12
BETA_BOUNDS = (1e-6, 1e6)
"""Bounds of the inverse temperature 1/T searched by the temperature fit."""
OUTPUT_FLOOR = 1e-6
"""One-vs-rest calibrators clip each class output to [OUTPUT_FLOOR, 1] before renormalising."""

Array = NDArray[np.float64]


class CalibratorError(ValueError):
    """A calibrator used in a way that cannot work (wrong shape, unknown method, bad file)."""


# ---------------------------------------------------------------- invert softmax


def check_probs(probs: ArrayLike) -> Array:
    """The input as a 2-D float array; raises on negative, non-finite or all-zero rows."""
    matrix = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    ones = np.ones(matrix.shape[1])
    zero_rows = 0
    for chunk in _chunks(matrix):
        sums = chunk @ ones
        if not (np.all(np.isfinite(sums)) and chunk.min(initial=0.0) >= 0):
            raise CalibratorError("probabilities must be finite and non-negative")
        zero_rows += int(np.sum(sums <= 0))
    if zero_rows:
        raise CalibratorError(f"{zero_rows} rows are all zero: drop them first")
    return matrix


def normalise(probs: ArrayLike) -> Array:
    """Rows divided by their sums (after :func:`check_probs`)."""
    matrix = check_probs(probs)
    return matrix / matrix.sum(axis=1, keepdims=True)


def apply_floor(probs: Array, floor: float, mode: FloorMode = "clip") -> Array:
    """Raise zeros so logs are finite: ``clip`` takes max(p, floor), ``mix`` (1 - a) p + a / K."""
    if mode == "clip":
        return np.maximum(probs, floor)
    if mode == "mix":
        return (1.0 - floor) * probs + floor / probs.shape[1]
    raise CalibratorError(f"unknown floor mode {mode!r}: use 'clip' or 'mix'")


def invert_softmax(probs: ArrayLike, floor: float, mode: FloorMode = "clip") -> Array:
    """Estimated logits ``log(floored(p / sum p))``; ``softmax`` of them returns the floored p."""
    return np.log(apply_floor(normalise(probs), floor, mode))


def softmax(logits: ArrayLike) -> Array:
    """Row-wise softmax, computed stably."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(log_softmax(z, axis=-1))


@dataclass(frozen=True)
class Floor:
    """The floor that makes log p finite: a value, or ``None`` until fitted."""

    value: float | None = None
    mode: FloorMode = "clip"
    fitted: bool = False

    @classmethod
    def parse(cls, value: float | str | None, mode: FloorMode = "clip") -> Floor:
        """``"fit"`` or ``None`` means fit it; otherwise a number in (0, 1)."""
        if value is None or value == "fit":
            return cls(None, mode, fitted=True)
        number = float(value)
        if not 0 < number < 1:
            raise CalibratorError(f"floor must lie in (0, 1) or be 'fit', got {value!r}")
        return cls(number, mode)

    def upper_bound(self, n_classes: int) -> float:
        """Largest floor searched: beyond it the floor erases the distribution."""
        return 0.5 / n_classes if self.mode == "clip" else 0.5

    def describe(self) -> str:
        if self.value is None:
            return f"{self.mode} floor, to be fitted"
        return f"{self.mode} floor {self.value:.3g}" + (" (fitted)" if self.fitted else "")


# ---------------------------------------------------------------- distinct rows


@dataclass(frozen=True)
class Counts:
    """Distinct rows of a probability matrix with, per row, how often each label was gold."""

    rows: Array
    counts: Array

    @property
    def totals(self) -> Array:
        return self.counts.sum(axis=1)

    @property
    def n(self) -> float:
        return float(self.counts.sum())


def distinct_rows(probs: Array) -> tuple[Array, NDArray[np.intp]]:
    """Distinct rows and the inverse index, via a hashed key checked for exactness."""
    weights = np.sqrt(np.arange(2, probs.shape[1] + 2, dtype=np.float64))
    _, first, inverse = np.unique(probs @ weights, return_index=True, return_inverse=True)
    rows = probs[first]
    if not np.array_equal(rows[inverse], probs):
        rows, inverse = np.unique(probs, axis=0, return_inverse=True)
    return rows, inverse.reshape(-1)


def count_rows(probs: Array, y: NDArray[np.int64]) -> Counts:
    """Compress checked rows and labels to distinct normalised rows with per-label counts."""
    k = probs.shape[1]
    grid = _decimal_grid_counts(probs, y)
    if grid is not None:
        rows, counts = grid
    else:
        rows, inverse = distinct_rows(probs)
        flat = np.bincount(inverse * k + y, minlength=len(rows) * k)
        counts = flat.reshape(len(rows), k).astype(np.float64)
    return Counts(rows / rows.sum(axis=1, keepdims=True), counts)


def _decimal_grid_counts(probs: Array, y: NDArray[np.int64]) -> tuple[Array, Array] | None:
    """Fast path for rows written with few decimals (as LLMs write them), else ``None``.

    Each row and label is packed into one exact integer code (below 2**53, so held
    exactly as a float64); one sort of the codes
    yields the distinct rows and their label counts. Values within 1e-9 / 10^d of a
    d-decimal number are read as that number.
    """
    k = probs.shape[1]
    for decimals in range(1, 7):
        scale = 10.0**decimals
        head = probs[:1000] * scale
        if np.abs(np.rint(head) - head).max() > 1e-9:
            continue
        base = int(np.rint(probs.max() * scale)) + 1
        if float(base) ** k * (k + 1) >= 2.0**53:
            return None
        # Codes below 2**53 are exact in float64, where matmul and sort are fastest.
        weights = float(base) ** np.arange(k - 1, -1, -1) * k
        code = np.array(y, dtype=np.float64)
        start = 0
        for chunk in _chunks(probs):
            scaled = chunk * scale
            digits = np.rint(scaled)
            np.subtract(scaled, digits, out=scaled)
            if max(-scaled.min(), scaled.max()) > 1e-9:
                return None
            stop = start + len(chunk)
            code[start:stop] += digits @ weights
            start = stop
        codes, counts = _run_lengths(np.sort(code))
        row_codes, labels = np.divmod(codes.astype(np.int64), k)
        starts = _run_starts(row_codes)
        group = np.cumsum(starts) - 1
        m = int(group[-1]) + 1
        flat = np.bincount(group * k + labels, weights=counts, minlength=m * k)
        table: Array = flat.reshape(m, k).astype(np.float64)
        rows = np.empty((m, k))
        remaining = row_codes[starts]
        for column in range(k - 1, -1, -1):
            remaining, rows[:, column] = np.divmod(remaining, base)
        return rows / scale, table
    return None


def _chunks(matrix: Array, rows: int = 65536) -> Iterator[Array]:
    """Row blocks small enough to stay in cache (elementwise passes run several times faster)."""
    for start in range(0, len(matrix), rows):
        yield matrix[start : start + rows]


def _run_starts(ordered: NDArray[Any]) -> NDArray[np.bool_]:
    """True where a sorted array's value differs from the one before (and at 0)."""
    starts = np.empty(len(ordered), dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    return starts


def _run_lengths(ordered: Array) -> tuple[Array, Array]:
    """Distinct values of a sorted array and how often each occurs."""
    positions = np.flatnonzero(_run_starts(ordered))
    return ordered[positions], np.diff(np.append(positions, len(ordered))).astype(np.float64)


def weighted_nll(logits: Array, counts: Array) -> float:
    """Total negative log-likelihood of count-weighted labels under softmax(logits)."""
    return float(-np.sum(counts * log_softmax(logits, axis=1)))


# ---------------------------------------------------------------- temperature solver


def fit_inverse_temperature(logits: Array, counts: Array) -> float:
    """The beta = 1/T minimising the NLL of softmax(beta z), by safeguarded Newton.

    The NLL is convex in beta: Newton steps stay inside a shrinking bracket and fall
    back to geometric bisection when a step would leave it.
    """
    z = logits - logits.max(axis=1, keepdims=True)
    totals = counts.sum(axis=1)
    target = float(np.sum(counts * z))

    def gradient(beta: float) -> tuple[float, float]:
        weights = np.exp(beta * z)  # each row's largest entry is exp(0) = 1: no overflow
        q = weights / weights.sum(axis=1, keepdims=True)
        mean = np.sum(q * z, axis=1)
        var = np.sum(q * z * z, axis=1) - mean * mean
        return float(totals @ mean) - target, float(totals @ np.maximum(var, 0.0))

    lo, hi = BETA_BOUNDS
    if gradient(lo)[0] >= 0:
        return lo
    if gradient(hi)[0] <= 0:
        return hi
    beta = 1.0
    for _ in range(200):
        grad, hess = gradient(beta)
        if grad > 0:
            hi = beta
        else:
            lo = beta
        step = beta - grad / hess if hess > 0 else np.nan
        new = step if lo < step < hi else float(np.sqrt(lo * hi))
        if abs(new - beta) <= 1e-12 * beta or hi / lo < 1 + 1e-12:
            return float(new)
        beta = float(new)
    return beta


# ---------------------------------------------------------------- protocol


class Calibrator(ABC):
    """Maps verbalized distributions to calibrated ones; fitted on labelled data.

    Every calibrator normalises its input rows first, so rows that do not sum to 1
    are treated as probabilities, never as logits.
    """

    method: ClassVar[str]
    summary: ClassVar[str]
    uses_floor: ClassVar[bool] = True
    floor_fitted_with_temperature: ClassVar[bool] = True
    """``floor="fit"`` picks the floor jointly with T (see :meth:`_fit_floor`)."""

    def __init__(
        self,
        labels: Sequence[str] | None = None,
        floor: float | str | None = "fit",
        floor_mode: FloorMode = "clip",
    ) -> None:
        self.labels: tuple[str, ...] | None = tuple(labels) if labels is not None else None
        self.floor = Floor.parse(floor, floor_mode) if self.uses_floor else Floor(None, floor_mode)
        self.fit_info: dict[str, float] = {}
        self.warnings: list[str] = []
        """Problems of the last fit that a user must hear about (saved with the calibrator)."""
        self.is_fitted = False

    # -- public API

    def fit(
        self, probs: ArrayLike, y: ArrayLike, labels: Sequence[str] | None = None
    ) -> Calibrator:
        """Fit on verbalized distributions ``probs`` (n, K) and gold label indices ``y``."""
        p = check_probs(probs)
        gold = np.asarray(y, dtype=np.int64).reshape(-1)
        self._set_labels(p.shape[1], labels)
        if len(gold) != len(p):
            raise CalibratorError(f"{len(p)} rows but {len(gold)} labels")
        if np.any(gold < 0) or np.any(gold >= p.shape[1]):
            raise CalibratorError("gold labels must be indices in [0, K)")
        data = count_rows(p, gold)
        self.warnings = []
        if self.uses_floor and self.floor.value is None:
            self.floor = Floor(self._fit_floor(data), self.floor.mode, fitted=True)
        self._fit(data)
        self.is_fitted = True
        self.fit_info = self._describe_fit(data)
        return self

    def predict_proba(self, probs: ArrayLike) -> Array:
        """Calibrated distributions for verbalized distributions ``probs`` (n, K)."""
        if not self.is_fitted:
            raise CalibratorError(f"the {self.method} calibrator is not fitted: call fit() first")
        p = normalise(probs)
        if self.labels is not None and p.shape[1] != len(self.labels):
            raise CalibratorError(
                f"expected {len(self.labels)} columns ({self.labels}), got {p.shape[1]}"
            )
        rows, inverse = distinct_rows(p)
        return self._predict(rows)[inverse]

    def logits(self, probs: Array) -> Array:
        """Estimated logits of normalised rows under this calibrator's floor."""
        value = self.floor.value if self.floor.value is not None else SMALLEST_FLOOR
        return np.log(apply_floor(probs, value, self.floor.mode))

    @property
    def params(self) -> dict[str, Any]:
        """The fitted parameters, JSON-ready."""
        return self._params()

    def to_dict(self) -> dict[str, Any]:
        """A small versioned JSON-ready description of the fitted calibrator."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "labels": list(self.labels or ()),
            "floor": {
                "mode": self.floor.mode,
                "value": self.floor.value,
                "fitted": self.floor.fitted,
            },
            "params": self._params(),
            "fit": self.fit_info,
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        """Rebuild a fitted calibrator from :meth:`to_dict` output."""
        if data.get("format") != FORMAT:
            raise CalibratorError(
                "not a verbcal calibrator file (missing format 'verbcal-calibrator')"
            )
        if int(data.get("version", 0)) > VERSION:
            raise CalibratorError(
                f"calibrator version {data['version']} is newer than this verbcal: upgrade"
            )
        method = data.get("method")
        if method not in METHODS:
            raise CalibratorError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        floor = data.get("floor", {})
        calibrator = METHODS[method](labels=data.get("labels") or None)
        calibrator.floor = Floor(
            floor.get("value"), floor.get("mode", "clip"), bool(floor.get("fitted"))
        )
        calibrator._load_params(data["params"])
        calibrator.fit_info = dict(data.get("fit", {}))
        calibrator.warnings = list(data.get("warnings", []))
        calibrator.is_fitted = True
        return calibrator

    def save(self, path: str | Path) -> None:
        """Write the calibrator as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @staticmethod
    def load(path: str | Path) -> Calibrator:
        """Read a calibrator written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CalibratorError(f"{path}: cannot read calibrator ({exc})") from exc
        return Calibrator.from_dict(data)

    def __repr__(self) -> str:
        params = ", ".join(
            f"{k}={v!r}" for k, v in self._params().items() if not isinstance(v, list)
        )
        return f"{type(self).__name__}({params}, floor={self.floor.describe()!r})"

    # -- hooks

    @abstractmethod
    def _fit(self, data: Counts) -> None: ...

    @abstractmethod
    def _predict(self, rows: Array) -> Array: ...

    @abstractmethod
    def _params(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load_params(self, params: dict[str, Any]) -> None: ...

    def _fit_floor(self, data: Counts) -> float:
        """Floor chosen jointly with the temperature (see :func:`fit_floor`)."""
        return fit_floor(data, self.floor.mode, fit_temperature=True)

    # -- helpers

    def _set_labels(self, n_classes: int, labels: Sequence[str] | None) -> None:
        if labels is not None:
            self.labels = tuple(labels)
        if self.labels is None:
            self.labels = tuple(str(k) for k in range(n_classes))
        if len(self.labels) != n_classes:
            raise CalibratorError(f"{len(self.labels)} labels for {n_classes} columns")

    def _describe_fit(self, data: Counts) -> dict[str, float]:
        before = weighted_nll(np.log(np.maximum(data.rows, 1e-12)), data.counts) / data.n
        after_q = np.maximum(self._predict(data.rows), 1e-12)
        after = float(-np.sum(data.counts * np.log(after_q))) / data.n
        floored = float(np.sum(data.totals[:, None] * (data.rows < (self.floor.value or 0.0))))
        return {
            "n": data.n,
            "nll_before": before,
            "nll_after": after,
            "floored_fraction": floored / (data.n * data.rows.shape[1]) if self.uses_floor else 0.0,
        }


def fit_floor(data: Counts, mode: FloorMode, fit_temperature: bool) -> float:
    """The floor minimising the calibration NLL, with T refitted for each floor if asked.

    Searches a grid of floors every ``FLOOR_GRID_STEP`` decades from 1e-12 up to the
    mode's bound, then refines around the best grid point with a bounded scalar search.
    Ties (e.g. clip floors below every entry, which change nothing) go to the smallest.
    """
    upper = np.log10(Floor(None, mode).upper_bound(data.rows.shape[1]))
    grid = np.arange(np.log10(SMALLEST_FLOOR), upper + 1e-12, FLOOR_GRID_STEP)

    def profile(log_floor: float) -> float:
        z = np.log(apply_floor(data.rows, 10.0**log_floor, mode))
        beta = fit_inverse_temperature(z, data.counts) if fit_temperature else 1.0
        return weighted_nll(beta * z, data.counts)

    # Clip floors below every entry leave the data unchanged: one evaluation covers them.
    with np.errstate(divide="ignore"):  # a zero entry gives log10 = -inf: every floor acts
        smallest = np.log10(data.rows.min())
    inactive = grid < smallest if mode == "clip" else np.zeros(len(grid), bool)
    active = np.flatnonzero(~inactive)
    values = np.empty(len(grid))
    values[active] = [profile(g) for g in grid[active]]
    if inactive.any():
        values[inactive] = profile(float(grid[inactive][-1]))
    best = int(np.argmin(values))
    if best == 0 or np.isclose(values.min(), values.max(), rtol=1e-12, atol=0.0):
        return float(10.0 ** grid[best])
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    result = optimize.minimize_scalar(
        profile, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4}
    )
    refined = float(result.x) if result.fun < values[best] else float(grid[best])
    return float(10.0**refined)


# ---------------------------------------------------------------- the calibrators


class Identity(Calibrator):
    """The verbalized distribution itself, normalised and floored (the uncalibrated baseline).

    With ``floor="fit"`` the floor alone is chosen by NLL (at T = 1).
    """

    method = "identity"
    summary = "verbalized distribution, normalised and floored (baseline)"
    floor_fitted_with_temperature = False

    def _fit_floor(self, data: Counts) -> float:
        return fit_floor(data, self.floor.mode, fit_temperature=False)

    def _fit(self, data: Counts) -> None:
        pass

    def _predict(self, rows: Array) -> Array:
        return softmax(self.logits(rows))

    def _params(self) -> dict[str, Any]:
        return {}

    def _load_params(self, params: dict[str, Any]) -> None:
        pass


class TemperatureScaling(Calibrator):
    """Invert softmax, then ``softmax(z / T)``: the paper's method; q_i ∝ p_i^(1/T).

    T is fitted by NLL (safeguarded Newton on 1/T, where the NLL is convex).
    ``params["temperature"]`` is T itself, not 1/T.
    """

    method = "temperature"
    summary = "invert softmax + temperature scaling (the paper's method)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.temperature = 1.0

    def _features(self, rows: Array) -> Array:
        return self.logits(rows)

    def _fit(self, data: Counts) -> None:
        beta = fit_inverse_temperature(self._features(data.rows), data.counts)
        self.temperature = 1.0 / beta
        if beta in BETA_BOUNDS:
            self.warnings.append(
                f"T = {self.temperature:.3g} is at the edge of the search range: the NLL keeps "
                "falling as T moves further, so no finite best T exists (typically every "
                "calibration item is already ranked right, and T -> 0 sharpens to certainty). "
                "Label more items (including some errors) or prefer another calibrator"
            )

    def _predict(self, rows: Array) -> Array:
        return softmax(self._features(rows) / self.temperature)

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def _load_params(self, params: dict[str, Any]) -> None:
        self.temperature = float(params["temperature"])


class ReSoftmax(TemperatureScaling):
    """``softmax(p / T)`` on the probabilities themselves: the paper's baseline *error*.

    Softmaxing probabilities twice squashes towards uniform: at T = 1 no output exceeds
    e / (e + K - 1). Kept only to show the difference; never use it.
    """

    method = "resoftmax"
    summary = "softmax(p / T) on probabilities (the error the paper warns about)"
    uses_floor = False

    def _features(self, rows: Array) -> Array:
        return rows


class _LogitModel(Calibrator):
    """Affine maps of the estimated logits fitted by L-BFGS over distinct rows."""

    def __init__(self, *args: Any, reg: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reg = reg
        self.weights: Array = np.zeros(0)
        self.bias: Array = np.zeros(0)

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

    def _fit(self, data: Counts) -> None:
        z = self.logits(data.rows)
        k, totals, n = z.shape[1], data.totals, data.n

        def objective(theta: Array) -> tuple[float, Array]:
            weights, bias = self._unpack(theta, k)
            log_q = log_softmax(self._scores(z, weights, bias), axis=1)
            residual = totals[:, None] * np.exp(log_q) - data.counts
            penalty, penalty_grad = self._penalty(weights, bias)
            value = -np.sum(data.counts * log_q) / n + penalty
            return value, self._gradient(z, residual, weights, bias) / n + penalty_grad

        result = optimize.minimize(objective, self._initial(k), jac=True, method="L-BFGS-B")
        self.weights, self.bias = self._unpack(result.x, k)

    def _predict(self, rows: Array) -> Array:
        return softmax(self._scores(self.logits(rows), self.weights, self.bias))

    def _params(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist(), "bias": self.bias.tolist(), "reg": self.reg}

    def _load_params(self, params: dict[str, Any]) -> None:
        self.weights = np.asarray(params["weights"], dtype=np.float64)
        self.bias = np.asarray(params["bias"], dtype=np.float64)
        self.reg = float(params.get("reg", 0.0))


class VectorScaling(_LogitModel):
    """``softmax(a ⊙ z + b)`` on the estimated logits; L2 penalty ``reg`` on (a - 1) and b."""

    method = "vector"
    summary = "vector scaling of the estimated logits"

    def _initial(self, k: int) -> Array:
        return np.concatenate([np.ones(k), np.zeros(k)])

    def _unpack(self, theta: Array, k: int) -> tuple[Array, Array]:
        return theta[:k], theta[k:]

    def _scores(self, z: Array, weights: Array, bias: Array) -> Array:
        return z * weights + bias

    def _gradient(self, z: Array, residual: Array, weights: Array, bias: Array) -> Array:
        return np.concatenate([np.sum(residual * z, axis=0), residual.sum(axis=0)])

    def _penalty(self, weights: Array, bias: Array) -> tuple[float, Array]:
        k = len(weights)
        value = self.reg * (np.sum((weights - 1) ** 2) + np.sum(bias**2)) / k
        return value, 2 * self.reg * np.concatenate([weights - 1, bias]) / k


class MatrixScaling(_LogitModel):
    """``softmax(W z + b)`` on the estimated logits z = log p: Dirichlet calibration.

    Regularised as in Kull et al. (2019), ODIR: ``reg`` times the mean squared
    off-diagonal entry of W plus the mean squared bias.
    """

    method = "matrix"
    summary = "matrix scaling of the estimated logits (Dirichlet calibration, ODIR)"

    def __init__(self, *args: Any, reg: float = 1e-2, **kwargs: Any) -> None:
        super().__init__(*args, reg=reg, **kwargs)

    def _initial(self, k: int) -> Array:
        return np.concatenate([np.eye(k).ravel(), np.zeros(k)])

    def _unpack(self, theta: Array, k: int) -> tuple[Array, Array]:
        return theta[: k * k].reshape(k, k), theta[k * k :]

    def _scores(self, z: Array, weights: Array, bias: Array) -> Array:
        return z @ weights.T + bias

    def _gradient(self, z: Array, residual: Array, weights: Array, bias: Array) -> Array:
        return np.concatenate([(residual.T @ z).ravel(), residual.sum(axis=0)])

    def _penalty(self, weights: Array, bias: Array) -> tuple[float, Array]:
        k = len(bias)
        off = weights * (1 - np.eye(k))
        scale_w = 1.0 / max(k * (k - 1), 1)
        value = self.reg * (scale_w * np.sum(off**2) + np.sum(bias**2) / k)
        grad = np.concatenate([2 * self.reg * scale_w * off.ravel(), 2 * self.reg * bias / k])
        return value, grad


class _OneVsRest(Calibrator):
    """A binary map per class (class 1 only when K = 2), outputs renormalised.

    Each class output is clipped to [OUTPUT_FLOOR, 1] before renormalising, so no
    calibrated probability is exactly 0.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.maps: list[dict[str, Any]] = []

    @abstractmethod
    def _fit_binary(self, score: Array, positives: Array, totals: Array) -> dict[str, Any]: ...

    @abstractmethod
    def _apply_binary(self, params: dict[str, Any], score: Array) -> Array: ...

    def _score(self, rows: Array, k: int) -> Array:
        return rows[:, k]

    def _classes(self, k: int) -> list[int]:
        return [1] if k == 2 else list(range(k))

    def _fit(self, data: Counts) -> None:
        self.maps = []
        for k in self._classes(data.rows.shape[1]):
            values, inverse = np.unique(self._score(data.rows, k), return_inverse=True)
            positives: Array = np.bincount(inverse, data.counts[:, k], len(values)).astype(float)
            totals: Array = np.bincount(inverse, data.totals, len(values)).astype(float)
            self.maps.append(self._fit_binary(values, positives, totals))

    def _predict(self, rows: Array) -> Array:
        k = rows.shape[1]
        outputs = [
            self._apply_binary(m, self._score(rows, c))
            for m, c in zip(self.maps, self._classes(k), strict=True)
        ]
        if k == 2:
            q1 = np.clip(outputs[0], OUTPUT_FLOOR, 1 - OUTPUT_FLOOR)
            return np.column_stack([1 - q1, q1])
        q = np.clip(np.column_stack(outputs), OUTPUT_FLOOR, 1.0)
        return q / q.sum(axis=1, keepdims=True)

    def _params(self) -> dict[str, Any]:
        return {"maps": self.maps}

    def _load_params(self, params: dict[str, Any]) -> None:
        self.maps = list(params["maps"])


class PlattScaling(_OneVsRest):
    """Logistic regression ``sigmoid(a s + b)`` on the floored log-odds s of each class.

    Fitted with Platt's (1999) smoothed targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2),
    which keep the fit finite on separable data.
    """

    method = "platt"
    summary = "Platt scaling of each class's log-odds (one-vs-rest for K > 2)"

    def _score(self, rows: Array, k: int) -> Array:
        z = self.logits(rows)
        return z[:, k] - logsumexp(np.delete(z, k, axis=1), axis=1)

    def _fit_binary(self, score: Array, positives: Array, totals: Array) -> dict[str, Any]:
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
        return {"slope": float(result.x[0]), "intercept": float(result.x[1])}

    def _apply_binary(self, params: dict[str, Any], score: Array) -> Array:
        s = params["slope"] * score + params["intercept"]
        return np.asarray(np.exp(-np.logaddexp(0, -s)), dtype=np.float64)


class IsotonicCalibration(_OneVsRest):
    """Isotonic regression of each class's outcome on its probability; linear between knots."""

    method = "isotonic"
    summary = "isotonic regression per class (one-vs-rest for K > 2)"
    uses_floor = False

    def _fit_binary(self, score: Array, positives: Array, totals: Array) -> dict[str, Any]:
        keep = totals > 0
        fitted = optimize.isotonic_regression(positives[keep] / totals[keep], weights=totals[keep])
        return {"x": score[keep].tolist(), "y": fitted.x.tolist()}

    def _apply_binary(self, params: dict[str, Any], score: Array) -> Array:
        return np.interp(score, params["x"], params["y"])


class HistogramBinning(_OneVsRest):
    """Equal-width histogram binning per class: output is the bin's observed frequency.

    Bins follow :mod:`verbcal.binning` (right-closed); an empty bin outputs its midpoint.
    """

    method = "histogram"
    summary = "histogram binning per class (one-vs-rest for K > 2)"
    uses_floor = False

    def __init__(self, *args: Any, bins: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bins = bins

    def _fit_binary(self, score: Array, positives: Array, totals: Array) -> dict[str, Any]:
        index = equal_width_bins(score, self.bins)
        pos = np.bincount(index, weights=positives, minlength=self.bins)
        tot = np.bincount(index, weights=totals, minlength=self.bins)
        midpoints = (np.arange(self.bins) + 0.5) / self.bins
        values = np.where(tot > 0, pos / np.maximum(tot, 1e-300), midpoints)
        return {"bins": self.bins, "values": values.tolist()}

    def _apply_binary(self, params: dict[str, Any], score: Array) -> Array:
        return np.asarray(params["values"])[equal_width_bins(score, int(params["bins"]))]


METHODS: dict[str, type[Calibrator]] = {
    cls.method: cls
    for cls in (
        Identity,
        TemperatureScaling,
        ReSoftmax,
        VectorScaling,
        MatrixScaling,
        PlattScaling,
        IsotonicCalibration,
        HistogramBinning,
    )
}
"""Calibrators by CLI name."""


def make_calibrator(method: str, **options: Any) -> Calibrator:
    """A new, unfitted calibrator by CLI name (see :data:`METHODS`)."""
    if method not in METHODS:
        raise CalibratorError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method](**options)


def parse_methods(spec: str, also: Sequence[str] = ()) -> list[str]:
    """``"all"`` or a comma-separated list of method names (plus any in ``also``), validated."""
    names = (
        list(METHODS)
        if spec.strip() == "all"
        else [m.strip() for m in spec.split(",") if m.strip()]
    )
    unknown = [m for m in names if m not in METHODS and m not in also]
    if unknown or not names:
        choices = ", ".join(["all", *METHODS, *also])
        raise CalibratorError(f"unknown method(s) {unknown or spec!r}; choose from {choices}")
    return names
