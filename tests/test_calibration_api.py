"""The calibrator API: old files, scikit-learn conventions, DataFrames, labels, ties, auto."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from verbcal.calibration import (
    METHODS,
    AutoCalibrator,
    Calibrator,
    CalibratorError,
    HistogramBinning,
    TemperatureScaling,
    make_calibrator,
    uncalibrated,
)

DATA = Path(__file__).parent / "data"
FIXED = [m for m in METHODS if m != "auto"]
Array = NDArray[np.float64]


def grid(n: int, k: int, seed: int) -> tuple[Array, NDArray[np.int64]]:
    """Overconfident rows on a 0.05 grid (many zeros) and gold labels."""
    rng = np.random.default_rng(seed)
    truth = rng.dirichlet(np.full(k, 0.7), size=n)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1), k - 1)
    sharp = truth**3
    steps = np.round(sharp / sharp.sum(axis=1, keepdims=True) * 20)
    steps[steps.sum(axis=1) == 0, 0] = 20
    return steps / 20, y.astype(np.int64)


# ---------------------------------------------------------------- format 1 files


def test_calibrator_files_written_by_format_1_still_load_and_predict_the_same() -> None:
    saved = json.loads((DATA / "calibrators_v1.json").read_text())
    probe = np.array(saved["probe"])
    for method, data in saved["calibrators"].items():
        assert data["version"] == 1
        calibrator = Calibrator.from_dict(data)
        np.testing.assert_allclose(
            calibrator.predict_proba(probe), saved["expected"][method], rtol=1e-12, atol=1e-15
        )
        assert calibrator.labels_ == ("neg", "neu", "pos")
    # format 1's identity carried a fitted floor: that is today's floor method
    assert Calibrator.from_dict(saved["calibrators"]["identity"]).method == "floor"
    # its temperature was the maximum-likelihood fit; histogram keeps the bins it was built with
    old_ts = Calibrator.from_dict(saved["calibrators"]["temperature"])
    assert old_ts.get_params()["prior_sd"] is None
    assert Calibrator.from_dict(saved["calibrators"]["histogram"]).get_params() == {"bins": 5}
    loaded = Calibrator.load(DATA / "temperature_v1.json")
    assert loaded.temperature_ == saved["calibrators"]["temperature"]["params"]["temperature"]


# ---------------------------------------------------------------- scikit-learn conventions


@pytest.mark.parametrize("method", FIXED)
def test_constructor_arguments_are_kept_and_fit_learns_only_trailing_underscore_state(
    method: str,
) -> None:
    calibrator = make_calibrator(method)
    before = calibrator.get_params()
    p, y = grid(300, 3, seed=1)
    calibrator.fit(p, y)
    assert calibrator.get_params() == before  # fit never changes what was given
    learned = {n for n in vars(calibrator) if n.endswith("_") and not n.startswith("_")}
    assert {"labels_", "classes_", "floor_"} <= learned
    assert set(vars(calibrator)) - learned - set(before) <= {"_warm"}


def test_sklearn_clone_get_set_params() -> None:
    from sklearn.base import clone

    ts = TemperatureScaling(floor=1e-3, prior_sd=None)
    copy = clone(ts)
    assert type(copy) is TemperatureScaling and copy.get_params() == ts.get_params()
    assert copy.set_params(floor=1e-4) is copy and copy.floor == 1e-4
    with pytest.raises(CalibratorError, match="has no parameter 'beta'"):
        copy.set_params(beta=1)
    hb = HistogramBinning(bins=5)
    assert clone(hb).bins == 5
    fitted = clone(make_calibrator("auto", candidates=["identity", "temperature"]))
    assert fitted.get_params()["candidates"] == ["identity", "temperature"]


@pytest.mark.parametrize("method", FIXED)
def test_refit_equals_a_fresh_fit(method: str) -> None:
    p_a, y_a = grid(300, 3, seed=2)
    p_a = np.minimum(p_a, 0.9)  # A: capped, so a large fitted floor
    p_b, y_b = grid(300, 3, seed=3)
    refit = make_calibrator(method).fit(p_a, y_a).fit(p_b, y_b)
    fresh = make_calibrator(method).fit(p_b, y_b)
    assert refit.floor_ == fresh.floor_
    assert refit.to_dict() == fresh.to_dict()
    np.testing.assert_array_equal(refit.predict_proba(p_a), fresh.predict_proba(p_a))


def test_histogram_round_trip_keeps_its_bins() -> None:
    p, y = grid(200, 3, seed=4)
    hb = HistogramBinning(bins=5).fit(p, y)
    assert Calibrator.from_dict(hb.to_dict()).get_params() == {"bins": 5}


@pytest.mark.parametrize("method", ["floor", "temperature", "vector", "platt", "histogram"])
def test_sample_weight_equals_repeating_rows(method: str) -> None:
    p, y = grid(150, 3, seed=5)
    counts = np.random.default_rng(0).integers(1, 4, size=len(y))
    weighted = make_calibrator(method).fit(p, y, sample_weight=counts)
    repeated = make_calibrator(method).fit(np.repeat(p, counts, axis=0), np.repeat(y, counts))
    np.testing.assert_allclose(
        weighted.predict_proba(p), repeated.predict_proba(p), rtol=1e-6, atol=1e-9
    )
    with pytest.raises(CalibratorError, match="sample weights"):
        make_calibrator(method).fit(p, y, sample_weight=counts[:-1])


def test_grid_search_over_the_floor_scored_by_negative_log_loss() -> None:
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GridSearchCV

    p, y = grid(400, 3, seed=6)
    floors = [1e-6, 1e-3, 1e-2, 0.1]
    search = GridSearchCV(
        make_calibrator("floor"), {"floor": floors}, scoring="neg_log_loss", cv=4
    ).fit(p, y)
    assert search.best_params_["floor"] in floors
    # the same choice by hand: mean held-out log-loss per floor over the same folds
    means = -search.cv_results_["mean_test_score"]
    best = floors[int(np.argmin(means))]
    assert search.best_params_["floor"] == best
    refit = search.best_estimator_
    assert refit.floor_ == best
    q = refit.predict_proba(p)
    assert log_loss(y, q, labels=[0, 1, 2]) == pytest.approx(
        -np.mean(np.log(np.maximum(q[np.arange(len(y)), y], 1e-15))), rel=1e-9
    )


def test_pipeline_with_the_calibrator_as_final_step() -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    p, y = grid(300, 3, seed=7)
    pipe = Pipeline([("round", FunctionTransformer(np.round)), ("ts", TemperatureScaling())])
    # rounding to 0 decimals would leave all-zero rows: divide first to keep distributions
    pipe.set_params(round=FunctionTransformer(lambda a: np.round(a, 1) + 1e-3))
    pipe.fit(p, y)
    direct = TemperatureScaling().fit(np.round(p, 1) + 1e-3, y)
    np.testing.assert_array_equal(
        pipe.predict_proba(p), direct.predict_proba(np.round(p, 1) + 1e-3)
    )
    np.testing.assert_array_equal(pipe.predict(p), direct.predict(np.round(p, 1) + 1e-3))


def test_core_does_not_import_sklearn() -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, verbcal\n"
        "c = verbcal.make_calibrator('auto').fit(np.eye(3)[[0,1,2]*10] + 0.1, [0,1,2]*10)\n"
        "c.predict_proba(np.eye(3)); assert 'sklearn' not in sys.modules, 'sklearn imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- labels, y and DataFrames


def test_y_as_names_or_indices_and_clear_errors() -> None:
    p, y = grid(120, 3, seed=8)
    labels = ["neg", "neu", "pos"]
    by_index = TemperatureScaling().fit(p, y, labels=labels)
    by_name = TemperatureScaling().fit(p, np.array(labels)[y], labels=labels)
    np.testing.assert_array_equal(by_index.predict_proba(p), by_name.predict_proba(p))
    assert list(by_name.predict(p[:3])) == [labels[i] for i in by_index.predict(p[:3])]
    assert by_index.classes_.tolist() == [0, 1, 2]
    with pytest.raises(CalibratorError, match=r"y holds floats \(e.g. 0.9\)"):
        TemperatureScaling().fit(p, np.where(y == 0, 0.9, y))
    with pytest.raises(CalibratorError, match=r"unknown label.*'mixed'"):
        TemperatureScaling().fit(p, ["mixed", *np.array(labels)[y[1:]]], labels=labels)
    with pytest.raises(CalibratorError, match="index 3 at position 0 is out of range"):
        TemperatureScaling().fit(p, np.r_[3, y[1:]])
    with pytest.raises(CalibratorError, match="pass labels="):
        TemperatureScaling().fit(p, np.array(labels)[y])


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_dataframes_are_matched_by_column_name(library: str) -> None:
    lib = pytest.importorskip(library)
    p, y = grid(200, 3, seed=9)
    labels = ["neg", "neu", "pos"]
    frame = lib.DataFrame({label: p[:, i] for i, label in enumerate(labels)})
    reordered = lib.DataFrame({label: p[:, i] for i, label in reversed(list(enumerate(labels)))})
    names = (
        lib.Series(np.array(labels)[y])
        if library == "pandas"
        else lib.Series("y", np.array(labels)[y])
    )
    fitted = TemperatureScaling().fit(frame, names)
    assert fitted.labels_ == tuple(labels)
    from_array = TemperatureScaling().fit(p, y, labels=labels)
    np.testing.assert_array_equal(fitted.predict_proba(frame), from_array.predict_proba(p))
    np.testing.assert_array_equal(fitted.predict_proba(reordered), fitted.predict_proba(frame))
    out = fitted.predict_proba(reordered, as_frame=True)
    assert type(out).__module__.split(".")[0] == library
    assert list(out.columns) == labels
    np.testing.assert_array_equal(out.to_numpy(), fitted.predict_proba(p))
    refit_reordered = TemperatureScaling().fit(reordered, names)
    assert refit_reordered.labels_ == tuple(reversed(labels))
    np.testing.assert_allclose(
        refit_reordered.predict_proba(frame, as_frame=True)[labels].to_numpy(),
        fitted.predict_proba(frame),
        rtol=1e-9,  # the same fit, summed in another column order
    )
    missing = frame.drop("neu") if library == "polars" else frame.drop(columns="neu")
    with pytest.raises(CalibratorError, match=r"no column for label.*'neu'"):
        fitted.predict_proba(missing)


# ---------------------------------------------------------------- ties


@pytest.mark.parametrize("method", FIXED)
def test_equal_rows_give_bit_equal_outputs_wherever_they_sit(method: str) -> None:
    p, y = grid(300, 4, seed=10)
    calibrator = make_calibrator(method).fit(p, y)
    probe = np.vstack([p[:37], p[5:6], p[40:77], p[5:6], np.tile(p[5], (9, 1))])
    q = calibrator.predict_proba(probe)
    rows = np.flatnonzero((probe == p[5]).all(axis=1))
    assert len(rows) >= 11
    assert (q[rows] == q[rows[0]]).all()


@pytest.mark.parametrize("method", ["identity", "floor", "temperature", "resoftmax"])
def test_equal_entries_stay_exact_ties_and_argmax_goes_to_the_first_label(method: str) -> None:
    p, y = grid(300, 3, seed=11)
    calibrator = make_calibrator(method).fit(p, y)
    tied = np.array([[1.0, 0.4375, 1.0], [0.2, 0.2, 0.2], [0.3, 0.35, 0.35], [0.0, 0.5, 0.5]])
    q = calibrator.predict_proba(tied)
    assert q[0, 0] == q[0, 2] and q[1, 0] == q[1, 1] == q[1, 2]
    assert q[2, 1] == q[2, 2] and q[3, 1] == q[3, 2]
    assert calibrator.predict(tied).tolist() == [0, 0, 1, 1]


# ---------------------------------------------------------------- the baseline and auto


def test_identity_is_the_normalised_distribution_with_nothing_fitted() -> None:
    p, y = grid(200, 3, seed=12)
    identity = make_calibrator("identity").fit(p, y)
    normalised = p / p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(identity.predict_proba(p), normalised, atol=1e-11)
    assert identity.floor_ == 1e-12 and identity.state == {}
    np.testing.assert_array_equal(uncalibrated(p), identity.predict_proba(p))
    other = make_calibrator("identity").fit(np.minimum(p, 0.6) + 0.1, y)
    np.testing.assert_array_equal(other.predict_proba(p), identity.predict_proba(p))


def test_auto_saves_its_table_and_reason_and_prefers_the_simpler_method() -> None:
    rng = np.random.default_rng(13)
    # well calibrated already: the verbalized p is the truth, so identity should win
    truth = rng.dirichlet(np.ones(3), size=300)
    y = (rng.random(300)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    auto = AutoCalibrator(candidates=["identity", "temperature", "vector"], rule="1se")
    auto.fit(truth, y)
    assert [row["method"] for row in auto.cv_] == ["identity", "temperature", "vector"]
    best = min(r["cv_nll"] for r in auto.cv_)
    chosen = next(r for r in auto.cv_ if r["method"] == auto.chosen_)
    # the 1-SE rule with the paired standard error: chosen is within one se of the best,
    # and every simpler candidate is not
    assert chosen["cv_nll"] <= best + chosen["se"]
    simpler = [r for r in auto.cv_ if r["complexity"] < chosen["complexity"]]
    assert all(r["cv_nll"] > best + r["se"] for r in simpler)
    assert auto.chosen_ in auto.reason_
    loaded = Calibrator.from_dict(json.loads(json.dumps(auto.to_dict())))
    assert loaded.chosen_ == auto.chosen_ and loaded.cv_ == auto.cv_
    np.testing.assert_array_equal(loaded.predict_proba(truth), auto.predict_proba(truth))
    # overconfident: sharpened rows need a temperature well above 1
    sharp = truth**4 / (truth**4).sum(axis=1, keepdims=True)
    picked = AutoCalibrator(candidates=["identity", "temperature"], rule="1se").fit(sharp, y)
    assert picked.chosen_ == "temperature" and picked.calibrator_.temperature_ > 2


def test_stacking_weights_match_an_independent_optimiser() -> None:
    from scipy import optimize

    from verbcal.calibration.auto import stacking_weights

    rng = np.random.default_rng(5)
    gold = rng.uniform(0.01, 1, size=(200, 4)) ** rng.uniform(0.5, 3, size=4)
    item_weight = rng.uniform(0.5, 2, size=200)
    w = stacking_weights(gold, item_weight)

    def loss(v: np.ndarray) -> float:
        return float(-np.average(np.log(gold @ v), weights=item_weight))

    ref = optimize.minimize(
        loss,
        np.full(4, 0.25),
        method="SLSQP",
        bounds=[(0, 1)] * 4,
        constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}],
        options={"ftol": 1e-14},
    )
    assert w.min() >= 0 and w.sum() == pytest.approx(1)
    assert loss(w) == pytest.approx(ref.fun, abs=1e-8)
    np.testing.assert_allclose(w, ref.x, atol=1e-3)


def test_auto_stack_mixes_its_members_and_round_trips() -> None:
    rng = np.random.default_rng(13)
    truth = rng.dirichlet(np.ones(3), size=300)
    y = (rng.random(300)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    sharp = truth**3 / (truth**3).sum(axis=1, keepdims=True)
    auto = AutoCalibrator(candidates=["identity", "temperature", "matrix[prior=1]"]).fit(sharp, y)
    assert auto.rule == "stack" and set(auto.weights_) == set(auto.members_)
    assert sum(auto.weights_.values()) == pytest.approx(1)
    assert min(auto.weights_.values()) >= 0.01
    assert auto.weights_.get("identity", 0) < 0.05  # sharpened: the raw p is worst
    assert [r["weight"] for r in auto.cv_] == [auto.weights_.get(r["method"], 0) for r in auto.cv_]
    assert all(r["se"] is not None and r["se"] >= 0 for r in auto.cv_)  # paired, vs the best
    mixed = sum(w * auto.members_[m].predict_proba(sharp) for m, w in auto.weights_.items())
    np.testing.assert_allclose(auto.predict_proba(sharp), mixed, rtol=1e-12)
    loaded = Calibrator.from_dict(json.loads(json.dumps(auto.to_dict())))
    np.testing.assert_array_equal(loaded.predict_proba(sharp), auto.predict_proba(sharp))
    assert loaded.describe() == auto.describe()


def test_auto_files_from_before_stacking_still_load() -> None:
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(3), size=60)
    y = rng.integers(0, 3, size=60)
    auto = AutoCalibrator(candidates=["identity", "temperature"], rule="1se").fit(p, y)
    old = auto.to_dict()
    chosen = old["state"]["chosen"]
    old["params"].pop("rule")
    old["state"] = {
        "chosen": chosen,
        "reason": old["state"]["reason"],
        "cv": old["state"]["cv"],
        "calibrator": old["state"]["members"][chosen],
    }
    loaded = Calibrator.from_dict(old)
    np.testing.assert_array_equal(loaded.predict_proba(p), auto.predict_proba(p))
