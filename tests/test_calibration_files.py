"""Calibrator files: every loaded value is checked in one place, errors name file and field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from verbcal.calibration import Calibrator, CalibratorError, make_calibrator
from verbcal.cli import app

P3 = np.array(
    [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]] * 6
)
Y3 = np.array([0, 1, 2, 1, 2] * 6)


def fitted(method: str) -> dict[str, Any]:
    calibrator = make_calibrator(method)
    calibrator.fit(P3, Y3, labels=["a", "b", "c"])
    return calibrator.to_dict()


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data[int(key)] if isinstance(data, list) else data[key]
    if value is DELETE:
        del data[last]
    else:
        data[last] = value  # type: ignore[index]


DELETE = object()

# (method, field to damage, value, what the message must say)
DAMAGE: list[tuple[str, str, Any, str]] = [
    ("temperature", "state.temperature", 0, "state.temperature must be a number > 0, got 0"),
    ("temperature", "state.temperature", -3, "state.temperature must be a number > 0, got -3"),
    ("temperature", "state.temperature", "abc", "state.temperature must be a number > 0"),
    ("temperature", "state.temperature", None, "state.temperature must be a number > 0"),
    ("temperature", "state", DELETE, "file.state: missing"),
    ("temperature", "state.temperature", DELETE, "state.temperature: missing"),
    ("temperature", "floor.value", 5, "floor.value must be a number in (0, 1), got 5"),
    ("temperature", "floor.value", None, "floor.value must be a number in (0, 1)"),
    ("temperature", "floor.mode", "mix", "floor.mode is 'mix' but params.floor_mode is 'clip'"),
    ("temperature", "params.prior_sd", -1, "params: temperature: prior_sd must be None or"),
    ("temperature", "params.shape", 2, "params: temperature takes floor, floor_mode, prior_sd"),
    ("temperature", "labels", ["a", "a", "c"], "labels must be a list of at least 2 distinct"),
    ("temperature", "labels", DELETE, "file.labels: missing"),
    ("temperature", "version", "abc", "version must be an integer >= 0"),
    ("vector", "state.weights", [1.0, 1.0], "state.weights must have shape (3,), got (2,)"),
    ("vector", "state.bias", [0.0, float("nan"), 0.0], "state.bias must be finite"),
    ("matrix", "state.weights", [1.0, 1.0, 1.0], "state.weights must have shape (3, 3)"),
    ("platt", "state.maps", [], "state.maps must be a list of 3 maps"),
    ("platt", "state.maps.0.slope", "x", "state.maps[0].slope must be a number"),
    ("isotonic", "state.maps.1.y", [2.0] * 50, "must"),
    ("histogram", "state.maps.0.bins", 7, "state.maps[0].bins is 7 but params.bins is 10"),
    ("histogram", "state.maps.2.values", [0.5] * 9, "state.maps[2].values must have shape (10,)"),
    ("auto", "state.weights", {"floor": 0.5}, "state.members must hold one calibrator per spec"),
]


@pytest.mark.parametrize(("method", "path", "value", "message"), DAMAGE)
def test_damaged_files_are_refused_naming_file_and_field(
    method: str, path: str, value: Any, message: str, tmp_path: Path
) -> None:
    data = fitted(method)
    if path == "state.maps.1.y":  # same length as x, so the range check is what fails
        value = [2.0] * len(data["state"]["maps"][1]["x"])
        message = "state.maps[1].y must lie in [0, 1]"
    set_path(data, path, value)
    file = tmp_path / "damaged.json"
    file.write_text(json.dumps(data))
    with pytest.raises(CalibratorError) as info:
        Calibrator.load(file)
    assert str(info.value).startswith(f"{file}: "), info.value
    assert message in str(info.value)


def test_auto_members_are_checked_as_files_of_their_own(tmp_path: Path) -> None:
    data = fitted("auto")
    spec = next(iter(data["state"]["members"]))
    data["state"]["members"][spec]["floor"]["value"] = 5
    file = tmp_path / "auto.json"
    file.write_text(json.dumps(data))
    with pytest.raises(CalibratorError, match=r"state\.members\[.*\]: floor\.value must be"):
        Calibrator.load(file)


@pytest.mark.parametrize("method", ["identity", "floor", "temperature", "resoftmax", "vector",
                                    "matrix", "platt", "isotonic", "histogram", "auto"])  # fmt: skip
def test_every_fitted_calibrator_round_trips_through_the_checks(
    method: str, tmp_path: Path
) -> None:
    calibrator = make_calibrator(method).fit(P3, Y3, labels=["a", "b", "c"])
    calibrator.save(tmp_path / "c.json")
    loaded = Calibrator.load(tmp_path / "c.json")
    np.testing.assert_array_equal(loaded.predict_proba(P3), calibrator.predict_proba(P3))
    assert loaded.state == json.loads(json.dumps(calibrator.state))


def test_state_and_params_name_one_thing_each() -> None:
    ts = make_calibrator("temperature[prior=none]").fit(P3, Y3)
    data = ts.to_dict()
    assert data["params"] == ts.get_params() == {"floor": "fit", "floor_mode": "clip",
                                                 "prior_sd": None}  # fmt: skip
    assert data["state"] == ts.state == {"temperature": ts.temperature_}
    with pytest.warns(DeprecationWarning, match="use .state"):
        assert ts.params == ts.state


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["state"].update(temperature=0),
        lambda d: d.pop("state"),
        lambda d: d["floor"].update(value=5),
    ],
)
def test_apply_refuses_a_damaged_file_in_one_line(
    damage: Callable[[dict[str, Any]], Any], tmp_path: Path
) -> None:
    """Before: temperature 0 wrote NaN for every row with exit 0; no state was a KeyError."""
    data = make_calibrator("temperature").fit(P3[:, :2], Y3 % 2, labels=["a", "b"]).to_dict()
    damage(data)
    file = tmp_path / "ts.json"
    file.write_text(json.dumps(data))
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"id": "1", "probs": {"a": 0.3, "b": 0.7}}) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app, ["apply", "--calibrator", str(file), "--data", str(rows), "--out", str(out)]
    )
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(file) in errors[0] and "Traceback" not in result.stderr
    assert not out.exists()
