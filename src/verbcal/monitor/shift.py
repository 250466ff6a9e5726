"""Two-sample shift tests of a window against the reference, and alarms over a stream.

Tests (each a p-value under "no shift"):

* **confidence**: chi-square test of homogeneity of the top-label confidences over groups
  of the reference's distinct values (verbalized values take a handful of distinct values,
  so ties are the rule: a group never splits a tied value);
* **label mix**: chi-square test of homogeneity of the predicted-label counts
  (reference vs window), labels predicted in neither dropped.

Streams repeat items (the same prompts again and again, or a benchmark's resampled test
part), which makes a 500-row window look like more evidence than it holds: given the
window's effective size (Kish's, from item ids: :func:`verbcal.monitor.estimate.effective_size`)
both tests scale the window's counts to it, and never weigh a window more than the
reference (whose sampling error bounds what a two-sample test can tell anyway; the cap also
guards against repeats that carry fresh ids). The price is power against small shifts in
large windows.

Alarms (:class:`AlarmPolicy`) hold a false-alarm rate ``alpha`` per stream of ``horizon``
windows, split between two families by the union bound: the three CUSUMs
(:data:`CUSUM_SIGNALS`) hold ``alpha / 12`` each (``alpha / 4`` together), the nine p-value
signals (:data:`P_SIGNALS`: the reference-based ``confidence_shift``, ``label_mix_shift``,
``accuracy_drop``, ``labelled_accuracy_drop`` and the five ``*_vs_past``) hold the other
``3 alpha / 4`` as one family with one common cutoff (:class:`Cutoff`): by default the
Westfall-Young min-p cutoff simulated from the reference
(:mod:`verbcal.monitor.familywise`: P(the smallest p over the signals and the horizon's
windows < cutoff) = 3 alpha / 4 on stationary streams drawn like the reference), where no
simulation can stand in for the stream (a reference under 30 rows) Bonferroni's
``alpha / (12 x horizon)``; the cutoff says which. ``accuracy_change`` is a
one-sided CUSUM of the estimated accuracy against the stream's own first ``baseline``
windows (allowance ``k`` = 2 standard errors per window: tuned to catch abrupt drops in
one or two windows), and ``confidence_change`` / ``label_mix_change`` are the same CUSUM
on ``z = Φ⁻¹(1 - p)`` of the homogeneity test of each window against the pooled first
``baseline`` windows (counted by their effective sizes); all three share the threshold
set by simulation so that a stationary stream crosses it with
probability alpha / signals within the horizon.

The ``*_vs_past`` signals test each window against *all* earlier windows of the stream
pooled (since the start, or since that signal last fired: the window that fired starts
its new pool), so their power grows as the stream goes on, and the reference's finite size
(shared by every window) cancels out of them. A change that began one window ago has two
windows of rows by the next one, so each also tests the last two windows pooled against
everything before them, and its p-value is twice the smaller of the two (Bonferroni over
the two spans; a window-limited scan for the change point):

* ``confidence_vs_past``, ``label_mix_vs_past``, ``reply_vs_past``: chi-square
  homogeneity of the window's counts against the pooled counts, over confidence groups,
  predicted labels, and reply cells (:func:`reply_cells`: each reply that recurs often
  enough, a cell of its own; the rest by predicted label x confidence group). The reply
  as finely as the counts allow: verbalized replies come on a grid and recur, and a change
  that moves the frequencies of a few replies (label shift: the items of one class come
  more often) shows there before it moves either marginal;
* ``accuracy_vs_past``: one-sided Welch t-test that the window's mean CBPE item estimate
  (:func:`verbcal.monitor.estimate.cbpe_items`) is below the pooled mean;
* ``label_shift_vs_past``: one-sided z-test that the accuracy label shift implies fell:
  under label shift the accuracy is ``sum_j w_j C_jj`` with BBSE's ``w = C^-1 mu``, a
  linear contrast ``b . mu`` of the predicted-label mix (``b = C^-T diag C``, from the
  reference and fixed), so the change is ``b . (mu_window - mu_past)`` with multinomial
  variances (:func:`bbse_accuracy_contrast`).

They count every row as an independent draw from the stream's distribution (a popular item
recurring is a frequent value, not a repeat of evidence), which holds for resampled or
fresh streams but not for bursts of one item within a window (retries: deduplicate those
first). Chi-square cells expected to hold fewer than 5 window rows are merged (Cochran), the
mean test is Welch's t, and a window of fewer than :data:`PAST_MIN_ROWS` rows is pooled but
not tested. Each fires below the family's common cutoff, as the reference-based ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special, stats

from verbcal.metrics import tie_scores

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]

SIGNALS = (
    "confidence_shift",
    "label_mix_shift",
    "accuracy_drop",
    "accuracy_change",
    "confidence_change",
    "label_mix_change",
    "labelled_accuracy_drop",
    "confidence_vs_past",
    "label_mix_vs_past",
    "reply_vs_past",
    "accuracy_vs_past",
    "label_shift_vs_past",
)
"""Every signal that can raise an alarm, in the order an alarm lists them."""
PAST_SIGNALS = SIGNALS[-5:]
"""The signals that test each window against the stream's own pooled earlier windows."""
CUSUM_SIGNALS = ("accuracy_change", "confidence_change", "label_mix_change")
"""The signals that are CUSUMs, each with its own simulated threshold."""
P_SIGNALS = tuple(name for name in SIGNALS if name not in CUSUM_SIGNALS)
"""The signals that are p-values: one family, one common cutoff (:class:`Cutoff`)."""
P_RULES = ("min-p", "bonferroni")
"""How the p-value family's common cutoff is set (:attr:`AlarmPolicy.rule`)."""
PAST_MIN_ROWS = 30
"""A window with fewer rows is pooled but not tested by the ``*_vs_past`` signals (their
normal and chi-square approximations need some rows; a sparse time bucket is no evidence)."""
MIN_EXPECTED = 5.0
"""Cochran's rule: cells expected to hold fewer counts are merged before any chi-square."""


