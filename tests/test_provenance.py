"""Where probabilities came from: carried from elicit through run, evaluate and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from verbcal.cli import app
from verbcal.pipeline import RunOptions, run_from_predictions
from verbcal.provenance import describe, short, summarize

DECISION = {
    "kind": "decision",
    "backend": "openai-decisions",
    "model": "gpt-6-luna",
    "question": "choice",
}


def overconfident(n: int, source: dict[str, Any] | None, seed: int = 0) -> list[dict[str, Any]]:
    """Records whose top label (p = 0.95) is right 70% of the time."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        gold = str(rng.choice(["positive", "negative"]))
        lean = gold if rng.random() < 0.7 else ("negative" if gold == "positive" else "positive")
        probs = {lean: 0.95, ("negative" if lean == "positive" else "positive"): 0.05}
        record: dict[str, Any] = {"id": f"i{i}", "probs": probs, "label": gold, "status": "ok"}
        if source is not None:
            record["provenance"] = source
        out.append(record)
    return out


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_summarize_and_describe() -> None:
    verbal = {"kind": "verbalized", "backend": "openai", "model": "gpt-4o-mini"}
    summary = summarize(
        [{"provenance": DECISION}, {"provenance": DECISION}, {"provenance": verbal}, {}]
    )
    assert summary[0] == {**DECISION, "records": 2}
    assert {s["kind"] for s in summary} == {"decision", "verbalized", "unrecorded"}
    assert (
        short(summary) == "mixed sources"
        and short(summarize([{"provenance": DECISION}])) == "decision model"
    )
    assert short(summarize([{}])) == "verbalized"
    one = describe(summarize([{"provenance": DECISION}]))
    assert (
        one.startswith("decision model openai-decisions / gpt-6-luna") and "choice question" in one
    )
    assert "not recorded" in describe(summarize([{}]))


def test_run_and_report_name_the_decision_model(tmp_path: Path) -> None:
    preds = write(tmp_path / "preds.jsonl", overconfident(200, DECISION))
    result = run_from_predictions(preds, tmp_path / "run", RunOptions(n_boot=50))
    assert result.metrics["run"]["provenance"] == [{**DECISION, "records": 200}]
    assert result.report is not None
    html = result.report.read_text()
    assert "decision model openai-decisions / gpt-6-luna" in html


def test_evaluate_says_where_the_probabilities_came_from(tmp_path: Path) -> None:
    preds = write(tmp_path / "preds.jsonl", overconfident(60, DECISION))
    runner = CliRunner()
    shown = runner.invoke(app, ["evaluate", "--data", str(preds), "--boot", "20"])
    assert shown.exit_code == 0, shown.output
    assert "decision model (uncalibrated)" in shown.output
    assert "probabilities: decision model openai-decisions" in " ".join(shown.output.split())
    as_json = runner.invoke(app, ["evaluate", "--data", str(preds), "--boot", "20", "--json"])
    assert json.loads(as_json.output.splitlines()[-1])["provenance"][0]["kind"] == "decision"
    plain = write(tmp_path / "plain.jsonl", overconfident(60, None))
    shown = runner.invoke(app, ["evaluate", "--data", str(plain), "--boot", "20"])
    assert "verbalized (uncalibrated)" in shown.output


@pytest.mark.parametrize("n", [1])
def test_refused_records_are_counted_in_the_run(tmp_path: Path, n: int) -> None:
    records = overconfident(100, DECISION)
    records += [
        {"id": "r", "probs": None, "label": "positive", "status": "refused", "provenance": DECISION}
    ] * n
    result = run_from_predictions(
        write(tmp_path / "p.jsonl", records), tmp_path / "run", RunOptions(n_boot=20, report=False)
    )
    assert result.metrics["status_counts"]["refused"] == n
