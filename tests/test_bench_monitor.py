"""The monitoring benchmark builds its streams as described and scores one (no NannyML)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_monitor.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_monitor", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_streams_and_scores() -> None:
    bench = load_bench()
    stream = bench.build("covariate", "tweets", 1)
    assert stream.probs.shape == (10_000, 3) and stream.changed
    assert (
        np.all(stream.groups[:5000] < 100_000) and np.mean(stream.groups[5000:] >= 100_000) == 0.5
    )
    flat = bench.build("model_flat", "tweets", 1)
    same = bench.build("stationary", "tweets", 1)
    assert np.array_equal(flat.probs[:5000], same.probs[:5000])
    assert np.array_equal(flat.probs.argmax(axis=1), flat.probs.argmax(axis=1))
    assert flat.probs[5000:].max(axis=1).mean() < same.probs[5000:].max(axis=1).mean()
    tally = bench.Tally()
    bench.run_stream(same, tally, with_nannyml=False)
    summary = bench.summarise("stationary", tally)
    assert summary["n_cbpe"] == 20 and 0 <= summary["mae_cbpe"] < 0.2
    assert 0 <= summary["coverage_cbpe"] <= 1 and summary["alarm_rate"] in (0.0, 1.0)
