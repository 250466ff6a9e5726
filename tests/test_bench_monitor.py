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
    stream = bench.build("other_set", "tweets", 1)
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
    assert summary["n_floor"] == 20 and 0 < summary["mae_floor"] < 0.1
    assert summary["mae_cbpe@tweets"] == summary["mae_cbpe"]  # one stream, one set
    assert isinstance(summary["signals"], dict) and summary["alarms"] in (0, 1)
    assert 0 <= summary["disagree_share"] <= 1
    assert "| stationary | tweets |" in bench.table([summary])


def test_covariate_stream_over_represents_one_kind_by_input_length_only() -> None:
    bench = load_bench()
    assert set(bench.SCENARIOS) >= {"stationary", "covariate", "other_set", "label_shift"}
    assert bench.SCENARIOS["covariate"] == bench.ALL_SETS
    for name in bench.ALL_SETS:
        part = bench.load(name)
        assert part.kind is not None and 0.4 <= part.kind.mean() <= 0.5  # above the median
    rng = np.random.default_rng(0)
    _, test = bench.split(bench.load("bbc-news"), rng)
    for kind in (0, 1):
        w = bench.kind_weights(test, kind)
        assert w is not None
        assert abs(w[test.kind == kind].sum() - bench.KIND_SHARE) < 1e-12
        # the weight depends on the kind alone: equal within a kind, whatever the label
        assert np.ptp(w[test.kind == kind]) == 0 and np.ptp(w[test.kind != kind]) == 0
    long_first = bench.build("covariate", "tweets", 2)  # even seed: long inputs over-represented
    short_first = bench.build("covariate", "tweets", 3)
    data = bench.load("tweets")
    for stream, kind in ((long_first, 1), (short_first, 0)):
        assert stream is not None and stream.changed
        # the stream's rows come from the test part; its kinds are read back by row identity
        _, test = bench.split(data, np.random.default_rng(2 if kind else 3))
        after = test.kind[stream.groups[5000:]]
        before = test.kind[stream.groups[:5000]]
        assert abs(after.mean() - (bench.KIND_SHARE if kind else 1 - bench.KIND_SHARE)) < 0.03
        assert abs(before.mean() - test.kind.mean()) < 0.03


def test_oracle_power_holds_its_level_and_sees_a_label_shift() -> None:
    bench = load_bench()
    _, test = bench.split(bench.load("drug-reviews"), np.random.default_rng(1001))
    same = bench.oracle_power(test, np.ones(len(test.y)), seed=1)
    assert same <= 0.1  # no change: an alarm only at its level
    stream = bench.build("label_shift", "drug-reviews", 1001)
    assert stream is not None and stream.oracle_power is not None
    assert stream.oracle_power > 0.5
    assert bench.build("stationary", "drug-reviews", 1001).oracle_power is None
