"""Decisions from calibrated probabilities.

* :mod:`verbcal.decide.thresholds`: per-class thresholds for a precision or recall target whose
  guarantee covers the scan, the abstain band, selective prediction.
* :mod:`verbcal.decide.sets`: split-conformal prediction sets (LAC, APS, per class).
* :mod:`verbcal.decide.cost`: Bayes-optimal actions under a cost matrix.
"""

from verbcal.decide.cost import CostMatrix, bayes_actions, cost_report
from verbcal.decide.sets import ConformalSets, fit_sets, set_summary
from verbcal.decide.thresholds import (
    DEFAULT_PRECISION,
    TIE_STEP,
    AbstainBand,
    PRCurve,
    RiskCoverage,
    SelectiveResult,
    ThresholdResult,
    abstain_band,
    accuracy_at_coverage,
    apply_threshold,
    aurc,
    candidate_ranks,
    clopper_pearson_lower,
    items_needed,
    pr_curve,
    risk_coverage,
    selective_threshold,
    threshold_for,
)

__all__ = [
    "DEFAULT_PRECISION",
    "TIE_STEP",
    "AbstainBand",
    "ConformalSets",
    "CostMatrix",
    "PRCurve",
    "RiskCoverage",
    "SelectiveResult",
    "ThresholdResult",
    "abstain_band",
    "accuracy_at_coverage",
    "apply_threshold",
    "aurc",
    "bayes_actions",
    "candidate_ranks",
    "clopper_pearson_lower",
    "cost_report",
    "fit_sets",
    "items_needed",
    "pr_curve",
    "risk_coverage",
    "selective_threshold",
    "set_summary",
    "threshold_for",
]
