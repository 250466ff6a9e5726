"""Review routing: the guaranteed band on C applied to T, the naive rule, the cost rule."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from verbcal.cli import app
from verbcal.decide import abstain_band
from verbcal.decide.route import apply_rule, cost_route, naive_route, review_curve, route


def judge(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An over-confident binary judge: states s, right with probability 0.5 + (s - 0.5) / 2."""
    rng = np.random.default_rng(seed)
    s = rng.choice([0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95], size=n)
    truth = 0.5 + (s - 0.5) / 2
    y = (rng.random(n) < truth).astype(np.int64)  # class 1 = positive
    return np.c_[1 - s, s], y


def test_counts_and_precisions_by_hand() -> None:
    score = np.array([0.95, 0.9, 0.6, 0.4, 0.1, 0.05])
    y = np.array([1, 0, 1, 0, 1, 0])
    r = apply_rule(score, y, 1, 0.9, 0.1, "x", True, costs=(1.0, 10.0))
    assert (r.accepted, r.rejected, r.reviewed) == (2, 2, 2)
    assert r.accept_precision == 0.5 and r.reject_precision == 0.5
    assert r.unreviewed_errors == 2 and r.unreviewed_error_rate == pytest.approx(2 / 6)
    assert r.expected_cost == pytest.approx((2 * 1 + 2 * 10) / 6)


def test_guaranteed_route_is_the_abstain_band_of_c_applied_to_t() -> None:
    pc, yc = judge(3000, 1)
    pt, yt = judge(3000, 2)
    r = route(pc, yc, pt, yt, 1, precision=0.65)
    band = abstain_band(pc, yc, 1, precision=0.65)
    assert (r.accept_threshold, r.reject_threshold) == (band.upper, band.lower)
    assert r.reachable
    decided = band.evaluate(pt, yt)
    assert r.review_rate == pytest.approx(decided["abstain_rate"])
    assert r.accept_precision == pytest.approx(decided["accept_precision"])
    # the guarantee holds on fresh data (large T: realised precision near the truth)
    assert r.accept_precision >= 0.65 and r.reject_precision >= 0.65  # type: ignore[operator]
    # the naive rule believes the judge: its realised precision falls short of the target
    naive = naive_route(pt, yt, 1, precision=0.9)
    assert (naive.accept_threshold, naive.reject_threshold) == (0.9, pytest.approx(0.1))
    assert naive.accept_precision < 0.9  # type: ignore[operator]


def test_cost_rule_reviews_when_an_error_costs_more_than_a_review() -> None:
    p = np.array([[0.5, 0.5], [0.1, 0.9], [0.85, 0.15], [0.3, 0.7]])
    y = np.array([1, 1, 0, 0])
    r = cost_route(p, y, 1, cost_review=1.0, cost_error=5.0)  # review when min(P, 1-P) > 0.2
    assert (r.accept_threshold, r.reject_threshold) == (0.8, 0.2)
    assert (r.accepted, r.rejected, r.reviewed) == (1, 1, 2)
    cheap = cost_route(p, y, 1, cost_review=10.0, cost_error=1.0)
    assert cheap.reviewed == 0


def test_review_curve_goes_from_all_errors_to_none() -> None:
    p, y = judge(500, 3)
    curve = review_curve(p, y, 1)
    assert curve[0]["review_rate"] == 0 and curve[-1]["review_rate"] == 1
    assert curve[-1]["unreviewed_error_rate"] == 0
    errors = [point["unreviewed_error_rate"] for point in curve]
    assert all(a >= b for a, b in itertools.pairwise(errors))
    wrong = np.mean((p[:, 1] >= 0.5) != (y == 1))
    assert errors[0] == pytest.approx(wrong)


def test_cli_route_json_keys(tmp_path: Path) -> None:
    rows = []
    for name, (p, y) in (("c", judge(400, 4)), ("t", judge(400, 5))):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"id": f"{name}{i}", "probs": {"bad": pi[0], "good": pi[1]},
                            "label": "good" if yi else "bad"}) + "\n"
                for i, (pi, yi) in enumerate(zip(p.tolist(), y.tolist(), strict=True))
            ),
            encoding="utf-8",
        )  # fmt: skip
        rows.append(path)
    result = CliRunner().invoke(
        app,
        ["route", "--calib", str(rows[0]), "--data", str(rows[1]), "--positive", "good",
         "--precision", "0.65", "--cost-review", "1", "--cost-error", "4", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    keys = {"accept_threshold", "reject_threshold", "review_rate", "accept_precision",
            "reject_precision", "reachable"}  # fmt: skip
    assert keys <= set(out) and keys <= set(out["naive"]) and keys <= set(out["cost_optimal"])
    assert out["naive"]["accept_threshold"] == 0.65
    assert len(out["curve"]) == 21
    bad = CliRunner().invoke(
        app, ["route", "--calib", str(rows[0]), "--data", str(rows[1]), "--positive", "nope"]
    )
    assert bad.exit_code != 0 and "--positive" in bad.output
