"""The CLI through typer's CliRunner: help examples, JSON schemas, round trip, error exits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from verbcal import datasets
from verbcal.calibration import Calibrator, make_calibrator, uncalibrated
from verbcal.cli import app
from verbcal.metrics import METRICS, summary

runner = CliRunner(env={"COLUMNS": "250"})
EVALUATE_KEYS = {
    *("n", "accuracy", "macro_f1", "ece", "mce", "nll", "brier", "auroc", "bins", "ci"),
    *("bands", "warnings", "provenance"),
}


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def command_names() -> list[str]:
    return [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]


def test_top_level_help_lists_every_command() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    names = command_names()
    assert {"evaluate", "fit", "apply", "compare"} <= set(names)
    for name in names:
        assert name in out


@pytest.mark.parametrize("name", command_names())
def test_every_command_help_shows_an_example(name: str) -> None:
    code, out, _ = invoke(name, "--help")
    assert code == 0
    flat = " ".join(line.strip(" │") for line in out.splitlines())
    assert f"Example: verbcal {name} " in " ".join(flat.split())


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_evaluate_json_keys_and_values(tmp_path: Path) -> None:
    code, out, err = invoke("evaluate", "--data", "recorded:tweets", "--json", "--boot", "200")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == EVALUATE_KEYS
    assert result["n"] == 201 and result["bins"] == 15
    assert set(result["ci"]) == set(METRICS)
    for metric in METRICS:
        lo, hi = result["ci"][metric]
        assert 0.0 <= lo <= result[metric] <= hi
    # the uncalibrated scores are those of the one baseline, identity (normalised p)
    preds = datasets.load("recorded:tweets")
    expected = summary(uncalibrated(preds.probs), preds.y)
    assert expected == summary(
        make_calibrator("identity").fit(preds.probs, preds.y).predict_proba(preds.probs), preds.y
    )
    assert {m: result[m] for m in METRICS} == expected
    # the report says what was read
    assert "201 predictions over 3 labels from recorded:tweets" in err


def test_evaluate_table(tmp_path: Path) -> None:
    code, out, _ = invoke("evaluate", "--data", "recorded:bbc-news", "--boot", "50", "--bins", "10")
    assert code == 0
    out = " ".join(out.split())  # the table wraps its title and caption
    assert "verbalized (uncalibrated)" in out and "10 equal-width bins" in out
    for metric in METRICS:
        assert metric in out


def test_fit_apply_evaluate_round_trip(tmp_path: Path) -> None:
    calibrator = tmp_path / "ts.json"
    code, out, err = invoke(
        "fit", "--method", "temperature", "--data", "recorded:drug-reviews", "--out", calibrator
    )
    assert code == 0, err
    saved = json.loads(calibrator.read_text())
    assert saved["method"] == "temperature" and saved["floor"]["fitted"] is True
    assert "temperature = " in out and "NLL on the fitting data" in out
    assert "clip floor" in out and "(fitted)" in out  # the chosen floor is reported

    # the CLI fit equals the library fit
    preds = datasets.load("recorded:drug-reviews")
    direct = make_calibrator("temperature").fit(preds.probs, preds.y, labels=preds.labels)
    assert saved["state"] == direct.state
    assert saved["floor"]["value"] == direct.floor_

    # apply to a file with an unparsable record and an unlabelled one
    source = [dict(r) for r in preds.records[:5]]
    source.insert(2, {"id": "broken", "probs": None, "raw": "I think positive"})
    source[0].pop("label")
    new = write_jsonl(tmp_path / "new.jsonl", source)
    out_path = tmp_path / "calibrated.jsonl"
    code, out, err = invoke("apply", "--calibrator", calibrator, "--data", new, "--out", out_path)
    assert code == 0, err
    assert "wrote 6 records" in out and "(5 calibrated)" in out
    written = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert written[2] == {"id": "broken", "probs": None, "raw": "I think positive"}
    loaded = Calibrator.load(calibrator)
    kept = [r for r in source if r["probs"] is not None]
    verbalized = np.array([[r["probs"][k] for k in preds.labels] for r in kept])
    expected = loaded.predict_proba(verbalized)
    got = np.array([[r["probs"][k] for k in preds.labels] for r in written if r["probs"]])
    np.testing.assert_array_equal(got, expected)
    assert [r["verbalized_probs"] for r in written if r["probs"]] == [r["probs"] for r in kept]
    assert [r.get("text") for r in written if r["probs"]] == [r.get("text") for r in kept]
    assert "label" not in written[0]

    # evaluate with the calibrator equals the library's scores of the calibrated output
    code, out, err = invoke(
        "evaluate", "--data", "recorded:drug-reviews", "--calibrator", calibrator, "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert {m: result[m] for m in METRICS} == summary(loaded.predict_proba(preds.probs), preds.y)
    # and the calibrated file itself evaluates (its rows are already distributions)
    code, out, err = invoke("evaluate", "--data", out_path, "--json", "--boot", "20")
    assert code == 0, err
    assert json.loads(out)["n"] == 4  # one unlabelled, one without probs left out
    assert "1 rows without a gold label are left out" in err


@pytest.mark.parametrize("method", ["floor", "resoftmax", "vector", "platt", "histogram"])
def test_fit_other_methods_with_fixed_floor(method: str, tmp_path: Path) -> None:
    out_path = tmp_path / "c.json"
    code, out, err = invoke(
        "fit",
        "--method",
        method,
        "--data",
        "recorded:tweets",
        "--out",
        out_path,
        "--floor",
        "0.001",
        "--floor-mode",
        "mix",
    )
    if method in ("floor", "vector", "platt"):
        assert code == 0, err
        saved = json.loads(out_path.read_text())
        assert saved["method"] == method
        assert saved["floor"] == {"mode": "mix", "value": 0.001, "fitted": False}
        assert "mix floor 0.001" in out
    else:  # a flag the method does not take is refused, never dropped
        assert code == 2 and "--floor does not apply" in one_error_line(err)
        assert not out_path.exists()


def test_fit_auto_prints_and_saves_its_table_and_reason(tmp_path: Path) -> None:
    out_path = tmp_path / "auto.json"
    code, out, err = invoke(
        "fit", "--method", "auto", "--data", "recorded:drug-reviews", "--out", out_path
    )
    assert code == 0, err
    saved = json.loads(out_path.read_text())
    assert saved["method"] == "auto"
    chosen, reason = saved["state"]["chosen"], saved["state"]["reason"]
    assert [row["method"] for row in saved["state"]["cv"]][:3] == [
        "identity",
        "floor",
        "temperature",
    ]
    flat = " ".join(out.split())
    assert "cross-validated NLL" in flat and chosen in flat and reason[:40] in flat


def test_compare_json_rows(tmp_path: Path) -> None:
    code, out, err = invoke(
        "compare",
        "--data",
        "recorded:tweets",
        "--methods",
        "identity,temperature",
        "--repeats",
        "3",
        "--seed",
        "5",
        "--json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert all(set(r) == {"method", "metric", "mean", "sd"} for r in rows)
    assert [(r["method"], r["metric"]) for r in rows] == [
        (m, metric) for m in ("identity", "temperature") for metric in METRICS
    ]
    accuracy = {r["method"]: r["mean"] for r in rows if r["metric"] == "accuracy"}
    assert accuracy["identity"] == accuracy["temperature"]  # temperature keeps the argmax
    code2, out2, _ = invoke(
        "compare",
        "--data",
        "recorded:tweets",
        "--methods",
        "identity,temperature",
        "--repeats",
        "3",
        "--seed",
        "5",
        "--json",
    )
    assert code2 == 0 and json.loads(out2) == rows  # seeded


def test_compare_table(tmp_path: Path) -> None:
    code, out, err = invoke(
        "compare", "--data", "recorded:bbc-news", "--methods", "all", "--repeats", "2"
    )
    assert code == 0, err
    assert "2 stratified splits" in out and "median T" in out
    for method in ("identity", "temperature", "resoftmax", "matrix", "isotonic"):
        assert method in out


def test_paths_with_brackets_are_shown_as_written(tmp_path: Path) -> None:
    (tmp_path / "run[").mkdir()
    source = tmp_path / "run[" / "]preds.jsonl"  # the path holds "[/]", rich's closing tag
    assert "[/]" in str(source)
    preds = datasets.load("recorded:tweets")
    write_jsonl(source, preds.records[:40])
    calibrator, out_path = tmp_path / "ts[v2].json", tmp_path / "run[" / "]out.jsonl"
    code, out, err = invoke("fit", "--method", "temperature", "--data", source, "--out", calibrator)
    assert code == 0, err
    assert f"from {source}" in err and f"saved to {calibrator}" in out
    code, out, err = invoke(
        "apply", "--calibrator", calibrator, "--data", source, "--out", out_path
    )
    assert code == 0, err
    assert f"to {out_path}" in out
    code, out, err = invoke("evaluate", "--data", source, "--calibrator", calibrator, "--boot", "9")
    assert code == 0, err
    assert str(source) in "".join(out.split())  # the table title may wrap anywhere


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    assert lines[-1] == errors[0], err  # nothing after it: the message is one line
    return errors[0]


@pytest.mark.parametrize("command", ["evaluate", "fit", "compare"])
def test_bad_input_exits_2_with_one_line_naming_file_and_line(command: str, tmp_path: Path) -> None:
    good = {"id": "a", "probs": {"neg": 0.2, "pos": 0.8}, "label": "pos"}
    bad = {"id": "b", "probs": {"neg": -0.1, "pos": 0.8}, "label": "neg"}
    deep = tmp_path / ("a-rather-long-directory-name-" * 3)
    deep.mkdir()
    path = write_jsonl(deep / "bad-predictions-file.jsonl", [good, {**good, "id": "a2"}, bad])
    extra = {"evaluate": [], "fit": ["--method", "temperature", "--out", tmp_path / "c.json"]}
    code, out, err = invoke(command, "--data", path, *extra.get(command, []))
    assert code == 2
    line = one_error_line(err)
    assert f"{path}, line 3, field 'probs.neg'" in line
    assert "-0.1 is negative" in line
    assert "Traceback" not in out + err
    assert not (tmp_path / "c.json").exists()


def test_other_bad_inputs_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    code, _, err = invoke("evaluate", "--data", missing)
    assert code == 2 and f"{missing}: file not found" in one_error_line(err)

    for name in ("preds[v2].jsonl", "preds[/].jsonl"):  # brackets are not rich markup
        code, _, err = invoke("evaluate", "--data", tmp_path / name)
        assert code == 2 and f"{tmp_path / name}: file not found" in one_error_line(err)

    truncated = tmp_path / "cut.jsonl"
    truncated.write_text('{"probs": {"a": 0.5, "b": 0.5}, "label": "a"}\n{"probs": {"a": 0.')
    code, _, err = invoke("evaluate", "--data", truncated)
    assert code == 2 and f"{truncated}, line 2: the last line is truncated" in one_error_line(err)

    unlabelled = write_jsonl(tmp_path / "u.jsonl", [{"probs": {"a": 0.5, "b": 0.5}}])
    code, _, err = invoke("fit", "--method", "temperature", "--data", unlabelled, "--out", "x")
    assert code == 2 and "1 of 1 records have no gold label" in one_error_line(err)

    code, _, err = invoke(
        "fit", "--method", "beta", "--data", "recorded:tweets", "--out", tmp_path / "c.json"
    )
    assert code == 2 and "unknown method 'beta'" in one_error_line(err)

    code, _, err = invoke("compare", "--data", "recorded:tweets", "--methods", "temperature,x")
    assert code == 2 and "unknown method" in one_error_line(err)

    for floor in ("0", "abc"):
        code, _, err = invoke(
            "fit", "--method", "temperature", "--data", "recorded:tweets", "--floor", floor,
            "--out", tmp_path / "c.json",
        )  # fmt: skip
        assert code == 2, err
        one_error_line(err)

    code, _, err = invoke(
        "fit", "--method", "temperature", "--data", "recorded:tweets", "--floor-mode", "cube",
        "--out", tmp_path / "c.json",
    )  # fmt: skip
    assert code == 2 and "floor_mode must be one of 'clip', 'mix'" in one_error_line(err)

    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    code, _, err = invoke(
        "apply", "--calibrator", broken, "--data", "recorded:tweets", "--out", tmp_path / "o"
    )
    assert code == 2 and "not a verbcal calibrator" in one_error_line(err)
    assert not (tmp_path / "o").exists()


def test_apply_with_a_mismatched_label_set_fails_cleanly(tmp_path: Path) -> None:
    calibrator = tmp_path / "bbc.json"
    assert invoke("fit", "--method", "temperature", "--data", "recorded:bbc-news", "--out",
                  calibrator)[0] == 0  # fmt: skip
    code, _, err = invoke(
        "apply", "--calibrator", calibrator, "--data", "recorded:tweets", "--out", tmp_path / "o"
    )
    assert code == 2
    line = one_error_line(err)
    assert "the calibrator was fitted on the labels ['business'," in line
    assert "this file has the labels ['negative', 'neutral', 'positive']" in line


def test_evaluate_bands_and_slices_by_a_record_field(tmp_path: Path) -> None:
    lines = []
    for i in range(40):
        p = 0.9 if i % 2 else 0.65
        lines.append(
            json.dumps(
                {
                    "id": str(i),
                    "probs": {"a": p, "b": round(1 - p, 6)},
                    "label": "a" if i % 5 else "b",
                    "lang": "en" if i < 25 else "fr",
                }
            )
        )
    data = tmp_path / "p.jsonl"
    data.write_text("\n".join(lines) + "\n")
    code, out, _ = invoke("evaluate", "--data", data, "--boot", "50", "--by", "lang", "--json")
    assert code == 0
    result = json.loads(out)
    assert [b["band"] for b in result["bands"]] == ["low", "medium", "high"]
    assert [b["n"] for b in result["bands"]] == [0, 20, 20]
    assert list(result["slices"]) == ["en", "fr"] and result["slices"]["en"]["n"] == 25
    predictions = datasets.load(str(data))
    en = np.arange(25)
    expected = summary(predictions.probs[en], predictions.y[en])
    assert result["slices"]["en"]["accuracy"] == pytest.approx(expected["accuracy"])
    code, out, _ = invoke("evaluate", "--data", data, "--boot", "50", "--by", "lang")
    assert code == 0 and "per lang" in out and "per confidence band" in out
    code, _, err = invoke("evaluate", "--data", data, "--by", "country")
    assert code == 2 and "'country'" in err and "lang" in err


def test_demo_closing_table_says_when_recommended_is_worse_than_raw(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from verbcal.cli.demo import _closing

    def run(rec_nll: float) -> dict[str, object]:
        return {
            "format": "verbcal-run",
            "version": 1,
            "recommended": "temperature",
            "n_calibration": 30,
            "n_test": 30,
            "methods": {
                "identity": {"test": {"ece": 0.10, "nll": 0.50}},
                "temperature": {"test": {"ece": 0.05, "nll": rec_nll}},
            },
        }

    _closing([("better", None, run(0.40)), ("worse", None, run(0.60))], 1.0)
    out = " ".join(capsys.readouterr().out.split())
    assert "raw → recommended" in out and "built by auto" in out
    assert "worse: temperature is worse than raw on the test part (nll)" in out
    assert "better: temperature is worse" not in out
    assert "small test part is noisy" in out


def test_applying_twice_gives_the_same_file_as_applying_once(tmp_path: Path) -> None:
    """Before: apply on an applied file calibrated the calibrated numbers and overwrote
    verbalized_probs, so the LLM's own numbers were lost."""
    fitted = tmp_path / "ts.json"
    code, _, err = invoke(
        "fit", "--method", "temperature", "--data", "recorded:tweets", "--out", fitted
    )
    assert code == 0, err
    once, twice = tmp_path / "once.jsonl", tmp_path / "twice.jsonl"
    code, _, err = invoke(
        "apply", "--calibrator", fitted, "--data", "recorded:tweets", "--out", once
    )
    assert code == 0, err
    code, _, err = invoke("apply", "--calibrator", fitted, "--data", once, "--out", twice)
    assert code == 0, err
    assert "201 records carry verbalized_probs" in err and "those are the input" in err
    assert twice.read_bytes() == once.read_bytes()
    original = datasets.load("recorded:tweets")
    kept = [json.loads(line)["verbalized_probs"] for line in twice.read_text().split("\n")[:-1]]
    assert kept == [r["probs"] for r in original.records]
    # evaluate --calibrator scores the same numbers on the raw and on the applied file
    scores = [
        json.loads(
            invoke("evaluate", "--data", d, "--calibrator", fitted, "--json", "--boot", "1")[1]
        )
        for d in ("recorded:tweets", once)
    ]
    assert scores[0]["nll"] == scores[1]["nll"] and scores[0]["ece"] == scores[1]["ece"]
    # without --calibrator the applied file is scored as it is: its calibrated probs
    plain = json.loads(invoke("evaluate", "--data", once, "--json", "--boot", "1")[1])
    assert plain["nll"] == pytest.approx(scores[0]["nll"], abs=1e-12)
