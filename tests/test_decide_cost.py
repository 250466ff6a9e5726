"""verbcal.decide.cost: Bayes actions by hand, the fp/fn threshold, and calibration's worth."""

from __future__ import annotations

import numpy as np
import pytest

from verbcal.decide.cost import CostMatrix, bayes_actions, cost_report


def test_bayes_actions_by_hand_with_an_abstain_action() -> None:
    labels = ("a", "b")
    costs = CostMatrix.from_mapping(
        {"a": {"a": 0, "b": 10}, "b": {"a": 10, "b": 0}, "ask": {"a": 1, "b": 1}}, labels
    )
    probs = np.array([[0.95, 0.05], [0.5, 0.5], [0.02, 0.98]])
    # expected costs: row 0: a 0.5, b 9.5, ask 1 -> a; row 1: 5, 5, 1 -> ask; row 2: 9.8, 0.2, 1 -> b
    np.testing.assert_array_equal(bayes_actions(probs, costs), [0, 2, 1])
    report = cost_report(probs, np.array([0, 1, 0]), costs)
    assert report["expected_cost"] == pytest.approx((0.5 + 1 + 0.2) / 3)
    assert report["realised_cost"] == pytest.approx((0 + 1 + 10) / 3)
    assert report["actions"] == {"a": 1, "b": 1, "ask": 1}


def test_false_positive_negative_costs_give_the_classic_threshold() -> None:
    # accept iff fp * (1 - p) < fn * p, i.e. p > fp / (fp + fn) = 0.8
    costs = CostMatrix.false_positive_negative(("no", "yes"), 1, cost_fp=4.0, cost_fn=1.0)
    assert costs.actions == ("yes", "not yes")
    p = np.array([0.7, 0.79, 0.81, 0.95])
    actions = bayes_actions(np.c_[1 - p, p], costs)
    np.testing.assert_array_equal(actions, [1, 1, 0, 0])
    with pytest.raises(ValueError, match="cost_fp"):
        CostMatrix.false_positive_negative(("no", "yes"), 1, cost_fp=-1.0, cost_fn=1.0)


def test_cost_matrix_errors_name_action_and_label() -> None:
    with pytest.raises(ValueError, match=r"'a'.*missing \['b'\]"):
        CostMatrix.from_mapping({"a": {"a": 0}}, ("a", "b"))
    with pytest.raises(ValueError, match="finite number"):
        CostMatrix.from_mapping({"a": {"a": 0, "b": "x"}}, ("a", "b"))  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="no actions"):
        CostMatrix.from_mapping({}, ("a", "b"))
    costs = CostMatrix.from_mapping({"a": {"a": 0, "b": 1}}, ("a", "b"))
    with pytest.raises(ValueError, match="shape"):
        bayes_actions(np.ones((2, 3)) / 3, costs)


def test_calibrated_probabilities_cost_less_and_keep_their_promise() -> None:
    # over-confident scores: true P(y = 1 | s) = s**3; calibrated = the truth
    rng = np.random.default_rng(4)
    s = rng.beta(2.0, 1.0, 200_000)
    y = (rng.random(len(s)) < s**3).astype(np.int64)
    costs = CostMatrix.false_positive_negative(("no", "yes"), 1, cost_fp=3.0, cost_fn=1.0)
    raw = cost_report(np.c_[1 - s, s], y, costs)
    cal = cost_report(np.c_[1 - s**3, s**3], y, costs)
    assert cal["realised_cost"] < raw["realised_cost"]
    assert cal["expected_cost"] == pytest.approx(cal["realised_cost"], abs=0.005)
    assert raw["expected_cost"] < raw["realised_cost"] - 0.02  # the raw promise is too rosy
