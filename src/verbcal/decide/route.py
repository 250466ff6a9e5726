"""Review routing for an LLM judge: accept automatically, reject automatically, or send to a person.

Three rules, each applied to a labelled test set T (``positive`` = the class index of the
label accepted, e.g. ``acceptable``):

* :func:`route` (the guarantee): the abstain band of :func:`~verbcal.decide.abstain_band`
  chosen on a calibration set C (Learn-then-Test on each side: accept when
  P(positive) >= ``accept_threshold``, reject when P(positive) <= ``reject_threshold``, each
  side with precision >= ``precision`` at ``confidence``), applied unchanged to T;
* :func:`naive_route`: the judge taken at its word: accept when it *states*
  P(positive) >= ``precision``, reject when it states P(positive) <= 1 - ``precision``;
* :func:`cost_route`: with a cost per review and per unreviewed error, send an item to
  review when the expected cost of deciding it automatically (probability of being wrong
  x ``cost_error``) exceeds ``cost_review``; meaningful on calibrated probabilities.

Every rule reports the same keys (:meth:`Routing.to_dict`): ``accept_threshold``,
``reject_threshold``, ``review_rate``, ``accept_precision``, ``reject_precision``,
``reachable``, and the counts, ``unreviewed_errors`` (accepted negatives plus rejected
positives), ``unreviewed_error_rate`` (over all items of T) and, with costs, ``expected_cost``
per item. :func:`review_curve` traces review rate against unreviewed error rate when the
least confident items are reviewed first. numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from verbcal.decide.thresholds import abstain_band


@dataclass(frozen=True)
class Routing:
    """What a routing rule does on a labelled set (thresholds on P(positive))."""

    rule: str
    accept_threshold: float | None
    reject_threshold: float | None
    reachable: bool
    n: int
    accepted: int
    rejected: int
    reviewed: int
    review_rate: float
    accept_precision: float | None
    reject_precision: float | None
    unreviewed_errors: int
    unreviewed_error_rate: float
    expected_cost: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the keys of the module doc)."""
        return asdict(self)


def _score(probs: ArrayLike, positive: int) -> NDArray[np.float64]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or not 0 <= positive < p.shape[1]:
        raise ValueError(f"positive must be a column of the (n, K) probabilities, got {positive}")
    return p[:, positive]


def apply_rule(
    score: ArrayLike,
    y: ArrayLike,
    positive: int,
    upper: float | None,
    lower: float | None,
    rule: str,
    reachable: bool,
    costs: tuple[float, float] | None = None,
    note: str = "",
) -> Routing:
    """Accept when score >= ``upper``, reject when score <= ``lower`` (accept wins where
    both hold), review the rest; scored against the gold labels ``y``."""
    s = np.asarray(score, dtype=np.float64)
    gold = np.asarray(y) == positive
    accept = np.zeros(len(s), bool) if upper is None else s >= upper
    reject = (np.zeros(len(s), bool) if lower is None else s <= lower) & ~accept
    review = ~(accept | reject)
    errors = int(np.sum(accept & ~gold) + np.sum(reject & gold))
    n = len(s)
    cost = None
    if costs is not None:
        cost = float((review.sum() * costs[0] + errors * costs[1]) / max(n, 1))
    return Routing(
        rule=rule,
        accept_threshold=upper,
        reject_threshold=lower,
        reachable=reachable,
        n=n,
        accepted=int(accept.sum()),
        rejected=int(reject.sum()),
        reviewed=int(review.sum()),
        review_rate=float(review.mean()) if n else float("nan"),
        accept_precision=float(gold[accept].mean()) if accept.any() else None,
        reject_precision=float((~gold[reject]).mean()) if reject.any() else None,
        unreviewed_errors=errors,
        unreviewed_error_rate=errors / n if n else float("nan"),
        expected_cost=cost,
        note=note,
    )


def route(
    calib_probs: ArrayLike,
    calib_y: ArrayLike,
    test_probs: ArrayLike,
    test_y: ArrayLike,
    positive: int,
    precision: float = 0.9,
    confidence: float = 0.95,
    costs: tuple[float, float] | None = None,
) -> Routing:
    """The abstain band chosen on (calib_probs, calib_y) applied to the test set.

    ``reachable`` is True when both sides reached the target on C (a side that did not
    never decides: its items go to review)."""
    band = abstain_band(calib_probs, calib_y, positive, precision=precision, confidence=confidence)
    return apply_rule(
        _score(test_probs, positive),
        test_y,
        positive,
        band.upper,
        band.lower,
        "guaranteed",
        band.upper is not None and band.lower is not None,
        costs,
        band.note,
    )


def naive_route(
    probs: ArrayLike,
    y: ArrayLike,
    positive: int,
    precision: float = 0.9,
    costs: tuple[float, float] | None = None,
) -> Routing:
    """The judge taken at its word: accept at stated P >= precision, reject at <= 1 - precision."""
    return apply_rule(
        _score(probs, positive),
        y,
        positive,
        precision,
        1.0 - precision,
        "naive",
        True,
        costs,
        "thresholds are the target itself, applied to the stated probabilities",
    )


def cost_route(
    probs: ArrayLike, y: ArrayLike, positive: int, cost_review: float, cost_error: float
) -> Routing:
    """Review when min(P, 1 - P) x cost_error > cost_review (the expected cost of deciding
    automatically exceeds a review's), else decide by the more probable side."""
    if not (cost_review >= 0 and cost_error > 0):
        raise ValueError("costs: a review costs >= 0 and an error > 0")
    ratio = cost_review / cost_error
    upper, lower = (1.0 - ratio, ratio) if ratio < 0.5 else (0.5, 0.5)
    return apply_rule(
        _score(probs, positive),
        y,
        positive,
        upper,
        lower if ratio < 0.5 else float(np.nextafter(0.5, 0.0)),
        "cost",
        True,
        (cost_review, cost_error),
        f"review when min(P, 1-P) > {ratio:.4g} (= cost of a review / cost of an error)",
    )


def review_curve(
    probs: ArrayLike, y: ArrayLike, positive: int, points: int = 21
) -> list[dict[str, float]]:
    """Review rate vs unreviewed error rate when the items whose P(positive) is nearest 0.5
    are reviewed first and the rest decided by the more probable side (``points`` rates
    from 0 to 1)."""
    s = _score(probs, positive)
    gold = np.asarray(y) == positive
    order = np.argsort(np.abs(s - 0.5), kind="stable")  # least confident first
    wrong = (s >= 0.5) != gold
    n = len(s)
    out = []
    for rate in np.linspace(0.0, 1.0, points):
        k = round(float(rate) * n)
        unreviewed = np.ones(n, bool)
        unreviewed[order[:k]] = False
        out.append(
            {
                "review_rate": k / n if n else 0.0,
                "unreviewed_error_rate": float(np.sum(wrong & unreviewed) / n) if n else 0.0,
            }
        )
    return out


__all__ = ["Routing", "apply_rule", "cost_route", "naive_route", "review_curve", "route"]
