"""Bakeoff arms run by ``verbcal elicit`` itself: ``batch: true`` (the provider's batch API,
against the scripted Files + Batches server) and ``backend: openai-decisions`` (against the
scripted decision-model server), side by side with a live numeric arm on the same items,
with the bakeoff's store, resume and ``--max-cost`` budget."""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("pydantic")
pytest.importorskip("openai")
pytest.importorskip("aiohttp")

from batch_fakeserver import BatchServer
from decisions_server import DecisionServer
from verbcal.bakeoff import BakeoffConfig, BakeoffError, dry_run, run_bakeoff
from verbcal.elicit import ElicitStopped
from verbcal.elicit.batch import BatchOptions

pytestmark = [pytest.mark.server]

N_ITEMS = 24
PRICE = (2.0, 8.0)  # USD per million (input, output) tokens, given in every arm


@pytest.fixture(autouse=True)
def _setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-bakeoff-test")
    # the scripted batch server finishes at once: poll it fast (the default waits 30 s)
    fast = functools.partial(BatchOptions, poll_interval=0.01)
    module = importlib.import_module(
        "verbcal.bakeoff.collect"
    )  # the package's collect() shadows it
    monkeypatch.setattr(module, "BatchOptions", fast)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[BatchServer, DecisionServer]]:
    with BatchServer() as batch, DecisionServer() as decisions:
        yield batch, decisions


def gold(n: int) -> str:
    return "positive" if n % 3 else "negative"


def write_setup(
    folder: Path, arms: list[dict[str, Any]], tag: str = "review", **extra: Any
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.yaml").write_text(
        "name: sentiment\ninstruction: Classify the sentiment of the review.\n"
        "labels: [positive, negative]\nlabel_field: label\n"
    )
    with (folder / "items.jsonl").open("w") as fh:
        for n in range(N_ITEMS):
            lean = gold(n) if n % 4 else ("negative" if gold(n) == "positive" else "positive")
            text = f"{tag} {n} lean:{lean}"  # the decision server puts 0.9 on `lean`
            fh.write(json.dumps({"id": f"r{n}", "text": text, "label": gold(n)}) + "\n")
    for arm in arms:
        arm.setdefault("price_per_1m_input", PRICE[0])
        arm.setdefault("price_per_1m_output", PRICE[1])
    data = {
        "task": "task.yaml",
        "items": "items.jsonl",
        "decision": {"positive": "positive", "precision": 0.7},
        "method": "temperature",
        "arms": arms,
        **extra,
    }
    path = folder / "bakeoff.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def arms(batch: BatchServer, decisions: DecisionServer) -> list[dict[str, Any]]:
    chat = {"backend": "openai", "model": "gpt-4o-mini", "base_url": batch.url + "/v1"}
    return [
        {"name": "live", **chat},
        # another model: the same model's batch requests would be the live arm's store keys
        {"name": "batched", **chat, "model": "gpt-4.1-mini", "batch": True},
        {"name": "decider", "backend": "openai-decisions", "base_url": decisions.url},
    ]


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_and_decision_arms_are_elicited_and_scored_beside_a_live_arm(
    servers: tuple[BatchServer, DecisionServer], tmp_path: Path
) -> None:
    batch, decisions = servers
    path = write_setup(tmp_path, arms(batch, decisions))
    out = tmp_path / "out"
    creates = batch.creates
    done = run_bakeoff(BakeoffConfig.load(path), out, repeats=2, n_boot=50, html_report=False)
    rows = {row["arm"]: row for row in done.document["arms"]}
    assert set(rows) == {"live", "batched", "decider"}
    # the batch arm went through the batch API, one line per item, and parsed as live does
    assert batch.creates == creates + 1
    assert max(batch.submissions.values()) == 1  # nothing submitted twice
    batched, live = done.replies["batched"], done.replies["live"]
    np.testing.assert_allclose(batched.probs, live.probs)
    assert batched.sent == N_ITEMS and not np.isnan(batched.probs).any()
    records = read(out / "arms" / "batched.jsonl")
    assert [r["id"] for r in records] == [f"r{n}" for n in range(N_ITEMS)]
    # the decision arm: 0.9 on the label the item leans to, as the server answered
    decider = done.replies["decider"]
    leans = [json.loads(line)["text"].split("lean:")[1] for line in
             (tmp_path / "items.jsonl").read_text().splitlines()]  # fmt: skip
    expected = [[0.9, 0.1] if lean == "positive" else [0.1, 0.9] for lean in leans]
    np.testing.assert_allclose(decider.probs, expected)
    assert (out / "arms" / "decider.jsonl").exists()
    # cost from the stored usage: the batch server's 20 + 10 tokens a reply, at the batch
    # price (half the live one: verbcal.elicit.pricing.BATCH_DISCOUNT)
    assert batched.input_tokens == 20 * N_ITEMS and batched.output_tokens == 10 * N_ITEMS
    live_price = (20 * PRICE[0] + 10 * PRICE[1]) * N_ITEMS / 1e6
    assert batched.cost == pytest.approx(0.5 * live_price)
    assert live.cost == pytest.approx(live_price)
    assert rows["batched"]["cost_per_1k"] == pytest.approx(1000 * batched.cost / N_ITEMS)
    assert decider.input_tokens > 0 and decider.cost is not None and decider.cost > 0
    assert rows["decider"]["n"] == N_ITEMS and rows["decider"]["failed_replies"] == 0
    # what each elicited arm spent in this run counts against --max-cost for the next arm
    assert decider.cost_sent == pytest.approx(decider.cost)
    assert batched.cost_sent == pytest.approx(batched.cost)
    # resume: a second run finds every reply in the bakeoff's store and sends nothing
    asked = sum(decisions.counts.values())
    again = run_bakeoff(BakeoffConfig.load(path), out, repeats=2, n_boot=50, html_report=False)
    assert batch.creates == creates + 1 and sum(decisions.counts.values()) == asked
    assert again.replies["batched"].sent == 0 and again.replies["decider"].sent == 0
    assert again.replies["decider"].cost_sent == 0.0
    planned = {row.arm: row for row in dry_run(BakeoffConfig.load(path), out)}
    assert planned["batched"].n_requests == planned["batched"].n_from_store == N_ITEMS
    assert planned["decider"].n_requests == planned["decider"].n_from_store == N_ITEMS
    np.testing.assert_allclose(again.replies["decider"].probs, decider.probs)


