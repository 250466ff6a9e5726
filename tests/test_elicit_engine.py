"""The elicit engine against a local fault-injecting server: nothing lost, errors explained."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")
pytest.importorskip("aiohttp")

from elicit_fakeserver import FakeServer
from verbcal.elicit import ElicitOptions, ElicitStopped, elicit
from verbcal.predictions import read_predictions
from verbcal.task import Task

pytestmark = [pytest.mark.server]

FAKE_KEY = "sk-test-FAKEKEY0123456789abcdefXYZ"
TASK = Task(
    name="sentiment",
    labels=("positive", "negative"),
    descriptions={},
    instruction="Classify the sentiment of the review.",
    label_field="label",
)


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)


@pytest.fixture(params=["sdk", "lean"])
def http(request: pytest.FixtureRequest) -> str:
    """Both HTTP paths of the openai backend must behave the same."""
    return str(request.param)


def items(*texts: str) -> list[dict[str, Any]]:
    return [
        {"id": f"i{n}", "text": text, "label": "positive" if n % 2 else "negative"}
        for n, text in enumerate(texts)
    ]


def run(server: FakeServer, data: list[dict[str, Any]], tmp: Path, **kw: Any) -> Any:
    opts: dict[str, Any] = dict(
        backend="openai",
        model="fake-model",
        base_url=server.url + "/v1",
        store=tmp / "store.sqlite",
        concurrency=8,
        timeout=1.0,
        backoff_base=0.05,
        retries=4,
    )
    opts.update(kw)
    return elicit(TASK, data, tmp / "out.jsonl", ElicitOptions(**opts), progress=False)


def read_out(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp / "out.jsonl").read_text().splitlines()]


def assert_no_key(tmp: Path) -> None:
    for path in tmp.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
            assert b"FAKEKEY" not in path.read_bytes(), path


def test_faults_end_in_a_status_and_nothing_is_lost(tmp_path: Path, http: str) -> None:
    markers = ["", "@429", "@500x2", "@slow", "@drop", "@pct", "@refuse", "@400", "@always500"]
    data = items(*[f"review {n} {markers[n % len(markers)]}" for n in range(36)])
    with FakeServer(slow_seconds=2.5) as server:
        result = run(server, data, tmp_path, retries=3, http=http)
    out = read_out(tmp_path)
    assert [r["id"] for r in out] == [d["id"] for d in data]
    expected = {
        "": "ok",
        "@429": "ok",
        "@500x2": "ok",
        "@slow": "ok",
        "@drop": "ok",
        "@pct": "repaired",
        "@refuse": "failed",
        "@400": "error",
        "@always500": "error",
    }
    for n, record in enumerate(out):
        want = expected[markers[n % len(markers)]]
        assert record["status"] == want, record
        assert record["label"] == data[n]["label"]
        assert (record["probs"] is None) == (want in ("failed", "error"))
        if want == "error":
            assert record["issues"] and record["raw"] is None
    errors = [r["issues"][0] for r in out if r["status"] == "error"]
    assert any("HTTP 400" in e and "check --model" in e for e in errors)
    assert any("HTTP 500" in e and "gave up after 4 attempts" in e for e in errors)
    # 400 is not retried (only asked once more without the JSON schema); 500 is tried 1 + 3 times
    for prompt, count in server.counts.items():
        if "@400" in prompt:
            assert count == 2
        if "@always500" in prompt:
            assert count == 4
    assert result.status_counts["error"] == 8 and result.stats.retries > 0
    preds = read_predictions(tmp_path / "out.jsonl")
    assert len(preds) == 24  # ok + repaired rows are scored, the rest kept but skipped
    assert_no_key(tmp_path)


def test_retry_after_is_honoured(tmp_path: Path, http: str) -> None:
    with FakeServer(retry_after=0.6) as server:
        run(server, items("only one @429"), tmp_path, backoff_base=0.01, http=http)
    times = [entry["time"] for entry in server.log]
    assert len(times) == 2 and times[1] - times[0] >= 0.6


def test_auth_error_is_not_retried_and_names_the_fix(tmp_path: Path, http: str) -> None:
    with FakeServer() as server, pytest.raises(ElicitStopped) as info:
        run(server, items("a @401", "b @401"), tmp_path, http=http)
    assert sum(server.counts.values()) == 2  # both in flight at once, neither retried
    assert "authentication failed" in str(info.value) and "OPENAI_API_KEY" in str(info.value)
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        errors = [e for (e,) in db.execute("SELECT error FROM replies")]
    assert len(errors) == 2 and all("HTTP 401" in e for e in errors)
    assert_no_key(tmp_path)


def test_resume_requests_nothing_twice(tmp_path: Path, http: str) -> None:
    data = items(*[f"text {n}" for n in range(12)])
    with FakeServer() as server:
        first = run(server, data, tmp_path, http=http)
        assert sum(server.counts.values()) == 12 and first.n_from_store == 0
        second = run(server, data, tmp_path, http=http)
        assert sum(server.counts.values()) == 12
    assert second.n_from_store == 12 and second.stats.requests == 0
    assert [r["status"] for r in read_out(tmp_path)] == ["ok"] * 12


def test_errors_are_retried_on_the_next_run(tmp_path: Path) -> None:
    data = items("fine", "x @always500")
    with FakeServer() as server:
        run(server, data, tmp_path, retries=0)
        run(server, data, tmp_path, retries=0)
    assert server.counts[next(p for p in server.counts if "@always500" in p)] == 2
    assert sum(1 for p, c in server.counts.items() if c == 1) == 1


def test_structured_output_falls_back_to_plain(tmp_path: Path, http: str) -> None:
    with FakeServer(reject_schema=True) as server:
        result = run(server, items("a", "b", "c"), tmp_path, concurrency=1, http=http)
    assert [r["status"] for r in read_out(tmp_path)] == ["ok"] * 3
    assert any("structured output refused" in note for note in result.notes)
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        assert {m for (m,) in db.execute("SELECT mode FROM replies")} == {"plain"}


def test_samples_are_stored_and_averaged(tmp_path: Path) -> None:
    with FakeServer() as server:
        run(server, items("a", "b"), tmp_path, samples=3)
    out = read_out(tmp_path)
    assert sum(server.counts.values()) == 6
    for record in out:
        firsts = [p["positive"] for p in record["sample_probs"]]
        assert firsts == pytest.approx([0.5, 0.6, 0.7])
        assert record["probs"]["positive"] == pytest.approx(0.6)
        assert len(record["raw"]) == 3
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM replies").fetchone()[0] == 6


def test_label_logprobs(tmp_path: Path, http: str) -> None:
    with FakeServer() as server:
        run(server, items("a"), tmp_path, label_logprobs=True, http=http)
    record = read_out(tmp_path)[0]
    lp = record["logprob_probs"]
    assert lp["positive"] > lp["negative"] > 0
    assert sum(lp.values()) == pytest.approx(1)


def test_rpm_limit_paces_requests(tmp_path: Path) -> None:
    with FakeServer() as server:
        run(server, items(*[f"t{n}" for n in range(25)]), tmp_path, rpm=600, concurrency=16)
    times = sorted(entry["time"] for entry in server.log)
    # a bucket of 10, then 10/s: the last 15 requests need 1.5 s
    assert times[-1] - times[0] >= 1.2


def stored_modes(tmp: Path) -> set[str]:
    with sqlite3.connect(tmp / "store.sqlite") as db:
        return {m for (m,) in db.execute("SELECT mode FROM replies")}


def tool_requests(server: FakeServer) -> list[dict[str, Any]]:
    """The tool definitions sent, as (name, labels, forced) per request."""
    found = []
    for body in server.bodies:
        if "tools" in body:  # Anthropic Messages
            tool = body["tools"][0]
            forced = body["tool_choice"] == {"type": "tool", "name": tool["name"]}
            found.append({"name": tool["name"], "schema": tool["input_schema"], "forced": forced})
        elif "toolConfig" in body:  # Bedrock Converse
            spec = body["toolConfig"]["tools"][0]["toolSpec"]
            forced = body["toolConfig"]["toolChoice"] == {"tool": {"name": spec["name"]}}
            found.append(
                {"name": spec["name"], "schema": spec["inputSchema"]["json"], "forced": forced}
            )
    return found


def use_bedrock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE1234")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-FAKEKEY-abcdefghijkl")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


TOOL_BACKENDS = [
    ("anthropic", "claude-haiku-4-5", ""),
    ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0", ""),
]


@pytest.mark.parametrize(("backend", "model", "suffix"), TOOL_BACKENDS)
def test_tool_backends_ask_through_a_forced_tool_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, model: str, suffix: str
) -> None:
    use_bedrock(monkeypatch)
    with FakeServer() as server:
        result = run(
            server, items("a", "b @429", "c"), tmp_path,
            backend=backend, model=model, base_url=server.url + suffix,
        )  # fmt: skip
    out = read_out(tmp_path)
    assert [r["status"] for r in out] == ["ok", "ok", "ok"]
    assert out[0]["probs"] == pytest.approx({"positive": 0.7, "negative": 0.3})
    assert stored_modes(tmp_path) == {"tool"}
    tools = tool_requests(server)
    assert len(tools) == 4  # 3 items + the 429's retry, each with the tool
    for tool in tools:
        assert tool["forced"] and tool["name"] == "report_distribution"
        assert tool["schema"]["required"] == ["positive", "negative"]
        assert set(tool["schema"]["properties"]) == {"positive", "negative"}
    assert not result.notes and (result.cost is None or result.cost > 0)
    assert_no_key(tmp_path)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"AKIAFAKE" not in path.read_bytes()


@pytest.mark.parametrize(("backend", "model", "suffix"), TOOL_BACKENDS)
def test_tool_backends_fall_back_to_plain_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, model: str, suffix: str
) -> None:
    use_bedrock(monkeypatch)
    with FakeServer(reject_tools=True) as server:
        result = run(
            server, items("a", "b @pct", "c @400"), tmp_path,
            backend=backend, model=model, base_url=server.url + suffix, concurrency=1,
        )  # fmt: skip
    out = read_out(tmp_path)
    assert [r["status"] for r in out] == ["ok", "repaired", "error"]
    assert "HTTP 400" in out[2]["issues"][0]
    assert any("structured output refused" in note for note in result.notes)
    assert stored_modes(tmp_path) == {"plain", None}  # the error row has no mode
    # one tool request, refused; then plain prompts only
    assert len(tool_requests(server)) == 1


def test_structured_off_sends_no_tools(tmp_path: Path) -> None:
    with FakeServer() as server:
        run(server, items("a @pct"), tmp_path, backend="anthropic",
            model="claude-haiku-4-5", base_url=server.url, structured=False)  # fmt: skip
    assert tool_requests(server) == [] and read_out(tmp_path)[0]["status"] == "repaired"


def test_litellm_backend_faults_and_retry_after(tmp_path: Path) -> None:
    pytest.importorskip("litellm")
    with FakeServer(retry_after=0.6) as server:
        result = run(
            server, items("a", "b @429", "c @500x2", "d @400", "e @drop"), tmp_path,
            backend="litellm", model="openai/fake-model", base_url=server.url + "/v1",
            concurrency=1, backoff_base=0.01,
        )  # fmt: skip
    out = read_out(tmp_path)
    assert [r["status"] for r in out] == ["ok", "ok", "ok", "error", "ok"]
    assert "HTTP 400" in out[3]["issues"][0]
    attempts = [e["time"] for e in server.log if "@429" in e["prompt"]]
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 0.6  # Retry-After honoured
    assert result.stats.retries >= 4 and result.cost is None
    assert stored_modes(tmp_path) == {"json_schema", None}
    assert_no_key(tmp_path)
