"""``elicit --engine ray``: actors running the elicit engine, one shared rate limit, resume by item id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import ENGINE_KEY
from elicit_fakeserver import FakeServer
from verbcal.cli import app
from verbcal.elicit import ElicitError, ElicitOptions, ElicitStopped, elicit
from verbcal.engines.ray_elicit import elicit_ray, read_parts
from verbcal.task import Task

pytestmark = [pytest.mark.server, pytest.mark.slow]

TASK = Task(
    name="sentiment",
    labels=("positive", "negative"),
    descriptions={},
    instruction="Classify the sentiment of the review.",
    label_field="label",
)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENGINE_KEY)  # the Ray workers get it from conftest


def items(n: int, faults: dict[int, str] | None = None) -> list[dict[str, Any]]:
    faults = faults or {}
    return [
        {"id": f"i{k}", "text": f"review {k} {faults.get(k, '')}".strip(), "label": None}
        for k in range(n)
    ]


def options(server: FakeServer, **kw: Any) -> ElicitOptions:
    base: dict[str, Any] = dict(
        backend="openai",
        model="fake-model",
        base_url=server.url + "/v1",
        concurrency=8,
        timeout=2.0,
        backoff_base=0.05,
        retries=4,
    )
    return ElicitOptions(**{**base, **kw})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_records_as_local_and_a_rerun_asks_nothing_twice(
    ray_cluster: Any, tmp_path: Path
) -> None:
    data = items(60, faults={4: "@500x2", 17: "@pct", 33: "@refuse", 41: "@400"})
    with FakeServer() as server:
        local = elicit(
            TASK,
            data,
            tmp_path / "local.jsonl",
            options(server, store=tmp_path / "s.sqlite"),
            progress=False,
        )
    with FakeServer() as server:
        out = tmp_path / "ray.jsonl"
        first = elicit_ray(
            TASK, data, out, options(server, max_items=45), batch_size=10, progress=False
        )
        assert first.n_items == 45 and first.stats.requests >= 45
        asked_first = dict(server.counts)
        # a killed job leaves its finished batches: here the first 45 items have a record
        assert set(read_parts(tmp_path / "ray.parts")) == {f"i{k}" for k in range(45)}
        second = elicit_ray(TASK, data, out, options(server), batch_size=10, progress=False)
    assert second.n_from_store == 44  # all but i41, whose request failed
    clean = [p for p in server.counts if "@" not in p]
    assert all(server.counts[p] == 1 for p in clean), "an answered item was asked again"
    assert any(p in asked_first for p in clean)
    faulty_400 = next(p for p in server.counts if "@400" in p)
    # an error is asked again on the next run (each run: the schema request, then the plain one)
    assert server.counts[faulty_400] == 2 * asked_first[faulty_400] > 0
    assert second.stats.requests == 16  # 15 new items and the error
    ours, theirs = read_jsonl(out), read_jsonl(tmp_path / "local.jsonl")
    assert [r["id"] for r in ours] == [f"i{k}" for k in range(60)]
    for mine, reference in zip(ours, theirs, strict=True):
        for key in ("id", "probs", "status", "raw"):
            assert mine[key] == reference[key], (mine["id"], key)
    assert local.status_counts == second.status_counts
    assert second.status_counts["error"] == 1 and second.status_counts["repaired"] >= 1


def test_the_rate_limit_is_shared_by_all_actors(ray_cluster: Any, tmp_path: Path) -> None:
    with FakeServer() as server:
        elicit_ray(TASK, items(40), tmp_path / "out.jsonl", options(server, rpm=600, concurrency=16), actors=2, batch_size=5, progress=False)  # fmt: skip
    times = sorted(entry["time"] for entry in server.log)
    assert len(times) == 40
    # one bucket of 10 refilled at 10/s: at most 10 + 10 t requests in any t seconds (some slack
    # for network jitter); a bucket per actor would allow 20 at once and 20/s
    for start in times:
        in_window = sum(1 for t in times if start <= t <= start + 1.0)
        assert in_window <= 24, in_window
    assert times[-1] - times[0] >= 2.5  # 30 requests beyond the first bucket at 10/s


def test_the_embedded_model_is_refused_with_a_fix(tmp_path: Path) -> None:
    with pytest.raises(ElicitError, match="drop --engine ray"):
        elicit_ray(TASK, items(2), tmp_path / "o.jsonl", ElicitOptions(backend="local"))


def test_cli_elicit_on_ray_and_to_parquet(ray_cluster: Any, tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text("name: s\ninstruction: Classify.\nlabels: [positive, negative]\n")
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps(i) + "\n" for i in items(12)))
    with FakeServer() as server:
        common = ["elicit", "--task", str(task), "--input", str(source), "--backend", "openai",
                  "--model", "fake", "--base-url", server.url + "/v1", "--no-progress"]  # fmt: skip
        ray_run = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "r.parquet"), "--engine", "ray", "--batch-size", "4"])  # fmt: skip
        assert ray_run.exit_code == 0, ray_run.output
        local_run = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "l.parquet")])
        assert local_run.exit_code == 0, local_run.output
    ray_rows, local_rows = (
        pq.read_table(tmp_path / n).to_pylist() for n in ("r.parquet", "l.parquet")
    )
    assert [r["probs"] for r in ray_rows] == [r["probs"] for r in local_rows]
    assert [r["status"] for r in ray_rows] == ["ok"] * 12
    assert (tmp_path / "l.store.sqlite").exists() and not list(tmp_path.glob(".l.parquet*"))


def test_a_401_stops_every_actor_and_keeps_what_came_back(ray_cluster: Any, tmp_path: Path) -> None:
    data = items(80, faults={50: "@401"})
    out = tmp_path / "out.jsonl"
    with FakeServer() as server, pytest.raises(ElicitStopped) as stopped:
        elicit_ray(TASK, data, out, options(server, concurrency=4), batch_size=5, progress=False)
    assert stopped.value.exit_code == 2 and stopped.value.stop.status == 401
    assert "Incorrect API key" in str(stopped.value) and not out.exists()
    kept = read_parts(tmp_path / "out.parts")
    assert kept.get("i50", {"status": "error"})["status"] == "error"
    assert len(kept) < 80  # the job stopped: not every batch was asked
    assert sum(server.counts.values()) < 80 + 5  # no actor went on after the stop
    with FakeServer() as server:  # fixed: the re-run asks only what is missing
        again = elicit_ray(TASK, items(80), out, options(server), batch_size=5, progress=False)
    answered = [k for k, r in kept.items() if r["status"] != "error"]
    assert again.n_from_store == len(answered) and again.status_counts["ok"] == 80


def test_cli_a_401_on_ray_exits_as_locally(ray_cluster: Any, tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text("name: s\ninstruction: Classify.\nlabels: [positive, negative]\n")
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps(i) + "\n" for i in items(12)))
    runs = {}
    with FakeServer(api_key="sk-the-right-key") as server:  # every request: 401
        common = ["elicit", "--task", str(task), "--input", str(source), "--backend", "openai",
                  "--model", "fake", "--base-url", server.url + "/v1", "--no-progress"]  # fmt: skip
        for engine in ("local", "ray"):
            out = str(tmp_path / f"{engine}.jsonl")
            runs[engine] = CliRunner().invoke(app, [*common, "--out", out, "--engine", engine])
    assert runs["local"].exit_code == runs["ray"].exit_code == 2, runs["ray"].output
    heads = {engine: run.output.split("\n")[0] for engine, run in runs.items()}
    assert heads["local"] == heads["ray"] and "401" in heads["ray"], heads


def test_a_budget_is_shared_by_the_actors_and_stops_the_job(
    ray_cluster: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    with FakeServer() as server, pytest.raises(ElicitStopped) as stopped:
        elicit_ray(TASK, items(40), out, options(server, max_requests=9), batch_size=4, progress=False)  # fmt: skip
    assert stopped.value.exit_code == 3 and "--max-requests" in str(stopped.value)
    assert sum(server.counts.values()) <= 9 and stopped.value.sent <= 9
    assert stopped.value.unsent >= 40 - 9 and not out.exists()
