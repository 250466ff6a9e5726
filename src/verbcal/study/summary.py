"""Summaries of the study's rows: means with percentile intervals, paired differences,
how often a threshold's promise held."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from verbcal.evaluation.results import paired_over_splits, percentile_interval
from verbcal.jsonio import json_ready
from verbcal.study.rows import MetricRow, ThresholdRow


def by_key(rows: Sequence[MetricRow]) -> dict[tuple[str, str, int, str], dict[int, float]]:
    """(dataset, method, size, metric) → {repeat: value}."""
    out: dict[tuple[str, str, int, str], dict[int, float]] = defaultdict(dict)
    for row in rows:
        out[(row.dataset, row.method, row.size, row.metric)][row.repeat] = row.value
    return out


def summarise(rows: Sequence[MetricRow]) -> list[dict[str, Any]]:
    """One row per (dataset, method, size, metric): mean, lo, hi over repeats, and n."""
    out = []
    for (dataset, method, size, metric), values in by_key(rows).items():
        mean, lo, hi = percentile_interval(list(values.values()))
        out.append(
            {
                "dataset": dataset,
                "method": method,
                "size": size,
                "metric": metric,
                "mean": mean,
                "lo": lo,
                "hi": hi,
                "n": len(values),
            }
        )
    return out


def paired(
    table: Mapping[tuple[str, str, int, str], dict[int, float]],
    dataset: str,
    size: int,
    metric: str,
    a: str,
    b: str,
) -> dict[str, float]:
    """Paired difference a − b over the repeats both have: mean, percentile interval, share a > b."""
    difference = paired_over_splits(
        table.get((dataset, a, size, metric), {}), table.get((dataset, b, size, metric), {})
    )
    return {
        "mean": difference.mean,
        "lo": difference.lo,
        "hi": difference.hi,
        "share_positive": difference.share_positive,
        "n": difference.n,
    }


def threshold_summary(rows: Sequence[ThresholdRow]) -> list[dict[str, Any]]:
    """Per (dataset, method, size, cls, target, rule): how often the promise held.

    ``kept`` = share of repeats meeting the target on the test part, among those where a
    threshold was reachable and predicted at least one test item (``defined`` of them);
    ``reachable`` = share of repeats where the calibration part gave a threshold.
    """
    groups: dict[tuple[Any, ...], list[ThresholdRow]] = defaultdict(list)
    for row in rows:
        groups[(row.dataset, row.method, row.size, row.cls, row.target, row.rule)].append(row)
    out = []
    for (dataset, method, size, cls, target, rule), members in groups.items():
        met = np.array([r.met for r in members])
        defined = ~np.isnan(met)
        recall = np.array([r.test_recall for r in members])
        out.append(
            {
                "dataset": dataset,
                "method": method,
                "size": size,
                "cls": cls,
                "target": target,
                "rule": rule,
                "repeats": len(members),
                "reachable": float(np.mean([r.reachable for r in members])),
                "defined": int(defined.sum()),
                "kept": float(met[defined].mean()) if defined.any() else math.nan,
                "recall": float(np.nanmean(recall)) if np.any(~np.isnan(recall)) else math.nan,
            }
        )
    return out


def summary_json(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``--json`` output: {"dataset", "method", "size", "metric", "mean", "lo", "hi"}."""
    keys = ("dataset", "method", "size", "metric", "mean", "lo", "hi")
    return json_ready([{k: r[k] for k in keys} for r in rows])
