"""`verbcal run` end to end: from a predictions file (no LLM calls) and against a local fake server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("matplotlib")

from verbcal.calibration import Calibrator
from verbcal.calibration.auto import stratified_folds
from verbcal.calibration.specs import parse_spec
from verbcal.cli import app
from verbcal.pipeline import (
    ALTERNATIVES,
    RunError,
    RunOptions,
    parse_methods,
    run_from_predictions,
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
    rec = metrics["recommended"]
    expected = ["identity", "resoftmax", "temperature", best]
    assert list(metrics["methods"]) == expected + ([rec] if rec not in expected else [])
    for method, entry in metrics["methods"].items():
        calibrator = Calibrator.load(tweets_run / entry["calibrator"])
        assert calibrator.method == parse_spec(method).method
        assert set(entry["test"]) == set(entry["ci"])
        for label in metrics["labels"]:
            assert "reachable" in entry["thresholds"][label]["calibration"]
        assert 0 <= entry["selective"]["aurc"] <= 1
    assert metrics["recommended"] in metrics["methods"]
    # recommended through auto: its CV table and reason are in metrics.json and auto.json
    auto = Calibrator.load(tweets_run / "calibrators" / "auto.json")
    # a stack is recommended as auto itself; a single candidate by its spec
    assert auto.method == "auto"
    assert metrics["recommended"] == ("auto" if auto.chosen_ == "stack" else auto.chosen_)
    assert metrics["auto"]["chosen"] == auto.chosen_
    assert metrics["auto"]["built"] == auto.describe()
    assert metrics["auto"]["reason"] == auto.reason_
    assert {row["method"] for row in metrics["auto"]["cv"]} >= {"identity", "temperature"}
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
    assert list(metrics["methods"])[:2] == ["temperature", "platt"]
    assert set(metrics["methods"]) <= {"temperature", "platt", metrics["recommended"]}
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


def test_a_refused_run_writes_nothing(tmp_path: Path) -> None:
    """Too few items: refused before the run folder (or predictions.jsonl) exists, in both
    modes, and before any LLM request (the base URL below answers nothing)."""
    small = tmp_path / "small.jsonl"
    small.write_text(
        "".join(
            json.dumps({"id": i, "probs": {"a": 0.6, "b": 0.4}, "label": "ab"[i % 2]}) + "\n"
            for i in range(6)
        )
    )
    result = CliRunner().invoke(app, ["run", "--data", str(small), "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "at least 10" in result.output, result.output
    assert not (tmp_path / "a").exists()
    task = tmp_path / "task.yaml"
    task.write_text("name: t\ninstruction: Classify.\nlabels: [a, b]\nlabel_field: label\n")
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(json.dumps({"id": i, "text": f"t{i}", "label": "a"}) + "\n" for i in range(6))
    )
    args = ["run", "--task", str(task), "--input", str(items), "--backend", "openai"]
    args += ["--base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "b")]
    result = CliRunner(env={"OPENAI_API_KEY": "sk-test-0123456789abcdef"}).invoke(app, args)
    assert result.exit_code == 2 and "6 items of" in result.output, result.output
    assert "at least 10" in result.output and not (tmp_path / "b").exists()


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
    # a method with no CV NLL of its own (auto's stack) shows '-', never nan; the rule is said
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    table = result.output.split("recommended by auto")[0]
    assert "nan" not in table.lower()
    if metrics["methods"][metrics["recommended"]]["cv_nll"] is None:
        assert "-: not scored that way" in " ".join(table.split())
    again = CliRunner().invoke(
        app, ["run", "--predictions", "recorded:bbc-news", "--out", str(out)]
    )
    assert again.exit_code == 2
    assert "already holds a run" in again.output


def test_cli_run_needs_an_input() -> None:
    result = CliRunner().invoke(app, ["run", "--out", "x"])
    assert result.exit_code == 2
    assert "--data" in result.output


def test_cli_help_has_examples() -> None:
    for command in ("run", "report"):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "Example: verbcal " + command in result.output


# ---------------------------------------------------------------- against a local fake LLM server


@pytest.mark.server
def test_cli_run_elicits_from_a_local_openai_compatible_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """task + items → fake server → predictions → calibrators → metrics → report; then resume."""
    pytest.importorskip("openai")
    pytest.importorskip("aiohttp")
    from elicit_fakeserver import FakeServer

    class OverconfidentServer(FakeServer):
        """Replies with the item's 'score' marker, pushed towards 0 and 1 (overconfident)."""

        @staticmethod
        def reply_text(prompt: str, labels: tuple[str, ...], seed: int | None) -> str:
            if "@refuse" in prompt:
                return "I'm sorry, but I cannot help with that request."
            score = float(prompt.split("score=")[1].split()[0])
            sharp = score**3 / (score**3 + (1 - score) ** 3)
            return json.dumps({labels[0]: round(sharp, 2), labels[1]: round(1 - sharp, 2)})

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-FAKEKEY0123456789abcdefXYZ")
    task = tmp_path / "task.yaml"
    task.write_text(
        "name: sentiment\ninstruction: Classify the sentiment of the review.\n"
        "labels: [positive, negative]\nlabel_field: label\n",
        encoding="utf-8",
    )
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        score = float(rng.uniform(0.05, 0.95))
        gold = "positive" if rng.random() < score else "negative"
        marker = " @refuse" if i in (3, 17) else " @500x2" if i == 5 else ""
        rows.append({"id": f"r{i}", "text": f"review {i} score={score:.3f}{marker}", "label": gold})
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "run"
    with OverconfidentServer() as server:
        args = [
            "run",
            "--task",
            str(task),
            "--input",
            str(items),
            "--backend",
            "openai",
            "--model",
            "fake-model",
            "--base-url",
            server.url + "/v1",
            "--concurrency",
            "4",
            "--timeout",
            "5",
            "--boot",
            "100",
            "--methods",
            "identity,resoftmax,temperature,platt",
            "--no-progress",
            "--out",
            str(out),
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        # the elicitation summary, as `verbcal elicit` prints it, then the run's table
        assert "verbcal elicit: openai / fake-model" in result.output
        assert "items: 60; requests: 60 planned" in result.output
        assert result.output.index("verbcal elicit:") < result.output.index("verbcal run:")
        sent = sum(server.counts.values())
        assert sent == 60 + 2  # one request per item, two retries of the @500x2 item
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["status_counts"] == {"ok": 58, "failed": 2}
        assert metrics["n_labelled"] == 58
        run_info = metrics["run"]
        assert run_info["mode"] == "elicit"
        assert (run_info["backend"], run_info["model"]) == ("openai", "fake-model")
        assert run_info["tokens"] == {"input": 20 * 60, "output": 10 * 60}
        assert run_info["requests"]["retries"] == 2
        # Overconfident replies: temperature scaling softens them (T > 1) and lowers NLL on test.
        assert metrics["methods"]["temperature"]["params"]["temperature"] > 1
        assert (
            metrics["methods"]["temperature"]["test"]["nll"]
            < metrics["methods"]["identity"]["test"]["nll"]
        )
        for name in ("predictions.jsonl", "split.json", "report.html", "store.sqlite"):
            assert (out / name).is_file(), name
        report = (out / "report.html").read_text(encoding="utf-8")
        assert "openai / fake-model" in report and "1,200 in, 600 out" in report
        assert "failed: 2" in report
        # Resume: the same command again sends nothing new (every reply is in the store).
        again = CliRunner().invoke(app, [*args, "--overwrite"])
        assert again.exit_code == 0, again.output
        assert sum(server.counts.values()) == sent
        assert "FAKEKEY" not in report
        assert "FAKEKEY" not in (out / "metrics.json").read_text(encoding="utf-8")


def test_decisions_in_metrics_json_match_the_api(tweets_run: Path) -> None:
    from verbcal import datasets
    from verbcal.decide import CostMatrix, abstain_band, cost_report, fit_sets, set_summary

    metrics = json.loads((tweets_run / "metrics.json").read_text(encoding="utf-8"))
    split = json.loads((tweets_run / "split.json").read_text(encoding="utf-8"))
    labelled = datasets.load("recorded:tweets").labelled()
    where = {item: i for i, item in enumerate(labelled.ids)}
    cal = np.array([where[i] for i in split["calibration"]])
    test = np.array([where[i] for i in split["test"]])
    rec = metrics["recommended"]
    calibrator = Calibrator.load(tweets_run / metrics["methods"][rec]["calibrator"])
    q_cal, q_test = (calibrator.predict_proba(labelled.probs[idx]) for idx in (cal, test))
    y_cal, y_test = labelled.y[cal], labelled.y[test]
    decisions = metrics["methods"][rec]["decisions"]
    sets = set_summary(fit_sets(q_cal, y_cal, alpha=0.1, score="aps").predict(q_test), y_test)
    for key, value in sets.items():
        assert decisions["sets"]["aps"][key] == pytest.approx(value), key
    costs = CostMatrix.zero_one(metrics["labels"], 0.3)
    assert decisions["cost"]["realised_cost"] == pytest.approx(
        cost_report(q_test, y_test, costs)["realised_cost"]
    )
    for k, label in enumerate(metrics["labels"]):
        band = abstain_band(q_cal, y_cal, k, precision=0.9, confidence=0.95)
        assert decisions["abstain"][label]["upper"] == band.upper
        assert decisions["abstain"][label]["test"] == band.evaluate(q_test, y_test)
    assert [b["band"] for b in decisions["bands"]] == ["low", "medium", "high"]
    assert sum(b["n"] for b in decisions["bands"]) == len(test)
    assert "slices" not in decisions and "abstain band" in metrics["conventions"]["decisions"]


def test_run_slices_by_a_record_field(tmp_path: Path) -> None:
    out = run_from_predictions(
        "recorded:tweets", tmp_path / "r", RunOptions(n_boot=50, report=False, by="label")
    )
    slices = out.metrics["methods"]["temperature"]["decisions"]["slices"]
    assert set(slices) == {"negative", "neutral", "positive"}
    assert sum(s["n"] for s in slices.values()) == out.metrics["n_test"]
    with pytest.raises(ValueError, match="has the field 'lang'"):
        run_from_predictions(
            "recorded:tweets", tmp_path / "s", RunOptions(n_boot=50, report=False, by="lang")
        )
    with pytest.raises(RunError, match="alpha"):
        run_from_predictions("recorded:tweets", tmp_path / "t", RunOptions(alpha=1.5))


def test_metrics_json_round_trips_through_the_dataclasses(tweets_run: Path) -> None:
    from verbcal.jsonio import json_ready
    from verbcal.run_metrics import MethodResult, RunMetrics

    text = (tweets_run / "metrics.json").read_text(encoding="utf-8")
    data = json.loads(text)
    metrics = RunMetrics.from_dict(data)
    assert all(isinstance(m, MethodResult) for m in metrics.methods.values())
    assert metrics.to_dict() == data
    assert list(metrics.to_dict()) == list(data)
    assert json.dumps(json_ready(metrics.to_dict()), indent=2) + "\n" == text
    with pytest.raises(ValueError, match=r"not a metrics\.json"):
        RunMetrics.from_dict({**data, "format": "verbcal-calibrator"})
    with pytest.raises(ValueError, match="upgrade verbcal"):
        RunMetrics.from_dict({**data, "version": data["version"] + 1})


def test_run_refuses_duplicate_ids_and_writes_nothing(tmp_path: Path) -> None:
    rows = [
        {
            "id": str(i % 20),
            "probs": {"a": 0.2 + 0.01 * i, "b": 0.8 - 0.01 * i},
            "label": "ab"[i % 2],
        }
        for i in range(40)
    ]
    data = tmp_path / "dup.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"duplicate id '0' \(first on line 1, again on line 21\)"):
        run_from_predictions(str(data), tmp_path / "run", QUICK)
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


def test_run_a_verbal_judge_task_with_several_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The built-in translation-quality-verbal task: two fields per item, phrases as replies,
    read through the lexicon; the phrase stays beside its probability."""
    pytest.importorskip("openai")
    pytest.importorskip("aiohttp")
    from elicit_fakeserver import FakeServer

    class JudgeServer(FakeServer):
        @staticmethod
        def reply_text(prompt: str, labels: tuple[str, ...], seed: int | None) -> str:
            assert "How likely is it that the translation is acceptable?" in prompt
            return prompt.split("phrase=")[1].split("\n")[0]

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-FAKEKEY0123456789abcdefXYZ")
    phrases = ["Very likely.", "I'd say probably", "almost certain", "probably not", "wibble"]
    rows = [
        {
            "id": f"m{i}",
            "source": f"源文 {i}",
            "translation": f"translation {i}\nphrase={phrases[i % 5]}",
            "label": "acceptable" if i % 5 in (0, 2) or i % 7 == 0 else "unacceptable",
        }
        for i in range(40)
    ]
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "run"
    with JudgeServer() as server:
        result = CliRunner().invoke(
            app,
            [
                "run", "--task", "translation-quality-verbal", "--input", str(items),
                "--backend", "openai", "--model", "fake-model",
                "--base-url", server.url + "/v1", "--no-progress", "--boot", "50",
                "--methods", "identity,temperature", "--out", str(out),
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert sum(server.counts.values()) == 40
    records = [
        json.loads(line)
        for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    first = records[0]
    assert first["verbal"] == "Very likely." and first["about"] == "acceptable"
    assert first["probs"] == {"acceptable": 0.9, "unacceptable": 0.1}
    assert first["status"] == "ok"
    second = records[1]
    assert second["status"] == "repaired" and "lead_in" in second["issues"]
    unknown = records[4]
    assert unknown["status"] == "failed" and unknown["probs"] is None
    assert unknown["issues"] == ["unknown_expression:wibble"]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["status_counts"]["failed"] == 8
