"""`verbcal run` end to end: from a predictions file (no LLM calls) and against a local fake server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("matplotlib")

from verbcal.calibrate import Calibrator
from verbcal.cli import app
from verbcal.run import (
    ALTERNATIVES,
    RunError,
    RunOptions,
    parse_methods,
    run_from_predictions,
    stratified_folds,
)

FAST = RunOptions(n_boot=200)
QUICK = RunOptions(n_boot=100, report=False)


def _no_nan(value: object) -> None:
    """metrics.json must be strict JSON: NaN is written as null."""
    if isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, dict):
        for v in value.values():
            _no_nan(v)
    elif isinstance(value, list):
        for v in value:
            _no_nan(v)


@pytest.fixture(scope="module")
def tweets_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tweets"
    run_from_predictions("recorded:tweets", out, FAST)
    return out


def test_run_dir_holds_the_promised_files(tweets_run: Path) -> None:
    for name in ("predictions.jsonl", "split.json", "metrics.json", "report.html"):
        assert (tweets_run / name).is_file(), name
    metrics = json.loads((tweets_run / "metrics.json").read_text(encoding="utf-8"))
    _no_nan(json.loads((tweets_run / "metrics.json").read_text(), parse_constant=float))
    best = metrics["best_alternative"]
    assert best in ALTERNATIVES
    assert list(metrics["methods"]) == ["identity", "resoftmax", "temperature", best]
    for method, entry in metrics["methods"].items():
        calibrator = Calibrator.load(tweets_run / entry["calibrator"])
        assert calibrator.method == method
        assert set(entry["test"]) == set(entry["ci"])
        for label in metrics["labels"]:
            assert "reachable" in entry["thresholds"][label]["calibration"]
        assert 0 <= entry["selective"]["aurc"] <= 1
    assert metrics["recommended"] in metrics["methods"]
    assert metrics["recommended"] not in ("identity", "resoftmax")
    lines = (tweets_run / "predictions.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n")
    assert len(lines) == metrics["n_records"] == 201
    assert all(json.loads(line)["probs"] for line in lines)


def test_split_is_disjoint_stratified_and_covers_every_item(tweets_run: Path) -> None:
    split = json.loads((tweets_run / "split.json").read_text(encoding="utf-8"))
    calib, test = set(split["calibration"]), set(split["test"])
    assert not calib & test
    assert len(calib) + len(test) == 201
    assert abs(len(calib) - len(test)) <= 3
    metrics = json.loads((tweets_run / "metrics.json").read_text(encoding="utf-8"))
    counts = metrics["label_counts"]
    for label in metrics["labels"]:
        assert abs(counts["calibration"][label] - counts["test"][label]) <= 1


def test_choices_never_look_at_the_test_part(tmp_path: Path) -> None:
    """Replacing the test items' distributions changes no fit, CV score, choice or threshold."""
    records = [
        json.loads(line)
        for line in Path("src/verbcal/data/recorded/drug-reviews.jsonl")
        .read_text(encoding="utf-8")
        .rstrip("\n")
        .split("\n")
    ]
    source = tmp_path / "preds.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    first = run_from_predictions(source, tmp_path / "a", QUICK).metrics
    test_ids = set(json.loads((tmp_path / "a" / "split.json").read_text())["test"])
    rng = np.random.default_rng(1)
    for record in records:
        if record["id"] in test_ids:
            draw = rng.dirichlet(np.ones(3))
            record["probs"] = dict(zip(first["labels"], draw.tolist(), strict=True))
    changed = tmp_path / "changed.jsonl"
    changed.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    second = run_from_predictions(changed, tmp_path / "b", QUICK).metrics
    assert set(json.loads((tmp_path / "b" / "split.json").read_text())["test"]) == test_ids
    assert second["cv_nll"] == first["cv_nll"]
    assert second["best_alternative"] == first["best_alternative"]
    assert second["recommended"] == first["recommended"]
    for method in first["methods"]:
        before, after = first["methods"][method], second["methods"][method]
        assert after["params"] == before["params"]
        assert after["floor"] == before["floor"]
        for label in first["labels"]:
            assert (
                after["thresholds"][label]["calibration"]
                == (before["thresholds"][label]["calibration"])
            )
    assert second["methods"]["identity"]["test"] != first["methods"]["identity"]["test"]


def test_run_refuses_to_overwrite_an_earlier_run(tweets_run: Path) -> None:
    with pytest.raises(RunError, match="already holds a run"):
        run_from_predictions("recorded:tweets", tweets_run, FAST)


def test_run_keeps_unusable_and_unlabelled_records_out_and_lists_them(tmp_path: Path) -> None:
    lines = Path("src/verbcal/data/recorded/bbc-news.jsonl").read_text().rstrip("\n").split("\n")
    records = [json.loads(line) for line in lines]
    records[0]["probs"], records[0]["status"] = None, "failed"
    records[1]["label"] = None
    source = tmp_path / "p.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = run_from_predictions(source, tmp_path / "run", QUICK)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["left_out"]["no_distribution"] == [records[0]["id"]]
    assert split["left_out"]["no_gold_label"] == [records[1]["id"]]
    assert result.metrics["status_counts"] == {"failed": 1, "ok": len(records) - 1}
    assert result.metrics["n_labelled"] == len(records) - 2
    assert result.report is None and not (tmp_path / "run" / "report.html").exists()


def test_explicit_methods_and_too_few_items(tmp_path: Path) -> None:
    assert parse_methods("default") == ("identity", "resoftmax", "temperature", "best")
    assert parse_methods("temperature, platt") == ("temperature", "platt")
    opts = RunOptions(methods=("temperature", "platt"), n_boot=100, report=False)
    metrics = run_from_predictions("recorded:tweets", tmp_path / "m", opts).metrics
    assert list(metrics["methods"]) == ["temperature", "platt"]
    assert metrics["best_alternative"] is None
    with pytest.raises(RunError, match="unknown method"):
        RunOptions(methods=("nope",)).check()
    small = tmp_path / "small.jsonl"
    small.write_text(
        "".join(
            json.dumps({"id": i, "probs": {"a": 0.6, "b": 0.4}, "label": "ab"[i % 2]}) + "\n"
            for i in range(6)
        )
    )
    with pytest.raises(RunError, match="at least"):
        run_from_predictions(small, tmp_path / "s", opts)


def test_stratified_folds_balance_labels() -> None:
    y = np.array([0] * 10 + [1] * 7 + [2] * 3)
    folds = stratified_folds(y, 5, np.random.default_rng(0))
    assert set(folds.tolist()) == set(range(5))
    for label in (0, 1):
        per_fold = np.bincount(folds[y == label], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1


def test_cli_run_from_predictions(tmp_path: Path) -> None:
    out = tmp_path / "cli-run"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--predictions",
            "recorded:bbc-news",
            "--out",
            str(out),
            "--boot",
            "100",
            "--methods",
            "identity,temperature",
            "--no-report",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "recommended" in result.output
    assert (out / "metrics.json").is_file() and not (out / "report.html").exists()
    again = CliRunner().invoke(
        app, ["run", "--predictions", "recorded:bbc-news", "--out", str(out)]
    )
    assert again.exit_code == 2
    assert "already holds a run" in again.output


def test_cli_run_needs_an_input() -> None:
    result = CliRunner().invoke(app, ["run", "--out", "x"])
    assert result.exit_code == 2
    assert "--predictions" in result.output


def test_cli_help_has_examples() -> None:
    for command in ("run", "report"):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "Example: verbcal " + command in result.output
