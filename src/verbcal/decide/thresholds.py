"""Thresholds from calibrated probabilities: precision/recall targets with a margin, selective prediction.

Every function takes ``probs``, an (n, K) array of (calibrated) probabilities, and ``y``,
an (n,) array of gold label indices in [0, K), and raises ``ValueError`` on bad input.

Conventions, fixed for all functions:

* **Ties**: scores are compared after :func:`verbcal.metrics.tie_scores` (rounded to 12
  decimals), the one tie rule of verbcal, so values that differ by float noise only
  (0.6200000000000001 next to 0.62) are one score.
* **Predicted ``cls`` at threshold t**: an item counts as predicted ``cls`` when
  ``tie_scores(probs[i, cls]) >= tie_scores(t)`` (one-vs-rest; an item may be predicted for
  several classes): :func:`apply_threshold`, the one rule that applies a threshold, here, in
  :meth:`AbstainBand.decide`, the CLI and on new scores (a test part, production).
* **Operating points**: one per distinct tied score, whose threshold is that score.
  Lowering t past a score adds every item holding that score at once (ties are never
  split), so a coarse verbalized grid (0.05, 0.1 ...) gives few operating points, and a
  target may fall between two of them.
* **Precision** at t = TP / (items predicted ``cls``); **recall** = TP / (items whose
  gold label is ``cls``); **support** = the number of items whose gold label is ``cls``.
* **Clopper-Pearson lower bound** at confidence c for k successes out of m trials: the
  one-sided exact bound ``Beta.ppf(1 - c, k, m - k + 1)`` (0 when k = 0), the ``low`` end
  of ``scipy.stats.binomtest(k, m, alternative="greater").proportion_ci(c)``. For a
  *fixed* threshold, the true precision is below the bound with probability at most 1 - c;
  the bound reaches a target t exactly when the exact binomial p-value
  ``P(Binomial(m, t) >= k)`` is at most 1 - c.
* **Selective prediction**: the model answers with its argmax and abstains when its
  confidence ``max_k probs[i, k]`` is below a threshold; **coverage** = share of items
  kept, **risk** = error rate among the kept items, **selective accuracy** = 1 - risk.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import beta

from verbcal.metrics import TIE_DECIMALS, check_inputs, tie_scores

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Target = Literal["precision", "recall"]
Procedure = Literal["ltt-ranks", "pointwise", "recall-bound"]
DEFAULT_PRECISION = 0.9
"""The precision target when none is given (``verbcal threshold`` and ``verbcal run``)."""

TIE_STEP = 10.0**-TIE_DECIMALS
"""The gap between two neighbouring tied scores (1e-12): a rule "score > v" is the threshold
``v + TIE_STEP`` (see :func:`apply_threshold`)."""


def apply_threshold(scores: ArrayLike, threshold: float) -> NDArray[np.bool_]:
    """Which items a threshold predicts: ``tie_scores(scores) >= tie_scores(threshold)``.

    The one rule that applies a threshold, wherever one is applied (the CLI, ``verbcal run``
    and ``verbcal study`` on the test part, :meth:`AbstainBand.decide`). Both sides are
    rounded by :func:`verbcal.metrics.tie_scores`, so a score that differs from the
    threshold by float noise only (0.62 against 0.6200000000000001) is predicted, as its
    tied twin was when the threshold was chosen, and the rule "score > v" of the
    ``"ltt-ranks"`` procedure is the threshold ``v + TIE_STEP``: it predicts every score
    above v and none equal to it.
    """
    return tie_scores(scores) >= tie_scores(threshold)


COARSE_GRID = 25
"""Fewer distinct scores than this earn a note that the grid limits the operating points."""

RANK_RATIO = math.sqrt(2.0)
"""Spacing of the candidate ranks of :func:`candidate_ranks`: each has about 1/sqrt(2) of the
items of the one before (finer spacing means more tests, each at a stricter level)."""


# ---------------------------------------------------------------------------- inputs and bounds


def _check(probs: ArrayLike, y: ArrayLike) -> tuple[FloatArray, IntArray]:
    """The metrics' input checks (shapes, integer labels in range), plus finite scores."""
    p, y_arr = check_inputs(probs, y)
    if not np.all(np.isfinite(p)):
        raise ValueError("probs holds NaN or infinite values; drop or repair those rows first")
    return p, y_arr


