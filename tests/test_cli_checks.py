"""No silent wrong results, errors that name the cause, one vocabulary (issue 14).

Every case runs the real CLI through typer's CliRunner on bundled or tiny files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verbcal import datasets
from verbcal.calibration import make_calibrator
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
    (("compare", "--data", "recorded:tweets", "--seed", "-1"), "--seed"),
    (("split", "--data", "recorded:tweets", "--out", "{out}", "--seed", "-1"), "--seed"),
    (("split", "--data", "recorded:tweets", "--out", "{out}", "--calib-frac", "0"), "--calib-frac"),
    (("datasets", "export", "tweets", "--out", "{out}", "--n", "0"), "--n"),
    (("study", "--out", "{out}", "--workers", "-1"), "--workers"),
    (("demo", "--out", "{out}", "--items", "3"), "--items"),
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
        "compare", "--data", "recorded:drug-reviews", "--methods", "temperature[prior=none]",
        "--calib-frac", "0.01", "--repeats", "3",
    )  # fmt: skip
    assert code == 0
    assert "warning:" in err and "temperature[prior=none], 1 of 3 splits: T = 1e-06" in err


@pytest.fixture
def bound_calibrator(tmp_path: Path) -> Path:
    """A maximum-likelihood temperature whose fit ran to the bound (every item ranked right)."""
    data = datasets.load("recorded:tweets").labelled()
    right = data.probs.argmax(axis=1) == data.y
    calibrator = make_calibrator("temperature[prior=none]").fit(
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


# ---------------------------------------------------------------- errors that name the cause


def recorded_rows(name: str = "drug-reviews") -> list[dict[str, object]]:
    path = datasets.resolve(f"recorded:{name}")
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    return path


def test_a_missing_probability_column_is_named(tmp_path: Path) -> None:
    rows = [
        [r["id"], r["label"], r["probs"]["negative"], r["probs"]["positive"]]
        for r in recorded_rows()
    ]  # type: ignore[index]
    path = write_csv(tmp_path / "p.csv", ["id", "label", "p_negative", "p_positive"], rows)
    code, _, err = invoke("evaluate", "--data", path)
    assert code == 2
    assert "gold label 'neutral' is not one of the labels with a probability" in err
    assert "add a column p_neutral" in err


def test_a_gold_column_under_another_name_is_named(tmp_path: Path) -> None:
    rows = [[r["id"], r["label"], *r["probs"].values()] for r in recorded_rows()]  # type: ignore[union-attr]
    header = ["id", "gold", *(f"p_{k}" for k in recorded_rows()[0]["probs"])]  # type: ignore[union-attr]
    path = write_csv(tmp_path / "p.csv", header, rows)
    code, _, err = invoke("evaluate", "--data", path)
    assert code == 2
    assert "no record has a gold label in a 'label' field" in err
    assert "'gold'" in err and "rename 'gold' to 'label'" in err


def test_a_calibrator_for_other_labels_names_both_label_sets(tmp_path: Path) -> None:
    calibrator = tmp_path / "ts.json"
    assert (
        invoke("fit", "--method", "temperature", "--data", "recorded:tweets", "--out", calibrator)[
            0
        ]
        == 0
    )
    for command in (
        ("apply", "--out", tmp_path / "x.jsonl"),
        ("evaluate",),
        ("threshold", "--class", "tech"),
    ):
        code, _, err = invoke(*command, "--calibrator", calibrator, "--data", "recorded:bbc-news")
        assert code == 2, command
        flat = " ".join(err.split())
        assert "the calibrator was fitted on the labels ['negative', 'neutral', 'positive']" in flat
        assert "'business', 'entertainment'" in flat
        assert "--labels" not in flat and "site-packages" not in flat and "/src/" not in flat
    assert not (tmp_path / "x.jsonl").exists()


def test_a_directory_as_data_is_named_and_the_file_inside_suggested(tmp_path: Path) -> None:
    code, _, err = invoke("evaluate", "--data", tmp_path)
    assert code == 2 and "is a directory, not a file" in err and "Errno" not in err
    (tmp_path / "predictions.jsonl").write_text(datasets.resolve("recorded:tweets").read_text())
    code, _, err = invoke("evaluate", "--data", tmp_path)
    assert code == 2 and f"Give the file inside it: {tmp_path / 'predictions.jsonl'}" in " ".join(
        err.split()
    )


@pytest.mark.parametrize(
    "command",
    [
        ("apply", "--calibrator", "{cal}", "--data", "recorded:tweets"),
        ("fit", "--method", "temperature", "--data", "recorded:tweets"),
    ],
)
def test_an_output_path_that_is_a_directory_is_refused_cleanly(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    cal = tmp_path / "ts.json"
    make_calibrator("temperature").fit([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1]).save(cal)
    target = tmp_path / "outdir"
    target.mkdir()
    code, _, err = invoke(*(a.format(cal=cal) for a in command), "--out", target)
    assert code == 2
    assert "is a directory, not a file to write" in err and "Errno" not in err
    assert list(target.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "outdir",
        "ts.json",
    ]


# ---------------------------------------------------------------- one vocabulary


def test_fit_and_apply_refuse_to_overwrite_unless_asked(tmp_path: Path) -> None:
    cal, out = tmp_path / "ts.json", tmp_path / "cal.jsonl"
    fit = ("fit", "--method", "temperature", "--data", "recorded:tweets", "--out", cal)
    apply = ("apply", "--calibrator", cal, "--data", "recorded:tweets", "--out", out)
    assert invoke(*fit)[0] == 0 and invoke(*apply)[0] == 0
    for command in (fit, apply):
        code, _, err = invoke(*command)
        assert code == 2 and "already exists. Pass --overwrite" in " ".join(err.split())
        assert invoke(*command, "--overwrite")[0] == 0


def test_version() -> None:
    from verbcal import __version__

    code, out, _ = invoke("--version")
    assert code == 0 and out.strip() == f"verbcal {__version__}"


def test_threshold_json_names_the_class_once() -> None:
    code, out, _ = invoke("threshold", "--data", "recorded:tweets", "--class", "positive", "--json")
    result = json.loads(out)
    assert code == 0 and result["class"] == "positive" and "cls" not in result
    assert result["target"] == 0.9  # the one default precision target, as in `verbcal run`


def test_eliciting_needs_a_backend(tmp_path: Path) -> None:
    for command in (
        ("elicit", "--out", tmp_path / "p.jsonl"),
        ("run", "--out", tmp_path / "run"),
    ):
        code, _, err = invoke(*command, "--task", "t.yaml", "--input", "i.jsonl")
        assert code == 2 and "--backend" in err and "say which LLM to ask" in " ".join(err.split())
    assert list(tmp_path.iterdir()) == []


def test_the_sampling_temperature_is_llm_temperature() -> None:
    code, out, _ = invoke("run", "--help")
    assert code == 0 and "--llm-temperature" in out and "--temperature " not in out


@pytest.mark.parametrize("spec", ["uncalibrated", "temperature[floor=1e-4,mode=mix]"])
def test_fit_compare_and_run_take_the_study_method_specs(tmp_path: Path, spec: str) -> None:
    out = tmp_path / "c.json"
    code, _, err = invoke("fit", "--method", spec, "--data", "recorded:tweets", "--out", out)
    assert code == 0, err
    saved = json.loads(out.read_text())
    if spec == "uncalibrated":
        assert saved["method"] == "identity" and saved["floor"]["value"] == 1e-12
    else:
        assert saved["floor"] == {"mode": "mix", "value": 1e-4, "fitted": False}
    code, out_json, err = invoke(
        "compare", "--data", "recorded:tweets", "--methods", f"{spec},temperature",
        "--repeats", "2", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert {r["method"] for r in json.loads(out_json)} == {spec, "temperature"}
    run_dir = tmp_path / "run"
    code, _, err = invoke(
        "run", "--data", "recorded:tweets", "--out", run_dir, "--methods", spec,
        "--boot", "20", "--no-report",
    )  # fmt: skip
    assert code == 0, err
    assert spec in json.loads((run_dir / "metrics.json").read_text())["methods"]
