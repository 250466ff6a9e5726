"""The shared solvers of verbcal.calibration.rows: the fast paths equal scipy bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize
from scipy.special import log_softmax

from verbcal.calibration import make_calibrator
from verbcal.calibration.rows import Counts, count_rows, log_softmax_rows, minimize_lbfgsb


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