def confidence_groups(reference: Array, min_count: int = 0) -> Array:
    """Upper edges of groups of consecutive distinct reference confidences, each group
    holding at least ``min_count`` reference rows (default max(5, n / 10)); the last
    group takes the remainder. Ties (:func:`verbcal.metrics.tie_scores`) never straddle a
    group edge."""
    values, counts = np.unique(tie_scores(reference), return_counts=True)
    need = min_count or max(5, len(reference) // 10)
    edges, held = [], 0
    for value, count in zip(values, counts, strict=True):
        held += count
        if held >= need:
            edges.append(value)
            held = 0
    if held and edges:
        edges.pop()  # the remainder joins the last full group
    return np.asarray(edges[:-1] if edges else [], dtype=np.float64)


def confidence_group(edges: Array, conf: Array) -> IntArray:
    """Group index of each confidence for :func:`confidence_groups`'s ``edges`` (a value
    equal to an edge, after :func:`verbcal.metrics.tie_scores`, belongs to its group)."""
    return np.asarray(np.searchsorted(edges, tie_scores(conf), side="left"), dtype=np.int64)


def reply_cells(q: Array, edges: Array, window_rows: float) -> tuple[IntArray, int]:
    """Each row's reply cell for ``reply_vs_past``, and the number of cells: a reply (a
    calibrated row, equal to 12 decimals) frequent enough to expect :data:`MIN_EXPECTED`
    rows in a window of ``window_rows`` is a cell of its own; the rest fall into their
    coarse cell, predicted label x confidence group (``edges``:
    :func:`confidence_groups`). A stream that repeats a few replies (verbalized values on a
    grid, recurring items) is tested reply by reply; one of ever-new replies by the coarse
    cells. The rule sees only how often each reply occurs in the whole stream, never
    where, so it favours no window."""
    qa = np.asarray(q, dtype=np.float64)
    if len(qa) == 0:
        return np.zeros(0, dtype=np.int64), 0
    _, reply, counts = np.unique(np.round(qa, 12), axis=0, return_inverse=True, return_counts=True)
    reply = reply.reshape(-1)
    frequent = counts * window_rows / len(qa) >= MIN_EXPECTED
    fine = np.cumsum(frequent) - 1
    groups = len(edges) + 1
    coarse = qa.argmax(axis=1) * groups + confidence_group(edges, qa.max(axis=1))
    n_fine = int(frequent.sum())
    cells = np.where(frequent[reply], fine[reply], n_fine + coarse)
    return np.asarray(cells, dtype=np.int64), n_fine + qa.shape[1] * groups


def confidence_shift(
    reference: Array, window: Array, n_eff: float | None = None, edges: Array | None = None
) -> float:
    """Chi-square p-value of homogeneity of the confidence distribution (reference vs
    window) over groups of the reference's distinct values (:func:`confidence_groups`,
    or ``edges`` already taken of it), so ties are kept whole and any change of shape
    counts, not only of location; 1.0 when the reference fills one group."""
    if len(reference) == 0 or len(window) == 0:
        return 1.0
    edges = confidence_groups(reference) if edges is None else edges
    if len(edges) == 0:
        return 1.0
    groups = len(edges) + 1
    ref_counts = np.bincount(confidence_group(edges, reference), minlength=groups)
    win_counts = np.bincount(confidence_group(edges, window), minlength=groups)
    return _homogeneity(ref_counts, win_counts, n_eff)


def _homogeneity(
    reference: NDArray[Any], window: NDArray[Any], n_eff: float | None = None, cap: bool = True
) -> float:
    """Chi-square homogeneity p-value of two count vectors, the window's counts scaled to
    ``min(n_eff, reference size)`` when larger (see the module docstring)."""
    n_ref, n_win = float(reference.sum()), float(window.sum())
    if n_ref == 0 or n_win == 0:
        return 1.0
    limit = min(n_eff or n_win, n_ref) if cap else (n_eff or n_win)
    scaled = window * min(1.0, limit / n_win)
    table = np.vstack([reference.astype(np.float64), scaled])
    table = merge_sparse(table[:, table.sum(axis=0) > 0])
    if table.shape[1] < 2:
        return 1.0
    return chi2_homogeneity(table)


def chi2_homogeneity(table: Array) -> float:
    """Pearson chi-square p-value of a 2 x C table with no empty row or column: the value
    of ``scipy.stats.chi2_contingency(table, correction=False)``, without its checks (the
    monitor's simulation calls it thousands of times)."""
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return float(special.chdtrc(table.shape[1] - 1, stat))


def merge_sparse(table: Array) -> Array:
    """Cochran's rule for a 2 x C table: the columns where a cell is expected to hold fewer
    than :data:`MIN_EXPECTED` counts are merged into one, and that one is folded into the
    column with the fewest counts if it is still that small (a rare category then cannot
    make one row look like a shift)."""
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    small = rows.min() * cols / table.sum() < MIN_EXPECTED
    if not small.any():
        return table
    keep = table[:, ~small].copy()
    merged = table[:, small].sum(axis=1)
    if rows.min() * merged.sum() / table.sum() < MIN_EXPECTED and keep.shape[1]:
        keep[:, int(np.argmin(keep.sum(axis=0)))] += merged
        return keep
    return np.column_stack([keep, merged])


def label_mix_shift(
    reference: IntArray, window: IntArray, k: int, n_eff: float | None = None
) -> float:
    """Chi-square p-value of homogeneity of predicted-label counts (1.0 with one label used)."""
    counts = np.bincount(window, minlength=k)
    return _homogeneity(np.bincount(reference, minlength=k), counts, n_eff)


def label_shift_fit(
    ref_pred: IntArray,
    ref_conf: Array,
    ref_y: IntArray,
    weights: Array,
    pred: IntArray,
    conf: Array,
    n_eff: float | None = None,
) -> float:
    """Does pure label shift explain the window? The chi-square homogeneity p-value of the
    window's (predicted label, confidence group) cells against the reference's cells
    re-weighted by the BBSE weights (what label shift with those weights predicts), the
    weighted reference counted by its Kish effective size. Covariate shift or a model
    change leaves the cells unexplained (small p); label shift fits."""
    k = len(weights)
    edges = confidence_groups(ref_conf)
    groups = len(edges) + 1
    item_w = weights[ref_y]
    if item_w.sum() <= 0:
        return 0.0
    ref_cell = ref_pred * groups + confidence_group(edges, ref_conf)
    win_cell = pred * groups + confidence_group(edges, conf)
    ess = float(item_w.sum() ** 2 / np.sum(item_w**2))
    expected = np.bincount(ref_cell, weights=item_w, minlength=k * groups)
    expected *= ess / expected.sum()
    observed = np.bincount(win_cell, minlength=k * groups)
    return _homogeneity(expected, observed, n_eff)  # type: ignore[arg-type]


def accuracy_drop(reference_accuracy: float, estimate: float, se: float) -> float:
    """One-sided p-value that the accuracy fell below the reference's (normal, ``se`` given)."""
    if se <= 0:
        return 1.0 if estimate >= reference_accuracy else 0.0
    return float(special.ndtr((estimate - reference_accuracy) / se))


def labelled_drop(reference_correct: float, n_ref: int, correct: float, n: int) -> float:
    """One-sided two-proportion z-test p-value that the window's accuracy is lower."""
    pooled = (reference_correct + correct) / (n_ref + n)
    se = float(np.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n)))
    if se == 0:
        return 1.0
    return float(special.ndtr((correct / n - reference_correct / n_ref) / se))


