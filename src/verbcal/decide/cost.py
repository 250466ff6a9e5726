"""Decisions by cost: the Bayes-optimal action per item from (calibrated) probabilities.

A **cost matrix** ``C`` (A actions x K labels) gives ``C[a, k]``, the cost of taking action
``a`` when the gold label is ``k``; actions may be labels ("predict k") or others ("abstain",
"send to a human"). For an item with probabilities ``q`` (length K) the **expected cost** of
action a is ``sum_k C[a, k] q[k]``; the **Bayes action** is its argmin (ties to the first
action). Over n items: **expected cost** = mean of the Bayes action's expected cost (what
the probabilities promise), **realised cost** = mean of ``C[a_i, y_i]`` (what it costs with
the gold labels). Calibrated probabilities make the two agree and lower the realised cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from verbcal.decide.thresholds import _check

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class CostMatrix:
    """``costs[a, k]``: the cost of action ``actions[a]`` when the gold label is ``labels[k]``."""

    actions: tuple[str, ...]
    labels: tuple[str, ...]
    costs: FloatArray

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Mapping[str, float]], labels: Sequence[str]
    ) -> CostMatrix:
        """From ``{action: {label: cost}}``; every action must price every label."""
        if not mapping:
            raise ValueError("the cost matrix has no actions; give {action: {label: cost}}")
        rows = []
        for action, row in mapping.items():
            if not isinstance(row, Mapping):
                raise ValueError(f"cost matrix: action {action!r} must map labels to costs")
            missing = [label for label in labels if label not in row]
            extra = [key for key in row if key not in labels]
            if missing or extra:
                raise ValueError(
                    f"cost matrix: action {action!r} must give a cost for each label "
                    f"({', '.join(labels)}); missing {missing or 'none'}, unknown {extra or 'none'}"
                )
            values = [row[label] for label in labels]
            for label, value in zip(labels, values, strict=True):
                if not isinstance(value, int | float) or not math.isfinite(value):
                    raise ValueError(
                        f"cost matrix: cost of {action!r} for label {label!r} must be a finite "
                        f"number, got {value!r}"
                    )
            rows.append([float(v) for v in values])
        return cls(tuple(mapping), tuple(labels), np.asarray(rows, dtype=np.float64))

    @classmethod
    def false_positive_negative(
        cls, labels: Sequence[str], positive: int, cost_fp: float, cost_fn: float
    ) -> CostMatrix:
        """Two actions, "<positive>" and "not <positive>": a false positive costs ``cost_fp``,
        a false negative ``cost_fn``, correct decisions 0 (one-vs-rest for any K)."""
        for name, value in (("cost_fp", cost_fp), ("cost_fn", cost_fn)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        name = labels[positive]
        accept = [0.0 if k == positive else cost_fp for k in range(len(labels))]
        reject = [cost_fn if k == positive else 0.0 for k in range(len(labels))]
        return cls((name, f"not {name}"), tuple(labels), np.array([accept, reject]))

    @classmethod
    def zero_one(cls, labels: Sequence[str], abstain_cost: float | None = None) -> CostMatrix:
        """Predict a label: 0 if right, 1 if wrong; with ``abstain_cost``, an extra action
        "abstain" that costs that much whatever the label (Chow's rule: abstain when the
        largest probability is below ``1 - abstain_cost``)."""
        k = len(labels)
        costs = 1.0 - np.eye(k)
        actions = tuple(labels)
        if abstain_cost is not None:
            if not (math.isfinite(abstain_cost) and 0.0 <= abstain_cost <= 1.0):
                raise ValueError(f"abstain_cost must lie in [0, 1], got {abstain_cost!r}")
            costs = np.vstack([costs, np.full(k, float(abstain_cost))])
            actions += ("abstain",)
        return cls(actions, tuple(labels), costs)


def bayes_actions(probs: ArrayLike, costs: CostMatrix) -> NDArray[np.int64]:
    """Index of the action of least expected cost per row (ties to the first action)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != costs.costs.shape[1]:
        raise ValueError(
            f"probs must have shape (n, {costs.costs.shape[1]}) to match the cost matrix's "
            f"labels, got {p.shape}"
        )
    return np.asarray(np.argmin(p @ costs.costs.T, axis=1), dtype=np.int64)


def cost_report(probs: ArrayLike, y: ArrayLike, costs: CostMatrix) -> dict[str, Any]:
    """Expected and realised mean cost of the Bayes actions, and how often each is taken."""
    p, y_arr = _check(probs, y)
    action = bayes_actions(p, costs)
    expected = (p @ costs.costs.T)[np.arange(len(p)), action]
    realised = costs.costs[action, y_arr]
    counts = np.bincount(action, minlength=len(costs.actions))
    return {
        "n": len(p),
        "expected_cost": float(expected.mean()),
        "realised_cost": float(realised.mean()),
        "total_realised_cost": float(realised.sum()),
        "actions": {a: int(c) for a, c in zip(costs.actions, counts, strict=True)},
    }


__all__ = ["CostMatrix", "bayes_actions", "cost_report"]
