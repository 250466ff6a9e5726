"""Calibrators: invert softmax, floors, temperature fits vs independent references, persistence."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax
from sklearn.calibration import _TemperatureScaling

from verbcal.calibration import (
    METHODS,
    OUTPUT_FLOOR,
    VERSION,
    Calibrator,
    CalibratorError,
    ReSoftmax,
    TemperatureScaling,
    count_rows,
    distinct_rows,
    fit_inverse_temperature,
    invert_softmax,
    make_calibrator,
    method_options,
    parse_floor,
    softmax,
)
from verbcal.calibration import rows as cal

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]
ALL_METHODS = list(METHODS)
MLE = {"prior_sd": None}
"""The paper's exact maximum-likelihood temperature (the default is MAP)."""


# ---------------------------------------------------------------- data


def grid_data(n: int, k: int, seed: int, sharpen: float = 3.0) -> tuple[Array, IntArray]:
    """Overconfident verbalized rows on a 0.05 grid with many exact zeros.

    Gold labels come from a Dirichlet "truth"; the verbalized row is the truth sharpened
    and rounded to multiples of 0.05 (so rows need not sum to exactly 1).
    """
    rng = np.random.default_rng(seed)
    truth = rng.dirichlet(np.full(k, 0.7), size=n)
    y = (rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    sharp = truth**sharpen
    sharp /= sharp.sum(axis=1, keepdims=True)
    steps = np.round(sharp * 20)
    steps[steps.sum(axis=1) == 0, 0] = 20
    return steps / 20, np.minimum(y, k - 1).astype(np.int64)


def tempered_data(
    n: int, k: int, t0: float, seed: int, scale: float = 2.0
) -> tuple[Array, IntArray]:
    """Verbalized p = softmax(z); gold drawn from softmax(z / t0): the best T is t0."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, scale, size=(n, k))
    p = softmax(z)
    truth = softmax(z / t0)
    y = (rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    return p, np.minimum(y, k - 1).astype(np.int64)


def mean_nll(q: Array, y: IntArray) -> float:
    return float(-np.mean(np.log(np.maximum(q[np.arange(len(y)), y], 1e-12))))


def reference_temperature(logits: Array, y: IntArray) -> float:
    """Plain numpy/scipy: NLL of softmax(z / T) minimised over log T by bounded Brent."""

    def nll(log_t: float) -> float:
        log_q = log_softmax(logits / math.exp(log_t), axis=1)
        return float(-np.mean(log_q[np.arange(len(y)), y]))

    result = minimize_scalar(nll, bounds=(-8.0, 8.0), method="bounded", options={"xatol": 1e-12})
    return math.exp(result.x)


def fitted(
    method: str, p: Array, y: IntArray, labels: list[str] | None = None, **options: object
) -> Calibrator:
    """``method`` fitted with those of ``options`` it takes (e.g. a floor)."""
    return make_calibrator(method, **method_options(method, **options)).fit(p, y, labels=labels)


def at_temperature(
    t: float, k: int, cls: type[TemperatureScaling] = TemperatureScaling
) -> Calibrator:
    """A temperature calibrator (floor 1e-12) whose T is set to ``t`` after a fit."""
    ts = cls(floor=1e-12) if cls is TemperatureScaling else cls()
    ts.fit(np.full((k, k), 1.0 / k) + np.eye(k), np.arange(k))
    ts.temperature_ = t
    return ts


prob_rows = st.integers(2, 6).flatmap(
    lambda k: hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 8), st.just(k)),
        elements=st.floats(1e-3, 1.0, allow_nan=False),
    )
)


# ---------------------------------------------------------------- invert softmax


@settings(max_examples=60, deadline=None)
@given(prob_rows)
def test_invert_then_softmax_returns_normalised_p(p: Array) -> None:
    normalised = p / p.sum(axis=1, keepdims=True)
    floor = 0.5 * normalised.min()  # below every entry: the floor does nothing
    q = softmax(invert_softmax(p, floor))
    np.testing.assert_allclose(q, normalised, rtol=1e-12, atol=1e-15)


def test_invert_softmax_clips_at_the_floor_after_normalising() -> None:
    # normalised first: (0, 2, 8) -> (0, 0.2, 0.8); then the zero becomes the floor
    z = invert_softmax([[0.0, 2.0, 8.0]], 1e-3)
    np.testing.assert_allclose(z, np.log([[1e-3, 0.2, 0.8]]), rtol=0, atol=1e-15)
    q = softmax(z)
    np.testing.assert_allclose(q, np.array([[1e-3, 0.2, 0.8]]) / 1.001, rtol=1e-12)


def test_invert_softmax_mix_mode() -> None:
    z = invert_softmax([[0.0, 1.0]], 0.1, mode="mix")
    np.testing.assert_allclose(np.exp(z), [[0.05, 0.95]], rtol=1e-12)
    with pytest.raises(CalibratorError, match="unknown floor mode"):
        invert_softmax([[0.5, 0.5]], 0.1, mode="cube")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [[[0.5, -0.1]], [[np.nan, 1.0]], [[np.inf, 1.0]], [[0.0, 0.0], [0.5, 0.5]]]
)
def test_check_probs_rejects_bad_rows(bad: list[list[float]]) -> None:
    with pytest.raises(CalibratorError):
        cal.check_probs(bad)


@pytest.mark.parametrize("value", [0, 1, -1e-3, 2.0])
def test_floor_must_lie_in_the_open_unit_interval(value: float) -> None:
    with pytest.raises(CalibratorError, match="floor must lie in"):
        parse_floor(value)
    assert parse_floor("fit") == "fit"
    assert parse_floor("1e-6") == 1e-6


# ---------------------------------------------------------------- temperature: properties


@settings(max_examples=40, deadline=None)
@given(prob_rows)
def test_temperature_one_is_the_identity(p: Array) -> None:
    normalised = p / p.sum(axis=1, keepdims=True)
    ts = at_temperature(1.0, p.shape[1])
    identity = make_calibrator("identity").fit(p, np.zeros(len(p), dtype=np.int64))
    np.testing.assert_allclose(ts.predict_proba(p), normalised, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(ts.predict_proba(p), identity.predict_proba(p))


@settings(max_examples=60, deadline=None)
@given(prob_rows, st.floats(0.05, 20.0))
def test_temperature_preserves_argmax_and_order_within_rows(p: Array, t: float) -> None:
    ts = at_temperature(t, p.shape[1])
    q = ts.predict_proba(p)
    normalised = p / p.sum(axis=1, keepdims=True)
    # the top label is kept wherever it leads by more than rounding (rows one ulp apart,
    # e.g. [1 - 2**-53, 1], may come back as an exact tie; see metrics.tie_scores)
    top = np.sort(normalised, axis=1)
    clear = top[:, -1] > top[:, -2] * (1 + 1e-9)
    assert np.array_equal(np.argmax(q, axis=1)[clear], np.argmax(normalised, axis=1)[clear])
    for before, after in zip(normalised, q, strict=True):
        for i in range(len(before)):
            for j in range(len(before)):
                if before[i] > before[j] * (1 + 1e-9):
                    assert after[i] > after[j]
                if before[i] == before[j]:
                    assert after[i] == after[j]  # ties stay exact ties


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(2, 30), elements=st.floats(1e-3, 1 - 1e-3)),
    st.floats(0.05, 20.0),
)
def test_temperature_preserves_confidence_order_across_rows_for_k2(p1: Array, t: float) -> None:
    p = np.column_stack([1 - p1, p1])
    ts = at_temperature(t, 2)
    q = ts.predict_proba(p)[:, 1]
    order = np.argsort(p[:, 1], kind="stable")
    assert np.all(np.diff(q[order]) >= -1e-15)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 6), st.data())
def test_resoftmax_of_one_hot_never_exceeds_the_bound(k: int, data: st.DataObject) -> None:
    hot = data.draw(st.integers(0, k - 1))
    row = data.draw(hnp.arrays(np.float64, k, elements=st.floats(0.0, 1.0)).filter(np.any))
    p = np.vstack([np.eye(k)[hot], row])
    rs = at_temperature(1.0, k, ReSoftmax)
    q = rs.predict_proba(p)
    bound = math.e / (math.e + k - 1)
    assert q[0, hot] == pytest.approx(bound, rel=1e-12)  # one-hot attains the bound
    assert q.max() <= bound * (1 + 1e-12)  # and nothing exceeds it


def test_resoftmax_bound_values_from_the_paper() -> None:
    got = [at_temperature(1.0, k, ReSoftmax).predict_proba(np.eye(k)[:1]).max() for k in (2, 3, 5)]
    np.testing.assert_allclose(
        got, [0.7310585786300049, 0.5761168847658291, 0.4046096751916], rtol=1e-12
    )


# ---------------------------------------------------------------- temperature: fits


def test_fitted_temperature_matches_plain_scipy_reference() -> None:
    p, y = grid_data(3000, 4, seed=1)
    for floor in (1e-3, 1e-6):
        ts = TemperatureScaling(floor=floor, **MLE).fit(p, y)
        logits = invert_softmax(p, floor)
        assert ts.temperature == pytest.approx(reference_temperature(logits, y), rel=1e-6)


def test_fitted_temperature_matches_sklearn_on_estimated_logits() -> None:
    p, y = grid_data(3000, 4, seed=2)
    ts = TemperatureScaling(floor=1e-4, **MLE).fit(p, y)
    logits = ts.logits(p / p.sum(axis=1, keepdims=True))
    sk = _TemperatureScaling().fit(logits, y)
    assert 1.0 / float(sk.beta_) == pytest.approx(ts.temperature, rel=1e-6)
    np.testing.assert_allclose(sk.predict(logits), ts.predict_proba(p), rtol=1e-6, atol=1e-12)


def test_sklearn_trap_rows_not_summing_to_one_are_taken_as_logits() -> None:
    """sklearn reads rows that do not sum to 1 as logits; verbcal normalises them first."""
    p, y = grid_data(2000, 3, seed=3, sharpen=2.0)
    p = np.maximum(p, 0.05)  # no zeros: every floor below 0.05 is inactive
    normalised = p / p.sum(axis=1, keepdims=True)
    percent = 100.0 * p  # "percentages": rows sum to about 100 + clipping excess
    assert not np.allclose(percent.sum(axis=1), 1.0)

    ts_raw = TemperatureScaling(floor=1e-12, **MLE).fit(percent, y)
    ts_norm = TemperatureScaling(floor=1e-12, **MLE).fit(normalised, y)
    assert ts_raw.temperature == pytest.approx(ts_norm.temperature, rel=1e-12)

    # on proper probabilities sklearn agrees (its log(p + 1e-12) ~ log p here)
    sk_norm = 1.0 / float(_TemperatureScaling().fit(normalised, y).beta_)
    assert sk_norm == pytest.approx(ts_norm.temperature, rel=1e-6)
    # fed percentages, sklearn uses them as logits: a very different temperature
    sk_raw = 1.0 / float(_TemperatureScaling().fit(percent, y).beta_)
    assert abs(math.log(sk_raw / ts_norm.temperature)) > math.log(5)


def test_temperature_fit_recovers_the_generating_temperature() -> None:
    for t0 in (0.5, 2.0):
        p, y = tempered_data(40_000, 3, t0, seed=4)
        ts = TemperatureScaling(floor=1e-12, **MLE).fit(p, y)
        assert ts.temperature == pytest.approx(t0, rel=0.05)
        assert ts.state == {"temperature": ts.temperature}  # T itself, not 1/T


def test_fit_over_distinct_rows_equals_fit_over_all_rows() -> None:
    p, y = grid_data(5000, 4, seed=5)
    ts = TemperatureScaling(floor=1e-6, **MLE).fit(p, y)
    data = count_rows(p, y)
    assert len(data.rows) < 1500  # the grid repeats: fewer distinct rows than items
    assert data.n == 5000
    logits = invert_softmax(p, 1e-6)
    beta_all = fit_inverse_temperature(logits, np.eye(4)[y])
    assert ts.temperature == pytest.approx(1.0 / beta_all, rel=1e-10)


def test_inverse_temperature_hits_the_bounds_when_the_data_demand_it() -> None:
    z = np.log(np.array([[0.9, 0.1], [0.1, 0.9]]))
    # always right: beta grows to the upper bound; always wrong: beta shrinks to the lower
    assert fit_inverse_temperature(z, np.array([[1.0, 0], [0, 1.0]])) == cal.BETA_BOUNDS[1]
    assert fit_inverse_temperature(z, np.array([[0, 1.0], [1.0, 0]])) == cal.BETA_BOUNDS[0]


# ---------------------------------------------------------------- floors


def test_floor_trap_the_floor_decides_the_temperature() -> None:
    p, y = grid_data(3000, 4, seed=0)
    assert (p == 0).mean() > 0.3
    temps = {
        f: TemperatureScaling(floor=f, **MLE).fit(p, y).temperature for f in (1e-3, 1e-6, 1e-12)
    }
    assert temps[1e-3] < temps[1e-6] < temps[1e-12]
    assert temps[1e-6] / temps[1e-3] > 1.5
    assert temps[1e-12] / temps[1e-6] > 1.5


def test_fitted_floor_is_saved_reported_and_no_worse_than_fixed_floors(tmp_path: Path) -> None:
    p, y = grid_data(3000, 4, seed=0)
    ts = TemperatureScaling(floor="fit").fit(p, y)
    floor = ts.to_dict()["floor"]
    assert floor["mode"] == "clip" and floor["fitted"] is True
    assert 1e-12 <= floor["value"] <= 0.5 / 4
    assert "fitted" in ts.describe_floor() and "clip floor" in ts.describe_floor()
    for fixed in (1e-3, 1e-6, 1e-12):
        other = TemperatureScaling(floor=fixed).fit(p, y)
        assert ts.fit_info["nll_after"] <= other.fit_info["nll_after"] + 1e-12
        assert other.to_dict()["floor"] == {"mode": "clip", "value": fixed, "fitted": False}
    ts.save(tmp_path / "ts.json")
    assert json.loads((tmp_path / "ts.json").read_text())["floor"] == floor
    assert Calibrator.load(tmp_path / "ts.json").floor_ == ts.floor_


def test_fit_floor_mix_mode_and_identity() -> None:
    p, y = grid_data(2000, 3, seed=6)
    ts = TemperatureScaling(floor="fit", floor_mode="mix").fit(p, y)
    assert ts.floor_mode == "mix" and 1e-12 <= ts.floor_ <= 0.5  # type: ignore[operator]
    floor_only = make_calibrator("floor").fit(p, y)
    # the floor method fits the floor alone at T = 1: a mid-size floor beats both extremes
    assert 1e-6 < floor_only.floor_ < 0.5 / 3  # type: ignore[operator]


def test_floor_is_irrelevant_when_it_is_below_every_entry() -> None:
    p, y = tempered_data(500, 3, 1.5, seed=7, scale=1.0)
    assert p.min() > 1e-4
    a = TemperatureScaling(floor=1e-12).fit(p, y).temperature
    b = TemperatureScaling(floor=1e-5).fit(p, y).temperature
    c = TemperatureScaling(floor=0.05).fit(p, y).temperature
    assert a == b
    assert c != a


# ---------------------------------------------------------------- distinct-row counting


def _general_counts(probs: Array, y: IntArray) -> dict[tuple[float, ...], list[float]]:
    k = probs.shape[1]
    rows, inverse = distinct_rows(probs)
    flat = np.bincount(inverse * k + y, minlength=len(rows) * k).reshape(len(rows), k)
    return {tuple(r): list(map(float, c)) for r, c in zip(rows, flat, strict=True)}


def _naive_counts(probs: Array, y: IntArray) -> dict[tuple[float, ...], list[float]]:
    k = probs.shape[1]
    table: dict[tuple[float, ...], list[float]] = {}
    for row, label in zip(probs, y, strict=True):
        key = tuple(row)
        table.setdefault(key, [0.0] * k)[label] += 1
    return table


@settings(max_examples=80, deadline=None)
@given(
    decimals=st.integers(0, 4),
    k=st.integers(2, 5),
    top=st.integers(1, 120),
    n=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
)
@example(decimals=0, k=5, top=112, n=3, seed=0)  # whole numbers up to 112: found by hypothesis
def test_decimal_grid_fast_path_matches_the_general_path(
    decimals: int, k: int, top: int, n: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, top + 1, size=(n, k))
    digits[digits.sum(axis=1) == 0, 0] = 1
    probs = digits / 10.0**decimals  # top > 10**decimals gives percentage-like values > 1
    y = rng.integers(0, k, size=n)
    fast = cal._decimal_grid_counts(probs, y)
    assert fast is not None
    rows, table = fast
    got = {tuple(r): list(map(float, c)) for r, c in zip(rows, table, strict=True)}
    assert len(got) == len(rows)  # distinct raw rows
    assert got == _general_counts(probs, y)
    assert got == _naive_counts(probs, y)
    counts = count_rows(probs, y)
    assert counts.n == n
    assert sorted(zip(map(tuple, counts.rows), map(list, counts.counts), strict=True)) == sorted(
        (tuple(np.asarray(r) / sum(r)), c) for r, c in got.items()
    )


def test_fast_path_declines_data_off_the_decimal_grid() -> None:
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(3), size=200)
    y = rng.integers(0, 3, size=200)
    assert cal._decimal_grid_counts(probs, y) is None
    counts = count_rows(probs, y)
    got = {tuple(r): list(c) for r, c in zip(counts.rows, counts.counts, strict=True)}
    assert got == _naive_counts(probs / probs.sum(axis=1, keepdims=True), y)


def test_fast_path_reads_float_noise_as_the_decimal_it_stands_for() -> None:
    probs = np.array([[0.1 + 0.2, 0.7], [0.3, 0.7], [0.3, 0.7]])
    rows, table = cal._decimal_grid_counts(probs, np.array([0, 1, 1]))  # type: ignore[misc]
    np.testing.assert_array_equal(rows, [[0.3, 0.7]])
    np.testing.assert_array_equal(table, [[1.0, 2.0]])


def test_distinct_rows_survive_hash_collisions() -> None:
    # rows with equal weighted sums: (a, b) . (sqrt2, sqrt3) collide only by accident,
    # so build a collision explicitly and check the exact fallback
    w = np.sqrt([2.0, 3.0])
    a = np.array([1.0, 0.0])
    b = np.array([0.0, w[0] / w[1]])
    probs = np.vstack([a, b, a])
    assert len(np.unique(probs @ w)) == 1  # the hashed keys do collide
    rows, inverse = distinct_rows(probs)
    np.testing.assert_array_equal(rows[inverse], probs)
    assert len(rows) == 2


# ---------------------------------------------------------------- every calibrator


@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_save_load_gives_identical_predictions(method: str, k: int, tmp_path: Path) -> None:
    p, y = grid_data(600, k, seed=10 + k)
    calibrator = fitted(method, p, y, labels=[f"c{i}" for i in range(k)], floor=1e-4)
    path = tmp_path / f"{method}.json"
    calibrator.save(path)
    loaded = Calibrator.load(path)
    assert type(loaded) is type(calibrator)
    assert loaded.labels == tuple(f"c{i}" for i in range(k))
    assert loaded.to_dict() == json.loads(path.read_text())
    probe = np.vstack([p, np.eye(k), np.full((1, k), 1.0 / k)])
    np.testing.assert_array_equal(loaded.predict_proba(probe), calibrator.predict_proba(probe))


@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_outputs_are_distributions(method: str, k: int) -> None:
    p, y = grid_data(400, k, seed=20 + k)
    q = fitted(method, p, y, floor=1e-4).predict_proba(p)
    assert q.shape == p.shape
    assert np.all(np.isfinite(q)) and np.all(q >= 0)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_subsets_missing_a_class(method: str) -> None:
    p, y = grid_data(600, 4, seed=30)
    keep = y != 2  # class 2 never gold in the fitting data
    calibrator = fitted(method, p[keep], y[keep], floor=1e-4)
    q = calibrator.predict_proba(p)
    assert np.all(np.isfinite(q))
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # predicting on a subset whose rows never favour some class also works
    sub = p[np.argmax(p, axis=1) == 0]
    np.testing.assert_array_equal(calibrator.predict_proba(sub), q[np.argmax(p, axis=1) == 0])
    # a single class as gold
    one = fitted(method, p[:50], np.zeros(50, dtype=np.int64), floor=1e-4)
    q1 = one.predict_proba(p)
    assert np.all(np.isfinite(q1))
    np.testing.assert_allclose(q1.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_vector_and_matrix_reduce_nll_on_miscalibrated_data() -> None:
    """Gold from softmax(a * z + b) with class-wise a, b: beyond what one T can fix."""
    rng = np.random.default_rng(40)
    n, k = 6000, 3
    z = rng.normal(0, 2.0, size=(n, k))
    p = softmax(z)
    truth = softmax(z * np.array([0.4, 1.0, 2.0]) + np.array([0.8, 0.0, -0.8]))
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1), k - 1)
    fit_idx, test_idx = np.arange(0, n, 2), np.arange(1, n, 2)
    nll = {}
    for method in ("identity", "temperature", "vector", "matrix"):
        c = fitted(method, p[fit_idx], y[fit_idx], floor=1e-12)
        nll[method] = mean_nll(c.predict_proba(p[test_idx]), y[test_idx])
    assert nll["temperature"] < nll["identity"]
    assert nll["vector"] < nll["temperature"] - 0.02
    assert nll["matrix"] < nll["temperature"] - 0.02


def test_vector_scaling_recovers_generating_parameters() -> None:
    rng = np.random.default_rng(41)
    n, k = 30_000, 3
    p = softmax(rng.normal(0, 2.0, size=(n, k)))
    a, b = np.array([0.5, 1.0, 1.5]), np.array([0.5, 0.0, -0.5])
    truth = softmax(np.log(p) * a + b)  # the model vector scaling fits on z = log p
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1), k - 1)
    vs = fitted("vector", p, y, floor=1e-12)
    z = np.log(p)

    def nll(theta: Array) -> float:
        return float(-np.mean(log_softmax(z * theta[:k] + theta[k:], axis=1)[np.arange(n), y]))

    ref = minimize(nll, np.r_[np.ones(k), np.zeros(k)], method="BFGS", options={"gtol": 1e-10})
    # the maximum-likelihood fit itself, by an independent optimiser
    np.testing.assert_allclose(vs.weights_, ref.x[:k], atol=1e-4)
    np.testing.assert_allclose(vs.bias_ - vs.bias_.mean(), ref.x[k:] - ref.x[k:].mean(), atol=1e-4)
    # and close to the generating parameters (logits are identified up to a shift)
    np.testing.assert_allclose(vs.weights_, a, atol=0.1)
    np.testing.assert_allclose(vs.bias_ - vs.bias_.mean(), b - b.mean(), atol=0.1)


def test_matrix_prior_is_the_map_fit_and_bounds_separable_data() -> None:
    rng = np.random.default_rng(42)
    n, k, sd = 40, 3, 1.0
    y = np.arange(n) % k
    p = np.full((n, k), 0.1)
    p[np.arange(n), y] = 0.8  # every item ranked right: separable
    p += rng.uniform(0, 0.05, size=(n, k))
    p /= p.sum(axis=1, keepdims=True)
    plain = fitted("matrix", p, y, floor=1e-12)
    prior = make_calibrator("matrix", prior_sd=sd, floor=1e-12).fit(p, y)
    # the plain fit sharpens until the optimiser stops; the prior keeps W near I
    assert np.diag(plain.weights_).min() > 3 * np.diag(prior.weights_).max()
    z, eye = np.log(p), np.r_[np.eye(k).ravel(), np.zeros(k)]
    off = 1 - np.eye(k)

    def objective(theta: Array) -> float:  # written out independently: NLL + ODIR + prior
        w, b = theta[: k * k].reshape(k, k), theta[k * k :]
        nll = -np.mean(log_softmax(z @ w.T + b, axis=1)[np.arange(n), y])
        odir = 1e-2 * (np.sum((w * off) ** 2) / (k * (k - 1)) + np.sum(b**2) / k)
        return float(nll + odir + np.sum((theta - eye) ** 2) / (2 * sd**2 * n))

    ref = minimize(objective, eye, method="BFGS", options={"gtol": 1e-10})
    theta = np.r_[prior.weights_.ravel(), prior.bias_]
    assert objective(theta) == pytest.approx(ref.fun, abs=1e-7)
    np.testing.assert_allclose(theta, ref.x, atol=1e-3)


@pytest.mark.parametrize("method", ["platt", "isotonic", "histogram"])
def test_one_vs_rest_k2_uses_the_complement(method: str) -> None:
    p, y = grid_data(500, 2, seed=50)
    c = fitted(method, p, y, floor=1e-4)
    assert len(c.state["maps"]) == 1
    q = c.predict_proba(p)
    np.testing.assert_array_equal(q[:, 0], 1.0 - q[:, 1])
    p5, y5 = grid_data(500, 5, seed=51)
    assert len(fitted(method, p5, y5, floor=1e-4).state["maps"]) == 5


def test_histogram_binning_exact_values() -> None:
    # K = 2, class-1 scores 0.05 (x4, one positive), 0.55 (x2, both positive), 0.95 (x1, negative)
    p1 = np.array([0.05, 0.05, 0.05, 0.05, 0.55, 0.55, 0.95])
    y = np.array([1, 0, 0, 0, 1, 1, 0])
    c = make_calibrator("histogram", bins=10).fit(np.column_stack([1 - p1, p1]), y)
    values = c.state["maps"][0]["values"]
    expected = [0.25, 0.15, 0.25, 0.35, 0.45, 1.0, 0.65, 0.75, 0.85, 0.0]
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-15)
    q = c.predict_proba([[0.95, 0.05], [0.4, 0.6], [0.5, 0.5]])
    # 0.6 lies exactly on the edge 6/10: right-closed bins put it in bin 5 (0.5, 0.6]
    np.testing.assert_allclose(q[:, 1], [0.25, 1 - OUTPUT_FLOOR, 0.45], atol=1e-15)


def test_isotonic_exact_values() -> None:
    p1 = np.array([0.1, 0.1, 0.3, 0.3, 0.7, 0.9])
    y = np.array([0, 1, 1, 0, 0, 1])
    c = make_calibrator("isotonic").fit(np.column_stack([1 - p1, p1]), y)
    m = c.state["maps"][0]
    # 0.1 -> 1/2, 0.3 -> 1/2, 0.7 -> 0 violates: all three pool to (1 + 1 + 0) / 5
    assert m["x"] == [0.1, 0.3, 0.7, 0.9]
    np.testing.assert_allclose(m["y"], [0.4, 0.4, 0.4, 1.0], atol=1e-15)
    q = c.predict_proba([[0.2, 0.8], [0.95, 0.05]])
    np.testing.assert_allclose(q[:, 1], [0.7, 0.4], atol=1e-12)  # linear between knots, clamped


def test_platt_k2_is_logistic_regression_with_platt_targets() -> None:
    p, y = grid_data(800, 2, seed=52)
    c = fitted("platt", p, y, floor=1e-3)
    s = np.log(np.maximum(p[:, 1] / p.sum(1), 1e-3)) - np.log(np.maximum(p[:, 0] / p.sum(1), 1e-3))
    n_pos, n_neg = (y == 1).sum(), (y == 0).sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(theta: Array) -> float:
        u = theta[0] * s + theta[1]
        return float(np.sum(t * np.logaddexp(0, -u) + (1 - t) * np.logaddexp(0, u)))

    ref = minimize(
        loss,
        np.array([1.0, 0.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 5000},
    )
    m = c.state["maps"][0]
    assert m["slope"] == pytest.approx(ref.x[0], abs=1e-4)
    assert m["intercept"] == pytest.approx(ref.x[1], abs=1e-4)


# ---------------------------------------------------------------- protocol and errors


def test_from_dict_rejects_wrong_format_newer_version_and_unknown_method() -> None:
    good = fitted("temperature", *grid_data(200, 3, seed=60), floor=1e-3).to_dict()
    with pytest.raises(CalibratorError, match="not a verbcal calibrator"):
        Calibrator.from_dict({**good, "format": "netcal"})
    with pytest.raises(CalibratorError, match="not a verbcal calibrator"):
        Calibrator.from_dict({k: v for k, v in good.items() if k != "format"})
    with pytest.raises(CalibratorError, match="newer than this verbcal"):
        Calibrator.from_dict({**good, "version": VERSION + 1})
    with pytest.raises(CalibratorError, match="unknown method 'beta'"):
        Calibrator.from_dict({**good, "method": "beta"})
    assert Calibrator.from_dict(good).to_dict() == good


def test_load_reports_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CalibratorError, match="cannot read calibrator"):
        Calibrator.load(bad)
    with pytest.raises(CalibratorError, match="cannot read calibrator"):
        Calibrator.load(tmp_path / "missing.json")


def test_usage_errors() -> None:
    p, y = grid_data(100, 3, seed=61)
    with pytest.raises(CalibratorError, match="not fitted"):
        make_calibrator("temperature").predict_proba(p)
    with pytest.raises(CalibratorError, match="100 rows but 99 labels"):
        make_calibrator("temperature").fit(p, y[:99])
    with pytest.raises(CalibratorError, match=r"index 3 at position 0 is out of range"):
        make_calibrator("temperature").fit(p, np.full(100, 3))
    with pytest.raises(CalibratorError, match="2 labels for 3 columns"):
        make_calibrator("temperature").fit(p, y, labels=["a", "b"])
    c = make_calibrator("temperature", floor=1e-3).fit(p, y)
    with pytest.raises(CalibratorError, match="expected 3 columns"):
        c.predict_proba(np.full((2, 2), 0.5))
    with pytest.raises(CalibratorError, match="unknown method"):
        make_calibrator("beta")


def test_fit_info_reports_nll_before_and_after() -> None:
    p, y = grid_data(1000, 3, seed=62)
    c = TemperatureScaling(floor=1e-3).fit(p, y)
    normalised = p / p.sum(axis=1, keepdims=True)
    assert c.fit_info["n"] == 1000
    assert c.fit_info["nll_before"] == pytest.approx(mean_nll(normalised, y), rel=1e-12)
    assert c.fit_info["nll_after"] == pytest.approx(mean_nll(c.predict_proba(p), y), rel=1e-12)
    assert c.fit_info["floored_fraction"] == pytest.approx((normalised < 1e-3).mean(), rel=1e-12)
    assert Counter(type(v) for v in c.fit_info.values()) == Counter({float: 4})


def test_temperature_warns_when_no_finite_best_t_exists() -> None:
    """Every calibration item ranked right: the NLL falls as T -> 0, so T hits its bound."""
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    y = np.array([0, 1, 0, 1])
    calibrator = TemperatureScaling(floor=1e-6, **MLE).fit(probs, y)
    assert calibrator.temperature == pytest.approx(1e-6)
    assert len(calibrator.warnings) == 1 and "edge of the search range" in calibrator.warnings[0]
    reloaded = Calibrator.from_dict(calibrator.to_dict())
    assert reloaded.warnings == calibrator.warnings
    mixed = TemperatureScaling(floor=1e-6, **MLE).fit(probs, np.array([0, 1, 1, 1]))
    assert mixed.warnings == [] and 1e-3 < mixed.temperature < 1e3


def test_fit_warns_when_the_data_cannot_support_the_method() -> None:
    """Before: matrix on 2 items and isotonic on one class reached in-sample NLL ~ 0 with
    no warning at all."""
    two = make_calibrator("matrix").fit([[0.9, 0.1], [0.2, 0.8]], [0, 1])
    assert any("2 items for 6 free parameters of matrix" in w for w in two.warnings)
    assert any("separable" in w for w in two.warnings)
    one_class = make_calibrator("isotonic").fit([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 0, 0])
    assert any("no fitting item has the gold label '1'" in w for w in one_class.warnings)
    assert Calibrator.from_dict(one_class.to_dict()).warnings == one_class.warnings
    # enough overlapping items: no warning; a prior exempts the items-per-parameter rule
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1.0, 1.0, 1.0], size=200)
    y = np.array([rng.choice(3, p=row) for row in p])
    assert make_calibrator("matrix").fit(p, y).warnings == []
    assert make_calibrator("isotonic").fit(p, y).warnings == []
    small = make_calibrator("matrix[prior=1]").fit(p[:20], y[:20]).warnings
    assert not any("free parameters" in w for w in small)


def test_resoftmax_says_which_edge_its_temperature_hit() -> None:
    """Every item ranked wrong: T -> infinity (uniform), and the note says so, not T -> 0."""
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    wrong = make_calibrator("resoftmax").fit(probs, np.array([1, 0, 1, 0]))
    assert wrong.temperature == pytest.approx(1e6)
    (note,) = wrong.warnings
    assert "upper edge" in note and "T -> infinity" in note and "T -> 0" not in note
    right = make_calibrator("resoftmax").fit(probs, np.array([0, 1, 0, 1]))
    assert right.temperature == pytest.approx(1e-6)
    (note,) = right.warnings
    assert "lower edge" in note and "T -> 0" in note and "infinity" not in note
