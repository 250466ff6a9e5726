"""The study's named rows: one per metric value, one per threshold test.

Both are NamedTuples, so they still write as plain CSV rows and unpack like tuples, but
code reads them by field name.
"""

from __future__ import annotations

from typing import NamedTuple


class MetricRow(NamedTuple):
    """One tidy row (``tidy.csv``): a metric or fitted parameter of one variant on one split."""

    dataset: str
    method: str
    size: int
    repeat: int
    metric: str
    value: float


class ThresholdOutcome(NamedTuple):
    """A threshold chosen on the calibration part for (class, target, rule), tested on the rest."""

    cls: int
    target: float
    rule: str
    reachable: bool
    threshold: float
    test_predicted: int
    test_precision: float
    test_recall: float
    met: float


class ThresholdRow(NamedTuple):
    """One row of ``thresholds.csv``: a :class:`ThresholdOutcome` of one variant on one split."""

    dataset: str
    method: str
    size: int
    repeat: int
    cls: int
    target: float
    rule: str
    reachable: bool
    threshold: float
    test_predicted: int
    test_precision: float
    test_recall: float
    met: float


TIDY_COLUMNS: tuple[str, ...] = MetricRow._fields
THRESHOLD_COLUMNS: tuple[str, ...] = ThresholdRow._fields

__all__ = ["THRESHOLD_COLUMNS", "TIDY_COLUMNS", "MetricRow", "ThresholdOutcome", "ThresholdRow"]
