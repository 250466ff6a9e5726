"""Method specs (verbcal.calibration.specs): one vocabulary for fit, compare, run, study and auto."""

from __future__ import annotations

import pytest

from verbcal.calibration import METHODS
from verbcal.calibration.specs import (
    UNCALIBRATED,
    MethodError,
    make,
    parse_spec,
    parse_specs,
    split_specs,
)


def test_split_keeps_commas_inside_brackets() -> None:
    text = "uncalibrated, temperature[floor=1e-2,mode=mix] ,matrix[reg=0.1],"
    assert split_specs(text) == [
        "uncalibrated",
        "temperature[floor=1e-2,mode=mix]",
        "matrix[reg=0.1]",
    ]


def test_parse_specs() -> None:
    assert parse_specs("all") == [m for m in METHODS if m != "auto"]
    assert parse_specs(" temperature, identity ,temperature") == ["temperature", "identity"]
    assert parse_specs("best,platt", also=("best",)) == ["best", "platt"]
    for bad in ("", " , ", "temprature", "best", "temperature[reg=1]", "histogram[bins=0]"):
        with pytest.raises(MethodError):
            parse_specs(bad)


def test_uncalibrated_is_identity_the_one_baseline() -> None:
    variant = parse_spec(UNCALIBRATED)
    assert variant.method == "identity" and variant.kwargs == {}
    q = make(UNCALIBRATED).fit([[0.8, 0.2], [0.3, 0.7]], [0, 1]).predict_proba([[0.6, 0.4]])
    assert q[0].tolist() == pytest.approx([0.6, 0.4])


def test_options_reach_the_calibrator() -> None:
    calibrator = make("temperature[floor=1e-3,mode=mix,prior=none]")
    assert calibrator.get_params() == {"floor": 1e-3, "floor_mode": "mix", "prior_sd": None}
    assert make("vector[reg=0.1]").get_params()["reg"] == 0.1
    assert make("histogram[bins=5]").bins == 5  # type: ignore[attr-defined]
