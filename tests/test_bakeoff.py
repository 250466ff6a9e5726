"""verbcal bakeoff end to end against a scripted OpenAI-compatible server (real loopback HTTP):
models of different quality and price, resume, the budget over the whole bakeoff, dry runs,
cost from the recorded token usage, and the recommendation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("pydantic")
pytest.importorskip("openai")
pytest.importorskip("aiohttp")
pytest.importorskip("matplotlib")

from bakeoff_server import COMPLETION_TOKENS, ScriptedServer
from verbcal.bakeoff import BakeoffConfig, dry_run, run_bakeoff
from verbcal.cli import app
from verbcal.elicit import ElicitStopped
from verbcal.metrics import nll

pytestmark = [pytest.mark.server]

LABELS = ("good", "bad")
N_ITEMS = 80
PRICES = {  # USD per million (input, output) tokens
    "oracle-pricey": (10.0, 30.0),
    "oracle-cheap": (0.5, 1.5),
    "coin-cheapest": (0.01, 0.02),
}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-bakeoff-test")


def gold() -> dict[str, str]:
    rng = np.random.default_rng(7)
    return {f"item-{i}": LABELS[int(rng.random() < 0.4)] for i in range(N_ITEMS)}


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(gold(), LABELS) as running:
        yield running


def write_setup(folder: Path, url: str, arms: list[dict[str, Any]], **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.yaml").write_text(
        "name: review\ninstruction: Is the text good or bad?\nlabels: [good, bad]\n"
        "label_field: label\n"
    )
    with (folder / "items.jsonl").open("w") as fh:
        for item, label in gold().items():
            fh.write(json.dumps({"id": item, "text": f"Text {item}.", "label": label}) + "\n")
    for arm in arms:
        if "recorded" not in arm:
            arm.setdefault("backend", "openai")
            arm.setdefault("base_url", url)
            arm.setdefault("concurrency", 4)
    data = {
        "task": "task.yaml",
        "items": "items.jsonl",
        "decision": {"positive": "good", "precision": 0.7, "metric": "recall"},
        "method": "temperature",
        "arms": arms,
        **extra,
    }
    path = folder / "bakeoff.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def priced(name: str) -> dict[str, Any]:
    price = PRICES[name]
    return {
        "name": name,
        "model": name,
        "price_per_1m_input": price[0],
        "price_per_1m_output": price[1],
    }


def test_recommends_the_cheapest_arm_within_the_ci_of_the_best(
    server: ScriptedServer, tmp_path: Path
) -> None:
    arms = [priced("oracle-pricey"), priced("oracle-cheap"), priced("coin-cheapest")]
    config = BakeoffConfig.load(write_setup(tmp_path, server.url, arms))
    before = dict(server.requests)
    result = run_bakeoff(config, tmp_path / "out", repeats=4, n_boot=300)
    sent = {m: server.requests[m] - before.get(m, 0) for m in PRICES}
    assert sent == dict.fromkeys(PRICES, N_ITEMS)
    doc = json.loads((tmp_path / "out" / "bakeoff.json").read_text())
    assert doc == json.loads(json.dumps(result.document))
    rows = {row["arm"]: row for row in doc["arms"]}
    # the oracles are equally good (the same replies), the coin flips are useless
    assert rows["oracle-pricey"]["decision_metric"] == rows["oracle-cheap"]["decision_metric"]
    assert rows["oracle-cheap"]["decision_metric"] > 0.5
    assert rows["coin-cheapest"]["decision_metric"] < rows["oracle-cheap"]["decision_metric"]
    assert rows["coin-cheapest"]["diff_to_best_decision_metric_ci"][1] < 0  # shown worse
    assert rows["oracle-cheap"]["diff_to_best_decision_metric_ci"] == [0.0, 0.0]
    assert doc["recommended"] == "oracle-cheap"
    assert "cheapest" in doc["reason"] and doc["reason"].count(".") >= 1
    for name, row in rows.items():
        assert row["n"] == N_ITEMS and row["n_dropped"] == 0
        # cost from the tokens the server reported, priced independently here
        used = server.usage[name][-N_ITEMS:]
        price = PRICES[name]
        expected = sum(i * price[0] + o * price[1] for i, o in used) / 1e6 / N_ITEMS * 1000
        assert row["cost_per_1k"] == pytest.approx(expected, rel=1e-9)
        assert row["output_tokens"] == COMPLETION_TOKENS * N_ITEMS
        assert row["latency_p50"] is not None and row["latency_p95"] >= row["latency_p50"]
        for key in ("accuracy", "ece_raw", "ece", "nll_raw", "nll", "brier", "auroc"):
            assert row[key] is not None
        assert len(row["diff_to_best_nll_ci"]) == 2
    assert rows["oracle-cheap"]["accuracy"] > 0.8 > rows["coin-cheapest"]["accuracy"]
    files = result.files
    for name in PRICES:
        saved = json.loads((tmp_path / "out" / "calibrators" / f"{name}.json").read_text())
        assert saved["method"] == "temperature"
    html = files["report"].read_text()
    assert html.count("<img") == 2 + 2 * len(PRICES)  # two cost plots, raw + calibrated each
    assert "Pareto" in html and "oracle-cheap" in html


def test_scores_match_an_independent_computation(server: ScriptedServer, tmp_path: Path) -> None:
    """One repeat, identity calibrator: the arm's NLL is the NLL of the replies on that split."""
    from verbcal.evaluation import repeated_splits

    arms = [priced("oracle-cheap"), priced("coin-cheapest")]
    config = BakeoffConfig.load(write_setup(tmp_path, server.url, arms, method="identity"))
    result = run_bakeoff(config, tmp_path / "out", repeats=1, n_boot=50, html_report=False)
    replies = result.replies["coin-cheapest"]
    test = repeated_splits(replies.y, 0.5, 1, 0)[0].test
    expected = nll(replies.probs[test], replies.y[test])
    row = next(r for r in result.document["arms"] if r["arm"] == "coin-cheapest")
    assert row["nll"] == pytest.approx(expected) and row["nll_raw"] == pytest.approx(expected)


