"""No silent wrong results, errors that name the cause, one vocabulary (issue 14).

Every case runs the real CLI through typer's CliRunner on bundled or tiny files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verbcal import datasets
from verbcal.calibrate import make_calibrator
from verbcal.cli import app

runner = CliRunner(env={"COLUMNS": "250"})


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------- numeric options at the boundary


# fmt: off
BAD_NUMBERS = [
    (("compare", "--data", "recorded:tweets", "--repeats", "0"), "--repeats"),
    (("compare", "--data", "recorded:tweets", "--repeats", "-5"), "--repeats"),
    (("compare", "--data", "recorded:tweets", "--calib-frac", "1.5"), "--calib-frac"),
    (("compare", "--data", "recorded:tweets", "--calib-frac", "0"), "--calib-frac"),
    (("compare", "--data", "recorded:tweets", "--bins", "0"), "--bins"),
    (("evaluate", "--data", "recorded:tweets", "--bins", "0"), "--bins"),
    (("evaluate", "--data", "recorded:tweets", "--boot", "0"), "--boot"),
    (("run", "--data", "recorded:tweets", "--out", "{out}", "--bins", "0"), "--bins"),
    (("run", "--data", "recorded:tweets", "--out", "{out}", "--calib-frac", "1"), "--calib-frac"),
    (("run", "--data", "recorded:tweets", "--out", "{out}", "--precision", "1.2"), "--precision"),
    (("run", "--data", "recorded:tweets", "--out", "{out}", "--boot", "0"), "--boot"),
    (("threshold", "--data", "recorded:tweets", "--class", "positive", "--recall", "0"), "--recall"),
    (("threshold", "--data", "recorded:tweets", "--class", "positive", "--confidence", "1"), "--confidence"),
    (("elicit", "--task", "t.yaml", "--input", "i.jsonl", "--out", "{out}", "--concurrency", "0"), "--concurrency"),
    (("elicit", "--task", "t.yaml", "--input", "i.jsonl", "--out", "{out}", "--samples", "0"), "--samples"),
    (("elicit", "--task", "t.yaml", "--input", "i.jsonl", "--out", "{out}", "--timeout", "0"), "--timeout"),
    ]
# fmt: on


@pytest.mark.parametrize(("args", "option"), BAD_NUMBERS)
def test_impossible_numbers_stop_before_anything_is_written(
    tmp_path: Path, args: tuple[str, ...], option: str
) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = invoke(*(a.format(out=out) for a in args))
    assert code == 2
    assert option in stderr
    assert not out.exists()
    assert stdout == ""


def test_a_share_that_empties_a_label_on_one_side_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    records = [{"id": str(i), "probs": {"a": 0.7, "b": 0.3}, "label": "a"} for i in range(40)]
    records += [{"id": "b1", "probs": {"a": 0.2, "b": 0.8}, "label": "b"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, _, err = invoke("compare", "--data", path, "--repeats", "2")
    assert code == 2
    assert "label 'b' has only 1 labelled item" in err
    code, _, err = invoke("run", "--data", path, "--out", tmp_path / "run")
    assert code == 2 and "label 'b'" in err
    assert not (tmp_path / "run").exists()


def test_compare_says_when_a_fit_ran_to_its_bound() -> None:
    code, _, err = invoke(
        "compare", "--data", "recorded:drug-reviews", "--methods", "temperature",
        "--calib-frac", "0.01", "--repeats", "3",
    )  # fmt: skip
    assert code == 0
    assert "warning:" in err and "temperature, 1 of 3 splits: T = 1e-06 is at the edge" in err


@pytest.fixture
def bound_calibrator(tmp_path: Path) -> Path:
    """A temperature calibrator whose fit ran to the bound (every item ranked right)."""
    data = datasets.load("recorded:tweets").labelled()
    right = data.probs.argmax(axis=1) == data.y
    calibrator = make_calibrator("temperature").fit(
        data.probs[right], data.y[right], labels=data.labels
    )
    assert calibrator.warnings
    path = tmp_path / "bound.json"
    calibrator.save(path)
    return path


@pytest.mark.parametrize(
    "command",
    [
        ("evaluate", "--data", "recorded:tweets", "--boot", "20"),
        ("apply", "--data", "recorded:tweets", "--out", "{tmp}/cal.jsonl"),
        ("threshold", "--data", "recorded:tweets", "--class", "positive"),
        ("selective", "--data", "recorded:tweets"),
    ],
)
def test_commands_that_load_a_calibrator_repeat_its_fit_warnings(
    bound_calibrator: Path, command: tuple[str, ...]
) -> None:
    args = [a.format(tmp=bound_calibrator.parent) for a in command]
    code, _, err = invoke(*args, "--calibrator", bound_calibrator)
    assert code == 0, err
    assert f"warning: {bound_calibrator} was fitted with a warning: T = " in err.replace("\n", " ")


def test_evaluate_json_carries_the_warnings(bound_calibrator: Path) -> None:
    code, out, _ = invoke(
        "evaluate", "--data", "recorded:tweets", "--calibrator", bound_calibrator, "--json",
        "--boot", "20",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["warnings"][0].startswith("T = ")


def test_evaluate_intervals_hold_their_estimate_and_print_no_negative_zero() -> None:
    code, out, _ = invoke("evaluate", "--data", "recorded:tweets", "--json")
    assert code == 0
    result = json.loads(out)
    for name, (lo, hi) in result["ci"].items():
        assert 0.0 <= lo <= result[name] <= hi, name
    code, out, _ = invoke("evaluate", "--data", "recorded:tweets")
    assert "-0.000" not in out