def bbse_accuracy_contrast(confusion: Array) -> Array:
    """``b`` with BBSE's label-shift accuracy ``sum_j w_j C_jj = b . mu`` for ``w = C^-1 mu``
    (pseudo-inverse; the clipping of :func:`~verbcal.monitor.estimate.bbse_weights` left
    out, so the map is linear): ``b = C^-T diag(C)``."""
    c = np.asarray(confusion, dtype=np.float64)
    return np.asarray(np.linalg.pinv(c).T @ np.diag(c), dtype=np.float64)


def homogeneity_vs_past(past: Array, window: Array) -> float:
    """Chi-square homogeneity p-value of the window's counts against the pooled past's,
    every row counted (sparse cells merged: :func:`merge_sparse`)."""
    return _homogeneity(np.asarray(past), np.asarray(window), cap=False)


def mean_below_past(past: Array, window: Array) -> float:
    """One-sided Welch t p-value (Welch-Satterthwaite degrees of freedom) that the window's
    mean is below the past's; each argument is ``[n, sum, sum of squares]`` (1.0 when either
    holds fewer than 2 rows or both are constant)."""
    n0, s0, ss0 = (float(v) for v in past)
    n1, s1, ss1 = (float(v) for v in window)
    if n0 < 2 or n1 < 2:
        return 1.0
    m0, m1 = s0 / n0, s1 / n1
    v0 = max(ss0 / n0 - m0 * m0, 0.0) * n0 / (n0 - 1)
    v1 = max(ss1 / n1 - m1 * m1, 0.0) * n1 / (n1 - 1)
    a0, a1 = v0 / n0, v1 / n1
    se = float(np.sqrt(a0 + a1))
    if se <= 0:
        return 1.0 if m1 >= m0 else 0.0
    df = (a0 + a1) ** 2 / (a0**2 / (n0 - 1) + a1**2 / (n1 - 1))
    return float(special.stdtr(df, (m1 - m0) / se))


