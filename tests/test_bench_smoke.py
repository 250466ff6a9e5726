"""The calibration benchmark's implementations agree on a small run (correctness, no timing).

Only the references in the test extra are used (numpy, scipy, sklearn, relplot); netcal and
torchmetrics need torch and are left to ``benchmarks/bench_calibrate.py`` itself.
"""

from __future__ import annotations

import importlib.util
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