def test_resume_sends_nothing_the_store_holds(server: ScriptedServer, tmp_path: Path) -> None:
    arms = [priced("oracle-cheap"), {**priced("coin-cheapest"), "samples": 2}]
    config = BakeoffConfig.load(write_setup(tmp_path, server.url, arms))
    first = run_bakeoff(config, tmp_path / "out", repeats=1, n_boot=50, html_report=False)
    assert first.replies["coin-cheapest"].sent == 2 * N_ITEMS
    count = sum(server.requests.values())
    again = run_bakeoff(config, tmp_path / "out", repeats=1, n_boot=50, html_report=False)
    assert sum(server.requests.values()) == count
    assert again.replies["coin-cheapest"].sent == 0
    # samples averaged, their spread kept
    row = next(r for r in again.document["arms"] if r["arm"] == "coin-cheapest")
    assert row["samples"] == 2 and row["llm_temperature"] == 0.7
    assert row["sample_spread"] is not None and row["sample_spread"] > 0
    assert row["cost_per_1k"] == first.document["arms"][1]["cost_per_1k"]


def test_max_cost_is_a_budget_over_the_whole_bakeoff(
    server: ScriptedServer, tmp_path: Path
) -> None:
    arms = [priced("oracle-cheap"), priced("oracle-pricey")]
    config = BakeoffConfig.load(write_setup(tmp_path, server.url, arms))
    plan = {row.arm: row for row in dry_run(config, tmp_path / "out")}
    cheap_max = plan["oracle-cheap"].cost_max
    assert cheap_max is not None
    budget = cheap_max * 1.05  # enough for the cheap arm, not for the pricey one as well
    before = server.requests["oracle-pricey"]
    with pytest.raises(ElicitStopped) as info:
        run_bakeoff(config, tmp_path / "out", max_cost=budget, repeats=1)
    assert info.value.stop.kind == "budget" and info.value.exit_code == 3
    assert server.requests["oracle-pricey"] - before < N_ITEMS  # stopped inside arm two


