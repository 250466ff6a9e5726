"""The elicit benchmark runs end to end on a few items and reports every figure it promises.

No timing is asserted here (speed is measured by running the benchmark itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("aiohttp")

pytestmark = [pytest.mark.server, pytest.mark.slow]

BENCH = Path(__file__).parent.parent / "benchmarks" / "bench_elicit.py"
ITEMS = 64


def test_bench_elicit_reports_rates_and_time_split() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--items", str(ITEMS), "--concurrency", "8"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    numbers = json.loads(done.stdout)
    assert set(numbers) == {"lean", "sdk", "load_1min", "cores"}
    assert numbers["cores"] == os.cpu_count()
    assert set(numbers["load_1min"]) == {"start", "end"}
    ideal_per_s = []
    for http in ("lean", "sdk"):
        n = numbers[http]
        assert set(n) == {
            "requests_per_s", "ratio_to_ideal", "seconds", "client_cpu_s", "store_s", "parse_s",
            "http_and_engine_cpu_s", "requests_phase_s", "before_and_after_s",
            "client_cpu_us_per_request", "bare_client_requests_per_s",
            "bare_client_cpu_us_per_request", "ratio_to_bare_client",
        }  # fmt: skip
        assert n["client_cpu_s"] > 0 and n["store_s"] > 0 and n["parse_s"] > 0
        # relations between the figures (each rounded: to 0.1 req/s, 1 ms, 1 µs, 0.001)
        assert n["requests_per_s"] == pytest.approx(ITEMS / n["seconds"], rel=0.01)
        assert n["requests_phase_s"] + n["before_and_after_s"] == pytest.approx(
            n["seconds"], abs=0.003
        )
        assert 0 < n["requests_phase_s"] <= n["seconds"]
        assert n["http_and_engine_cpu_s"] == pytest.approx(
            max(0.0, n["client_cpu_s"] - n["store_s"] - n["parse_s"]), abs=0.003
        )
        assert n["client_cpu_us_per_request"] == pytest.approx(
            n["client_cpu_s"] / ITEMS * 1e6, abs=0.0005 / ITEMS * 1e6 + 1
        )
        assert n["ratio_to_bare_client"] == pytest.approx(
            n["requests_per_s"] / n["bare_client_requests_per_s"], rel=0.01, abs=0.002
        )
        assert n["bare_client_cpu_us_per_request"] > 0
        ideal_per_s.append(n["requests_per_s"] / n["ratio_to_ideal"])
    # the ideal rate (concurrency / server latency) is one figure for both HTTP paths
    assert ideal_per_s[0] == pytest.approx(ideal_per_s[1], rel=0.02)