def _check_unit(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and 0.0 < float(value) < 1.0):
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def clopper_pearson_lower(
    successes: ArrayLike, trials: ArrayLike, confidence: float = 0.95
) -> FloatArray:
    """One-sided Clopper-Pearson lower bound on a binomial proportion (vectorised).

    ``L = Beta.ppf(1 - confidence, k, m - k + 1)`` for k successes in m trials, 0 when
    k = 0 and nan when m = 0. ``P(p < L) <= 1 - confidence`` for every true p.
    """
    confidence = _check_unit("confidence", confidence)
    k = np.asarray(successes, dtype=np.float64)
    m = np.asarray(trials, dtype=np.float64)
    k, m = np.broadcast_arrays(k, m)
    out = np.full(k.shape, np.nan)
    ok = m > 0
    positive = ok & (k > 0)
    out[ok & (k == 0)] = 0.0
    out[positive] = beta.ppf(1.0 - confidence, k[positive], m[positive] - k[positive] + 1.0)
    return out


def items_needed(target: float, confidence: float = 0.95) -> int:
    """The fewest items, all correct, whose Clopper-Pearson lower bound reaches ``target``.

    With m items and no error the bound is ``(1 - confidence) ** (1 / m)``; it reaches the
    target once ``m >= log(1 - confidence) / log(target)`` (59 for 0.95 at confidence 0.95).
    """
    target = _check_unit("target", target)
    confidence = _check_unit("confidence", confidence)
    return math.ceil(math.log(1.0 - confidence) / math.log(target) - 1e-9)


def _group_ends(descending: FloatArray) -> IntArray:
    """Last index of each group of equal values in a descending array (of tied scores)."""
    return np.flatnonzero(np.r_[descending[:-1] != descending[1:], True]).astype(np.int64)


# -------------------------------------------------------------------------- precision / recall


@dataclass(frozen=True)
class PRCurve:
    """The precision-recall operating points of one class, highest threshold first.

    ``thresholds[j]`` is the j-th largest distinct tied score ``tie_scores(probs[:, cls])``;
    at it, the items with tied score ``>= thresholds[j]`` count as predicted ``cls``
    (:func:`apply_threshold`). ``n_predicted[j]`` of them are predicted,
    ``true_positives[j]`` of those carry the gold label ``cls``.
    ``precision = true_positives / n_predicted``; ``recall = true_positives / support``
    (nan when ``support`` = 0); ``support`` = items whose gold label is ``cls``.
    """

    cls: int
    thresholds: FloatArray
    precision: FloatArray
    recall: FloatArray
    n_predicted: IntArray
    true_positives: IntArray
    support: int
    n_items: int
    note: str

    @property
    def n_operating_points(self) -> int:
        """Number of distinct thresholds (= distinct scores of the class)."""
        return len(self.thresholds)


def pr_curve(probs: ArrayLike, y: ArrayLike, cls: int) -> PRCurve:
    """Precision and recall of class ``cls`` at every distinct score, highest threshold first.

    An item counts as predicted ``cls`` when ``apply_threshold(probs[i, cls], threshold)``
    (tied score ``>=`` threshold); tied scores (:func:`verbcal.metrics.tie_scores`) enter
    together, so there is exactly one operating point per distinct tied score. The ``note`` says how many operating points there are, and warns when a coarse grid of
    verbalized values leaves few to choose from.
    """
    p, y_arr = _check(probs, y)
    if not (isinstance(cls, int | np.integer) and 0 <= int(cls) < p.shape[1]):
        raise ValueError(f"cls must be a class index in [0, {p.shape[1]}), got {cls!r}")
    cls = int(cls)
    score = tie_scores(p[:, cls])
    positive = y_arr == cls
    order = np.argsort(-score, kind="stable")
    s, hit = score[order], positive[order]
    last = _group_ends(s)  # the group's threshold is its smallest score, so >= keeps it whole
    n_pred = (last + 1).astype(np.int64)
    tp = np.cumsum(hit, dtype=np.int64)[last]
    support = int(positive.sum())
    precision = tp / n_pred
    recall = tp / support if support else np.full(len(tp), np.nan)
    n_points = len(last)
    note = f"{n_points} operating point{'s' if n_points != 1 else ''} (one per distinct score)"
    if n_points < COARSE_GRID:
        note += (
            "; the scores sit on a coarse grid, so a target can fall between two points and"
            " the threshold jumps to the next one"
        )
    return PRCurve(
        cls=cls,
        thresholds=s[last],
        precision=precision.astype(np.float64),
        recall=recall.astype(np.float64),
        n_predicted=n_pred,
        true_positives=tp,
        support=support,
        n_items=len(y_arr),
        note=note,
    )


