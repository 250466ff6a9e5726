"""Fail fast, lose nothing: 401/403/404 stop a run at once, budgets stop it, a dry run sends nothing.

Every test runs against the scripted local server of ``elicit_fakeserver`` (aiohttp on a
free loopback port), through the real SDKs (openai, anthropic, boto3, litellm) and the CLI.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

pytest.importorskip("openai")
pytest.importorskip("aiohttp")

from elicit_fakeserver import FakeServer
from verbcal.cli import app
from verbcal.elicit import ElicitError, ElicitOptions, ElicitStopped, dry_run, elicit
from verbcal.task import Task

pytestmark = pytest.mark.server

RIGHT_KEY = "sk-right-0123456789abcdefRIGHT"
WRONG_KEY = "sk-wrong-0123456789abcdefWRONG"
TASK = Task(
    name="sentiment",
    labels=("positive", "negative"),
    descriptions={},
    instruction="Classify the sentiment of the review.",
    label_field="label",
)


def items(*texts: str) -> list[dict[str, Any]]:
    return [{"id": f"i{n}", "text": t, "label": "positive"} for n, t in enumerate(texts)]


def options(server: FakeServer, tmp: Path, **kw: Any) -> ElicitOptions:
    args: dict[str, Any] = dict(
        backend="openai",
        model="fake-model",
        base_url=server.url + "/v1",
        store=tmp / "store.sqlite",
        concurrency=4,
        timeout=5.0,
        backoff_base=0.05,
        retries=2,
    )
    args.update(kw)
    return ElicitOptions(**args)


def stored(tmp: Path) -> dict[str, int]:
    with sqlite3.connect(tmp / "store.sqlite") as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM replies GROUP BY status").fetchall())


def write_inputs(tmp: Path, n: int) -> list[str]:
    (tmp / "task.yaml").write_text(
        "name: sentiment\ninstruction: Classify the sentiment of the review.\n"
        "labels: [positive, negative]\nlabel_field: label\n"
    )
    rows = [{"id": f"r{k}", "text": f"review {k}", "label": "positive"} for k in range(n)]
    (tmp / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["--task", str(tmp / "task.yaml"), "--input", str(tmp / "items.jsonl")]


def cli(args: list[str], key: str) -> subprocess.CompletedProcess[str]:
    """The real command line in a fresh process (so its exit code and argv are real)."""
    env = {**os.environ, "OPENAI_API_KEY": key, "COLUMNS": "200"}
    code = "from verbcal.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_wrong_key_stops_after_at_most_concurrency_requests(tmp_path: Path) -> None:
    args = ["elicit", *write_inputs(tmp_path, 40), "--out", str(tmp_path / "out.jsonl")]
    with FakeServer(api_key=RIGHT_KEY, latency=0.05) as server:
        url = ["--backend", "openai", "--model", "fake-model", "--base-url", server.url + "/v1"]
        args += [*url, "--concurrency", "4", "--no-progress"]
        wrong = cli(args, WRONG_KEY)
        sent_wrong = sum(server.counts.values())
        assert not (tmp_path / "out.jsonl").exists()
        right = cli(args, RIGHT_KEY)
        sent_total = sum(server.counts.values())
    message = " ".join(wrong.stderr.split())
    print(f"wrong key: {sent_wrong} requests sent, exit {wrong.returncode}\n{wrong.stderr}")
    assert wrong.returncode == 2
    assert 1 <= sent_wrong <= 4
    for part in ("HTTP 401", "(openai backend)", "OPENAI_API_KEY", "Incorrect API key"):
        assert part in message, part
    assert "resume with: verbcal elicit --task" in message and "--concurrency 4" in message
    assert WRONG_KEY not in wrong.stderr + wrong.stdout
    # the command it printed resumes: with the right key every item is answered
    assert right.returncode == 0, right.stderr
    assert sent_total - sent_wrong == 40
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok"] * 40


def test_in_flight_requests_finish_and_are_kept(tmp_path: Path) -> None:
    texts = ["a @401", "b @slow", "c @slow", "d @slow", *(f"e{n}" for n in range(16))]
    with FakeServer(slow_seconds=0.5) as server, pytest.raises(ElicitStopped) as info:
        elicit(TASK, items(*texts), tmp_path / "out.jsonl", options(server, tmp_path))
    assert sum(server.counts.values()) == 4  # the first four, all in flight at once
    stop = info.value
    assert stop.stop.kind == "fatal" and stop.stop.status == 401 and stop.exit_code == 2
    assert stop.sent == 4 and stop.unsent == 16
    assert stored(tmp_path) == {"reply": 3, "error": 1}  # the slow ones finished and were kept
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("backend", "model", "env_var", "http"),
    [
        ("openai", "fake-model", "OPENAI_API_KEY", "sdk"),
        ("openai", "fake-model", "OPENAI_API_KEY", "lean"),
        ("anthropic", "claude-haiku-4-5", "ANTHROPIC_API_KEY", "sdk"),
        ("litellm", "openai/fake-model", "OPENAI_API_KEY", "sdk"),
    ],
)
def test_wrong_key_stops_every_backend(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    model: str,
    env_var: str,
    http: str,
) -> None:
    if backend == "litellm":
        pytest.importorskip("litellm")
    monkeypatch.setenv(env_var, WRONG_KEY)
    base = "" if backend == "anthropic" else "/v1"
    with FakeServer(api_key=RIGHT_KEY, latency=0.05) as server:
        url = server.url + base
        opts = options(server, tmp_path, backend=backend, model=model, base_url=url, http=http)
        with pytest.raises(ElicitStopped) as info:
            elicit(TASK, items(*(f"t{n}" for n in range(30))), tmp_path / "o.jsonl", opts)
        assert 1 <= sum(server.counts.values()) <= 4
    text = str(info.value)
    assert "HTTP 401" in text and env_var in text and f"({backend} backend)" in text
    assert WRONG_KEY not in text


def test_bedrock_access_denied_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE1234")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-abcdefghijkl")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with FakeServer(latency=0.05) as server:
        opts = options(
            server, tmp_path, backend="bedrock", model="anthropic.claude", base_url=server.url
        )
        with pytest.raises(ElicitStopped) as info:
            elicit(TASK, items(*(f"t{n} @403" for n in range(30))), tmp_path / "o.jsonl", opts)
        assert 1 <= sum(server.counts.values()) <= 4
    text = str(info.value)
    assert "HTTP 403" in text and "AccessDeniedException" in text and "AWS_PROFILE" in text


def test_unknown_model_stops(tmp_path: Path) -> None:
    with FakeServer(models={"real-model"}) as server:
        with pytest.raises(ElicitStopped) as info:
            elicit(TASK, items("a", "b", "c", "d", "e", "f"), tmp_path / "o.jsonl",
                   options(server, tmp_path, model="no-such-model", concurrency=2))  # fmt: skip
        assert sum(server.counts.values()) <= 2
    assert info.value.stop.status == 404
    assert "check --model" in str(info.value) and "does not exist" in str(info.value)


def test_bedrock_unknown_model_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE1234")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-abcdefghijkl")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with FakeServer(models={"anthropic.real"}) as server:
        opts = options(
            server, tmp_path, backend="bedrock", model="anthropic.typo", base_url=server.url
        )
        with pytest.raises(ElicitStopped) as info:
            elicit(TASK, items(*(f"t{n}" for n in range(30))), tmp_path / "o.jsonl", opts)
        # each of the 4 in flight: the tool request, then once more as a plain prompt
        assert 1 <= sum(server.counts.values()) <= 8
    assert "model identifier is invalid" in str(info.value) and "check --model" in str(info.value)


def test_max_requests_stops_and_resumes(tmp_path: Path) -> None:
    data = items(*(f"t{n}" for n in range(20)))
    with FakeServer(latency=0.02) as server:
        with pytest.raises(ElicitStopped) as info:
            elicit(TASK, data, tmp_path / "o.jsonl", options(server, tmp_path, max_requests=7))
        assert sum(server.counts.values()) == 7
        assert info.value.stop.kind == "budget" and info.value.exit_code == 3
        assert "--max-requests 7 reached" in str(info.value)
        assert info.value.unsent == 13 and stored(tmp_path) == {"reply": 7}
        result = elicit(TASK, data, tmp_path / "o.jsonl", options(server, tmp_path))
        assert sum(server.counts.values()) == 20  # nothing asked twice
    assert result.n_from_store == 7 and result.status_counts["ok"] == 20


def test_max_cost_never_exceeded(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"fake-model": {"input": 1000.0, "output": 1000.0}}))
    data = items(*(f"t{n}" for n in range(40)))
    with FakeServer(latency=0.02) as server:
        opts = options(server, tmp_path, prices=prices, max_cost=0.5, max_tokens=16)
        with pytest.raises(ElicitStopped) as info:
            elicit(TASK, data, tmp_path / "o.jsonl", opts)
        sent = sum(server.counts.values())
    # each reply uses 20 + 10 tokens at $1000 per million: $0.03 a request
    assert 1 <= sent < 40 and sent * 0.03 <= 0.5
    assert info.value.stop.kind == "budget" and "--max-cost $0.5 reached" in str(info.value)
    with pytest.raises(ElicitError, match="--prices"):
        elicit(TASK, data, tmp_path / "o.jsonl", options(server, tmp_path, max_cost=1.0))


def test_dry_run_calls_nothing(tmp_path: Path) -> None:
    data = items(*(f"t{n}" for n in range(10)))
    with FakeServer() as server:
        elicit(TASK, data[:4], tmp_path / "o.jsonl", options(server, tmp_path))
        plan = dry_run(TASK, data, tmp_path / "o.jsonl", options(server, tmp_path))
        assert sum(server.counts.values()) == 4
    assert (plan.n_items, plan.n_requests, plan.n_from_store, plan.n_to_send) == (10, 10, 4, 6)
    assert plan.output_tokens_max == 6 * 256 and plan.input_tokens > 6 * 10
    assert plan.cost_input is None  # fake-model has no price
    assert plan.example_prompt is not None and "t4" in plan.example_prompt


def test_cli_dry_run_prints_plan_and_cost(tmp_path: Path) -> None:
    args = ["elicit", *write_inputs(tmp_path, 12), "--out", str(tmp_path / "o.jsonl")]
    args += ["--backend", "openai", "--model", "gpt-4o-mini", "--dry-run", "--samples", "2"]
    with FakeServer() as server:
        result = CliRunner().invoke(app, [*args, "--base-url", server.url + "/v1"])
        assert sum(server.counts.values()) == 0
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "dry run: openai / gpt-4o-mini" in out and "nothing was sent" in out
    assert "24 planned, 0 in the store" in out and "24 to send" in out
    assert "at most 6144 out" in out and "cost: $" in out
    assert not (tmp_path / "o.store.sqlite").exists() and not (tmp_path / "o.jsonl").exists()


def test_run_stops_before_analysis_on_wrong_key(tmp_path: Path) -> None:
    args = ["run", *write_inputs(tmp_path, 20), "--out", str(tmp_path / "run")]
    with FakeServer(api_key=RIGHT_KEY) as server:
        args += ["--backend", "openai", "--model", "m", "--base-url", server.url + "/v1"]
        result = cli([*args, "--concurrency", "3", "--no-progress", "--no-report"], WRONG_KEY)
        assert 1 <= sum(server.counts.values()) <= 3
        dry = cli([*args, "--dry-run"], WRONG_KEY)
        assert sum(server.counts.values()) <= 3
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr
    assert (
        "HTTP 401" in message
        and "OPENAI_API_KEY" in message
        and "resume with: verbcal run" in message
    )
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert (tmp_path / "run" / "store.sqlite").exists()
    assert dry.returncode == 0 and "20 to send" in " ".join(dry.stdout.split())
