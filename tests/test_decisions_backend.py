"""Decision-model backends against a scripted ``/v1/decisions`` and ``/v1/systemone`` server.

The server (``decisions_server``, aiohttp on loopback) checks each request against the
``openai`` SDK's ``DecisionCreateParams`` and validates each answer as its ``Decision``;
the client is the official SDK (``AsyncOpenAI().decisions.create``) through ``elicit``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

pytest.importorskip("openai")
pytest.importorskip("aiohttp")

from decisions_server import DecisionServer
from verbcal.cli import app
from verbcal.elicit import ElicitError, ElicitOptions, ElicitStopped, dry_run, elicit
from verbcal.elicit.decisions_backend import (
    DecisionQuestion,
    openai_question,
    read_answer,
    task_question,
)
from verbcal.task import Task

pytestmark = pytest.mark.server

TASK = Task(
    name="sentiment",
    labels=("positive", "negative", "neutral"),
    descriptions={"positive": "The reviewer likes it."},
    instruction="Classify the sentiment of the review.",
    label_field="label",
)


@dataclass(frozen=True)
class JudgeTask(Task):
    """A binary judge task with an ``about`` label (as issue 20's tasks will have)."""

    about: str | None = None


JUDGE = JudgeTask(
    name="faithful",
    labels=("true", "false"),
    descriptions={},
    instruction="The answer is supported by the source.",
    label_field="label",
    about="true",
)


def items(*texts: str, label: str = "positive") -> list[dict[str, Any]]:
    return [{"id": f"i{n}", "text": t, "label": label} for n, t in enumerate(texts)]


def options(server: DecisionServer, tmp: Path, **kw: Any) -> ElicitOptions:
    args: dict[str, Any] = dict(
        backend="openai-decisions",
        base_url=server.url,
        store=tmp / "store.sqlite",
        concurrency=4,
        timeout=5.0,
        backoff_base=0.01,
        retries=2,
    )
    args.update(kw)
    return ElicitOptions(**args)


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def server() -> Any:
    with DecisionServer() as running:
        yield running


def test_choice_question_becomes_the_distribution(server: DecisionServer, tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    result = elicit(
        TASK,
        items("great lean:positive", "meh lean:neutral"),
        out,
        options(server, tmp_path),
        progress=False,
    )
    records = read(out)
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert records[0]["probs"] == pytest.approx(
        {"positive": 0.9, "negative": 0.05, "neutral": 0.05}
    )
    assert max(records[1]["probs"], key=records[1]["probs"].get) == "neutral"
    assert records[0]["provenance"] == {
        "kind": "decision",
        "backend": "openai-decisions",
        "model": "gpt-6-luna",
        "question": "choice",
    }
    assert json.loads(records[0]["raw"])["answer"]["type"] == "choice"  # kept for audit
    body = next(b for b in server.bodies if b["input"] == "great lean:positive")
    assert body["model"] == "gpt-6-luna"
    (question,) = body["questions"]
    assert question["type"] == "choice"
    assert question["instructions"] == TASK.instruction
    assert question["choices"][0] == {"value": "positive", "description": "The reviewer likes it."}
    assert [c["value"] for c in question["choices"]] == list(TASK.labels)
    assert result.stats.input_tokens > 0 and result.status_counts["ok"] == 2


def test_refusal_is_kept_and_counted(server: DecisionServer, tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    result = elicit(
        TASK, items("x @refuse", "y lean:positive"), out, options(server, tmp_path), progress=False
    )
    refused, ok = read(out)
    assert refused["status"] == "refused" and refused["probs"] is None
    assert refused["issues"] == ["refused"]
    assert ok["status"] == "ok"
    assert result.status_counts == {"refused": 1, "ok": 1}
    assert not result.issue_counts  # a refusal is a status, not a parse issue


def test_renormalised_answer_is_repaired(server: DecisionServer, tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    elicit(TASK, items("lean:positive @short"), out, options(server, tmp_path), progress=False)
    (record,) = read(out)
    assert record["status"] == "repaired"
    assert sum(record["probs"].values()) == pytest.approx(1.0)
    assert "renormalised" in record["issues"][0]


def test_predicate_question_for_a_task_about_one_label(
    server: DecisionServer, tmp_path: Path
) -> None:
    out = tmp_path / "preds.jsonl"
    elicit(JUDGE, items("lean:true", label="true"), out, options(server, tmp_path), progress=False)
    (record,) = read(out)
    assert record["probs"] == pytest.approx({"true": 0.9, "false": 0.1})
    assert record["provenance"]["question"] == "predicate"
    assert record["provenance"]["about"] == "true"
    assert server.bodies[0]["questions"] == [
        {"type": "predicate", "name": "label", "instructions": JUDGE.instruction}
    ]


def test_about_must_be_a_label_of_a_binary_task(tmp_path: Path) -> None:
    bad = JudgeTask(name="t", labels=("a", "b", "c"), descriptions={}, instruction="i", about="a")
    with pytest.raises(ElicitError, match="'about' must be one of the two labels"):
        dry_run(bad, items("x"), tmp_path / "p.jsonl", ElicitOptions(backend="openai-decisions"))


def test_429_with_retry_after_and_500_are_retried(server: DecisionServer, tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    result = elicit(
        TASK,
        items("a @429 lean:positive", "b @500 lean:negative"),
        out,
        options(server, tmp_path),
        progress=False,
    )
    assert [r["status"] for r in read(out)] == ["ok", "ok"]
    assert server.counts["a @429 lean:positive"] == 2 and server.counts["b @500 lean:negative"] == 2
    assert result.stats.retries == 2


def test_persistent_500_is_an_error_row_then_resumes(
    server: DecisionServer, tmp_path: Path
) -> None:
    out = tmp_path / "preds.jsonl"
    elicit(TASK, items("c @always500"), out, options(server, tmp_path, retries=1), progress=False)
    (record,) = read(out)
    assert record["status"] == "error" and "HTTP 500" in record["issues"][0]
    assert server.counts["c @always500"] == 2


def test_401_stops_the_run_and_keeps_what_came_back(server: DecisionServer, tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    opts = options(server, tmp_path, concurrency=1)
    with pytest.raises(ElicitStopped) as stopped:
        elicit(TASK, items("ok lean:positive", "no @401", "later"), out, opts, progress=False)
    assert stopped.value.stop.status == 401 and stopped.value.exit_code == 2
    assert "OPENAI_API_KEY" in str(stopped.value)
    assert server.counts["later"] == 0 and not out.exists()
    # resume: the first reply comes from the store
    elicit(TASK, items("ok lean:positive"), out, opts, progress=False)
    assert server.counts["ok lean:positive"] == 1


def test_samples_above_one_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ElicitError, match="--samples 1"):
        ElicitOptions(backend="openai-decisions", samples=3).check()


def test_max_cost_needs_a_price_and_dry_run_sends_nothing(
    server: DecisionServer, tmp_path: Path
) -> None:
    out = tmp_path / "preds.jsonl"
    with pytest.raises(ElicitError, match="--prices"):
        elicit(TASK, items("x"), out, options(server, tmp_path, max_cost=1.0), progress=False)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-6-luna": {"input": 1000.0, "output": 1000.0}}))
    plan = dry_run(TASK, items("x lean:positive"), out, options(server, tmp_path, prices=prices))
    assert plan.mode == "decision question: choice" and plan.cost_max and plan.cost_max > 0
    assert plan.example_prompt and '"kind": "choice"' in plan.example_prompt
    assert server.bodies == []
    # a budget that one request's worst case exceeds stops before sending anything
    opts = options(server, tmp_path, prices=prices, max_cost=0.0001)
    with pytest.raises(ElicitStopped) as stopped:
        elicit(TASK, items("x lean:positive"), out, opts, progress=False)
    assert stopped.value.stop.kind == "budget" and server.bodies == []


def test_systemone_wire(server: DecisionServer, tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    opts = options(server, tmp_path, backend="systemone")
    elicit(TASK, items("lean:negative", "z @refuse"), out, opts, progress=False)
    ok, refused = read(out)
    assert ok["probs"] == pytest.approx({"positive": 0.05, "negative": 0.9, "neutral": 0.05})
    assert ok["provenance"]["backend"] == "systemone"
    assert refused["status"] == "refused"
    body = next(b for b in server.bodies if b["state"] == "lean:negative")
    assert body["model"] == "jev-latest"
    assert body["questions"]["label"]["criteria"] == {
        "positive": "The reviewer likes it.",
        "negative": None,
        "neutral": None,
    }
    elicit(JUDGE, items("lean:true", label="true"), tmp_path / "j.jsonl", opts, progress=False)
    assert read(tmp_path / "j.jsonl")[0]["probs"] == pytest.approx({"true": 0.9, "false": 0.1})


def test_read_answer_rejects_a_mismatched_answer() -> None:
    question = DecisionQuestion("choice", "i", ("a", "b"))
    got = read_answer(question, {"type": "predicate", "probability": 0.3})
    assert got["status"] == "failed" and "predicate" in got["issues"][0]
    got = read_answer(
        question, {"type": "choice", "probabilities": [{"value": "c", "probability": 1.0}]}
    )
    assert got["status"] == "failed"
    assert openai_question(task_question(TASK))["choices"][1] == {"value": "negative"}


def test_cli_elicit_with_the_decisions_backend(server: DecisionServer, tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text(
        "name: s\ninstruction: Classify.\nlabels: [positive, negative]\nlabel_field: label\n"
    )
    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(json.dumps(i) for i in items("lean:positive", "q @refuse")) + "\n")
    out = tmp_path / "preds.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = CliRunner().invoke(
        app,
        [
            "elicit",
            "--task",
            str(task),
            "--input",
            str(data),
            "--out",
            str(out),
            "--backend",
            "openai-decisions",
            "--base-url",
            server.url,
            "--no-progress",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "refused" in result.output
    assert [r["status"] for r in read(out)] == ["ok", "refused"]
