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


def test_bench_elicit_reports_rates_and_time_split() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--items", "64", "--concurrency", "8"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    numbers = json.loads(done.stdout)
    for http in ("lean", "sdk"):
        n = numbers[http]
        assert n["requests_per_s"] > 0 and n["ratio_to_ideal"] > 0
        assert n["bare_client_requests_per_s"] > 0
        assert n["client_cpu_s"] > 0 and n["store_s"] > 0 and n["parse_s"] > 0
        assert n["http_and_engine_cpu_s"] >= 0
        assert n["requests_phase_s"] <= n["seconds"]
    assert set(numbers["load_1min"]) == {"start", "end"}