def test_the_budget_covers_the_elicited_arms(
    servers: tuple[BatchServer, DecisionServer], tmp_path: Path
) -> None:
    batch, decisions = servers
    setup = arms(batch, decisions)
    path = write_setup(tmp_path, [setup[2], setup[0]], tag="budget")
    live_before = len(batch.bodies)
    with pytest.raises(ElicitStopped) as stopped:  # less than the decision arm's worst case
        run_bakeoff(BakeoffConfig.load(path), tmp_path / "out", max_cost=1e-4)
    assert stopped.value.stop.kind == "budget" and stopped.value.backend == "openai-decisions"
    asked = sum(n for text, n in decisions.counts.items() if text.startswith("budget"))
    assert asked < N_ITEMS  # the decision arm stopped within the budget
    assert not (tmp_path / "out" / "arms" / "decider.jsonl").exists()
    assert len(batch.bodies) == live_before  # the arm after it never ran


@pytest.mark.parametrize(
    ("arm", "message"),
    [
        ({"backend": "local", "batch": True}, "needs a provider batch API"),
        ({"backend": "openai", "batch": True, "reply": "verbal"}, "use 'reply: numeric'"),
        ({"backend": "openai-decisions", "reply": "top-label"}, "remove 'reply' and 'prompt'"),
        ({"backend": "openai-decisions", "batch": True}, "has no batch API"),
        ({"backend": "openai-decisions", "samples": 3}, "use 'samples: 1'"),
        ({"recorded": "x.jsonl", "source": "probs", "batch": True}, "takes no 'batch'"),
    ],
)
def test_what_an_elicited_arm_cannot_take_is_named(
    tmp_path: Path, arm: dict[str, Any], message: str
) -> None:
    path = write_setup(tmp_path, [{"name": "a", "backend": "openai"}, {"name": "b", **arm}])
    with pytest.raises(BakeoffError, match=message):
        BakeoffConfig.load(path)


def test_the_cli_dry_run_plans_the_elicited_arms_at_their_price(
    servers: tuple[BatchServer, DecisionServer], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from verbcal.cli import app

    batch, decisions = servers
    path = write_setup(tmp_path, arms(batch, decisions), tag="dry")
    sent = (len(batch.bodies), batch.creates, sum(decisions.counts.values()))
    args = ["bakeoff", "--config", str(path), "--out", str(tmp_path / "out"), "--dry-run"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["arm"]: row for row in json.loads(result.stdout)["dry_run"]}
    assert {name: row["n_requests"] for name, row in rows.items()} == dict.fromkeys(
        ("live", "batched", "decider"), N_ITEMS
    )
    # the same prompts and token estimates: the batch arm's input costs half the live one's
    assert rows["batched"]["input_tokens"] == rows["live"]["input_tokens"]
    assert rows["batched"]["cost_input"] == pytest.approx(0.5 * rows["live"]["cost_input"])
    assert (len(batch.bodies), batch.creates, sum(decisions.counts.values())) == sent