@dataclass(frozen=True)
class ThresholdResult:
    """A threshold chosen for a target, with what it gives on the data it was chosen on.

    An item counts as predicted ``cls`` when ``apply_threshold(probs[i, cls], threshold)``
    (``probs[i, cls] >= threshold``, ties by :func:`verbcal.metrics.tie_scores`). ``reachable``
    False means no candidate met the target: then ``threshold`` is None and the other numbers
    describe, for information, the operating point that came closest (highest lower bound of
    the target metric); ``note`` says what to do.

    ``procedure`` names how the threshold was chosen (see :func:`threshold_for`);
    ``n_tests`` is the number of candidates it tested and ``test_confidence`` the confidence
    of each single test: ``1 - (1 - confidence) / n_tests`` for ``"ltt-ranks"``, the requested
    ``confidence`` itself for ``"pointwise"`` and ``"recall-bound"``.
    ``precision_lower_bound`` / ``recall_lower_bound`` are one-sided Clopper-Pearson bounds
    at ``test_confidence``; ``above`` (``"ltt-ranks"`` only) is the score the threshold sits
    just above: the rule is ``probs[i, cls] > above``. ``support`` is the number of items
    whose gold label is ``cls``; ``n_predicted`` the number predicted ``cls`` at the threshold.
    """

    cls: int
    metric: Target
    target: float
    confidence: float
    reachable: bool
    threshold: float | None
    precision: float | None
    precision_lower_bound: float | None
    recall: float | None
    recall_lower_bound: float | None
    support: int
    n_predicted: int
    true_positives: int
    n_operating_points: int
    note: str
    procedure: Procedure = "ltt-ranks"
    n_tests: int = 1
    test_confidence: float = 0.95
    above: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nan becomes None)."""
        return {k: _plain(v) for k, v in asdict(self).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def candidate_ranks(
    n: int, target: float, confidence: float = 0.95, ratio: float = RANK_RATIO
) -> IntArray:
    """The data-independent ranks that :func:`threshold_for` tests for a precision target.

    The geometric sequence ``n, n / ratio, n / ratio**2, ...`` (rounded, distinct), longest
    prefix whose last rank m still leaves ``m - 1 >= items_needed(target, 1 - delta / K)``
    items, K being the length of the prefix and ``delta = 1 - confidence``: a rank with fewer
    items could never pass its test, so it would only dilute the others. Depends on ``n``,
    the target, the confidence and ``ratio`` only, never on the scores or labels.
    """
    target = _check_unit("target", target)
    confidence = _check_unit("confidence", confidence)
    if not ratio > 1.0:
        raise ValueError(f"ratio must be > 1, got {ratio!r}")
    ranks: list[int] = []
    m = float(n)
    while round(m) >= 2:
        if not ranks or round(m) < ranks[-1]:
            ranks.append(round(m))
        m /= ratio
    delta = 1.0 - confidence
    kept = ranks[:1]
    for k in range(1, len(ranks) + 1):
        if ranks[k - 1] - 1 >= items_needed(target, 1.0 - delta / k):
            kept = ranks[:k]
    return np.asarray(kept or [max(n, 1)], dtype=np.int64)


def threshold_for(
    probs: ArrayLike,
    y: ArrayLike,
    cls: int,
    precision: float | None = None,
    recall: float | None = None,
    confidence: float = 0.95,
    procedure: Procedure = "ltt-ranks",
) -> ThresholdResult:
    """Pick a threshold for class ``cls`` that meets a precision or a recall target, with a margin.

    Give exactly one of ``precision`` and ``recall`` (if neither, :data:`DEFAULT_PRECISION`).

    **Precision target, procedure "ltt-ranks"** (Learn-then-Test, Angelopoulos et al.,
    arXiv 2110.01052, with a Bonferroni family over ranks). Guarantee: if the n items are
    i.i.d. draws of (scores, label), then with probability at least ``confidence`` the
    returned threshold has true precision ``P(y = cls | probs[cls] >= threshold) >= target``
    (scan included; calibration of the scores is not assumed). Procedure: for each of the
    K data-independent ranks m of :func:`candidate_ranks`, let v_m be the m-th largest score
    and test the items scored strictly above v_m with the exact binomial test at level
    ``delta / K`` (``delta = 1 - confidence``); return the lowest v_m that passes (most
    recall), as the threshold just above it. Argument: given v_m and the number C of items
    above it, those C items are an i.i.d. sample of the items scored above v_m, so their
    true positives are Binomial(C, precision above v_m) and the test at a rank whose
    precision is below target passes with probability at most ``delta / K``, whatever v_m
    is; a union bound over the K ranks bounds the chance that any such rank passes by
    ``delta``. Ranks, unlike a fixed grid of thresholds, adapt to where the scores lie, so no
    candidate is starved of items.

    **Precision target, procedure "pointwise"** (the former rule, kept for comparison): the
    smallest threshold whose Clopper-Pearson lower bound at ``confidence`` reaches the
    target. Exact for one threshold fixed in advance, but the scan over every operating
    point breaks it: where the true precision is flat just below the target it accepted a
    threshold in 16.7% of repeats at ``confidence`` 0.95 (``benchmarks/bench_decide.py``).

    **Recall target** (both procedures): the *largest* threshold (so the highest precision)
    whose one-sided Clopper-Pearson lower bound on recall, counting the true positives among
    the ``support`` items of class ``cls``, reaches the target. Recall only grows as the
    threshold falls and so does its bound: this is the first crossing of a monotone curve.

    An unreachable target is reported as such (``reachable=False``, ``threshold=None``) with
    a ``note`` saying why and what would help, never as a silent best effort.
    """
    if precision is not None and recall is not None:
        raise ValueError("give a precision target or a recall target, not both")
    if procedure not in ("ltt-ranks", "pointwise"):
        raise ValueError(f"procedure must be 'ltt-ranks' or 'pointwise', got {procedure!r}")
    metric: Target = "recall" if recall is not None else "precision"
    value = (
        recall if recall is not None else (DEFAULT_PRECISION if precision is None else precision)
    )
    target = _check_unit(metric, value)
    confidence = _check_unit("confidence", confidence)
    curve = pr_curve(probs, y, cls)
    if metric == "recall":
        return _recall_threshold(curve, target, confidence)
    if procedure == "pointwise":
        return _pointwise_precision(curve, target, confidence)
    return _ltt_precision(curve, target, confidence)


def _result(
    curve: PRCurve,
    metric: Target,
    target: float,
    confidence: float,
    j: int,
    reachable: bool,
    note: str,
    **how: Any,
) -> ThresholdResult:
    """The result at operating point ``j`` of the curve (see :class:`ThresholdResult`)."""
    test_confidence = how.setdefault("test_confidence", confidence)
    k, m = curve.true_positives[j], curve.n_predicted[j]
    p_low = float(clopper_pearson_lower(k, m, test_confidence))
    r_low = (
        float(clopper_pearson_lower(k, curve.support, test_confidence))
        if curve.support
        else math.nan
    )
    threshold = how.pop("threshold", float(curve.thresholds[j]))
    return ThresholdResult(
        cls=curve.cls,
        metric=metric,
        target=target,
        confidence=confidence,
        reachable=reachable,
        threshold=threshold if reachable else None,
        precision=float(curve.precision[j]),
        precision_lower_bound=p_low,
        recall=_plain(float(curve.recall[j])),
        recall_lower_bound=_plain(r_low),
        support=curve.support,
        n_predicted=int(m),
        true_positives=int(k),
        n_operating_points=curve.n_operating_points,
        note=note,
        **how,
    )


class _RankTests(NamedTuple):
    """The Learn-then-Test family of one curve: per candidate rank i, ``group[i]`` (the
    operating point holding the rank's score v), ``above[i] = group[i] - 1`` (the point of
    the rule "score > v", -1 when nothing is above), the Clopper-Pearson bound ``low[i]`` at
    ``test_confidence``, and the ranks that pass (``low >= target``)."""

    ranks: IntArray
    group: IntArray
    above: IntArray
    low: FloatArray
    passing: IntArray
    test_confidence: float


def _rank_tests(curve: PRCurve, target: float, confidence: float) -> _RankTests:
    ranks = candidate_ranks(curve.n_items, target, confidence)
    test_confidence = 1.0 - (1.0 - confidence) / len(ranks)
    group = np.searchsorted(curve.n_predicted, ranks)  # the group holding the m-th largest
    above = group - 1  # the operating point just above it (-1: nothing above)
    ok = above >= 0
    low = np.full(len(ranks), -np.inf)
    low[ok] = clopper_pearson_lower(
        curve.true_positives[above[ok]], curve.n_predicted[above[ok]], test_confidence
    )
    passing = np.flatnonzero(low >= target)
    return _RankTests(ranks, group, above, low, passing, test_confidence)


def _rank_result(
    curve: PRCurve,
    target: float,
    confidence: float,
    tests: _RankTests,
    best: int | None,
    blocked_note: str = "",
) -> ThresholdResult:
    """The result of choosing the passing rank ``best`` (None: no rank).

    With ``best`` None and ranks that pass, the result is unreachable with ``blocked_note``
    (the caller set them aside); with no rank passing, it says why and what would help.
    """
    ranks, group, above, low, passing, test_confidence = tests
    how = {"procedure": "ltt-ranks", "n_tests": len(ranks), "test_confidence": test_confidence}
    if best is None and len(passing) and blocked_note:
        nearest = int(passing[np.argmin(above[passing])])  # the highest passing score
        j = int(above[nearest])
        return _result(curve, "precision", target, confidence, j, False, blocked_note, **how)
    if best is None:
        ok = above >= 0
        # report the operating point with the highest bound over all of them (the one the
        # CLI's table is centred on), and separately the best of the candidates tested
        every = clopper_pearson_lower(curve.true_positives, curve.n_predicted, test_confidence)
        j = int(np.nanargmax(every))
        tested = ""
        if ok.any():
            t = int(above[np.argmax(low)])
            tested = (
                f"; of the candidate ranks tested ({len(ranks)}, fixed before looking so that"
                f" the guarantee covers the scan) the best, threshold {curve.thresholds[t]:.6g},"
                f" has {float(max(low.max(), 0.0)):.4f}"
            )
        note = _unreachable_note(
            curve,
            "precision",
            target,
            confidence,
            j,
            float(every[j]),
            each=test_confidence,
            tested=tested,
        )
        return _result(curve, "precision", target, confidence, j, False, note, **how)
    j = int(above[best])
    v = float(curve.thresholds[group[best]])
    note = (
        f"predict when the score is above {v:.6g}: {curve.n_predicted[j]} items, and with "
        f"confidence {confidence:g} the precision of this rule is at least {target:g} (the "
        f"best of {len(ranks)} rank tests, each at confidence {test_confidence:.4g}, on these "
        f"{curve.n_items} items); {curve.note}"
    )
    return _result(
        curve,
        "precision",
        target,
        confidence,
        j,
        True,
        note,
        threshold=v + TIE_STEP,
        above=v,
        **how,
    )


def _ltt_precision(curve: PRCurve, target: float, confidence: float) -> ThresholdResult:
    """Learn-then-Test over the ranks of :func:`candidate_ranks` (see :func:`threshold_for`):
    the lowest passing threshold (most recall)."""
    tests = _rank_tests(curve, target, confidence)
    passing = tests.passing
    best = int(passing[np.argmax(tests.above[passing])]) if len(passing) else None
    return _rank_result(curve, target, confidence, tests, best)


def _pointwise_precision(curve: PRCurve, target: float, confidence: float) -> ThresholdResult:
    """The smallest threshold whose own bound passes (no scan correction; for comparison)."""
    low = clopper_pearson_lower(curve.true_positives, curve.n_predicted, confidence)
    passing = np.flatnonzero(low >= target)
    how = {"procedure": "pointwise", "n_tests": curve.n_operating_points}
    if len(passing) == 0:
        j = int(np.nanargmax(low))
        note = _unreachable_note(curve, "precision", target, confidence, j, float(low[j]))
        return _result(curve, "precision", target, confidence, j, False, note, **how)
    j = int(passing[-1])
    note = (
        f"at threshold {curve.thresholds[j]:.6g}, {curve.n_predicted[j]} items are predicted, "
        f"and the pointwise lower bound on precision is {low[j]:.4f} (one-sided "
        f"Clopper-Pearson at {confidence:g}; not corrected for the scan over "
        f"{curve.n_operating_points} operating points); {curve.note}"
    )
    return _result(curve, "precision", target, confidence, j, True, note, **how)


def _recall_threshold(curve: PRCurve, target: float, confidence: float) -> ThresholdResult:
    """The largest threshold whose Clopper-Pearson bound on recall reaches the target."""
    if curve.support == 0:
        raise ValueError(
            f"class {curve.cls} has no items in the data, so recall is undefined; "
            "label items of that class first"
        )
    support = np.full(curve.n_operating_points, curve.support)
    low = clopper_pearson_lower(curve.true_positives, support, confidence)
    passing = np.flatnonzero(low >= target)
    how = {"procedure": "recall-bound", "n_tests": 1}
    if len(passing) == 0:
        j = int(np.nanargmax(low))
        note = _unreachable_note(curve, "recall", target, confidence, j, float(low[j]))
        return _result(curve, "recall", target, confidence, j, False, note, **how)
    j = int(passing[0])
    note = (
        f"at threshold {curve.thresholds[j]:.6g}, {curve.n_predicted[j]} items are predicted, "
        f"and with confidence {confidence:g} the recall is at least {low[j]:.4f} (one-sided "
        f"Clopper-Pearson on these {curve.n_items} items); {curve.note}"
    )
    return _result(curve, "recall", target, confidence, j, True, note, **how)


def _unreachable_note(
    curve: PRCurve,
    metric: Target,
    target: float,
    confidence: float,
    j: int,
    bound: float,
    each: float | None = None,
    tested: str = "",
) -> str:
    at = "" if each is None else f" at the per-test confidence {each:.4g}"
    head = (
        f"no threshold reaches {metric} {target:g} at confidence {confidence:g}: the best "
        f"lower bound{at} over every operating point is {bound:.4f} (threshold "
        f"{curve.thresholds[j]:.6g}, {curve.n_predicted[j]} items predicted, "
        f"{curve.true_positives[j]} correct){tested}"
    )
    need = items_needed(target, each or confidence)
    if metric == "precision":
        fix = (
            f"; even a threshold keeping items that are all correct needs at least {need} of "
            f"them, so label more items (especially confident ones of this class), lower the "
            f"target or the confidence, or use a stronger calibrator"
        )
    else:
        fix = (
            f"; the class has {curve.support} items and a recall bound of {target:g} needs at "
            f"least {need} of them even if all are found, so label more items of this class "
            f"or lower the target or the confidence"
        )
    return f"{head}{fix}. {curve.note[0].upper()}{curve.note[1:]}"


# ------------------------------------------------------------------------- selective prediction


@dataclass(frozen=True)
class RiskCoverage:
    """The risk-coverage curve: keep the items whose confidence is ``>= thresholds[j]``.

    Confidence = ``tie_scores(max_k probs[i, k])`` (apply a threshold with
    :func:`apply_threshold`); the kept items are answered with their argmax.
    ``coverage[j]`` = share of items kept, ``risk[j]`` = error rate of the kept items,
    ``n_kept[j]`` their number. Thresholds are the distinct confidences, highest first, so
    tied items are kept or dropped together.
    """

    thresholds: FloatArray
    coverage: FloatArray
    risk: FloatArray
    n_kept: IntArray
    n_correct: IntArray
    n_items: int

    @property
    def n_operating_points(self) -> int:
        """Number of distinct confidence values."""
        return len(self.thresholds)

    @property
    def accuracy(self) -> FloatArray:
        """Selective accuracy ``1 - risk`` at each operating point."""
        return 1.0 - self.risk


def risk_coverage(probs: ArrayLike, y: ArrayLike) -> RiskCoverage:
    """Risk-coverage curve: sort by confidence (max probability), keep ties together.

    The predicted label is the argmax (ties to the first label, as in :mod:`verbcal.metrics`).
    """
    p, y_arr = _check(probs, y)
    conf = tie_scores(p.max(axis=1))
    correct = np.argmax(p, axis=1) == y_arr
    order = np.argsort(-conf, kind="stable")
    c, ok = conf[order], correct[order]
    last = _group_ends(c)
    kept = (last + 1).astype(np.int64)
    n_correct = np.cumsum(ok, dtype=np.int64)[last]
    n = len(y_arr)
    return RiskCoverage(
        thresholds=c[last],
        coverage=kept / n,
        risk=1.0 - n_correct / kept,
        n_kept=kept,
        n_correct=n_correct,
        n_items=n,
    )


def aurc(probs: ArrayLike, y: ArrayLike) -> float:
    """Area under the risk-coverage curve (lower is better).

    ``AURC = sum_j (coverage[j] - coverage[j-1]) * risk[j]`` with ``coverage[-1] = 0``: the
    area under the step curve of :func:`risk_coverage`. Without ties this is the usual
    ``(1/n) sum_{m=1..n} risk(m most confident items)``; with ties each tied group carries
    the risk of keeping the whole group (the convention of :mod:`verbcal.plots`).
    """
    rc = risk_coverage(probs, y)
    widths = np.diff(np.r_[0.0, rc.coverage])
    return float(np.sum(widths * rc.risk))


def accuracy_at_coverage(probs: ArrayLike, y: ArrayLike, coverage: float) -> float:
    """Accuracy of the ``ceil(coverage * n)`` most confident items.

    Where the cut falls inside a group of tied confidences, the group is shared out evenly:
    the value is the expected accuracy when the tie is broken at random (m of the group's g
    items are kept and contribute ``m * correct_g / g``), so the answer is deterministic and
    the coverage exact. ``coverage`` must lie in (0, 1].
    """
    if not (isinstance(coverage, int | float) and 0.0 < float(coverage) <= 1.0):
        raise ValueError(f"coverage must lie in (0, 1], got {coverage!r}")
    rc = risk_coverage(probs, y)
    keep = max(1, math.ceil(float(coverage) * rc.n_items - 1e-9))
    j = int(np.searchsorted(rc.n_kept, keep))  # first group reaching `keep`
    prev_kept = int(rc.n_kept[j - 1]) if j else 0
    prev_correct = int(rc.n_correct[j - 1]) if j else 0
    group = int(rc.n_kept[j]) - prev_kept
    group_correct = int(rc.n_correct[j]) - prev_correct
    taken = keep - prev_kept
    return (prev_correct + taken * group_correct / group) / keep


@dataclass(frozen=True)
class SelectiveResult:
    """A confidence threshold for a target selective accuracy, judged by a lower bound.

    Keep (answer) the items with ``max probability >= threshold`` (:func:`apply_threshold`
    on the max probability), abstain on the rest.
    ``reachable`` False: ``threshold`` is None and the numbers describe the closest
    operating point (highest bound), for information; ``note`` says what to do.
    """

    target: float
    confidence: float
    reachable: bool
    threshold: float | None
    accuracy: float
    accuracy_lower_bound: float
    coverage: float
    n_kept: int
    n_items: int
    n_operating_points: int
    note: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {k: _plain(v) for k, v in asdict(self).items()}


def selective_threshold(
    probs: ArrayLike, y: ArrayLike, accuracy: float = 0.9, confidence: float = 0.95
) -> SelectiveResult:
    """The smallest confidence threshold whose kept items reach a target accuracy, with a margin.

    Among the operating points of :func:`risk_coverage`, the smallest threshold (so the
    largest coverage) whose one-sided Clopper-Pearson lower bound (at ``confidence``) on the
    accuracy of the kept items reaches ``accuracy``. This is the pointwise rule (like
    ``threshold_for(..., procedure="pointwise")``): the bound is exact for a fixed threshold,
    and the scan over operating points makes it approximate for the chosen one.
    """
    target = _check_unit("accuracy", accuracy)
    confidence = _check_unit("confidence", confidence)
    rc = risk_coverage(probs, y)
    low = clopper_pearson_lower(rc.n_correct, rc.n_kept, confidence)
    passing = np.flatnonzero(low >= target)
    reachable = len(passing) > 0
    j = int(passing[-1]) if reachable else int(np.argmax(low))
    pts = f"{rc.n_operating_points} operating point{'s' if rc.n_operating_points != 1 else ''}"
    if reachable:
        note = (
            f"keeping the {rc.n_kept[j]} of {rc.n_items} items with confidence >= "
            f"{rc.thresholds[j]:.6g}: with confidence {confidence:g} their accuracy is at least "
            f"{low[j]:.4f} (one-sided Clopper-Pearson); {pts}"
        )
    else:
        note = (
            f"no confidence threshold reaches accuracy {target:g} at confidence {confidence:g}: "
            f"the best lower bound is {low[j]:.4f} (keeping {rc.n_kept[j]} items, "
            f"{rc.n_correct[j]} correct); even all-correct kept items would need at least "
            f"{items_needed(target, confidence)} of them, so label more items or lower the "
            f"target or the confidence ({pts})"
        )
    return SelectiveResult(
        target=target,
        confidence=confidence,
        reachable=reachable,
        threshold=float(rc.thresholds[j]) if reachable else None,
        accuracy=float(rc.accuracy[j]),
        accuracy_lower_bound=float(low[j]),
        coverage=float(rc.coverage[j]),
        n_kept=int(rc.n_kept[j]),
        n_items=rc.n_items,
        n_operating_points=rc.n_operating_points,
        note=note,
    )


# ------------------------------------------------------------------------------- abstain band


@dataclass(frozen=True)
class AbstainBand:
    """Accept ``cls`` above ``upper``, reject it below ``lower``, abstain in between.

    ``accept`` is the precision threshold for ``cls`` (predict ``cls`` when
    ``probs[i, cls] >= upper``); ``reject`` the one for "not ``cls``", computed on the score
    ``1 - probs[i, cls]`` (predict not-``cls`` when ``probs[i, cls] <= lower``). Either side
    may be unreachable (its bound None: that side never decides). :func:`abstain_band` keeps
    ``lower < upper`` whenever both are set, so no item is both accepted and rejected.
    ``abstain_rate`` = share of the items given to :func:`abstain_band` that fall in neither
    region.
    """

    cls: int
    upper: float | None
    lower: float | None
    accept: ThresholdResult
    reject: ThresholdResult
    abstain_rate: float
    note: str

    def decide(self, probs: ArrayLike) -> NDArray[np.int8]:
        """Per row: 1 = accept ``cls``, 0 = reject it, -1 = abstain.

        Both sides go through :func:`apply_threshold`, the one rule: accept when
        ``apply_threshold(P, upper)``, reject when ``apply_threshold(1 - P, 1 - lower)`` (the
        reject side's own threshold on the score ``1 - P`` it was chosen on).
        """
        score = np.asarray(probs, dtype=np.float64)[:, self.cls]
        out = np.full(len(score), -1, dtype=np.int8)
        if self.lower is not None:
            out[apply_threshold(1.0 - score, 1.0 - self.lower)] = 0
        if self.upper is not None:
            out[apply_threshold(score, self.upper)] = 1
        return out

    def evaluate(self, probs: ArrayLike, y: ArrayLike) -> dict[str, Any]:
        """On labelled data: ``abstain_rate``, and per side the items decided and their
        precision (``accept_precision`` = share of accepted items that are ``cls``,
        ``reject_precision`` = share of rejected items that are not; None when none)."""
        p, y_arr = _check(probs, y)
        decision = self.decide(p)
        positive = y_arr == self.cls
        accepted, rejected = decision == 1, decision == 0
        return {
            "n": len(y_arr),
            "abstain_rate": float(np.mean(decision == -1)),
            "accepted": int(accepted.sum()),
            "accept_precision": float(positive[accepted].mean()) if accepted.any() else None,
            "rejected": int(rejected.sum()),
            "reject_precision": float((~positive[rejected]).mean()) if rejected.any() else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "cls": self.cls,
            "upper": self.upper,
            "lower": self.lower,
            "abstain_rate": self.abstain_rate,
            "accept": self.accept.to_dict(),
            "reject": self.reject.to_dict(),
            "note": self.note,
        }


def abstain_band(
    probs: ArrayLike,
    y: ArrayLike,
    cls: int,
    precision: float = 0.95,
    confidence: float = 0.95,
) -> AbstainBand:
    """Two thresholds for class ``cls``: accept above the upper, reject below the lower.

    Each side runs the ``"ltt-ranks"`` tests of :func:`threshold_for`: the accept side on
    ``probs[:, cls]`` with positives ``y == cls`` (rules "P > a"), the reject side on the
    score ``1 - probs[:, cls]`` with positives ``y != cls`` (rules "1 - P > w", i.e.
    "P < 1 - w"; one-vs-rest, so any K). Among the passing ranks of both sides (or none of a
    side), the band takes the pair that decides the most of these items (then the most
    accepted) subject to ``w >= 1 - a``, so that the two rules never meet.

    What is guaranteed:

    * **No overlap**: whenever both sides decide, ``lower < upper``, and no score is both
      accepted and rejected (:meth:`AbstainBand.decide`, on any scores).
    * **Precision of each side**: if the items are i.i.d., each side's true precision is at
      least ``precision`` with probability at least ``confidence`` (Learn-then-Test: with
      that probability no rank whose precision is below the target passes at all, so any
      choice among passing ranks, this one included, keeps it); both hold together with
      probability at least ``2 * confidence - 1`` (a union bound; pass
      ``confidence = 1 - delta / 2`` for a joint ``1 - delta``).
    * **Unreachable sides**: a side with no passing rank, or whose every passing rank would
      overlap the chosen other side while deciding fewer items, has bound None and never
      decides; its note says which.
    """
    p, y_arr = _check(probs, y)
    if not (isinstance(cls, int | np.integer) and 0 <= int(cls) < p.shape[1]):
        raise ValueError(f"cls must be a class index in [0, {p.shape[1]}), got {cls!r}")
    cls = int(cls)
    target = _check_unit("precision", precision)
    confidence = _check_unit("confidence", confidence)
    flipped = np.c_[p[:, cls], 1.0 - p[:, cls]]  # column 1: the score of "not cls"
    curves = pr_curve(p, y_arr, cls), pr_curve(flipped, (y_arr != cls).astype(np.int64), 1)
    tests = [_rank_tests(curve, target, confidence) for curve in curves]
    options = [
        [(None, 0.0, 0)]
        + [
            (int(i), float(curve.thresholds[t.group[i]]), int(curve.n_predicted[t.above[i]]))
            for i in t.passing
        ]
        for curve, t in zip(curves, tests, strict=True)
    ]
    choice: tuple[int | None, int | None] = (None, None)
    key = (-1, -1)
    for a, v_a, n_a in options[0]:
        for r, w_r, n_r in options[1]:
            if a is not None and r is not None and w_r < 1.0 - v_a - TIE_STEP / 2:
                continue  # "P > v_a" and "P < 1 - w_r" would meet
            if (n_a + n_r, n_a) > key:
                key, choice = (n_a + n_r, n_a), (a, r)
    chosen = [
        None if i is None else float(curve.thresholds[t.group[i]])
        for i, curve, t in zip(choice, curves, tests, strict=True)
    ]
    blocked = [
        f"every accept rule that reaches precision {target:g} would overlap the reject side "
        f"(reject when P < {1 - (chosen[1] or 0.0):.6g}), which decides more items, so the "
        "accept side never decides",
        f"every reject rule that reaches precision {target:g} would overlap the accept side "
        f"(accept when P > {chosen[0] or 0.0:.6g}), which decides more items, so the reject "
        "side never decides",
    ]
    accept, reject = (
        _rank_result(curve, target, confidence, t, i, note)
        for curve, t, i, note in zip(curves, tests, choice, blocked, strict=True)
    )
    upper = accept.threshold
    lower = None if reject.threshold is None else 1.0 - reject.threshold
    band = AbstainBand(cls, upper, lower, accept, reject, 0.0, "")
    rate = float(np.mean(band.decide(p) == -1))
    sides = []
    for side, bound, result, rule in (
        ("accept", upper, accept, f"P > {accept.above or 0.0:.6g}"),
        ("reject", lower, reject, f"P < {1.0 - (reject.above or 0.0):.6g}"),
    ):
        if bound is not None:
            sides.append(f"{side} when {rule}")
        elif result.note in blocked:
            sides.append(f"no {side} threshold reaches the target without overlapping the other")
        else:
            sides.append(f"no {side} threshold reaches the target")
    note = (
        f"{'; '.join(sides)}; each side has precision >= {target:g} with confidence "
        f"{confidence:g} (both together: {2 * confidence - 1:g}); {rate:.1%} of these items "
        "fall in between and are abstained"
    )
    return AbstainBand(cls, upper, lower, accept, reject, rate, note)


__all__ = [
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
