"""The shared solvers of verbcal.calibration.rows: the fast paths equal scipy bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize
from scipy.special import log_softmax

from verbcal.calibration import make_calibrator
from verbcal.calibration.rows import (
    BETA_BOUNDS,
    Counts,
    FloorLogits,
    _safeguarded_newton,
    apply_floor,
    count_rows,
    exact_map,
    fit_inverse_temperature,
    log_softmax_rows,
    minimize_lbfgsb,
)


def test_log_softmax_rows_is_scipys_log_softmax_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 2), (7, 3), (500, 5)]:
        x = rng.normal(0, 30, size=shape)
        x[0, 0] = -np.inf  # a zero probability
        np.testing.assert_array_equal(log_softmax_rows(x), log_softmax(x, axis=1))


def logit_problem(method: str, seed: int) -> tuple[object, Counts]:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(4, 0.4), size=120)
    y = np.array([rng.choice(4, p=row) for row in p])
    calibrator = make_calibrator(method, floor=1e-3)
    calibrator.fit(p, y)
    return calibrator, count_rows(p, y)


@pytest.mark.parametrize("method", ["vector", "matrix", "matrix[prior=1]", "vector[reg=0.1]"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minimize_lbfgsb_gives_scipys_iterates_bit_for_bit(method: str, seed: int) -> None:
    calibrator, data = logit_problem(method, seed)
    z = calibrator.logits(data.rows)  # type: ignore[attr-defined]
    k = z.shape[1]
    identity = calibrator._initial(k)  # type: ignore[attr-defined]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = calibrator._unpack(theta, k)  # type: ignore[attr-defined]
        log_q = log_softmax(calibrator._scores(z, w, b), axis=1)  # type: ignore[attr-defined]
        residual = data.totals[:, None] * np.exp(log_q) - data.counts
        value = -np.sum(data.counts * log_q) / data.n
        grad = calibrator._gradient(z, residual, w, b) / data.n  # type: ignore[attr-defined]
        return value, grad

    x, value = minimize_lbfgsb(objective, identity)
    reference = optimize.minimize(objective, identity, jac=True, method="L-BFGS-B")
    np.testing.assert_array_equal(x, reference.x)
    assert value == reference.fun


def test_minimize_lbfgsb_on_a_fitted_calibrator_matches_a_minimize_refit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole fit (floor search included) is the same with scipy's own minimize."""
    from verbcal.calibration import rows

    rng = np.random.default_rng(4)
    p = np.round(rng.dirichlet(np.full(3, 0.3), size=150) * 20) / 20
    p[p.sum(axis=1) == 0, 0] = 1.0
    y = rng.integers(0, 3, size=150)
    fast = make_calibrator("matrix[prior=1]").fit(p, y)
    monkeypatch.setattr(rows, "_setulb", lambda: None)  # minimize itself
    slow = make_calibrator("matrix[prior=1]").fit(p, y)
    assert fast.floor_ == slow.floor_
    np.testing.assert_array_equal(fast.weights_, slow.weights_)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(fast.predict_proba(p), slow.predict_proba(p))


@pytest.mark.parametrize("mode", ["clip", "mix"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_floor_logits_equal_exact_map_bit_for_bit(mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.choice([0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.3, 0.5, 0.9], size=(300, 4))
    raw[raw.sum(axis=1) == 0, 0] = 1.0
    rows = raw / raw.sum(axis=1, keepdims=True)
    table = FloorLogits(rows)
    for floor in [1e-12, 1e-4, 0.001, 0.005, 0.0123, 0.05, 0.1, 0.12]:
        expected = exact_map(np.log, apply_floor(rows, floor, mode))  # type: ignore[arg-type]
        assert np.array_equal(table(floor, mode), expected)  # type: ignore[arg-type]


def _newton_checking_bounds_first(derivative, lo, hi, start, geometric):  # type: ignore[no-untyped-def]
    """The solver as it was before the bound checks were deferred (the reference)."""
    if derivative(lo)[0] >= 0:
        return lo
    if derivative(hi)[0] <= 0:
        return hi
    x = start
    for _ in range(200):
        grad, hess = derivative(x)
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
    return x


@pytest.mark.parametrize("seed", range(40))
def test_deferred_bound_checks_give_the_same_root_bit_for_bit(seed: int) -> None:
    """Temperature solves (maximum likelihood and MAP, separable data, data worse than
    chance, constant rows) give bit-equal results with the bounds checked first."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    z = np.log(rng.dirichlet(np.full(k, 0.3), size=int(rng.integers(3, 40))) + 1e-9)
    kind = seed % 4
    counts = rng.integers(0, 4, size=z.shape).astype(float)
    if kind == 1:  # separable: all counts on each row's top label (T -> 0)
        counts = np.zeros_like(z)
        counts[np.arange(len(z)), z.argmax(axis=1)] = rng.integers(1, 4, size=len(z))
    elif kind == 2:  # worse than chance: counts on each row's bottom label (T -> inf)
        counts = np.zeros_like(z)
        counts[np.arange(len(z)), z.argmin(axis=1)] = 1.0
    elif kind == 3:  # constant rows: the derivative does not depend on beta
        z = np.zeros_like(z)
    zz = z - z.max(axis=1, keepdims=True)
    totals, target = counts.sum(axis=1), float((counts * zz).sum())

    def gradient(beta: float) -> tuple[float, float]:
        w = np.exp(beta * zz)
        q = w / w.sum(axis=1, keepdims=True)
        mean = (q * zz).sum(axis=1)
        var = (q * zz * zz).sum(axis=1) - mean * mean
        return float(totals @ mean) - target, float(totals @ np.maximum(var, 0.0))

    lo, hi = BETA_BOUNDS
    new = _safeguarded_newton(gradient, lo, hi, 1.0, geometric=True)
    assert new == _newton_checking_bounds_first(gradient, lo, hi, 1.0, True)
    if kind == 1:
        assert new == hi
    if kind == 2:
        assert new == lo
    for sd in (0.5, 1.0):  # MAP over u = log beta: the arithmetic of the temperature fit

        def log_gradient(u: float, precision: float = 1.0 / sd**2) -> tuple[float, float]:
            beta = float(np.exp(u))
            grad, hess = gradient(beta)
            return beta * grad + u * precision, beta * grad + beta * beta * hess + precision

        ulo, uhi = (float(np.log(b)) for b in BETA_BOUNDS)
        reference = _newton_checking_bounds_first(log_gradient, ulo, uhi, 0.0, False)
        assert fit_inverse_temperature(z, counts, sd) == float(np.exp(reference))
