"""Decisions from calibrated probabilities.

* :mod:`verbcal.decide.thresholds`: per-class thresholds for a precision or recall target whose
  guarantee covers the scan, the abstain band, selective prediction.
"""

from verbcal.decide.thresholds import (
    TIE_TOLERANCE,
    AbstainBand,
    PRCurve,
    RiskCoverage,
    SelectiveResult,
    ThresholdResult,
    abstain_band,
    accuracy_at_coverage,
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
    "TIE_TOLERANCE",
    "AbstainBand",
    "PRCurve",
    "RiskCoverage",
    "SelectiveResult",
    "ThresholdResult",
    "abstain_band",
    "accuracy_at_coverage",
    "aurc",
    "candidate_ranks",
    "clopper_pearson_lower",
    "items_needed",
    "pr_curve",
    "risk_coverage",
    "selective_threshold",
    "threshold_for",
]
