"""``--source/--about/--lexicon`` on every command that reads predictions."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verbcal.calibration import Calibrator
from verbcal.cli import app
from verbcal.cli.reading import READING_COMMANDS
from verbcal.predictions import reading_options

runner = CliRunner(env={"COLUMNS": "250"})


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "command", ["fit", "apply", "evaluate", "compare", "threshold", "sets", "run", "study"]
)
def test_every_predictions_command_takes_the_options(command: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0
    for option in ("--source", "--about", "--lexicon"):
        assert option in out


def test_the_wrapped_commands_are_the_listed_ones() -> None:
    names = {c.callback.__name__ for c in app.registered_commands if c.callback is not None}
    wrapped = {
        c.callback.__name__
        for c in app.registered_commands
        if c.callback is not None and "source" in inspect.signature(c.callback).parameters
    }
    assert wrapped == READING_COMMANDS & names
    assert {"fit", "apply", "evaluate", "compare", "threshold", "sets", "study"} <= wrapped


def test_fit_apply_evaluate_on_words(tmp_path: Path) -> None:
    cal = tmp_path / "words.json"
    code, out, err = invoke(
        "fit", "--method", "auto", "--data", "recorded:halueval", "--source", "verbal",
        "--out", cal,
    )  # fmt: skip
    assert code == 0, err
    assert "words" in out  # a candidate of auto for verbal data
    assert "confidence in words" in err
    fitted = Calibrator.load(cal)
    assert "words" in fitted.get_params()["candidates"]
    code, out, err = invoke(
        "apply", "--calibrator", cal, "--data", "recorded:halueval", "--source", "verbal",
        "--out", tmp_path / "out.jsonl",
    )  # fmt: skip
    assert code == 0, err
    first = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["verbal"] == "probably" and first["about"] == "hallucinated"
    assert first["verbalized_probs"] == {"factual": 0.3, "hallucinated": 0.7}
    assert first["probs"] != first["verbalized_probs"]
    code, out, err = invoke(
        "evaluate", "--data", "recorded:mt-quality", "--source", "verbal", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["n"] == 120
    assert reading_options().source == "probs"  # nothing leaks past the command


def test_about_and_a_user_lexicon_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "mine.jsonl"
    rows = [
        {"id": f"r{i}", "verbal": phrase, "label": gold, "probs": {"yes": 0.5, "no": 0.5}}
        for i, (phrase, gold) in enumerate(
            [("very likely", "yes"), ("in all likelihood", "yes"), ("unlikely", "no")] * 4
        )
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, _, err = invoke("evaluate", "--data", data, "--source", "verbal")
    assert code != 0 and "--about" in err
    code, _, err = invoke("evaluate", "--data", data, "--source", "verbal", "--about", "yes")
    assert code == 0 and "'in all likelihood' (4)" in err
    lexicon = tmp_path / "lex.yaml"
    lexicon.write_text("phrases:\n  in all likelihood: 0.8\n", encoding="utf-8")
    code, out, err = invoke(
        "evaluate", "--data", data, "--source", "verbal", "--about", "yes",
        "--lexicon", lexicon, "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["n"] == 12
    code, _, err = invoke("evaluate", "--data", data, "--source", "words")
    assert code != 0 and "probs, verbal" in err


def test_fit_words_shows_what_each_phrase_learned(tmp_path: Path) -> None:
    code, out, err = invoke(
        "fit", "--method", "words", "--data", "recorded:mt-quality", "--source", "verbal",
        "--out", tmp_path / "w.json",
    )  # fmt: skip
    assert code == 0, err
    assert "P(acceptable) per phrase" in out
    line = next(row for row in out.splitlines() if "very likely" in row)
    assert "58" in line and "0.72" in line  # 58 items, 72 % of them acceptable
