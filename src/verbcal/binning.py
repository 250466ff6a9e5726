"""Bin assignment shared by metrics and histogram binning, with one fixed edge convention.

Equal-width bins over [0, 1] are right-closed: bin b (0-based) holds confidences in
(b/B, (b+1)/B]. A confidence within ``EDGE_TOLERANCE`` of an edge k/B belongs to the
lower bin, so 0.8 from a 0.05 grid lands in the same bin whether it was stored as
0.8 or 0.8000000000000002. Confidence 0 belongs to the first bin, 1.0 to the last.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike, NDArray

EDGE_TOLERANCE = 1e-9


def check_bins(n_bins: object) -> int:
    """``n_bins`` if it is an integer >= 1 (not a bool, not 2.5), else a ValueError (the
    message of :mod:`verbcal.calibration.constraints`)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    return int(n_bins)


def equal_width_bins(confidence: ArrayLike, n_bins: int) -> NDArray[np.int64]:
    """Index in [0, n_bins) of each confidence under the right-closed edge convention."""
    n_bins = check_bins(n_bins)
    scaled = np.asarray(confidence, dtype=np.float64) * n_bins
    index = np.ceil(scaled - EDGE_TOLERANCE * n_bins).astype(np.int64) - 1
    return np.clip(index, 0, n_bins - 1)


def equal_mass_edges(confidence: ArrayLike, n_bins: int) -> NDArray[np.float64]:
    """Upper edges of up to ``n_bins`` bins holding about equally many confidences.

    Edges are the (b/B)-quantiles of the confidences by the inverted empirical CDF (each
    edge is a confidence that occurs, so no bin is empty). Duplicate edges, and edges within
    ``EDGE_TOLERANCE`` of the previous one, are dropped, so equal values always share a bin:
    coarse verbalized grids and small n give fewer bins.
    """
    n_bins = check_bins(n_bins)
    values = np.asarray(confidence, dtype=np.float64)
    if values.size == 0:
        raise ValueError("equal-mass edges need at least one confidence")
    quantiles = np.quantile(values, np.arange(1, n_bins + 1) / n_bins, method="inverted_cdf")
    edges = np.unique(quantiles)
    keep = np.concatenate(([True], np.diff(edges) > EDGE_TOLERANCE))
    return np.asarray(edges[keep], dtype=np.float64)


def bins_from_edges(confidence: ArrayLike, upper_edges: NDArray[np.float64]) -> NDArray[np.int64]:
    """Right-closed bins given ascending upper edges (within ``EDGE_TOLERANCE`` goes lower)."""
    values = np.asarray(confidence, dtype=np.float64)
    index = np.searchsorted(upper_edges, values - EDGE_TOLERANCE, side="left")
    return np.clip(index, 0, len(upper_edges) - 1).astype(np.int64)


__all__ = ["EDGE_TOLERANCE", "bins_from_edges", "equal_mass_edges", "equal_width_bins"]
