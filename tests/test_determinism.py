"""Determinism: equal inputs give exactly equal outputs through every calibrator.

Verbalized rows repeat and hold ties (``{"a": 0.4, "b": 0.4, "c": 0.2}``); a tie split by
one ulp moves the argmax to another label. These properties are checked bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from verbcal.calibration import METHODS, make_calibrator, softmax

Array = NDArray[np.float64]

GRID = [0.0, 1e-3, 0.05, 0.1, 0.3, 0.4375, 0.5, 0.9, 1.0]
"""Few distinct values, so that rows are full of ties (as on a verbalized grid)."""

SYMMETRIC = ["identity", "floor", "temperature", "resoftmax"]
"""Calibrators that treat every label alike: a tie within a row must stay a tie."""

tied_rows = st.integers(2, 12).flatmap(
    lambda k: hnp.arrays(
        np.float64, st.tuples(st.integers(1, 40), st.just(k)), elements=st.sampled_from(GRID)
    ).filter(lambda p: bool(np.all(p.sum(axis=1) > 0)))
)


def fitted(method: str, k: int, seed: int = 0) -> object:
    """``method`` fitted on random gridded data: the seed varies the fitted parameters."""
    rng = np.random.default_rng(seed)
    p = rng.choice(GRID, size=(300, k)) + np.eye(k)[rng.integers(0, k, 300)]
    right = rng.uniform(0.3, 0.95)
    y = np.where(rng.random(300) < right, np.argmax(p, axis=1), rng.integers(0, k, 300))
    return make_calibrator(method).fit(p, y)


@settings(max_examples=30, deadline=None)
@given(tied_rows, st.integers(0, 2**16))
@example(np.array([[1.0, 0.4375, 1.0]]), 0)  # split by one ulp on a CI machine (issue 13)
def test_ties_within_a_row_stay_exact_ties(p: Array, seed: int) -> None:
    normalised = p / p.sum(axis=1, keepdims=True)
    for method in SYMMETRIC:
        q = fitted(method, p.shape[1], seed).predict_proba(p)  # type: ignore[attr-defined]
        same_in = normalised[:, :, None] == normalised[:, None, :]
        same_out = q[:, :, None] == q[:, None, :]
        assert np.array_equal(same_in, same_in & same_out), method
        first_max = np.argmax(normalised == normalised.max(axis=1, keepdims=True), axis=1)
        assert np.array_equal(np.argmax(q, axis=1), first_max), method


def test_softmax_ties_are_bit_equal_in_every_position() -> None:
    # A long row puts tied entries both in SIMD bodies and tails.
    for k in range(2, 70):
        z = np.tile([0.3, -1.7, 0.3], k)[: k + 1]
        q = softmax(z[None, :])[0]
        assert len(set(q[z == 0.3].tolist())) == 1
        assert np.argmax(q) == 0


@pytest.mark.parametrize("method", sorted(METHODS))
def test_equal_rows_give_equal_outputs_in_any_batch(method: str) -> None:
    k = 4
    calibrator = fitted(method, k)
    rng = np.random.default_rng(1)
    rows = rng.choice(GRID, size=(50, k)) + 0.01
    batch = rows[rng.integers(0, 50, 2000)]
    q = calibrator.predict_proba(batch)  # type: ignore[attr-defined]
    for row in rows[:10]:
        same = np.all(batch == row, axis=1)
        if same.any():
            assert len({tuple(r) for r in q[same].tolist()}) == 1
            alone = calibrator.predict_proba(row[None, :])[0]  # type: ignore[attr-defined]
            assert alone.tobytes() == q[same][0].tobytes()  # bit-equal, whatever the batch


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fit_does_not_depend_on_row_order(method: str) -> None:
    k = 3
    rng = np.random.default_rng(2)
    p = rng.choice(GRID, size=(400, k)) + np.eye(k)[rng.integers(0, k, 400)]
    y = np.where(rng.random(400) < 0.7, np.argmax(p, axis=1), rng.integers(0, k, 400))
    order = rng.permutation(400)
    a = make_calibrator(method).fit(p, y)
    b = make_calibrator(method).fit(p[order], y[order])
    probe = rng.choice(GRID, size=(100, k)) + 0.01
    np.testing.assert_allclose(
        a.predict_proba(probe), b.predict_proba(probe), rtol=1e-9, atol=1e-12
    )
