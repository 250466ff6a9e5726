"""Declarative parameter constraints: one check, one message, for objects, specs and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from verbcal.calibration import (
    METHODS,
    AutoCalibrator,
    Calibrator,
    CalibratorError,
    HistogramBinning,
    MatrixScaling,
    TemperatureScaling,
    VectorScaling,
    parse_spec,
)
from verbcal.calibration.constraints import (
    Interval,
    ListOf,
    Options,
    ParameterError,
    validate_params,
)
from verbcal.cli import app

runner = CliRunner(env={"COLUMNS": "250"})

P = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.4, 0.6]] * 3)
Y = np.array([0, 1, 1, 0, 0, 1] * 3)

# (the Python object, the same values as a spec, the message both must give)
CASES: list[tuple[Calibrator, str, str]] = [
    (VectorScaling(reg=-1), "vector[reg=-1]", "vector: reg must be a number >= 0, got -1"),
    (MatrixScaling(reg=float("nan")), "matrix[reg=nan]", "matrix: reg must be a number >= 0"),
    (AutoCalibrator(folds=1), "auto[folds=1]", "auto: folds must be an integer >= 2, got 1"),
    (AutoCalibrator(repeats=0), "auto[repeats=0]", "auto: repeats must be an integer >= 1"),
    (AutoCalibrator(rule="best"), "auto[rule=best]", "auto: rule must be one of 'stack', '1se'"),
    (HistogramBinning(bins=2.5), "histogram[bins=2.5]", "histogram: bins must be an integer"),  # type: ignore[arg-type]
    (HistogramBinning(bins=0), "histogram[bins=0]", "histogram: bins must be an integer >= 1"),
    (TemperatureScaling(floor=0), "temperature[floor=0]", "temperature: floor must be 'fit' or"),
    (TemperatureScaling(floor=1.5), "temperature[floor=1.5]", "floor must be 'fit' or a number"),
    (
        TemperatureScaling(floor_mode="soft"),  # type: ignore[arg-type]
        "temperature[mode=soft]",
        "temperature: floor_mode must be one of 'clip', 'mix', got 'soft'",  # spec: mode
    ),
    (TemperatureScaling(prior_sd=0), "temperature[prior=0]", "prior_sd must be None or a number"),
    (
        AutoCalibrator(candidates=("temperature", "auto")),
        "auto[candidates=temperature|auto]",
        "auto: candidates must be None or a non-empty list of method specs",
    ),
]


def error_of(call: Any) -> str:
    with pytest.raises(CalibratorError) as info:
        call()
    return str(info.value)


def cli_error(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result.exit_code, lines[-1] if lines else result.stderr


@pytest.mark.parametrize(("calibrator", "spec", "message"), CASES)
def test_object_spec_and_cli_give_the_same_error(
    calibrator: Calibrator, spec: str, message: str, tmp_path: Path
) -> None:
    from_object = error_of(lambda: calibrator.fit(P, Y))
    from_spec = error_of(lambda: parse_spec(spec))
    assert message in from_object
    # one check, one message; a spec's error names the option as the spec wrote it
    written = {"floor_mode": "mode", "prior_sd": "prior"}
    expected = from_object
    for argument, key in written.items():
        if f"[{key}=" in spec:
            expected = expected.replace(f": {argument} must", f": {key} must")
    assert from_spec == expected
    code, line = cli_error(
        "fit", "--method", spec, "--data", "recorded:tweets", "--out", tmp_path / "c.json"
    )
    assert code == 2 and line == f"error: {from_spec}"
    assert not (tmp_path / "c.json").exists()


def test_vector_scaling_with_negative_reg_no_longer_diverges() -> None:
    """Before: reg=-1 drove the weights to ~1e156 and every output to a one-hot row."""
    with pytest.raises(ParameterError, match="reg must be a number >= 0"):
        VectorScaling(reg=-1).fit(P, Y)
    assert VectorScaling(reg=0).fit(P, Y).predict_proba(P).max() < 1  # the boundary is fine


def test_a_single_string_of_candidates_is_refused_not_split_into_letters() -> None:
    message = error_of(lambda: AutoCalibrator(candidates="temperature").fit(P, Y))  # type: ignore[arg-type]
    assert "candidates must be None or a non-empty list of method specs" in message
    assert "write ['temperature']" in message
    assert "got []" in error_of(lambda: AutoCalibrator(candidates=[]).fit(P, Y))
    assert "unknown method 'temprature'" in error_of(
        lambda: AutoCalibrator(candidates=["temprature"]).fit(P, Y)
    )
    # specs write a list with |
    auto = parse_spec("auto[candidates=floor|temperature,folds=3]").make()
    assert auto.get_params()["candidates"] == ("floor", "temperature")
    auto.fit(P, Y)
    assert set(auto.weights_) <= {"floor", "temperature"}  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [True, 2.0, "3", np.float64(3.0)])
def test_integers_are_integers(value: Any) -> None:
    with pytest.raises(ParameterError, match="folds must be an integer >= 2"):
        AutoCalibrator(folds=value).fit(P, Y)
    AutoCalibrator(folds=np.int64(3), candidates=["floor"]).fit(P, Y)  # numpy ints are ints


def test_every_calibrator_declares_each_of_its_arguments_and_its_defaults_pass() -> None:
    for name, cls in METHODS.items():
        assert set(cls._parameter_constraints) == set(cls._get_param_names()), name
        validate_params(cls(), cls._parameter_constraints, where=name)


def test_constraints_describe_what_they_accept() -> None:
    assert str(Interval(float, 0, 1, closed="neither")) == "a number in (0, 1)"
    assert str(Interval(int, 1, None)) == "an integer >= 1"
    assert str(Interval(float, None, 5, closed="left")) == "a number < 5"
    assert str(Options("clip", "mix")) == "one of 'clip', 'mix'"
    assert not Interval(float, 0, None).is_satisfied_by(float("inf"))
    assert ListOf("specs").is_satisfied_by(("a",)) and not ListOf("specs").is_satisfied_by("a")
    with pytest.raises(ParameterError, match=r"^here: x must be None or an integer >= 0, got -1$"):
        validate_params({"x": -1, "y": "ignored"}, {"x": [None, Interval(int, 0, None)]}, "here")


def test_a_file_with_bad_constructor_arguments_is_refused(tmp_path: Path) -> None:
    data = VectorScaling(reg=0.1).fit(P, Y).to_dict()
    data["params"]["reg"] = -1
    path = tmp_path / "v.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CalibratorError, match=r"v\.json: params: vector: reg must be"):
        Calibrator.load(path)


# ------------------------------------------------------------ CLI flags and bracketed specs


def test_floor_flag_is_merged_into_a_bracketed_spec(tmp_path: Path) -> None:
    """Before: --floor was silently ignored when the spec had brackets (floor fitted)."""
    out = tmp_path / "t.json"
    result = runner.invoke(
        app,
        [
            *("fit", "--method", "temperature[prior=none]", "--floor", "0.0001"),
            *("--data", "recorded:tweets", "--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.stderr
    saved = json.loads(out.read_text())
    assert saved["floor"] == {"mode": "clip", "value": 0.0001, "fitted": False}
    assert saved["params"]["prior_sd"] is None and saved["params"]["floor"] == 0.0001


@pytest.mark.parametrize(
    ("spec", "flags", "message"),
    [
        ("temperature[floor=1e-3]", ["--floor", "1e-4"], "--floor and the spec"),
        ("temperature[mode=mix]", ["--floor-mode", "clip"], "--floor-mode and the spec"),
        ("temperature[prior=2]", ["--mle"], "--mle and the spec"),
        ("isotonic", ["--floor", "1e-4"], "--floor does not apply to 'isotonic'"),
        ("uncalibrated", ["--mle"], "--mle does not apply to 'uncalibrated'"),
        ("temperature", ["--floor", "0"], "temperature: floor must be 'fit' or a number in (0, 1)"),
        ("temperature", ["--floor", "abc"], "got 'abc'"),
    ],
)
def test_a_flag_is_applied_or_refused_never_dropped(
    spec: str, flags: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "t.json"
    code, line = cli_error(
        "fit", "--method", spec, *flags, "--data", "recorded:tweets", "--out", out
    )
    assert code == 2 and message in line, line
    assert not out.exists()


def test_compare_refuses_a_flag_no_method_takes() -> None:
    code, line = cli_error(
        "compare", "--data", "recorded:tweets", "--methods", "isotonic,histogram", "--mle"
    )
    assert code == 2 and "--mle applies to none of the methods" in line
