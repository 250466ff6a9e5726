"""The calibration benchmark's implementations agree on a small run (correctness, no timing).

Only the references in the test extra are used (numpy, scipy, sklearn, relplot); netcal and
torchmetrics need torch and are left to ``benchmarks/bench_calibrate.py`` itself.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_calibrate.py"
REFS = ("verbcal", "sklearn", "scipy", "bincount", "relplot")


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_calibrate", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench()


@pytest.fixture(scope="module")
def results(bench: ModuleType) -> object:
    return bench.run(n=20_000, repeats=1, refs=REFS, warmup=0)


def test_data_is_on_the_grid_and_sums_to_one(bench: ModuleType) -> None:
    p, y = bench.make_data(5_000, seed=1)
    assert p.shape == (5_000, 4) and y.shape == (5_000,)
    units = p * 20
    assert np.array_equal(units, np.round(units))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert np.any(p == 0.0)  # zeros: the floor matters
    assert set(np.unique(y)) == {0, 1, 2, 3}


def test_temperatures_and_nll_agree(results: object) -> None:
    ts = results.ts  # type: ignore[attr-defined]
    assert set(ts) == {"verbcal", "sklearn", "scipy"}
    ref = ts["verbcal"]
    assert ref["temperature"] > 1.5  # the data are overconfident: T is far from 1
    for name, row in ts.items():
        assert row["temperature"] == pytest.approx(ref["temperature"], rel=1e-6), name
        assert row["nll"] == pytest.approx(ref["nll"], rel=1e-12), name
    summary = results.to_dict()  # type: ignore[attr-defined]
    assert summary["ts_max_rel_diff_temperature"] < 1e-6
    assert summary["ts_speedup_vs_sklearn"] is not None
    assert summary["ts_speedup_vs_netcal"] is None  # not requested: reported as absent


def test_ece_agrees_with_numpy_and_relplot(results: object) -> None:
    ece = results.ece  # type: ignore[attr-defined]
    ours = ece["verbcal"]
    # same convention: identical up to summation order, on and off the grid
    assert ece["bincount"]["grid"] == pytest.approx(ours["grid"], abs=1e-12)
    assert ece["bincount"]["calibrated"] == pytest.approx(ours["calibrated"], abs=1e-12)
    # off the grid no confidence sits on an edge: relplot agrees
    assert ece["relplot"]["calibrated"] == pytest.approx(ours["calibrated"], abs=1e-12)
    # on the grid relplot's left-closed bins differ, and its emulation explains it exactly
    assert abs(ece["relplot"]["grid"] - ours["grid"]) > 1e-4
    for row in ece.values():
        assert row["grid"] == pytest.approx(row["grid_emulated"], abs=1e-12)
        assert row["calibrated"] == pytest.approx(row["calibrated_emulated"], abs=1e-12)


def test_missing_reference_is_skipped_not_fatal(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        bench, "missing_references", lambda names: {"relplot": "not installed (test)"}
    )
    res = bench.run(n=2_000, repeats=1, refs=("verbcal", "bincount", "relplot"), warmup=0)
    assert "relplot" not in res.ece and res.skipped == {"relplot": "not installed (test)"}
    assert res.to_dict()["ece_ratio_vs_relplot"] is None


def test_edge_conventions_of_the_emulations(bench: ModuleType) -> None:
    """0.6 sits on the edge 9/15: ours puts it below, left-closed libraries above, with 0.62."""
    q = np.array([[0.6, 0.4, 0.0, 0.0], [0.62, 0.38, 0.0, 0.0]])
    y = np.array([0, 1])  # first correct, second wrong
    separate = (abs(1 - 0.6) + abs(0 - 0.62)) / 2  # two bins
    together = abs(1 + 0 - 0.6 - 0.62) / 2  # one bin
    assert bench.emulate("verbcal", q, y) == pytest.approx(separate, abs=1e-12)
    assert bench.ece_bincount(q, y) == pytest.approx(separate, abs=1e-12)
    for name in ("relplot", "netcal"):
        assert bench.emulate(name, q, y) == pytest.approx(together, abs=1e-12), name


def test_json_has_the_promised_schema_and_its_figures_agree(
    bench: ModuleType, results: object
) -> None:
    """The JSON summary: exactly the promised keys, and every derived figure recomputed from
    the raw times and values it is derived from (a ratio that drifted from its times, a
    median that is not the median, would fail here)."""
    out = json.loads(json.dumps(results.to_dict()))  # type: ignore[attr-defined]
    speedups = {f"ts_speedup_vs_{ref}" for ref in bench.TS_REFS[1:]}
    ratios = {f"ece_ratio_vs_{ref}" for ref in bench.ECE_REFS[1:]}
    assert set(out) == {
        "n", "k", "grid", "floor", "n_bins", "repeats", "seed", "ts_max_rel_diff_temperature",
        "ts_max_rel_diff_nll", "ts", "ece", "fit_split", "fit_over_counting_floor", "skipped",
    } | speedups | ratios  # fmt: skip
    assert (out["n"], out["k"], out["grid"], out["repeats"]) == (20_000, 4, 0.05, 1)
    assert out["n_bins"] == 15 and out["skipped"] == {}
    ts, ece = out["ts"], out["ece"]
    assert set(ts) == {"verbcal", "sklearn", "scipy"}
    assert set(ece) == {"verbcal", "bincount", "relplot"}
    for table in (ts, ece):
        for row in table.values():
            assert len(row["times"]) == out["repeats"]
            assert row["time_s"] == statistics.median(row["times"]) and row["time_s"] > 0
    for row in ts.values():
        assert set(row) == {"time_s", "times", "temperature", "nll"}
    for name, row in ece.items():
        assert set(row) == {
            "time_s", "times", "grid", "grid_emulated", "calibrated", "calibrated_emulated",
            "convention",
        }  # fmt: skip
        assert row["convention"] == bench.CONVENTION[name]
    for ref in bench.TS_REFS[1:]:  # speedup = reference time / verbcal time
        expected = ts[ref]["time_s"] / ts["verbcal"]["time_s"] if ref in ts else None
        assert out[f"ts_speedup_vs_{ref}"] == expected, ref
    for ref in bench.ECE_REFS[1:]:  # ratio = verbcal time / reference time
        expected = ece["verbcal"]["time_s"] / ece[ref]["time_s"] if ref in ece else None
        assert out[f"ece_ratio_vs_{ref}"] == expected, ref
    temps = [row["temperature"] for row in ts.values()]
    assert out["ts_max_rel_diff_temperature"] == pytest.approx(
        (max(temps) - min(temps)) / min(temps), abs=1e-15
    )
    split = out["fit_split"]
    assert set(split) == {
        "fit (total)", "checks", "coding rows", "counting", "newton", "read floor",
        "counting floor",
    }  # fmt: skip
    assert out["fit_over_counting_floor"] == split["fit (total)"] / split["counting floor"]
