"""The precision guarantee of ``threshold_for``, checked in simulation on the scenarios of
``benchmarks/bench_decide.py`` (exact true precision and recall, seeded, 300 repeats), and a
small run of the benchmark itself against MAPIE."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from verbcal.decide import threshold_for

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_decide.py"
REPEATS = 300
DELTA = 0.05
LIMIT = DELTA + 2 * math.sqrt(DELTA * (1 - DELTA) / REPEATS)  # 0.075


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_decide", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load_bench()
SCENARIOS = {s.name: s for s in bench.SCENARIOS}


def rates(name: str, procedure: str, seed: int) -> tuple[float, float, float]:
    """(violation, reachable, mean recall) of one procedure over REPEATS seeded data sets."""
    scenario = SCENARIOS[name]
    rng = np.random.default_rng(seed)
    violations = reached = 0
    recall = 0.0
    for _ in range(REPEATS):
        probs, y = scenario.draw(rng, scenario.n)
        result = threshold_for(
            probs, y, scenario.cls, precision=0.9, confidence=0.95, procedure=procedure
        )
        if result.threshold is None:
            continue
        true_precision, true_recall = scenario.truth(result.threshold)
        reached += 1
        violations += true_precision < 0.9
        recall += true_recall
    return violations / REPEATS, reached / REPEATS, recall / REPEATS


@pytest.mark.slow
def test_the_truth_of_the_scenarios_by_monte_carlo() -> None:
    # the closed forms the guarantee is judged by, against 400,000 fresh items
    rng = np.random.default_rng(3)
    for scenario in SCENARIOS.values():
        probs, y = scenario.draw(rng, 400_000)
        score, positive = probs[:, scenario.cls], y == scenario.cls
        for t in (0.3, 0.6, 0.85, 0.95):
            kept = score >= t
            precision, recall = scenario.truth(t)
            assert positive[kept].mean() == pytest.approx(precision, abs=0.01), (scenario.name, t)
            assert (positive & kept).sum() / positive.sum() == pytest.approx(recall, abs=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("p0", [0.88, 0.89, 0.895])
def test_flat_just_below_target_the_guarantee_holds_and_the_old_scan_breaks_it(p0: float) -> None:
    # every threshold has true precision p0 < 0.9: any threshold returned is a violation
    name = f"flat-{p0:g}"
    violation, reachable, _ = rates(name, "ltt-ranks", seed=100)
    assert violation == reachable  # nothing attainable: each returned threshold violates
    assert violation <= LIMIT
    if p0 == 0.895:  # the adversarial case: the pointwise scan fails about 3 times too often
        old, _, _ = rates(name, "pointwise", seed=100)
        assert old > LIMIT


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "min_reachable"),
    [("calibrated", 0.35), ("over-confident", 0.2), ("grid-0.05", 0.2), ("multiclass-ovr", 0.35)],
)
def test_benign_scenarios_valid_and_not_vacuous(name: str, min_reachable: float) -> None:
    violation, reachable, recall = rates(name, "ltt-ranks", seed=200)
    assert violation <= LIMIT
    assert reachable >= min_reachable and recall > 0.0


def test_bench_smoke_json_rows_and_goal_check() -> None:
    pytest.importorskip("mapie")
    rows = []
    for k, scenario in enumerate(bench.SCENARIOS):
        rows += bench.run(scenario, repeats=4, seed=k)
    assert {r["method"] for r in rows} == {"verbcal", "verbcal-pointwise", "mapie"}
    assert len(rows) == 3 * len(bench.SCENARIOS)
    for row in rows:
        json.dumps(row)
        assert 0.0 <= row["violation_rate"] <= row["reachable_rate"] <= 1.0
        assert 0.0 <= row["mean_recall"] <= row["reachable_rate"]
    # the goal check reports a violation when one is planted
    planted = [dict(r) for r in rows]
    for r in planted:
        if r["method"] == "verbcal" and r["scenario"] == "flat-0.88":
            r["violation_rate"] = 0.2
    assert any("flat-0.88" in f for f in bench.check_goals(planted, repeats=300))
