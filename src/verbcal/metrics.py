"""Metrics over predicted distributions, each a plain function of ``(q, y)``.

``q`` is an (n, K) array of probabilities (rows are assumed to sum to 1; they are not
re-normalised here), ``y`` an (n,) array of gold label indices in [0, K). Every function
raises ``ValueError`` on n = 0, on mismatched shapes and on labels outside [0, K).

Conventions, fixed for all functions:

* the predicted label is the argmax of ``q``, ties going to the first label;
* ECE and MCE are top-label (confidence = max q, correct = argmax == y), also for K = 2;
* ties: two scores are tied when they are equal after rounding to :data:`TIE_DECIMALS` = 12
  decimals (:func:`tie_scores`), so values that differ by float noise only (63/105 next to
  0.6, from a row written with another sum) count as one value; AUROC, the thresholds of
  :mod:`verbcal.decide` and the conformal scores all use this one rule;
* binning follows :mod:`verbcal.binning`: equal-width bins are right-closed, a
  confidence within 1e-9 of an edge k/B belongs to the lower bin, 0 to the first bin and
  1.0 to the last; the default is 15 equal-width bins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from verbcal.binning import bins_from_edges, equal_mass_edges, equal_width_bins

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Binning = Literal["equal_width", "equal_mass"]

NLL_CLIP = 1e-12
"""Lower clip of q_y in :func:`nll`, so that a zero probability costs -ln(1e-12) = 27.63."""

DEFAULT_BINS = 15
METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "ece", "mce", "nll", "brier", "auroc")
"""The metrics of :func:`summary` and :func:`bootstrap_ci`, in display order."""
LOWER_IS_BETTER = frozenset({"ece", "mce", "nll", "brier", "nll_fit"})
"""The metrics (and the study's ``nll_fit``) where a smaller value is better; the others
(accuracy, macro-F1, AUROC) are better when larger."""

TIE_DECIMALS = 12
"""Scores equal after rounding to this many decimals are ties (see :func:`tie_scores`)."""

_BOOT_CHUNK = 4_000_000  # resampled rows drawn at once in bootstrap_ci


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram; ``confidence`` and ``accuracy`` are nan if empty."""

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


def check_inputs(q: ArrayLike, y: ArrayLike) -> tuple[FloatArray, IntArray]:
    """Return ``(q, y)`` as float64 (n, K) and int64 (n,) arrays, or raise ValueError."""
    q_arr = np.asarray(q, dtype=np.float64)
    y_raw = np.asarray(y)
    if q_arr.ndim != 2:
        raise ValueError(f"q must be a 2-d (n, K) array, got shape {q_arr.shape}")
    n, k = q_arr.shape
    if n == 0:
        raise ValueError("no items: metrics need at least one row (n = 0)")
    if k == 0:
        raise ValueError("q has no columns (K = 0)")
    if y_raw.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match q, got {y_raw.shape}")
    if y_raw.dtype.kind not in "iu":
        raise ValueError(f"y must hold integer label indices, got dtype {y_raw.dtype}")
    y_arr = y_raw.astype(np.int64, copy=False)
    if y_arr.min() < 0 or y_arr.max() >= k:
        raise ValueError(f"labels in y must lie in [0, {k}), got {y_arr.min()}..{y_arr.max()}")
    return q_arr, y_arr


def tie_scores(x: ArrayLike) -> FloatArray:
    """Scores rounded to :data:`TIE_DECIMALS` (12) decimals: the one tie rule of verbcal.

    Normalising a row leaves float noise in the last bits (a row written as percentages
    adding to 105 gives ``63 / 105 = 0.6000000000000001`` where the same row adding to 100
    gives 0.6); such values are mathematically equal and must rank as ties. Rounding to 12
    decimals (``numpy.round``) maps them to one value, while probabilities that really differ
    (a verbalized grid, a calibrator's output) stay apart: they differ by far more than
    1e-12. Rank-based results (AUROC, operating points, conformal quantiles) are computed on
    these values, and a threshold is applied with the same rule
    (:func:`verbcal.decide.apply_threshold`). Non-finite values pass through unchanged.

    The rule is absolute, so probabilities saturated within 1e-12 of 0 or 1 (a calibrator
    on easy data) tie as well: their ordering below 1e-12 is not counted.
    """
    return np.asarray(np.round(np.asarray(x, dtype=np.float64), TIE_DECIMALS), dtype=np.float64)


def predicted(q: ArrayLike) -> IntArray:
    """Predicted label per row: argmax of q, ties going to the first (lowest) index."""
    return np.asarray(np.argmax(np.asarray(q, dtype=np.float64), axis=1), dtype=np.int64)


def accuracy(q: ArrayLike, y: ArrayLike) -> float:
    """Accuracy: fraction of rows with ``predicted(q) == y``."""
    q_arr, y_arr = check_inputs(q, y)
    return float(np.mean(predicted(q_arr) == y_arr))


def _f1_per_class(tp: FloatArray, n_pred: FloatArray, n_true: FloatArray) -> FloatArray:
    """F1 = 2 tp / (n_pred + n_true) per class, 0 where the denominator is 0."""
    denom = n_pred + n_true
    return np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def macro_f1(q: ArrayLike, y: ArrayLike) -> float:
    """Macro F1: unweighted mean over all K labels of F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k).

    A label that is never predicted and never gold (zero denominator) counts as F1 = 0.
    """
    q_arr, y_arr = check_inputs(q, y)
    k = q_arr.shape[1]
    pred = predicted(q_arr)
    tp = np.bincount(y_arr[pred == y_arr], minlength=k).astype(np.float64)
    n_pred = np.bincount(pred, minlength=k).astype(np.float64)
    n_true = np.bincount(y_arr, minlength=k).astype(np.float64)
    return float(np.mean(_f1_per_class(tp, n_pred, n_true)))


def _gold_prob(q: FloatArray, y: IntArray) -> FloatArray:
    return q[np.arange(len(y)), y]


def nll(q: ArrayLike, y: ArrayLike) -> float:
    """Negative log-likelihood: mean over rows of -ln(max(q_y, NLL_CLIP)), NLL_CLIP = 1e-12."""
    q_arr, y_arr = check_inputs(q, y)
    return float(-np.mean(np.log(np.maximum(_gold_prob(q_arr, y_arr), NLL_CLIP))))


def _brier_items(q: FloatArray, y: IntArray) -> FloatArray:
    return np.asarray(np.sum(q * q, axis=1) - 2.0 * _gold_prob(q, y) + 1.0, dtype=np.float64)


def brier(q: ArrayLike, y: ArrayLike) -> float:
    """Multiclass Brier score: mean over rows of sum_k (q_k - 1[y = k])^2 (range [0, 2])."""
    q_arr, y_arr = check_inputs(q, y)
    return float(np.mean(_brier_items(q_arr, y_arr)))


def _binary_auroc(score: FloatArray, positive: NDArray[np.bool_]) -> float:
    """Mann-Whitney AUROC of ``score`` for ``positive`` (ties, as :func:`tie_scores` defines
    them, get half credit); nan if undefined."""
    n_pos = int(np.count_nonzero(positive))
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(tie_scores(score))
    u = float(np.sum(ranks[positive])) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def auroc(q: ArrayLike, y: ArrayLike) -> float:
    """Area under the ROC curve, ties counting half (Mann-Whitney U with average ranks).

    Scores equal after :func:`tie_scores` (12 decimals) are ties, so rows that are the same
    distribution written with different sums rank together.

    K = 2: AUROC of q[:, 1] for label 1 (the second label is the positive one); nan if y
    holds only one label. K > 2: macro one-vs-rest mean of the AUROC of q[:, k] for
    y == k over the labels k that have both positives and negatives in y; nan if none.
    """
    q_arr, y_arr = check_inputs(q, y)
    k = q_arr.shape[1]
    if k == 2:
        return _binary_auroc(q_arr[:, 1], y_arr == 1)
    scores = [_binary_auroc(q_arr[:, c], y_arr == c) for c in range(k)]
    defined = [s for s in scores if not np.isnan(s)]
    return float(np.mean(defined)) if defined else float("nan")


def _bin_index(
    confidence: FloatArray, n_bins: int, binning: Binning
) -> tuple[IntArray, FloatArray]:
    """Bin index per confidence and the upper edges of the bins."""
    if binning == "equal_width":
        edges = np.arange(1, n_bins + 1, dtype=np.float64) / n_bins
        return equal_width_bins(confidence, n_bins), edges
    if binning == "equal_mass":
        if n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, got {n_bins}")
        edges = equal_mass_edges(confidence, n_bins)
        return bins_from_edges(confidence, edges), edges
    raise ValueError(f"binning must be 'equal_width' or 'equal_mass', got {binning!r}")


def _weighted_count(index: IntArray, weights: FloatArray, size: int) -> FloatArray:
    """Sum of ``weights`` per value of ``index`` in [0, size) (numpy bincount)."""
    return np.asarray(np.bincount(index, weights=weights, minlength=size), dtype=np.float64)


def _bin_sums(
    confidence: FloatArray, correct: FloatArray, n_bins: int, binning: Binning
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per bin: count, sum of confidence, sum of correct, and the upper edges."""
    index, edges = _bin_index(confidence, n_bins, binning)
    size = len(edges)
    count = np.bincount(index, minlength=size).astype(np.float64)
    conf_sum = _weighted_count(index, confidence, size)
    correct_sum = _weighted_count(index, correct, size)
    return count, conf_sum, correct_sum, edges


def _binned_ece(
    confidence: FloatArray, correct: FloatArray, n_bins: int, binning: Binning
) -> float:
    """sum_b (n_b / n) |acc_b - conf_b| = sum_b |sum_b(correct - conf)| / n, by bincount."""
    index, edges = _bin_index(confidence, n_bins, binning)
    gap = _weighted_count(index, correct - confidence, len(edges))
    return float(np.sum(np.abs(gap)) / len(confidence))


def _top_label(q: FloatArray, y: IntArray) -> tuple[FloatArray, FloatArray]:
    pred = predicted(q)
    confidence = q[np.arange(len(y)), pred]
    return confidence, (pred == y).astype(np.float64)


def ece(
    q: ArrayLike, y: ArrayLike, n_bins: int = DEFAULT_BINS, binning: Binning = "equal_width"
) -> float:
    """Top-label expected calibration error: sum_b (n_b / n) |acc_b - conf_b|.

    conf = max_k q_k, correct = 1[argmax q == y]; acc_b and conf_b are their means in bin b,
    n_b its count. Bins as in :mod:`verbcal.binning` (``equal_width`` or ``equal_mass``).
    """
    q_arr, y_arr = check_inputs(q, y)
    confidence, correct = _top_label(q_arr, y_arr)
    return _binned_ece(confidence, correct, n_bins, binning)


def mce(
    q: ArrayLike, y: ArrayLike, n_bins: int = DEFAULT_BINS, binning: Binning = "equal_width"
) -> float:
    """Top-label maximum calibration error: max over non-empty bins b of |acc_b - conf_b|."""
    q_arr, y_arr = check_inputs(q, y)
    confidence, correct = _top_label(q_arr, y_arr)
    count, conf_sum, correct_sum, _ = _bin_sums(confidence, correct, n_bins, binning)
    filled = count > 0
    return float(np.max(np.abs(correct_sum[filled] - conf_sum[filled]) / count[filled]))


def classwise_ece(
    q: ArrayLike, y: ArrayLike, n_bins: int = DEFAULT_BINS, binning: Binning = "equal_width"
) -> float:
    """Classwise ECE: mean over all K classes k of the binned ECE of q[:, k] against 1[y = k].

    Each class is binned on its own column with the same scheme (for ``equal_mass``, edges
    come from that column's values).
    """
    q_arr, y_arr = check_inputs(q, y)
    per_class = [
        _binned_ece(q_arr[:, c], (y_arr == c).astype(np.float64), n_bins, binning)
        for c in range(q_arr.shape[1])
    ]
    return float(np.mean(per_class))


def reliability(
    q: ArrayLike, y: ArrayLike, n_bins: int = DEFAULT_BINS, binning: Binning = "equal_width"
) -> list[ReliabilityBin]:
    """Top-label reliability diagram data, one entry per bin, empty bins included.

    Each bin gives its edges (lower, upper], its count, the mean confidence and the
    accuracy of its rows (nan for an empty bin). Equal-mass bins start at 0 and end at
    the largest confidence; they can be fewer than ``n_bins`` on coarse grids.
    """
    q_arr, y_arr = check_inputs(q, y)
    confidence, correct = _top_label(q_arr, y_arr)
    count, conf_sum, correct_sum, edges = _bin_sums(confidence, correct, n_bins, binning)
    lower = np.concatenate(([0.0], edges[:-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = conf_sum / count
        mean_acc = correct_sum / count
    return [
        ReliabilityBin(
            lower=float(lower[b]),
            upper=float(edges[b]),
            count=int(count[b]),
            confidence=float(mean_conf[b]),
            accuracy=float(mean_acc[b]),
        )
        for b in range(len(edges))
    ]


_METRIC_FUNCS: dict[str, Callable[[FloatArray, IntArray, int], float]] = {
    "accuracy": lambda q, y, b: accuracy(q, y),
    "macro_f1": lambda q, y, b: macro_f1(q, y),
    "ece": lambda q, y, b: ece(q, y, b),
    "mce": lambda q, y, b: mce(q, y, b),
    "nll": lambda q, y, b: nll(q, y),
    "brier": lambda q, y, b: brier(q, y),
    "auroc": lambda q, y, b: auroc(q, y),
}


def summary(q: ArrayLike, y: ArrayLike, n_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """All of METRICS (accuracy, macro_f1, ece, mce, nll, brier, auroc), equal-width bins."""
    q_arr, y_arr = check_inputs(q, y)
    return {name: _METRIC_FUNCS[name](q_arr, y_arr, n_bins) for name in METRICS}


def evaluate(
    q: Any,
    y: Any,
    labels: Sequence[str] | None = None,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for probabilities ``q`` (n, K) and gold labels ``y``.

    ``q`` may be a pandas / polars DataFrame with one column per label (matched by name
    when ``labels`` is given); ``y`` holds label names (then ``labels``, or the frame's
    columns, give their order) or integer indices. Definitions: see each metric's function
    (ECE/MCE top-label with ``n_bins`` equal-width right-closed bins; NLL clipped at 1e-12).
    """
    from verbcal.calibration.inputs import as_matrix, as_targets

    matrix, columns = as_matrix(q, labels)
    q_arr = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    names = tuple(labels) if labels is not None else columns
    names = names or tuple(str(k) for k in range(q_arr.shape[1]))
    return summary(q_arr, as_targets(y, names), n_bins=n_bins)


def bootstrap_indices(n: int, n_boot: int, seed: int) -> Iterator[IntArray]:
    """Row indices of the bootstrap resamples, in chunks of whole resamples.

    One ``numpy.random.default_rng(seed)`` draws, chunk after chunk, ``integers(0, n)``
    arrays of shape (chunk, n); the concatenated chunks are the (n_boot, n) resamples.
    """
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _BOOT_CHUNK // n)
    for start in range(0, n_boot, per_chunk):
        rows = min(per_chunk, n_boot - start)
        yield rng.integers(0, n, size=(rows, n), dtype=np.int64)


def _boot_ece_mce(
    confidence: FloatArray, correct: FloatArray, idx: IntArray, n_bins: int
) -> tuple[FloatArray, FloatArray]:
    """Equal-width ECE and MCE of every resample in ``idx`` with one bincount per sum."""
    n_rep, n = idx.shape
    flat = (np.arange(n_rep)[:, None] * n_bins + equal_width_bins(confidence, n_bins)[idx]).ravel()
    size = n_rep * n_bins
    count = np.bincount(flat, minlength=size).reshape(n_rep, n_bins)
    gap = _weighted_count(flat, (correct - confidence)[idx].ravel(), size)
    abs_gap = np.abs(gap.reshape(n_rep, n_bins))
    per_bin = np.divide(abs_gap, count, out=np.zeros_like(abs_gap), where=count > 0)
    return abs_gap.sum(axis=1) / n, per_bin.max(axis=1)


def _boot_macro_f1(pred: IntArray, y: IntArray, k: int, idx: IntArray) -> FloatArray:
    """Macro F1 of every resample in ``idx`` (per-class counts by offset bincount)."""
    n_rep = idx.shape[0]
    offset = np.arange(n_rep)[:, None] * k
    size = n_rep * k
    gold, guess = (offset + y[idx]).ravel(), (offset + pred[idx]).ravel()
    hit = (pred == y)[idx].ravel().astype(np.float64)
    tp = _weighted_count(gold, hit, size).reshape(n_rep, k)
    n_true = np.bincount(gold, minlength=size).reshape(n_rep, k).astype(np.float64)
    n_pred = np.bincount(guess, minlength=size).reshape(n_rep, k).astype(np.float64)
    return np.asarray(_f1_per_class(tp, n_pred, n_true).mean(axis=1), dtype=np.float64)


def _boot_binary_auroc(score: FloatArray, positive: NDArray[np.bool_], idx: IntArray) -> FloatArray:
    """Mann-Whitney AUROC of every resample in ``idx`` (nan where one class is missing).

    Rows are grouped by distinct score; per resample and group, positives count every
    negative in lower groups fully and those in their own group half.
    """
    n_rep = idx.shape[0]
    values, group = np.unique(tie_scores(score), return_inverse=True)
    size, n_groups = n_rep * len(values), len(values)
    flat = (np.arange(n_rep)[:, None] * n_groups + group[idx]).ravel()
    pos = _weighted_count(flat, positive[idx].ravel().astype(np.float64), size)
    neg = np.bincount(flat, minlength=size) - pos
    pos, neg = pos.reshape(n_rep, n_groups), neg.reshape(n_rep, n_groups)
    neg_below = np.cumsum(neg, axis=1) - neg
    u = np.sum(pos * (neg_below + 0.5 * neg), axis=1)
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(pairs > 0, u / pairs, np.nan), dtype=np.float64)


def _boot_auroc(q: FloatArray, y: IntArray, idx: IntArray) -> FloatArray:
    """:func:`auroc` of every resample in ``idx`` (binary, or macro one-vs-rest ignoring nan)."""
    if q.shape[1] == 2:
        return _boot_binary_auroc(q[:, 1], y == 1, idx)
    per_class = np.stack([_boot_binary_auroc(q[:, c], y == c, idx) for c in range(q.shape[1])])
    defined = ~np.isnan(per_class)
    total = np.where(defined, per_class, 0.0).sum(axis=0)
    n_defined = defined.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(n_defined > 0, total / n_defined, np.nan), dtype=np.float64)


def _boot_chunk(
    q: FloatArray, y: IntArray, idx: IntArray, names: Sequence[str], n_bins: int
) -> dict[str, FloatArray]:
    """Values of the metrics ``names`` on each resample of one chunk of indices."""
    confidence, correct = _top_label(q, y)
    out: dict[str, FloatArray] = {}
    if "accuracy" in names:
        out["accuracy"] = correct[idx].mean(axis=1)
    if "nll" in names:
        out["nll"] = -np.log(np.maximum(_gold_prob(q, y), NLL_CLIP))[idx].mean(axis=1)
    if "brier" in names:
        out["brier"] = _brier_items(q, y)[idx].mean(axis=1)
    if "ece" in names or "mce" in names:
        out["ece"], out["mce"] = _boot_ece_mce(confidence, correct, idx, n_bins)
    if "macro_f1" in names:
        out["macro_f1"] = _boot_macro_f1(predicted(q), y, q.shape[1], idx)
    if "auroc" in names:
        out["auroc"] = _boot_auroc(q, y, idx)
    return out


def bootstrap_ci(
    q: ArrayLike,
    y: ArrayLike,
    metrics: Sequence[str] = METRICS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals over items, always holding the estimate.

    Resamples rows with replacement ``n_boot`` times (see :func:`bootstrap_indices`),
    computes each metric as in :func:`summary` on every resample and takes the
    (1 - level)/2 and (1 + level)/2 percentiles (numpy linear interpolation). Resamples on
    which a metric is nan (AUROC of a resample with one class) are left out; if all are,
    the interval is (nan, nan).

    Two guarantees on top: the interval is widened to include the point estimate on the
    full data (binned metrics such as ECE and MCE are biased upward under resampling, so
    their percentile interval can lie wholly above the estimate), and, every metric here
    being non-negative, no bound is below 0 (no ``-0.000``).
    """
    q_arr, y_arr = check_inputs(q, y)
    unknown = [m for m in metrics if m not in _METRIC_FUNCS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    if n_boot < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got {n_boot} and {level}")
    chunks = [
        _boot_chunk(q_arr, y_arr, idx, metrics, n_bins)
        for idx in bootstrap_indices(len(y_arr), n_boot, seed)
    ]
    tails = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
    result: dict[str, tuple[float, float]] = {}
    for name in metrics:
        values = np.concatenate([chunk[name] for chunk in chunks])
        values = values[~np.isnan(values)]
        if len(values) == 0:
            result[name] = (float("nan"), float("nan"))
            continue
        lo, hi = np.percentile(values, tails)
        point = _METRIC_FUNCS[name](q_arr, y_arr, n_bins)
        if not np.isnan(point):
            lo, hi = min(lo, point), max(hi, point)
        result[name] = (_non_negative(lo), _non_negative(hi))
    return result


# ------------------------------------------------------------------ per confidence band, per slice

CONFIDENCE_BANDS: tuple[float, float] = (0.6, 0.8)
"""Edges of the confidence bands of :func:`by_band`: low = confidence < 0.6, medium = 0.6 <=
confidence < 0.8, high = confidence >= 0.8 (confidence = max q; a value within 1e-9 of an
edge counts as on it, so the grid values 0.6 and 0.8 open their bands)."""

BAND_NAMES = ("low", "medium", "high")
EDGE_TOLERANCE = 1e-9


def by_band(
    q: ArrayLike,
    y: ArrayLike,
    edges: tuple[float, float] = CONFIDENCE_BANDS,
    n_bins: int = DEFAULT_BINS,
) -> list[dict[str, float | int | str]]:
    """Accuracy and calibration per confidence band (low / medium / high, edges as stated).

    Per band: ``lower`` and ``upper`` edges (confidence in [lower, upper), the last band
    closed at 1), ``n`` items, ``share`` of all items, ``accuracy`` (top-label),
    ``mean_confidence``, ``gap`` = mean_confidence - accuracy (positive: over-confident) and
    ``ece`` (top-label, ``n_bins`` equal-width bins, on the band's items); nan when empty.
    """
    q_arr, y_arr = check_inputs(q, y)
    confidence, correct = _top_label(q_arr, y_arr)
    band = np.searchsorted(np.asarray(edges) - EDGE_TOLERANCE, confidence, side="right")
    bounds = (0.0, *edges, 1.0)
    out: list[dict[str, float | int | str]] = []
    for b, name in enumerate(BAND_NAMES):
        rows = band == b
        n = int(rows.sum())
        acc = float(correct[rows].mean()) if n else float("nan")
        conf = float(confidence[rows].mean()) if n else float("nan")
        out.append(
            {
                "band": name,
                "lower": bounds[b],
                "upper": bounds[b + 1],
                "n": n,
                "share": n / len(y_arr),
                "accuracy": acc,
                "mean_confidence": conf,
                "gap": conf - acc,
                "ece": _binned_ece(confidence[rows], correct[rows], n_bins, "equal_width")
                if n
                else float("nan"),
            }
        )
    return out


def by_slice(
    q: ArrayLike,
    y: ArrayLike,
    keys: Sequence[object],
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, dict[str, object]]:
    """The metrics of :func:`summary` with bootstrap CIs (:func:`bootstrap_ci`) per slice.

    ``keys[i]`` names the slice of row i (``str(key)``; None becomes "(missing)"). Slices
    come in order of size, largest first; each carries ``n``, the metric values and ``ci``.
    Metrics undefined on a slice (AUROC with one class present) are nan.
    """
    q_arr, y_arr = check_inputs(q, y)
    if len(keys) != len(y_arr):
        raise ValueError(f"keys must have one entry per row ({len(y_arr)}), got {len(keys)}")
    names = np.array(["(missing)" if k is None else str(k) for k in keys], dtype=object)
    values, counts = np.unique(names, return_counts=True)
    out: dict[str, dict[str, object]] = {}
    for value in values[np.argsort(-counts, kind="stable")]:
        rows = np.flatnonzero(names == value)
        q_s, y_s = q_arr[rows], y_arr[rows]
        entry: dict[str, object] = {"n": len(rows), **summary(q_s, y_s, n_bins)}
        entry["ci"] = bootstrap_ci(q_s, y_s, n_boot=n_boot, seed=seed, n_bins=n_bins)
        out[str(value)] = entry
    return out


def _non_negative(value: float) -> float:
    """``value`` as a float, with rounding noise below 0 (and -0.0) mapped to 0.0."""
    return float(value) if value > 0 else 0.0


__all__ = [
    "CONFIDENCE_BANDS",
    "DEFAULT_BINS",
    "LOWER_IS_BETTER",
    "METRICS",
    "NLL_CLIP",
    "TIE_DECIMALS",
    "ReliabilityBin",
    "accuracy",
    "auroc",
    "bootstrap_ci",
    "bootstrap_indices",
    "brier",
    "by_band",
    "by_slice",
    "check_inputs",
    "classwise_ece",
    "ece",
    "evaluate",
    "macro_f1",
    "mce",
    "nll",
    "predicted",
    "reliability",
    "summary",
    "tie_scores",
]
