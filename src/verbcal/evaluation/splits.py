"""Stratified calibration/test splits: one item-level protocol for every evaluation.

Two ways to seed repeated splits, both used by published numbers:

* :func:`repeated_splits` (``compare``, ``run``): one ``numpy.random.default_rng(seed)``
  draws the splits one after another, so split r depends on the splits before it;
* :func:`split_rng` (``study``): each split has its own generator, keyed by
  (seed, dataset, size, repeat), so it does not depend on the rest of the grid or on
  how the grid is cut into worker tasks.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Split:
    """Indices of one calibration/test split (sorted, disjoint); ``repeat`` numbers it."""

    calib: IntArray
    test: IntArray
    repeat: int = 0


def calibration_size(calib: float | int, n: int) -> int:
    """Items in the calibration part: a float in (0, 1) is a share of ``n`` (rounded),
    anything else a count."""
    return round(calib * n) if isinstance(calib, float) and calib < 1 else int(calib)


def stratified_split(
    y: IntArray, calib: float | int, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Random calibration/test indices keeping each label's share.

    ``calib`` is a fraction in (0, 1) or a number of calibration items. Each label with
    at least two items keeps one in each part; the count per label is rounded so the
    total matches the requested size as closely as possible.
    """
    n = len(y)
    size = calibration_size(calib, n)
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
    size = calibration_size(calib, n)
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


def repeated_splits(y: IntArray, calib: float | int, repeats: int, seed: int) -> list[Split]:
    """``repeats`` stratified splits drawn one after another from ``default_rng(seed)``.

    Repeat 0 is the split of ``verbcal run`` and ``verbcal split`` with the same seed.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    rng = np.random.default_rng(seed)
    return [Split(*stratified_split(y, calib, rng), repeat=r) for r in range(repeats)]


def split_rng(seed: int, dataset: str, size: int, repeat: int) -> np.random.Generator:
    """The generator of one study split, independent of the worker and of the rest of the grid:
    ``SeedSequence(seed, spawn_key=(crc32(dataset), size, repeat))``."""
    key = (zlib.crc32(dataset.encode("utf-8")), size, repeat)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def keyed_split(y: IntArray, size: int, seed: int, dataset: str, repeat: int) -> Split:
    """The study's split of (dataset, size, repeat): see :func:`split_rng`."""
    rng = split_rng(seed, dataset, size, repeat)
    return Split(*stratified_split(y, size, rng), repeat=repeat)


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


__all__ = [
    "Split",
    "calibration_size",
    "check_split",
    "keyed_split",
    "repeated_splits",
    "split_rng",
    "stratified_split",
]
