"""Compare calibrators on repeated stratified calibration/test splits (the paper's table, extended)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal.calibration import Calibrator, make_calibrator, normalise
from verbcal.calibration.specs import parse_spec
from verbcal.metrics import DEFAULT_BINS, METRICS, summary

IntArray = NDArray[np.int64]


def stratified_split(
    y: IntArray, calib: float | int, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Random calibration/test indices keeping each label's share.

    ``calib`` is a fraction in (0, 1) or a number of calibration items. Each label with
    at least two items keeps one in each part; the count per label is rounded so the
    total matches the requested size as closely as possible.
    """
    n = len(y)
    size = round(calib * n) if isinstance(calib, float) and calib < 1 else int(calib)
    if not 0 < size < n:
        raise ValueError(f"calibration size must leave items on both sides: got {size} of {n}")
    labels, counts = np.unique(y, return_counts=True)
    quota = _apportion(counts, size)
    calib_idx, test_idx = [], []
    for label, take in zip(labels, quota, strict=True):
        members = rng.permutation(np.flatnonzero(y == label))
        calib_idx.append(members[:take])
        test_idx.append(members[take:])
    return np.sort(np.concatenate(calib_idx)), np.sort(np.concatenate(test_idx))


def check_split(y: IntArray, calib: float | int, labels: Sequence[str]) -> None:
    """Raise ValueError unless :func:`stratified_split` leaves every label present in ``y``
    on both sides (at least one calibration and one test item each).

    The per-label counts of the split do not depend on the seed, so one check covers
    every repeat. The message names the label, its count and what to change.
    """
    n = len(y)
    size = round(calib * n) if isinstance(calib, float) and calib < 1 else int(calib)
    if not 0 < size < n:
        raise ValueError(
            f"a calibration part of {size} of {n} items leaves no test items: "
            "choose a share strictly between 0 and 1 (e.g. 0.5)"
        )
    present, counts = np.unique(y, return_counts=True)
    quota = _apportion(counts, size)
    for index, total, take in zip(present, counts, quota, strict=True):
        name = labels[index] if 0 <= index < len(labels) else str(index)
        if total < 2:
            raise ValueError(
                f"label {name!r} has only {total} labelled item, so it cannot be in both the "
                "calibration and the test part: label more items of it"
            )
        if take == 0 or take == total:
            side = "calibration" if take == 0 else "test"
            raise ValueError(
                f"a calibration share of {calib:g} ({size} of {n} items) leaves label {name!r} "
                f"({total} items) with no {side} item: choose a share closer to 0.5"
            )


def _apportion(counts: IntArray, size: int) -> IntArray:
    """Per-label calibration counts summing to ``size`` (largest remainders), 1 <= c < n where possible."""
    exact = counts * size / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quota), kind="stable")
    for index in order[: size - quota.sum()]:
        quota[index] += 1
    low, high = np.minimum(1, counts - 1), np.maximum(counts - 1, 0)
    quota = np.clip(quota, low, high)
    # Clipping can move the total off size: hand the difference to labels with room,
    # largest remainder first when adding, smallest first when taking away.
    while quota.sum() < size and np.any(quota < high):
        index = next(i for i in order if quota[i] < high[i])
        quota[index] += 1
    while quota.sum() > size and np.any(quota > low):
        index = next(i for i in order[::-1] if quota[i] > low[i])
        quota[index] -= 1
    return quota


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
    """Fit every method on ``calib_idx`` and score it on ``test_idx``."""
    out = {}
    for method in methods:
        variant = parse_spec(method)
        kwargs = {**variant.kwargs, **(options or {}).get(method, {})}
        calibrator = make_calibrator(variant.method, **kwargs)
        calibrator.fit(probs[calib_idx], y[calib_idx], labels=labels)
        q = calibrator.predict_proba(probs[test_idx])
        out[method] = (summary(q, y[test_idx], n_bins=n_bins), calibrator)
    return out


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
) -> list[SplitResult]:
    """Every method scored on ``repeats`` random stratified splits (seeded).

    ``options`` holds constructor options per method name (e.g. a fixed floor).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    check_split(y, calib, labels)
    probs = normalise(probs)
    rng = np.random.default_rng(seed)
    results = []
    for repeat in range(repeats):
        calib_idx, test_idx = stratified_split(y, calib, rng)
        scored = score_split(probs, y, calib_idx, test_idx, methods, labels, n_bins, options)
        for method, (metrics, calibrator) in scored.items():
            params = dict(calibrator.state)
            params["floor"] = calibrator.floor_
            results.append(SplitResult(method, repeat, metrics, params, tuple(calibrator.warnings)))
        if on_repeat is not None:
            on_repeat(repeat)
    return results


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
    rows = []
    methods = list(dict.fromkeys(r.method for r in results))
    for method in methods:
        mine = [r.metrics for r in results if r.method == method]
        for metric in METRICS:
            values = np.array([m[metric] for m in mine], dtype=np.float64)
            values = values[~np.isnan(values)]
            mean = float(values.mean()) if len(values) else float("nan")
            sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            rows.append({"method": method, "metric": metric, "mean": mean, "sd": sd})
    return rows


__all__ = ["SplitResult", "compare", "score_split", "stratified_split", "summarise"]