def test_dry_run_sends_nothing_and_prices_each_arm(server: ScriptedServer, tmp_path: Path) -> None:
    arms = [priced("oracle-pricey"), {**priced("coin-cheapest"), "samples": 3}]
    path = write_setup(tmp_path, server.url, arms)
    count = sum(server.requests.values())
    result = CliRunner().invoke(
        app, ["bakeoff", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert sum(server.requests.values()) == count
    rows = {row["arm"]: row for row in json.loads(result.stdout)["dry_run"]}
    assert rows["oracle-pricey"]["n_requests"] == N_ITEMS
    assert rows["coin-cheapest"]["n_requests"] == 3 * N_ITEMS
    pricey = rows["oracle-pricey"]
    assert pricey["cost_input"] == pytest.approx(pricey["input_tokens"] * 10.0 / 1e6)
    assert pricey["cost_max"] == pytest.approx(
        pricey["cost_input"] + pricey["output_tokens_max"] * 30.0 / 1e6
    )
    table = CliRunner().invoke(
        app, ["bakeoff", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run"]
    )
    assert table.exit_code == 0 and "Nothing was sent" in table.output


def test_cli_runs_top_label_and_numeric_arms(server: ScriptedServer, tmp_path: Path) -> None:
    arms = [priced("oracle-cheap"), {**priced("oracle-pricey"), "reply": "top-label"}]
    path = write_setup(tmp_path, server.url, arms)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["bakeoff", "--config", str(path), "--out", str(out), "--repeats", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = {row["arm"]: row for row in doc["arms"]}
    assert rows["oracle-pricey"]["format"] == "top-label"
    assert rows["oracle-pricey"]["failed_replies"] == 0
    assert doc["recommended"] in rows
    table = CliRunner().invoke(
        app, ["bakeoff", "--config", str(path), "--out", str(out), "--repeats", "2"]
    )
    assert table.exit_code == 0 and "recommended" in table.output


def test_verbal_arms_take_a_parser_hook_and_say_when_the_lexicon_is_missing(
    server: ScriptedServer, tmp_path: Path
) -> None:
    free_text = {**priced("oracle-pricey"), "name": "words-free", "structured": False}
    arms = [
        priced("oracle-cheap"),
        {**priced("oracle-pricey"), "reply": "verbal"},
        {**free_text, "reply": "verbal"},
    ]
    path = write_setup(tmp_path, server.url, arms)
    config = BakeoffConfig.load(path)
    words = {"very likely": 0.85, "very unlikely": 0.1}
    done = run_bakeoff(
        config, tmp_path / "out", repeats=2, n_boot=50, verbal_parser=words.get, html_report=False
    )
    verbal = done.replies["oracle-pricey"]  # structured: {"likelihood": phrase}
    assert set(np.round(verbal.probs[:, 0], 6)) <= {0.85, 0.1}
    free = done.replies["words-free"]  # structured: false, the bare phrase
    np.testing.assert_array_equal(free.probs, verbal.probs)


def test_numeric_arms_reuse_replies_collected_by_verbcal_elicit(
    server: ScriptedServer, tmp_path: Path
) -> None:
    from verbcal.elicit import ElicitOptions, elicit

    arms = [priced("oracle-cheap"), priced("coin-cheapest")]
    config = BakeoffConfig.load(write_setup(tmp_path, server.url, arms))
    store = tmp_path / "out" / "bakeoff.store.sqlite"
    options = ElicitOptions(
        backend="openai", model="oracle-cheap", base_url=server.url, store=store, concurrency=4
    )
    elicit(config.task, tmp_path / "items.jsonl", tmp_path / "preds.jsonl", options, progress=False)
    before = server.requests["oracle-cheap"]
    result = run_bakeoff(config, tmp_path / "out", repeats=1, n_boot=50, html_report=False)
    assert server.requests["oracle-cheap"] == before  # the same requests, found in the store
    assert result.replies["oracle-cheap"].sent == 0
    assert result.replies["coin-cheapest"].sent == N_ITEMS
