"""Kill ``verbcal elicit`` with SIGKILL mid-run; the re-run loses nothing and re-asks only the in-flight."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("aiohttp")

from elicit_fakeserver import FakeServer

pytestmark = [pytest.mark.server, pytest.mark.slow]

FAKE_KEY = "sk-test-CRASHKEY0123456789abcdefXYZ"
TASK_YAML = """\
name: sentiment
instruction: Classify the sentiment of the review.
labels: [positive, negative]
label_field: label
"""
N_ITEMS, CONCURRENCY = 60, 4


def cli(tmp: Path, url: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from verbcal.cli import main; main()",
        "elicit",
        "--task", str(tmp / "task.yaml"),
        "--input", str(tmp / "items.jsonl"),
        "--out", str(tmp / "out.jsonl"),
        "--backend", "openai",
        "--model", "fake-model",
        "--base-url", url + "/v1",
        "--concurrency", str(CONCURRENCY),
        "--store", str(tmp / "store.sqlite"),
        "--no-progress",
    ]  # fmt: skip


def stored_prompts(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])


def test_sigkill_then_resume(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text(TASK_YAML)
    with (tmp_path / "items.jsonl").open("w") as handle:
        for n in range(N_ITEMS):
            label = "positive" if n % 2 else "negative"
            handle.write(json.dumps({"id": f"i{n}", "text": f"review {n}", "label": label}) + "\n")
    env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY}
    log = tmp_path / "run1.log"
    with FakeServer(latency=0.1) as server:
        with log.open("wb") as sink:
            proc = subprocess.Popen(cli(tmp_path, server.url), env=env, stdout=sink, stderr=sink)
            deadline = time.monotonic() + 60
            while sum(server.counts.values()) < 24 and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        first = dict(server.counts)
        committed = stored_prompts(tmp_path / "store.sqlite")
        assert 0 < committed < N_ITEMS
        assert len(first) - committed <= CONCURRENCY  # only the in-flight were lost
        server.counts.clear()
        second = subprocess.run(
            cli(tmp_path, server.url), env=env, capture_output=True, timeout=120, check=False
        )
        assert second.returncode == 0, second.stderr.decode()
        again = set(first) & set(server.counts)
        assert sum(server.counts.values()) == N_ITEMS - committed
        assert len(again) == len(first) - committed <= CONCURRENCY
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"i{n}" for n in range(N_ITEMS)]
    assert all(r["status"] == "ok" for r in records)
    assert stored_prompts(tmp_path / "store.sqlite") == N_ITEMS
    assert b"resumed" in second.stdout or b"from the store" in second.stdout
    written = [*tmp_path.rglob("*")]
    for path in written:
        if path.is_file():
            assert b"CRASHKEY" not in path.read_bytes(), path
    assert b"CRASHKEY" not in second.stdout + second.stderr
