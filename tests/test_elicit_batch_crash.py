"""SIGKILL ``verbcal elicit --batch`` at the three risky moments; the re-run submits nothing twice.

1. After the provider recorded the create call but before its answer reached the client
   (the ledger holds an intent without a provider id): the re-run finds the batch at the
   provider (OpenAI: by the token in its metadata; Anthropic: by time and size) and
   adopts it.
2. Between submit and collect (the batch is in flight): the re-run polls it.
3. During collect (half the results read and stored): the re-run reads them again and
   stores the rest.

The scripted server counts every request per custom_id over all batches created.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("anthropic")
pytest.importorskip("aiohttp")

from batch_fakeserver import BatchServer

pytestmark = [pytest.mark.server, pytest.mark.slow]

N_ITEMS = 12
TASK_YAML = """\
name: sentiment
instruction: Classify the sentiment of the review.
labels: [positive, negative]
label_field: label
"""


def setup(tmp: Path) -> None:
    (tmp / "task.yaml").write_text(TASK_YAML)
    with (tmp / "items.jsonl").open("w") as handle:
        for n in range(N_ITEMS):
            handle.write(
                json.dumps({"id": f"i{n}", "text": f"review {n}", "label": "positive"}) + "\n"
            )


def cli(tmp: Path, server: BatchServer, backend: str) -> list[str]:
    url = server.url + ("/v1" if backend == "openai" else "")
    return [
        sys.executable, "-c", "from verbcal.cli import main; main()", "elicit",
        "--task", str(tmp / "task.yaml"), "--input", str(tmp / "items.jsonl"),
        "--out", str(tmp / "out.jsonl"), "--backend", backend, "--base-url", url,
        "--store", str(tmp / "store.sqlite"), "--batch", "--batch-max-requests", "5",
        "--poll-interval", "0.05", "--no-progress",
    ]  # fmt: skip


ENV = {**os.environ, "OPENAI_API_KEY": "sk-kill-test", "ANTHROPIC_API_KEY": "sk-ant-kill-test"}


def kill_when(cmd: list[str], ready: Callable[[], bool], log: Path, settle: float = 0.0) -> None:
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, env=ENV, stdout=sink, stderr=sink)
        deadline = time.monotonic() + 60
        while not ready():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.01)
        time.sleep(settle)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def ledger(tmp: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(tmp / "store.sqlite") as db:
        return db.execute("SELECT state, provider_id FROM batches ORDER BY created").fetchall()


def replies(tmp: Path) -> int:
    with sqlite3.connect(tmp / "store.sqlite") as db:
        query = "SELECT COUNT(*) FROM replies WHERE status = 'reply'"
        return int(db.execute(query).fetchone()[0])


def finish(tmp: Path, server: BatchServer, backend: str) -> None:
    """Re-run to the end; every item answered once, no custom_id submitted twice."""
    done = subprocess.run(cli(tmp, server, backend), env=ENV, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    records = [json.loads(x) for x in (tmp / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"i{n}" for n in range(N_ITEMS)]
    assert all(r["status"] == "ok" for r in records)
    assert len(server.submissions) == N_ITEMS
    assert max(server.submissions.values()) == 1, server.submissions  # zero duplicates


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_kill_between_submit_and_record(tmp_path: Path, backend: str) -> None:
    setup(tmp_path)
    with BatchServer(hold_create=30) as server:
        kill_when(cli(tmp_path, server, backend), lambda: server.creates >= 1, tmp_path / "1.log")
        assert ledger(tmp_path) == [("intent", None)]  # submitted, but never recorded as such
        server.hold_create = 0
        finish(tmp_path, server, backend)
        assert server.creates == 3  # the adopted batch of 5, then 5 and 2
    assert [state for state, _ in ledger(tmp_path)] == ["collected"] * 3


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_kill_between_submit_and_collect(tmp_path: Path, backend: str) -> None:
    setup(tmp_path)
    with BatchServer(steps=10**6) as server:
        polled = lambda: sum(server._polls.values()) >= 3  # noqa: E731
        kill_when(cli(tmp_path, server, backend), polled, tmp_path / "1.log")
        assert [state for state, _ in ledger(tmp_path)] == ["submitted"] * 3
        assert replies(tmp_path) == 0
        server.steps = 0
        finish(tmp_path, server, backend)
        assert server.creates == 3


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_kill_during_collect(tmp_path: Path, backend: str) -> None:
    setup(tmp_path)
    with BatchServer(hold_results=30, hold_at=2) as server:
        stalled = lambda: server.results_served >= 2  # noqa: E731
        kill_when(cli(tmp_path, server, backend), stalled, tmp_path / "1.log", settle=0.5)
        states = [state for state, _ in ledger(tmp_path)]
        assert states.count("collected") == 1 and states.count("ended") == 1
        stored = replies(tmp_path)
        assert 5 <= stored < N_ITEMS  # the first batch, and part of the second for anthropic
        server.hold_results = 0
        finish(tmp_path, server, backend)
        assert server.creates == 3
