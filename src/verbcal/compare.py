"""Compare calibrators on repeated stratified calibration/test splits (the paper's table, extended).

A thin front over :mod:`verbcal.evaluation`: :func:`compare` draws the splits with
:func:`~verbcal.evaluation.repeated_splits` and evaluates them with
:func:`~verbcal.evaluation.evaluate_splits`; :class:`SplitResult` is the flat record the
CLI table and ``--json`` render.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal.calibration import Calibrator, normalise
from verbcal.evaluation import (
    Split,
    check_split,
    evaluate_split,
    evaluate_splits,
    mean_sd_rows,
    repeated_splits,
    stratified_split,
)
from verbcal.metrics import DEFAULT_BINS

IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class SplitResult:
    """Scores of one method on the test part of one split."""

    method: str
    repeat: int
    metrics: dict[str, float]
    params: dict[str, Any]
    warnings: tuple[str, ...] = ()
    """The calibrator's fit warnings on this split (e.g. T at the edge of its range)."""


def score_split(
    probs: NDArray[np.float64],
    y: IntArray,
    calib_idx: IntArray,
    test_idx: IntArray,
    methods: Sequence[str],
    labels: Sequence[str],
    n_bins: int = DEFAULT_BINS,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, tuple[dict[str, float], Calibrator]]:
    """Fit every method on ``calib_idx`` and score it on ``test_idx`` (see
    :func:`verbcal.evaluation.evaluate_split`): method → (test metrics, calibrator)."""
    split = Split(np.asarray(calib_idx), np.asarray(test_idx))
    scores = evaluate_split(probs, y, split, methods, labels=labels, n_bins=n_bins, options=options)
    return {s.method: (s.metrics, s.calibrator) for s in scores}


def compare(
    probs: NDArray[np.float64],
    y: IntArray,
    labels: Sequence[str],
    methods: Sequence[str],
    calib: float | int = 0.5,
    repeats: int = 20,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
    options: dict[str, dict[str, Any]] | None = None,
    on_repeat: Callable[[int], None] | None = None,
    reply: str = "probs",
) -> list[SplitResult]:
    """Every method scored on ``repeats`` random stratified splits (seeded).

    ``options`` holds constructor options per method name (e.g. a fixed floor); ``reply``
    says which reply the rows were read from (``verbal``: ``auto`` also weighs ``words``).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    check_split(y, calib, labels)
    splits = repeated_splits(y, calib, repeats, seed)
    evaluation = evaluate_splits(
        normalise(probs),
        y,
        splits,
        methods,
        labels=labels,
        n_bins=n_bins,
        options=options,
        on_split=None if on_repeat is None else lambda split, _: on_repeat(split.repeat),
        reply=reply,
    )
    return [
        SplitResult(s.method, s.repeat, s.metrics, s.fitted, s.warnings) for s in evaluation.scores
    ]


def fit_warnings(results: Sequence[SplitResult]) -> list[str]:
    """One line per (method, warning): how many of the splits it came up in."""
    repeats = len({r.repeat for r in results})
    counts: dict[tuple[str, str], int] = {}
    for r in results:
        for warning in r.warnings:
            counts[(r.method, warning)] = counts.get((r.method, warning), 0) + 1
    return [f"{method}, {n} of {repeats} splits: {text}" for (method, text), n in counts.items()]


def summarise(results: Sequence[SplitResult]) -> list[dict[str, Any]]:
    """Mean and sample sd (ddof = 1; 0 for one repeat) per (method, metric), in method order."""
    methods = list(dict.fromkeys(r.method for r in results))
    return mean_sd_rows(methods, [(r.method, r.metrics) for r in results])


__all__ = [
    "SplitResult",
    "check_split",
    "compare",
    "fit_warnings",
    "score_split",
    "stratified_split",
    "summarise",
]
