"""``elicit --batch`` against the scripted batch server, through the official SDKs.

Every test counts what the server received: ``submissions`` per custom_id (one per batch
that held the request), so "nothing submitted twice" is checked, not assumed.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

pytest.importorskip("openai")
pytest.importorskip("anthropic")
pytest.importorskip("aiohttp")

from batch_fakeserver import BatchServer
from verbcal.cli import app
from verbcal.elicit import ElicitError, ElicitOptions, ElicitStopped, elicit
from verbcal.elicit.batch import BatchOptions, admin
from verbcal.elicit.batch.job import BatchPending, dry_run_batch
from verbcal.elicit.batch.runner import split
from verbcal.task import Task

pytestmark = pytest.mark.server

BACKENDS = ("openai", "anthropic")
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
TASK = Task(
    name="sentiment",
    labels=("positive", "negative"),
    descriptions={},
    instruction="Classify the sentiment of the review.",
    label_field="label",
)


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-batch-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-batch-test")


def items(n: int, marks: dict[int, str] | None = None) -> list[dict[str, Any]]:
    marks = marks or {}
    return [
        {
            "id": f"i{k}",
            "text": f"review number {k} {marks.get(k, '')}".strip(),
            "label": "positive",
        }
        for k in range(n)
    ]


def base_url(server: BatchServer, backend: str) -> str:
    return server.url + ("/v1" if backend == "openai" else "")


def options(
    server: BatchServer, backend: str, store: Path, batch: BatchOptions | None = None, **kw: Any
) -> ElicitOptions:
    return ElicitOptions(
        backend=backend,
        model=MODELS[backend],
        base_url=base_url(server, backend),
        store=store,
        retries=1,
        backoff_base=0.01,
        batch=batch or BatchOptions(poll_interval=0.01),
        **kw,
    )


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_replies_parse_exactly_as_live(tmp_path: Path, backend: str) -> None:
    """Same replies, same distributions; results come back shuffled and are joined on custom_id."""
    rows = items(9, {2: "@berr", 6: "@bexp"})
    for row in rows:
        row["id"] = f"docs/{row['id']} #1"  # not a valid Anthropic custom_id: keys are used
    with BatchServer() as server:
        batch = options(
            server, backend, tmp_path / "b.sqlite", BatchOptions(poll_interval=0.01, max_requests=4)
        )
        result = elicit(TASK, rows, tmp_path / "batch.jsonl", batch, progress=False)
        live = options(server, backend, tmp_path / "l.sqlite")
        elicit(
            TASK,
            rows,
            tmp_path / "live.jsonl",
            ElicitOptions(**{**live.__dict__, "batch": None}),
            progress=False,
        )
        submissions = dict(server.submissions)
        creates = server.creates
    got, want = read(tmp_path / "batch.jsonl"), read(tmp_path / "live.jsonl")
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert [r["probs"] for r in got] == [r["probs"] for r in want]
    assert len({r["probs"]["positive"] for r in got}) > 5  # replies differ item to item
    assert all(r["status"] == "ok" for r in got)
    assert creates == 4  # 4 + 4 + 1, then one retry batch for the errored and expired item
    assert sorted(submissions.values()) == [1] * 7 + [2, 2]
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", custom_id) for custom_id in submissions)
    assert result.stats.requests == 11
    assert "at batch prices" in result.notes[0]
    assert result.cost == pytest.approx(result.stats.cost)


@pytest.mark.parametrize("backend", BACKENDS)
def test_retries_exhausted_then_error_or_live(tmp_path: Path, backend: str) -> None:
    rows = items(3, {1: "@balways"})
    with BatchServer() as server:
        opts = options(
            server, backend, tmp_path / "a.sqlite", BatchOptions(poll_interval=0.01, retries=1)
        )
        elicit(TASK, rows, tmp_path / "a.jsonl", opts, progress=False)
        assert server.submissions.most_common(1)[0][1] == 2  # first batch + 1 retry
        records = read(tmp_path / "a.jsonl")
        assert [r["status"] for r in records] == ["ok", "error", "ok"]
        assert "batch line" in records[1]["issues"][0]
        server.submissions.clear()
        live_before = sum(server.counts.values())
        fallback = BatchOptions(poll_interval=0.01, retries=0, fallback="live")
        opts = options(server, backend, tmp_path / "b.sqlite", fallback)
        result = elicit(TASK, rows, tmp_path / "b.jsonl", opts, progress=False)
        assert sum(server.counts.values()) - live_before == 1  # one live call, for item i1
        assert max(server.submissions.values()) == 1
    assert [r["status"] for r in read(tmp_path / "b.jsonl")] == ["ok", "ok", "ok"]
    assert any("sent live" in note for note in result.notes)


def test_split_respects_both_limits() -> None:
    lines = [b"x" * 10] * 7
    assert split(lines, 3, 1000) == [(0, 3), (3, 6), (6, 7)]
    assert split(lines, 100, 25) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    with pytest.raises(ValueError, match="batch-max-bytes"):
        split([b"y" * 30], 10, 25)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dry_run_lists_batches_at_half_price(tmp_path: Path, backend: str) -> None:
    with BatchServer() as server:
        opts = options(server, backend, tmp_path / "s.sqlite", BatchOptions(max_requests=2))
        plan = dry_run_batch(TASK, items(5), tmp_path / "o.jsonl", opts)
        assert server.creates == 0 and not server.files
    assert [b[0] for b in plan.batches] == [2, 2, 1]
    assert all(b[1] > 0 and b[2] > 0 for b in plan.batches)
    assert plan.cost_batch is not None and plan.cost_live is not None
    assert plan.cost_batch[1] == pytest.approx(plan.cost_live[1] / 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_cost_uses_batch_prices(tmp_path: Path, backend: str) -> None:
    with BatchServer() as server:
        plan = dry_run_batch(
            TASK, items(6), tmp_path / "o.jsonl", options(server, backend, tmp_path / "p.sqlite")
        )
        assert plan.cost_batch is not None and plan.cost_live is not None
        per_request_batch = plan.cost_batch[1] / 6
        budget = per_request_batch * 4.5  # four requests at batch prices, two at live prices
        opts = options(server, backend, tmp_path / "s.sqlite", max_cost=budget)
        with pytest.raises(ElicitStopped) as stopped:
            elicit(TASK, items(6), tmp_path / "o.jsonl", opts, progress=False)
        assert sum(server.submissions.values()) == 4
    assert stopped.value.exit_code == 3 and "--max-cost" in str(stopped.value)
    assert stopped.value.unsent == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_key_stops_with_exit_2(tmp_path: Path, backend: str) -> None:
    with BatchServer(api_key="the-right-key") as server:
        with pytest.raises(ElicitStopped) as stopped:
            elicit(
                TASK,
                items(3),
                tmp_path / "o.jsonl",
                options(server, backend, tmp_path / "s.sqlite"),
                progress=False,
            )
        assert server.creates == 0
    assert stopped.value.exit_code == 2
    assert "401" in str(stopped.value) and "authentication failed" in str(stopped.value)


def test_validation_failure_stops_with_cause(tmp_path: Path) -> None:
    with BatchServer(fail_validation=True) as server, pytest.raises(ElicitStopped) as stopped:
        elicit(
            TASK,
            items(3),
            tmp_path / "o.jsonl",
            options(server, "openai", tmp_path / "s.sqlite"),
            progress=False,
        )
    assert stopped.value.exit_code == 2
    assert "failed validation" in str(stopped.value) and "model not available" in str(stopped.value)
    assert not (tmp_path / "o.jsonl").exists()


def test_refused_create_stops_with_cause(tmp_path: Path) -> None:
    with BatchServer(reject_create=True) as server, pytest.raises(ElicitStopped) as stopped:
        elicit(
            TASK,
            items(3),
            tmp_path / "o.jsonl",
            options(server, "anthropic", tmp_path / "s.sqlite"),
            progress=False,
        )
    assert stopped.value.exit_code == 2 and "refused" in str(stopped.value)
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert db.execute("SELECT state FROM batches").fetchall() == [("unsent",)]


def test_options_refused_early() -> None:
    with pytest.raises(ElicitError, match="openai or anthropic"):
        ElicitOptions(backend="bedrock", batch=BatchOptions()).check()
    with pytest.raises(ElicitError, match="label-logprobs"):
        ElicitOptions(backend="openai", label_logprobs=True, batch=BatchOptions()).check()


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_wait_cancel_collect_and_resume(tmp_path: Path, backend: str) -> None:
    """--no-wait returns at once; cancel keeps the finished half; the re-run sends only the rest."""
    store = tmp_path / "s.sqlite"
    rows = items(6)
    with BatchServer(steps=3) as server:
        opts = options(server, backend, store, BatchOptions(poll_interval=0.01, wait=False))
        with pytest.raises(BatchPending) as pending:
            elicit(TASK, rows, tmp_path / "o.jsonl", opts, progress=False)
        assert pending.value.batches == 1 and pending.value.requests == 6
        assert not (tmp_path / "o.jsonl").exists()
        with pytest.raises(BatchPending):  # a re-run polls; it submits nothing
            elicit(TASK, rows, tmp_path / "o.jsonl", opts, progress=False)
        assert server.creates == 1
        cancelled = admin.cancel(store, report=lambda _text: None)
        assert [r.status for r in cancelled] == [
            "cancelling" if backend == "openai" else "canceling"
        ]
        collected, tally = admin.collect(store, poll_interval=0.01, report=lambda _text: None)
        assert [r.state for r in collected] == ["collected"]
        assert (tally.replies, tally.errors) == (3, 3)
        wait = options(server, backend, store)
        elicit(TASK, rows, tmp_path / "o.jsonl", wait, progress=False)
        assert server.creates == 2
        assert sorted(server.submissions.values()) == [1, 1, 1, 2, 2, 2]
    assert all(r["status"] == "ok" for r in read(tmp_path / "o.jsonl"))


def test_cli_batch_commands(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text(
        "name: sentiment\ninstruction: Classify the sentiment of the review.\n"
        "labels: [positive, negative]\nlabel_field: label\n"
    )
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items(4)))
    store = str(tmp_path / "s.sqlite")
    runner = CliRunner()
    with BatchServer() as server:
        args = [
            "elicit", "--task", str(tmp_path / "task.yaml"), "--input", str(tmp_path / "items.jsonl"),
            "--out", str(tmp_path / "o.jsonl"), "--backend", "openai", "--base-url", server.url + "/v1",
            "--store", store, "--batch", "--poll-interval", "0.01", "--no-progress",
        ]  # fmt: skip
        planned = runner.invoke(app, [*args, "--dry-run", "--batch-max-requests", "3"])
        assert planned.exit_code == 0, planned.output
        assert "2 batches" in planned.output and "cost at batch prices" in planned.output
        submitted = runner.invoke(app, [*args, "--no-wait"])
        assert submitted.exit_code == 0, submitted.output
        assert "in flight" in submitted.output and "batch status --store" in submitted.output
        status = runner.invoke(app, ["batch", "status", "--store", store])
        assert status.exit_code == 0 and "batch_1" in status.output
        collected = runner.invoke(
            app, ["batch", "collect", "--store", store, "--poll-interval", "0.01"]
        )
        assert collected.exit_code == 0 and "4 replies" in collected.output
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
        assert server.creates == 1 and max(server.submissions.values()) == 1
    assert len(read(tmp_path / "o.jsonl")) == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_lost_create_answer_is_looked_up_not_resubmitted(tmp_path: Path, backend: str) -> None:
    """A create the server recorded but answered 500: the run finds the batch, submits no copy."""
    with BatchServer(lost_creates=1) as server:
        opts = options(server, backend, tmp_path / "s.sqlite")
        elicit(TASK, items(4), tmp_path / "o.jsonl", opts, progress=False)
        assert server.creates == 1 and max(server.submissions.values()) == 1
    assert all(r["status"] == "ok" for r in read(tmp_path / "o.jsonl"))


@pytest.mark.slow
def test_run_batch_end_to_end(tmp_path: Path) -> None:
    """``verbcal run --batch``: elicit through the batch API, then calibrate and evaluate."""
    (tmp_path / "task.yaml").write_text(
        "name: sentiment\ninstruction: Classify the sentiment of the review.\n"
        "labels: [positive, negative]\nlabel_field: label\n"
    )
    rows = [
        {"id": f"i{k}", "text": f"review {k}", "label": ("positive", "negative")[k % 2]}
        for k in range(24)
    ]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with BatchServer() as server:
        result = CliRunner().invoke(
            app,
            [
                "run", "--task", str(tmp_path / "task.yaml"), "--input", str(tmp_path / "items.jsonl"),
                "--out", str(tmp_path / "run"), "--backend", "anthropic", "--base-url", server.url,
                "--batch", "--poll-interval", "0.01", "--no-report", "--boot", "50", "--no-progress",
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert server.creates == 1 and sum(server.counts.values()) == 0  # no live call
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_calibration"] + metrics["n_test"] == 24