def contrast_below_past(b: Array, past: Array, window: Array) -> float:
    """One-sided z p-value that ``b . mu`` fell from the past's predicted-label mix to the
    window's (counts; multinomial variances of both mixes)."""
    n0, n1 = float(past.sum()), float(window.sum())
    if n0 == 0 or n1 == 0:
        return 1.0
    mu0, mu1 = past / n0, window / n1
    centred = b - np.mean(b)  # mixes sum to 1: a constant part of b never moves b . mu
    cov = (np.diag(mu0) - np.outer(mu0, mu0)) / n0 + (np.diag(mu1) - np.outer(mu1, mu1)) / n1
    var = float(centred @ cov @ centred)
    diff = float(centred @ (mu0 - mu1))
    flat = float(np.max(np.abs(centred))) <= 1e-9 * max(float(np.max(np.abs(b))), 1.0)
    if flat or var <= 0 or abs(diff) < 1e-12:
        return 1.0  # b . mu is (numerically) constant on the labels seen: nothing to test
    return float(special.ndtr(-diff / np.sqrt(var)))


def _add(a: Array | None, b: Array | None) -> Array | None:
    """The sum of two pools, either possibly empty (None)."""
    if a is None:
        return b
    return a if b is None else a + b


@lru_cache(maxsize=64)
def cusum_threshold(
    horizon: int, baseline: int, alpha: float, k: float = 0.5, sims: int = 20000
) -> float:
    """CUSUM threshold ``h``: P(max_t S_t > h) = alpha for a stationary stream of ``horizon``
    windows whose first ``baseline`` set the mean (seeded Monte Carlo, normal estimates)."""
    rng = np.random.default_rng(12345)
    steps = max(horizon - baseline, 1)
    x = rng.standard_normal((sims, baseline + steps))
    base = x[:, :baseline].mean(axis=1, keepdims=True)
    z = (base - x[:, baseline:]) / np.sqrt(1 + 1 / baseline)
    s = np.zeros(sims)
    peak = np.zeros(sims)
    for t in range(steps):
        s = np.maximum(0.0, s + z[:, t] - k)
        peak = np.maximum(peak, s)
    return float(np.quantile(peak, 1 - alpha))


