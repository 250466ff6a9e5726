"""Precision thresholds: verbcal's Learn-then-Test ranks against MAPIE 1.6, in one process.

Each scenario draws binary scores s = P(class) and labels whose true precision curve
``P(y = class | s >= t)`` and recall curve are known in closed form, so a chosen threshold is
judged exactly, with no test-set noise. Per scenario and method, over R repeats:

* ``violation_rate``: share of repeats returning a threshold whose true precision is below the
  target (a method that returns none cannot violate);
* ``reachable_rate``: share of repeats returning a threshold;
* ``mean_recall``: the true recall at the returned threshold, 0 where none was returned.

Methods: ``verbcal`` = :func:`verbcal.decide.threshold_for` (procedure "ltt-ranks"), the one
the guarantee is stated for; ``verbcal-pointwise`` = the former scan of pointwise bounds, for
reference; ``mapie`` = ``mapie.risk_control.BinaryClassificationController(risk="precision")``
with its defaults (Bonferroni-Holm over ``linspace(0, 0.99, 100)``). Target precision 0.9 at
confidence 0.95 (delta = 0.05) for all. Goals: verbcal's violation rate <= delta + 2 Monte-Carlo
standard errors everywhere; where the target is attainable, verbcal's reachable rate and mean
recall >= MAPIE's.

    python benchmarks/bench_decide.py [--repeats 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from verbcal.decide import threshold_for

TARGET, CONFIDENCE = 0.9, 0.95
DELTA = 1.0 - CONFIDENCE
TOL = 1e-9
Array = NDArray[np.float64]
Truth = Callable[[float], tuple[float, float]]


@dataclass(frozen=True)
class Scenario:
    """A generator of (probs, y) and the exact precision/recall of the rule ``s >= t``."""

    name: str
    n: int
    attainable: bool
    draw: Callable[[np.random.Generator, int], tuple[Array, NDArray[np.int64]]]
    truth: Truth
    cls: int = 1


def beta_scenario(name: str, a: float, power: float, grid: float | None = None) -> Scenario:
    """s ~ Beta(a, 1) (optionally rounded to a grid), P(y = 1 | s) = s**power (1: calibrated)."""

    def draw(rng: np.random.Generator, n: int) -> tuple[Array, NDArray[np.int64]]:
        u = rng.beta(a, 1.0, n)
        y = (rng.random(n) < u**power).astype(np.int64)
        s = np.round(u / grid) * grid if grid else u
        return np.c_[1.0 - s, s], y

    def truth(t: float) -> tuple[float, float]:
        # the rule s >= t in terms of the latent u
        u = t if grid is None else (math.ceil(t / grid - TOL) - 0.5) * grid
        u = min(max(u, 0.0), 1.0)
        kept = 1.0 - u**a
        hits = a / (a + power) * (1.0 - u ** (a + power))
        return (hits / kept if kept > 0 else 1.0), hits / (a / (a + power))

    return Scenario(name, 300, True, draw, truth)


def flat_scenario(p0: float) -> Scenario:
    """Scores uniform on a 0.001 grid; P(y = 1 | s) = p0 for s >= 0.5 and 0.3 below.

    The true precision is p0 < target at every threshold >= 0.5 and lower below: every
    returned threshold is a violation."""

    def draw(rng: np.random.Generator, n: int) -> tuple[Array, NDArray[np.int64]]:
        s = np.floor(rng.random(n) * 1000) / 1000
        y = (rng.random(n) < np.where(s >= 0.5, p0, 0.3)).astype(np.int64)
        return np.c_[1.0 - s, s], y

    def truth(t: float) -> tuple[float, float]:
        u = min(max(math.ceil(t * 1000 - TOL) / 1000, 0.0), 1.0)
        high, low = 1.0 - max(u, 0.5), max(0.5 - u, 0.0)
        hits = high * p0 + low * 0.3
        kept = high + low
        return (hits / kept if kept > 0 else p0), hits / (0.5 * p0 + 0.5 * 0.3)

    return Scenario(f"flat-{p0:g}", 1000, False, draw, truth)


def multiclass_scenario(a: float = 4.0) -> Scenario:
    """K = 3: a top class c uniform, confidence s ~ Beta(a, 1), probs s at c and (1 - s) / 2
    elsewhere, gold label c with probability s (calibrated); one-vs-rest for class 0."""
    mean_s = a / (a + 1.0)

    def draw(rng: np.random.Generator, n: int) -> tuple[Array, NDArray[np.int64]]:
        s = rng.beta(a, 1.0, n)
        c = rng.integers(0, 3, n)
        probs = np.repeat(((1.0 - s) / 2.0)[:, None], 3, axis=1)
        probs[np.arange(n), c] = s
        shift = rng.integers(1, 3, n)  # a wrong label, uniform among the other two
        y = np.where(rng.random(n) < s, c, (c + shift) % 3).astype(np.int64)
        return probs, y

    def truth(t: float) -> tuple[float, float]:
        t = min(max(t, 0.0), 1.0)
        # items whose top class is 0 (mass 1/3): score s >= t, P(y = 0) = s
        kept_top = 1.0 - t**a
        hits_top = a / (a + 1.0) * (1.0 - t ** (a + 1.0))
        # items whose top class is another (mass 2/3): score (1 - s) / 2 >= t iff s <= 1 - 2t
        v = min(max(1.0 - 2.0 * t, 0.0), 1.0)
        kept_other = v**a
        hits_other = 0.5 * (v**a - a / (a + 1.0) * v ** (a + 1.0))
        kept = kept_top / 3 + 2 * kept_other / 3
        hits = hits_top / 3 + 2 * hits_other / 3
        positives = mean_s / 3 + 2 * (1.0 - mean_s) / 2 / 3
        return (hits / kept if kept > 0 else 1.0), hits / positives

    return Scenario("multiclass-ovr", 900, True, draw, truth, cls=0)


SCENARIOS = [
    flat_scenario(0.88),
    flat_scenario(0.89),
    flat_scenario(0.895),
    beta_scenario("calibrated", 4.0, 1.0),
    beta_scenario("over-confident", 6.0, 2.0),
    beta_scenario("grid-0.05", 4.0, 1.0, grid=0.05),
    multiclass_scenario(),
]


def verbcal_threshold(probs: Array, y: NDArray[np.int64], cls: int, procedure: str) -> float | None:
    result = threshold_for(
        probs,
        y,
        cls,
        precision=TARGET,
        confidence=CONFIDENCE,
        procedure=procedure,  # type: ignore[arg-type]
    )
    return result.threshold


def mapie_threshold(probs: Array, y: NDArray[np.int64], cls: int) -> float | None:
    from mapie.risk_control import BinaryClassificationController

    score = probs[:, cls]
    controller = BinaryClassificationController(
        predict_function=lambda x: x,
        risk="precision",
        target_level=TARGET,
        confidence_level=CONFIDENCE,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        controller.calibrate(np.c_[1.0 - score, score], (y == cls).astype(int))
    best = controller.best_predict_param
    return None if best is None else float(best)  # type: ignore[arg-type]


METHODS: dict[str, Callable[[Array, NDArray[np.int64], int], float | None]] = {
    "verbcal": lambda p, y, c: verbcal_threshold(p, y, c, "ltt-ranks"),
    "verbcal-pointwise": lambda p, y, c: verbcal_threshold(p, y, c, "pointwise"),
    "mapie": mapie_threshold,
}


def run(scenario: Scenario, repeats: int, seed: int) -> list[dict[str, object]]:
    """Every method on the same R data sets of the scenario."""
    rng = np.random.default_rng(seed)
    data = [scenario.draw(rng, scenario.n) for _ in range(repeats)]
    rows: list[dict[str, object]] = []
    for method, choose in METHODS.items():
        violations = reached = 0
        recall_sum = 0.0
        start = time.perf_counter()
        for probs, y in data:
            t = choose(probs, y, scenario.cls)
            if t is None:
                continue
            precision, recall = scenario.truth(t)
            reached += 1
            violations += precision < TARGET
            recall_sum += recall
        rows.append(
            {
                "scenario": scenario.name,
                "method": method,
                "violation_rate": violations / repeats,
                "reachable_rate": reached / repeats,
                "mean_recall": recall_sum / repeats,
                "attainable": scenario.attainable,
                "n": scenario.n,
                "repeats": repeats,
                "seconds": time.perf_counter() - start,
            }
        )
    return rows


def check_goals(rows: list[dict[str, object]], repeats: int) -> list[str]:
    """The goals of issue 10, item 2: what failed (empty when both hold)."""
    limit = DELTA + 2 * math.sqrt(DELTA * (1 - DELTA) / repeats)
    failed = []
    by = {(r["scenario"], r["method"]): r for r in rows}
    for scenario in SCENARIOS:
        ours, theirs = by[(scenario.name, "verbcal")], by[(scenario.name, "mapie")]
        if float(ours["violation_rate"]) > limit:  # type: ignore[arg-type]
            failed.append(f"{scenario.name}: violation rate {ours['violation_rate']} > {limit:.4f}")
        if scenario.attainable:
            for key in ("reachable_rate", "mean_recall"):
                if float(ours[key]) < float(theirs[key]):  # type: ignore[arg-type]
                    failed.append(f"{scenario.name}: {key} {ours[key]} < MAPIE's {theirs[key]}")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON rows only")
    args = parser.parse_args(argv)
    try:
        import mapie
    except ImportError:
        print("mapie is not installed: pip install 'verbcal[bench]'", file=sys.stderr)
        return 2
    rows: list[dict[str, object]] = []
    for k, scenario in enumerate(SCENARIOS):
        rows += run(scenario, args.repeats, args.seed + k)
        if not args.json:
            print(f"{scenario.name} done", file=sys.stderr)
    worst = max(float(r["violation_rate"]) for r in rows if r["method"] == "verbcal")  # type: ignore[arg-type]
    failed = check_goals(rows, args.repeats)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        print(json.dumps({"max_violation_rate_verbcal": worst}))
        print(json.dumps({"goals_met": not failed, "failed": failed}))
        return 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"target precision {TARGET} at confidence {CONFIDENCE}, {args.repeats} repeats, "
        f"mapie {mapie.__version__}, load average {load:.2f} (shared machine)"
    )
    print("| scenario | n | method | violation rate | reachable rate | mean recall |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['n']} | {r['method']} | {float(r['violation_rate']):.3f} | "  # type: ignore[arg-type]
            f"{float(r['reachable_rate']):.3f} | {float(r['mean_recall']):.3f} |"  # type: ignore[arg-type]
        )
    print(f"max violation rate of verbcal: {worst:.3f} (delta = {DELTA:g})")
    print("goals met" if not failed else "goals NOT met: " + "; ".join(failed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
