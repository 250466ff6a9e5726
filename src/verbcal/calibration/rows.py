"""Distinct rows, floors and the solvers every calibrator shares.

Verbalized rows repeat (LLMs write few distinct distributions), so every fit runs over
the *distinct* rows of its input with per-label counts: a fit on a million predictions
on a 0.05 grid works on a few hundred rows. Elementwise logs and exponentials are taken
over the distinct values of an array (:func:`exact_map`), so equal inputs give bit-equal
outputs wherever they sit (vectorised ``exp`` / ``log`` may differ by an ulp between
positions in an array, which would break ties).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize

FloorMode = Literal["clip", "mix"]
FLOOR_GRID_STEP = 0.25
"""Spacing, in decades, of the floor grid searched before the final refinement."""
SMALLEST_FLOOR = 1e-12
"""The fixed floor of ``identity``: only keeps logs finite."""
BETA_BOUNDS = (1e-6, 1e6)
"""Bounds of the inverse temperature 1/T searched by the temperature fit."""

Array = NDArray[np.float64]


class CalibratorError(ValueError):
    """A calibrator used in a way that cannot work (wrong shape, unknown method, bad file)."""


# ---------------------------------------------------------------- invert softmax


def check_probs(probs: ArrayLike) -> Array:
    """The input as a 2-D float array; raises on negative, non-finite or all-zero rows."""
    matrix = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if matrix.ndim != 2:
        raise CalibratorError(f"probabilities must be a 2-D (n, K) array, got shape {matrix.shape}")
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


def exact_map(func: Callable[[Array], Array], values: Array) -> Array:
    """``func`` applied elementwise over the distinct values: equal inputs, equal outputs."""
    distinct, inverse = np.unique(values, return_inverse=True)
    return func(distinct)[inverse.reshape(-1)].reshape(values.shape)


class FloorLogits:
    """Logs of one array of rows under many floors, each bit-equal to
    ``exact_map(np.log, apply_floor(rows, floor, mode))``.

    A floor search evaluates the logits of the same rows at dozens of floors. Both floor
    modes map values monotonically (``max(p, a)``; ``(1 - a) p + a / K``), so the sorted
    distinct values of the floored rows are the floored distinct values of the rows with
    neighbours that became equal merged: one sort up front instead of one per floor, and
    ``np.log`` runs on exactly the array :func:`exact_map` would give it.
    """

    def __init__(self, rows: Array) -> None:
        self.rows = rows
        values, inverse = np.unique(rows, return_inverse=True)
        self._values, self._inverse = values, inverse.reshape(-1)

    def __call__(self, floor: float, mode: FloorMode) -> Array:
        if mode == "clip":
            floored = np.maximum(self._values, floor)
        elif mode == "mix":
            floored = (1.0 - floor) * self._values + floor / self.rows.shape[1]
        else:
            raise CalibratorError(f"unknown floor mode {mode!r}: use 'clip' or 'mix'")
        starts = _run_starts(floored)
        index = np.cumsum(starts) - 1
        logs = np.log(floored[starts])
        return logs[index[self._inverse]].reshape(self.rows.shape)


def invert_softmax(probs: ArrayLike, floor: float, mode: FloorMode = "clip") -> Array:
    """Estimated logits ``log(floored(p / sum p))``; ``softmax`` of them returns the floored p."""
    return exact_map(np.log, apply_floor(normalise(probs), floor, mode))


def softmax(logits: ArrayLike) -> Array:
    """Row-wise softmax, computed stably; equal entries of a row give equal outputs."""
    z = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    shifted = z - z.max(axis=1, keepdims=True)
    weights = exact_map(np.exp, shifted)
    return weights / weights.sum(axis=1, keepdims=True)


def parse_floor(value: float | str | None, *, allow_fit: bool = True) -> float | str:
    """``"fit"`` (or ``None``) or a number in (0, 1); raises a clear error otherwise."""
    if value is None or value == "fit":
        if not allow_fit:
            raise CalibratorError("this calibrator takes a fixed floor, not 'fit'")
        return "fit"
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0 < number < 1:
        raise CalibratorError(f"floor must lie in (0, 1) or be 'fit', got {value!r}")
    return number


def floor_upper_bound(mode: FloorMode, n_classes: int) -> float:
    """Largest floor searched: beyond it the floor erases the distribution."""
    return 0.5 / n_classes if mode == "clip" else 0.5


def describe_floor(value: float | None, mode: FloorMode, fitted: bool) -> str:
    if value is None:
        return "not used"
    return f"{mode} floor {value:.3g}" + (" (fitted)" if fitted else "")


# ---------------------------------------------------------------- distinct rows


@dataclass(frozen=True)
class Counts:
    """Distinct normalised rows with, per row, the (weighted) count of each gold label."""

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
    if not np.array_equal(rows[inverse.reshape(-1)], probs):
        rows, inverse = np.unique(probs, axis=0, return_inverse=True)
    return rows, inverse.reshape(-1)


def count_rows(probs: Array, y: NDArray[np.int64], weight: Array | None = None) -> Counts:
    """Compress checked rows and labels to distinct normalised rows with per-label counts.

    ``weight`` (one per row) makes the counts sums of weights (scikit-learn's ``sample_weight``).
    """
    k = probs.shape[1]
    grid = _decimal_grid_counts(probs, y) if weight is None else None
    if grid is not None:
        rows, counts = grid
    else:
        rows, inverse = distinct_rows(probs)
        flat = np.bincount(inverse * k + y, weights=weight, minlength=len(rows) * k)
        counts = flat.reshape(len(rows), k).astype(np.float64)
    return Counts(rows / rows.sum(axis=1, keepdims=True), counts)


def _decimal_grid_counts(probs: Array, y: NDArray[np.int64]) -> tuple[Array, Array] | None:
    """Fast path for rows written with few decimals (as LLMs write them), else ``None``.

    Each row and label is packed into one exact integer code (:func:`grid_codes`); one sort
    of the codes yields the distinct rows and their label counts (:func:`count_codes`).
    """
    coded = grid_codes(probs, y)
    return None if coded is None else count_codes(*coded, k=probs.shape[1])


def grid_codes(probs: Array, y: NDArray[np.int64]) -> tuple[Array, int, float] | None:
    """Row-and-label codes (exact integers held as float64), the row base and the scale.

    Values within 1e-9 / 10^d of a d-decimal number (d = 0 for whole numbers such as
    percentages) are read as that number; ``None`` when the rows are not on a decimal grid
    of at most 6 decimals or the codes would reach 2**53.
    """
    k = probs.shape[1]
    for decimals in range(0, 7):
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
        return code, base, scale
    return None


def count_codes(code: Array, base: int, scale: float, k: int) -> tuple[Array, Array]:
    """Distinct rows and per-label counts from :func:`grid_codes` output (one sort)."""
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


def log_softmax_rows(x: Array) -> Array:
    """Row-wise log-softmax of a 2-D array: ``scipy.special.log_softmax(x, axis=1)``
    operation for operation (so bit-equal), without its array-API dispatch, which costs
    more than the arithmetic on the small arrays the solvers evaluate thousands of times."""
    x_max = x.max(axis=1, keepdims=True)
    x_max[~np.isfinite(x_max)] = 0
    tmp = x - x_max
    with np.errstate(divide="ignore"):
        out = np.log(np.exp(tmp).sum(axis=1, keepdims=True))
    return tmp - out


def weighted_nll(logits: Array, counts: Array) -> float:
    """Total negative log-likelihood of count-weighted labels under softmax(logits)."""
    return float(-(counts * log_softmax_rows(logits)).sum())


# ---------------------------------------------------------------- temperature solver


def fit_inverse_temperature(logits: Array, counts: Array, prior_sd: float | None = None) -> float:
    """The beta = 1/T minimising the NLL of softmax(beta z), optionally with a prior on log T.

    ``prior_sd=None``: maximum likelihood. The NLL is convex in beta; safeguarded Newton
    steps stay inside a shrinking bracket and fall back to geometric bisection. When every
    item is ranked right the NLL keeps falling as beta grows and the result is the bound.

    ``prior_sd=s``: maximum a posteriori under log T ~ Normal(0, s^2), i.e. the NLL plus
    ``(log T)^2 / (2 s^2)``, minimised over u = log beta by the same safeguarded Newton.
    Every stationary point lies between u = 0 and the maximum-likelihood u, so the search
    starts from that bracket; on separable data the result stays finite.
    """
    z = logits - logits.max(axis=1, keepdims=True)
    totals = counts.sum(axis=1)
    target = float((counts * z).sum())

    def gradient(beta: float) -> tuple[float, float]:
        weights = np.exp(beta * z)  # each row's largest entry is exp(0) = 1: no overflow
        q = weights / weights.sum(axis=1, keepdims=True)
        qz = q * z
        mean = qz.sum(axis=1)
        var = (qz * z).sum(axis=1) - mean * mean
        return float(totals @ mean) - target, float(totals @ np.maximum(var, 0.0))

    if prior_sd is None:
        return _newton_beta(gradient)
    precision = 1.0 / prior_sd**2

    def log_gradient(u: float) -> tuple[float, float]:
        beta = float(np.exp(u))
        grad, hess = gradient(beta)
        return beta * grad + u * precision, beta * grad + beta * beta * hess + precision

    lo, hi = (float(np.log(b)) for b in BETA_BOUNDS)
    return float(np.exp(_safeguarded_newton(log_gradient, lo, hi, 0.0, geometric=False)))


def _newton_beta(gradient: Callable[[float], tuple[float, float]]) -> float:
    lo, hi = BETA_BOUNDS
    return _safeguarded_newton(gradient, lo, hi, 1.0, geometric=True)


def _safeguarded_newton(
    derivative: Callable[[float], tuple[float, float]],
    lo: float,
    hi: float,
    start: float,
    geometric: bool,
) -> float:
    """The root of an increasing ``derivative`` (first, second) in [lo, hi], or a bound:
    ``lo`` where the derivative there is >= 0, ``hi`` where it is <= 0.

    The derivative at ``start`` is computed first; its sign already settles one bound
    (the derivative increases: negative at ``start`` means negative at ``lo``), so only
    the other bound is checked: the same result as checking both, at one evaluation less.
    """
    x = start
    grad, hess = derivative(x)
    if grad <= 0 and derivative(hi)[0] <= 0:
        return hi if grad < 0 or derivative(lo)[0] < 0 else lo
    if grad >= 0 and derivative(lo)[0] >= 0:
        return lo
    for _ in range(200):
        if grad > 0:
            hi = x
        else:
            lo = x
        step = x - grad / hess if hess > 0 else np.nan
        middle = float(np.sqrt(lo * hi)) if geometric else 0.5 * (lo + hi)
        new = step if lo < step < hi else middle
        width = hi / lo - 1 if geometric else hi - lo
        scale = abs(x) if geometric else max(abs(x), 1.0)
        if abs(new - x) <= 1e-12 * scale or width < 1e-12:
            return float(new)
        x = float(new)
        grad, hess = derivative(x)
    return x


# ---------------------------------------------------------------- L-BFGS-B


def minimize_lbfgsb(fun: Callable[[Array], tuple[float, Array]], x0: Array) -> tuple[Array, float]:
    """``scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B")`` with its default
    options: the minimiser and the value there.

    The fast path drives scipy's own L-BFGS-B step (``scipy.optimize._lbfgsb.setulb``)
    with the arguments ``minimize`` gives it, so the iterates and the result are bit-equal
    to ``minimize``'s (``tests/test_calibration_rows.py`` checks it), without the wrappers
    ``minimize`` puts around every evaluation, which cost as much as the small objectives
    of the logit models. Where that private step is missing or has another signature,
    ``minimize`` itself runs.
    """
    step = _setulb()
    if step is None:
        result = optimize.minimize(fun, x0, jac=True, method="L-BFGS-B")
        return np.asarray(result.x, dtype=np.float64), float(result.fun)
    m, maxls, maxiter, maxfun = 10, 20, 15000, 15000
    factr, pgtol = 2.2204460492503131e-09 / np.finfo(float).eps, 1e-5
    x = np.array(np.asarray(x0, dtype=np.float64).ravel(), dtype=np.float64)
    n = len(x)
    f: Any = np.array(0.0, dtype=np.float64)
    g = np.zeros(n, dtype=np.float64)
    bound = np.zeros(n, np.float64)
    nbd = np.zeros(n, np.int32)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
    iwa = np.zeros(3 * n, dtype=np.int32)
    task, ln_task = np.zeros(2, dtype=np.int32), np.zeros(2, dtype=np.int32)
    lsave, isave, dsave = np.zeros(4, np.int32), np.zeros(44, np.int32), np.zeros(29, np.float64)
    iterations, evaluations = 0, 1  # minimize evaluates x0 once before its first step
    while True:
        g = g.astype(np.float64)
        step(m, x, bound, bound, nbd, f, g, factr, pgtol, wa, iwa, task, lsave, isave, dsave, maxls, ln_task)  # fmt: skip
        if task[0] == 3:
            value, gradient = fun(x.copy())
            f, g = value, np.atleast_1d(gradient)
            evaluations += 1
        elif task[0] == 1:
            iterations += 1
            if iterations >= maxiter or evaluations > maxfun:
                task[0], task[1] = 5, 504 if iterations >= maxiter else 502
        else:
            break
    return x, float(f)


def _setulb() -> Callable[..., Any] | None:
    """scipy's L-BFGS-B step with the 17-argument signature of scipy >= 1.15, or None."""
    try:
        from scipy.optimize import _lbfgsb
    except ImportError:  # pragma: no cover (a scipy without it)
        return None
    step = getattr(_lbfgsb, "setulb", None)
    if step is None or _SETULB_OK.get("ok") is False:
        return None
    if "ok" not in _SETULB_OK:
        _SETULB_OK["ok"] = _check_setulb(step)
        if not _SETULB_OK["ok"]:
            return None
    return step  # type: ignore[no-any-return]


_SETULB_OK: dict[str, bool] = {}


def _check_setulb(step: Callable[..., Any]) -> bool:
    """True when driving ``step`` reproduces ``minimize`` bit for bit on a small problem."""
    _SETULB_OK["ok"] = True
    target = np.array([1.0, -2.0, 0.5])

    def fun(x: Array) -> tuple[float, Array]:
        d = x - target
        return float(np.sum(d**4) + d @ d), 4 * d**3 + 2 * d

    try:
        fast = minimize_lbfgsb(fun, np.zeros(3))
    except Exception:
        return False
    slow = optimize.minimize(fun, np.zeros(3), jac=True, method="L-BFGS-B")
    return bool(np.array_equal(fast[0], slow.x) and fast[1] == float(slow.fun))


# ---------------------------------------------------------------- floor search


def fit_floor(
    data: Counts,
    mode: FloorMode,
    objective: Callable[[float], float],
    step: float = FLOOR_GRID_STEP,
    refine: bool = True,
) -> float:
    """The floor minimising ``objective(floor)`` (a calibrator's own fitted loss).

    Searches a grid of floors every ``step`` decades from 1e-12 up to the mode's bound,
    then (if ``refine``) refines around the best grid point with a bounded scalar search.
    Ties (e.g. clip floors below every entry, which change nothing) go to the smallest.
    """
    upper = np.log10(floor_upper_bound(mode, data.rows.shape[1]))
    grid = np.arange(np.log10(SMALLEST_FLOOR), upper + 1e-12, step)

    def profile(log_floor: float) -> float:
        return objective(float(10.0**log_floor))

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
    if not refine or best == 0 or np.isclose(values.min(), values.max(), rtol=1e-12, atol=0.0):
        return float(10.0 ** grid[best])
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    result = optimize.minimize_scalar(
        profile, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4}
    )
    refined = float(result.x) if result.fun < values[best] else float(grid[best])
    return float(10.0**refined)


__all__ = [
    "BETA_BOUNDS",
    "SMALLEST_FLOOR",
    "CalibratorError",
    "Counts",
    "FloorMode",
    "apply_floor",
    "check_probs",
    "count_rows",
    "distinct_rows",
    "exact_map",
    "fit_floor",
    "fit_inverse_temperature",
    "invert_softmax",
    "log_softmax_rows",
    "minimize_lbfgsb",
    "normalise",
    "parse_floor",
    "softmax",
    "weighted_nll",
]
