"""benchmarks/bench_serve.py runs end to end on a short span (correctness of the harness, no timing)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("aiohttp")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_serve.py"


@pytest.mark.server
@pytest.mark.slow
def test_bench_serve_short_run() -> None:
    spec = importlib.util.spec_from_file_location("bench_serve", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    numbers = bench.run(seconds=0.5, rounds=1, concurrency=4)
    assert numbers["errors"] == 0 and numbers["requests"] > 0
    for key in (
        "ratio_single_vs_bare",
        "ratio_batch100_vs_bare",
        "ratio_single_nocache_vs_bare",
        "ratio_batch100_nocache_vs_bare",
        "p99_ms_single",
        "server_cpu_us_batch100",
        "server_cpu_us_batch100_bare",
    ):
        assert numbers[key] > 0, key
    assert 0 < numbers["cache_hit_rate_single"] <= 1
