"""The bakeoff's outputs: the Pareto front and the recommendation rule."""

from __future__ import annotations

from typing import Any

from verbcal.bakeoff.output import pareto, recommend
from verbcal.bakeoff.score import ArmScores, DecisionSpec, Scores


def scores(diff: dict[str, tuple[float, float]], best: str) -> Scores:
    arms = {
        name: ArmScores(name, 100, {}, {}, diff_ci={"decision_metric": ci})
        for name, ci in diff.items()
    }
    return Scores(arms, {"decision_metric": best}, 100, 0.5, 5, 0, 100, "auto", DecisionSpec(1))


def row(name: str, cost: float | None, nll: float, reachable: float = 1.0) -> dict[str, Any]:
    return {
        "arm": name,
        "cost_per_1k": cost,
        "nll": nll,
        "decision_metric": 0.5,
        "decision_reachable_share": reachable,
    }


def test_pareto_front_on_cost_and_a_metric() -> None:
    points = [("a", 1.0, 0.5), ("b", 2.0, 0.4), ("c", 3.0, 0.45), ("d", 0.5, 0.9)]
    assert pareto(points, lower_y=True) == ["a", "b", "d"]
    assert pareto(points, lower_y=False) == ["d"]  # cheapest and highest


def test_recommends_the_cheapest_within_the_ci_of_the_best() -> None:
    ci = {"best": (0.0, 0.0), "close": (-0.1, 0.02), "worse": (-0.3, -0.1)}
    rows = [row("best", 5.0, 0.3), row("close", 1.0, 0.4), row("worse", 0.1, 0.6)]
    name, reason = recommend(rows, scores(ci, "best"), ("no", "yes"))
    assert name == "close"
    assert reason.startswith("close is the cheapest arm ($1 per 1,000 items)")
    assert "the best is best" in reason and "2 of 3 arms" in reason
    assert reason.count(". ") == 0 and reason.endswith(".")


def test_ties_on_cost_go_to_the_lower_nll_and_unknown_costs_come_last() -> None:
    ci = {"a": (0.0, 0.0), "b": (-0.1, 0.1), "c": (-0.1, 0.1)}
    rows = [row("a", 1.0, 0.5), row("b", 1.0, 0.4), row("c", None, 0.1)]
    assert recommend(rows, scores(ci, "a"), ("no", "yes"))[0] == "b"
    unpriced = [row("a", None, 0.5, 0.0), row("b", None, 0.4, 0.0), row("c", None, 0.45, 0.0)]
    name, reason = recommend(unpriced, scores(ci, "a"), ("no", "yes"))
    assert name == "b" and "No arm has a known cost" in reason
    assert "no threshold met the precision target" in reason