@dataclass(frozen=True)
class Cutoff:
    """The p-value under which every signal of :data:`P_SIGNALS` fires, and how it was set."""

    value: float
    """A p-value signal fires when its p < value."""
    rule: str
    """``min-p`` (simulated: :mod:`verbcal.monitor.familywise`) or ``bonferroni``."""
    share: float
    """The false-alarm rate per stream of ``horizon`` windows the family holds."""
    bonferroni: float
    """``share / (len(P_SIGNALS) x horizon)``, for comparison."""
    sims: int = 0
    """Simulated stationary streams behind a ``min-p`` cutoff (0 for Bonferroni)."""
    reason: str = ""
    """Why this rule (for Bonferroni: why no simulation)."""
    seconds: float = 0.0
    """What the simulation took."""


@dataclass
class AlarmPolicy:
    """Alarm rule for a stream; see the module docstring for the false-alarm control.

    ``rule`` asks for the p-value family's cutoff: ``min-p`` (simulated by
    :func:`verbcal.monitor.stream.monitor` from the reference, ``sims`` streams, ``seed``)
    or ``bonferroni``; until :meth:`use` is given a :class:`Cutoff` the policy applies
    Bonferroni."""

    alpha: float = 0.05
    horizon: int = 20
    baseline: int = 5
    k: float = 2.0
    rule: str = "min-p"
    sims: int = 300
    seed: int = 0
    cutoff: Cutoff | None = None
    _base: list[float] = field(default_factory=list, repr=False)
    _se: list[float] = field(default_factory=list, repr=False)
    _s: float = field(default=0.0, repr=False)
    _counts: dict[str, list[Array]] = field(default_factory=dict, repr=False)
    _cs: dict[str, float] = field(default_factory=dict, repr=False)
    _past: dict[str, Array] = field(default_factory=dict, repr=False)
    _last: dict[str, Array] = field(default_factory=dict, repr=False)
    _pending: dict[str, Array] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.horizon < 1 or self.baseline < 1:
            raise ValueError("horizon and baseline must be at least 1 window")
        if self.rule not in P_RULES:
            raise ValueError(f"rule must be one of {', '.join(P_RULES)}, got {self.rule!r}")

    @property
    def p_share(self) -> float:
        """The p-value family's share of alpha: one ``alpha / len(SIGNALS)`` per signal."""
        return self.alpha * len(P_SIGNALS) / len(SIGNALS)

    @property
    def bonferroni(self) -> float:
        """Bonferroni's cutoff, ``alpha / (len(SIGNALS) x horizon)``."""
        return self.p_share / (len(P_SIGNALS) * self.horizon)

    @property
    def per_test(self) -> float:
        """The p-value under which a p-value signal fires: the :class:`Cutoff` given to
        :meth:`use`, else Bonferroni's."""
        return self.cutoff.value if self.cutoff is not None else self.bonferroni

    @property
    def rule_used(self) -> str:
        return self.cutoff.rule if self.cutoff is not None else "bonferroni"

    def use(self, cutoff: Cutoff) -> None:
        """Apply ``cutoff`` to the p-value signals from now on."""
        self.cutoff = cutoff

    @property
    def threshold(self) -> float:
        return cusum_threshold(self.horizon, self.baseline, self.alpha / len(SIGNALS), self.k)

    def cusum(self, estimate: float, se: float) -> float | None:
        """Feed one window's estimate and its sampling SE; the CUSUM statistic (None while
        the baseline is being collected)."""
        if len(self._base) < self.baseline:
            self._base.append(estimate)
            self._se.append(se)
            return None
        base = float(np.mean(self._base))
        scale = float(np.sqrt(se**2 + np.mean(np.square(self._se)) / self.baseline))
        z = (base - estimate) / scale if scale > 0 else 0.0
        self._s = max(0.0, self._s + z - self.k)
        return self._s

    def change(self, name: str, counts: NDArray[Any], n_eff: float) -> float | None:
        """Feed one window's category counts (confidence groups, predicted labels) and its
        effective size; the CUSUM of ``z = Φ⁻¹(1 - p)``, ``p`` the homogeneity p-value of
        the window against the pooled first ``baseline`` windows (None while collecting)."""
        n = float(counts.sum())
        scaled = counts * (min(n_eff, n) / n if n else 0.0)
        base = self._counts.setdefault(name, [])
        if len(base) < self.baseline:
            base.append(scaled)
            return None
        pooled = np.sum(base, axis=0)
        p = _homogeneity(pooled, scaled, max(float(scaled.sum()), 1.0), cap=False)
        z = float(np.clip(stats.norm.isf(max(p, 1e-300)), -8.0, 8.0))
        self._cs[name] = max(0.0, self._cs.get(name, 0.0) + z - self.k)
        return self._cs[name]

    def versus_past(
        self,
        conf_counts: Array,
        pred_counts: Array,
        items: Array,
        contrast: Array,
        cell_counts: Array | None = None,
    ) -> dict[str, float | None]:
        """p-values of the ``*_vs_past`` signals for one window (None for a signal with no
        earlier window pooled yet): ``conf_counts`` per confidence group, ``pred_counts`` per
        label, ``items`` the CBPE item estimates, ``contrast`` from
        :func:`bbse_accuracy_contrast`, ``cell_counts`` per reply cell (:func:`reply_cells`;
        None: ``reply_vs_past`` is not tested). Each signal tests the window against
        everything pooled before it and, once there is a window before it and more past,
        the window and the one before it pooled against the rest; its p-value is twice the
        smaller (Bonferroni over the two spans). Call :meth:`pool` with what fired
        afterwards."""
        it = np.asarray(items, dtype=np.float64)
        now = {
            "confidence_vs_past": np.asarray(conf_counts, dtype=np.float64),
            "label_mix_vs_past": np.asarray(pred_counts, dtype=np.float64),
            "accuracy_vs_past": np.array([len(it), it.sum(), np.sum(it * it)]),
            "label_shift_vs_past": np.asarray(pred_counts, dtype=np.float64),
        }
        if cell_counts is not None:
            now["reply_vs_past"] = np.asarray(cell_counts, dtype=np.float64)
        out: dict[str, float | None] = {}
        for name, value in now.items():
            before = self.pooled(name)
            if before is None:
                out[name] = None
                continue
            spans = [(before, value)]  # the window against all before it
            past, last = self._past.get(name), self._last.get(name)
            if past is not None and last is not None:
                spans.append((past, last + value))  # the last two against the rest
            ps = [self._versus(name, contrast, older, newer) for older, newer in spans]
            out[name] = min(1.0, len(ps) * min(ps))
        if float(np.asarray(pred_counts).sum()) < PAST_MIN_ROWS:
            out = dict.fromkeys(out)  # too few rows to test: pooled only
        self._pending = now
        return out

    @staticmethod
    def _versus(name: str, contrast: Array, past: Array, window: Array) -> float:
        if name == "accuracy_vs_past":
            return mean_below_past(past, window)
        if name == "label_shift_vs_past":
            return contrast_below_past(contrast, past, window)
        return homogeneity_vs_past(past, window)

    def pool(self, fired: list[str]) -> None:
        """Add the last window to each ``*_vs_past`` pool; a signal that fired restarts its
        pool with that window (so a lasting change alarms once, not every window)."""
        for name, value in self._pending.items():
            if name in fired:
                self._past.pop(name, None)
            else:
                merged = self.pooled(name)
                if merged is not None:
                    self._past[name] = merged
            self._last[name] = value
        self._pending = {}

    def pooled(self, name: str) -> Array | None:
        """Everything the ``*_vs_past`` signal ``name`` has pooled (None: nothing yet)."""
        return _add(self._past.get(name), self._last.get(name))

    def fired(
        self,
        p_values: dict[str, float | None],
        cusum: float | None,
        changes: dict[str, float | None] | None = None,
    ) -> list[str]:
        """Signals that fire for one window, in :data:`SIGNALS` order."""
        cusums = {"accuracy_change": cusum, **(changes or {})}
        names = [
            name
            for name in SIGNALS
            if name not in cusums
            and p_values.get(name) is not None
            and float(p_values[name]) < self.per_test  # type: ignore[arg-type]
        ]
        names += [n for n, stat in cusums.items() if stat is not None and stat > self.threshold]
        return [n for n in SIGNALS if n in names]
