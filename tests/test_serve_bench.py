"""benchmarks/bench_serve.py runs end to end on a short span (correctness of the harness, no timing)."""

from __future__ import annotations

import importlib.util
import json
import os
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
    numbers = json.loads(json.dumps(numbers))  # what --json prints
    sides = ("single", "batch100")
    assert set(numbers) == {
        *(f"ratio_{k}_vs_bare" for k in sides),
        *(f"ratio_{k}_nocache_vs_bare" for k in sides),
        *(f"ratio_{k}_logged_vs_bare" for k in sides),
        "p99_ms_single_logged", "logged_rows", "logged_expected",
        *(f"cache_hit_rate_{k}" for k in sides),
        *(f"rps_{k}{bare}" for k in sides for bare in ("", "_bare")),
        *(f"p99_ms_{k}{bare}" for k in sides for bare in ("", "_bare")),
        *(f"server_cpu_us_{k}{bare}" for k in sides for bare in ("", "_bare")),
        "items_per_s_batch100", "p50_ms_single", "errors", "requests", "distinct_bodies",
        "seconds", "rounds", "concurrency", "cores", "load_1min_at_end",
    }  # fmt: skip
    assert (numbers["seconds"], numbers["rounds"], numbers["concurrency"]) == (0.5, 1, 4)
    assert numbers["cores"] == os.cpu_count()
    assert numbers["errors"] == 0 and numbers["requests"] > 0
    workload = bench.Workload.recorded(0)  # the same seeded bodies the run sent
    distinct = {
        "single": len(set(workload.bodies(1, 3000))),
        "batch": len(set(workload.bodies(100, 300))),
    }
    assert numbers["distinct_bodies"] == distinct
    assert 0 < distinct["single"] <= 3000 and 0 < distinct["batch"] <= 300
    for kind in sides:
        # each ratio is its two rates (rounded to 0.1 req/s) divided
        rate, bare = numbers[f"rps_{kind}"], numbers[f"rps_{kind}_bare"]
        assert rate > 0 and bare > 0
        assert numbers[f"ratio_{kind}_vs_bare"] == pytest.approx(rate / bare, rel=0.01, abs=0.002)
        assert numbers[f"ratio_{kind}_nocache_vs_bare"] > 0
        assert numbers[f"ratio_{kind}_logged_vs_bare"] > 0
        assert 0 < numbers[f"cache_hit_rate_{kind}"] <= 1
        for prefix in ("p99_ms", "server_cpu_us"):
            assert numbers[f"{prefix}_{kind}"] > 0 and numbers[f"{prefix}_{kind}_bare"] > 0
    # every request of the timed phases is counted: at least one per side, kind and round
    assert numbers["requests"] >= 3 * 2 * numbers["rounds"]
    assert numbers["items_per_s_batch100"] == pytest.approx(
        100 * numbers["rps_batch100"], rel=0.002
    )
    assert 0 < numbers["p50_ms_single"] <= numbers["p99_ms_single"]
    # the logging server kept a row for every (model, item id) it was sent
    assert numbers["p99_ms_single_logged"] > 0
    assert numbers["logged_rows"] == numbers["logged_expected"] > 0
