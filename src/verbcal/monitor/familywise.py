"""One cutoff for all p-value signals over a stream: Westfall-Young min-p by simulation.

The monitor's p-value signals (:data:`verbcal.monitor.shift.P_SIGNALS`: the tests against
the reference and against the stream's own past) are many correlated tests, repeated on
every window. Bonferroni's cutoff, ``share / (signals x horizon)``, holds the family's
false-alarm rate whatever the correlation, and pays for it: the tests of one window share
its rows, and every window is tested against the same reference.

Westfall-Young's min-p rule (Westfall & Young 1993) sets instead one common cutoff ``c``
from the distribution of the *smallest* p-value of a stationary stream, over the signals
and the ``horizon`` windows: ``P(min p < c) <= share``. That distribution is simulated
(:func:`simulate_min_p`), seeded, from the reference itself, by the bootstrap of the
two-sample null (the reference and the stream drawn from one distribution):

1. a resampled reference: ``n`` rows drawn with replacement from the reference's ``n``
   (its sampling error, shared by every window's test against it, is part of the null);
2. ``horizon`` windows of the stream's window sizes, each drawn with replacement from the
   reference's rows, carrying the row as item id when the stream has ids (a row drawn
   twice in a window is an item seen twice, as in a resampled stream), labelled when the
   stream has labels;
3. every p-value signal computed by the code the monitor runs
   (:func:`p_value_signals`), the ``*_vs_past`` pools as in a stream without an alarm.

``c`` is the ``floor(share x sims) + 1``-th smallest of the simulated minima (:func:`min_p_cutoff`):
at most ``share`` of the simulated streams have a p-value below it anywhere.

Guarantee and its assumption: if the stream's windows are draws like the reference's
(the same distribution of replies and labels, independent rows or repeated items as in a
resample), a stream of ``horizon`` windows raises a p-value alarm with probability about
``share``; "about" is the bootstrap's approximation of the unknown distribution by the
reference's rows (a reference of a few dozen rows approximates it roughly) and the Monte
Carlo error of ``sims`` streams (sd ``sqrt(share (1 - share) / sims)``, 0.011 for
share 0.0375 and 300 streams). Unlike Bonferroni it does not lean on each test's p-value
being exact: a test that is anti-conservative in small windows moves ``c`` down.

Bonferroni stays the rule where the simulation cannot stand in for the stream: a reference
of fewer than :data:`MIN_REFERENCE` rows, fewer than one simulated alarm to place ``c``
(``share x sims < 1``), or a headline estimate the simulation does not compute (the
label-shift-corrected one); the :class:`~verbcal.monitor.shift.Cutoff` says which rule was
used and why.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal.monitor.estimate import (
    Estimate,
    Reference,
    cbpe,
    cbpe_items,
    effective_size,
    multiplicity,
)
from verbcal.monitor.shift import (
    P_SIGNALS,
    AlarmPolicy,
    Cutoff,
    accuracy_drop,
    bbse_accuracy_contrast,
    confidence_group,
    confidence_groups,
    confidence_shift,
    label_mix_shift,
    labelled_drop,
    reply_cells,
)

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]
MIN_REFERENCE = 30
"""Below this many reference rows the bootstrap is no stand-in for the stream: Bonferroni."""
_CACHE: dict[tuple[Any, ...], Cutoff] = {}
_CACHE_SIZE = 64
_CACHE_LOCK = threading.Lock()
_PENDING: dict[tuple[Any, ...], threading.Lock] = {}


def window_counts(
    edges: Array, pred: IntArray, conf: Array, k: int, cells: tuple[IntArray, int]
) -> tuple[Array, Array, Array]:
    """A window's counts per confidence group, per predicted label and per reply cell
    (``cells``: the window's rows' cells and the stream's number of cells,
    :func:`~verbcal.monitor.shift.reply_cells`), as the ``*_vs_past`` and CUSUM signals
    take them."""
    group = confidence_group(edges, conf)
    return (
        np.bincount(group, minlength=len(edges) + 1).astype(np.float64),
        np.bincount(pred, minlength=k).astype(np.float64),
        np.bincount(cells[0], minlength=cells[1]).astype(np.float64),
    )


def p_value_signals(
    reference: Reference,
    contrast: Array,
    edges: Array,
    pred: IntArray,
    conf: Array,
    counts: tuple[Array, Array, Array],
    n_eff: float,
    headline: Estimate,
    items: Array,
    labelled: tuple[float, int] | None,
    policy: AlarmPolicy,
) -> dict[str, float | None]:
    """``edges`` are :func:`~verbcal.monitor.shift.confidence_groups` of the reference's
    confidences, ``contrast`` its :func:`~verbcal.monitor.shift.bbse_accuracy_contrast`,
    ``counts`` the window's :func:`window_counts`.
    The p-value of each signal of :data:`P_SIGNALS` for one window (None where a
    ``*_vs_past`` signal has no past yet; ``labelled_accuracy_drop`` only with
    ``labelled`` = (correct rows, labelled rows)). Feeds the policy's ``*_vs_past`` pools:
    call ``policy.pool`` afterwards. The monitor and its simulation both call this."""
    k = reference.q.shape[1]
    out: dict[str, float | None] = {
        "confidence_shift": confidence_shift(reference.conf, conf, n_eff, edges),
        "label_mix_shift": label_mix_shift(reference.pred, pred, k, n_eff),
        "accuracy_drop": accuracy_drop(reference.accuracy, headline.value, headline.se),
    }
    if labelled is not None:
        correct, n = labelled
        out["labelled_accuracy_drop"] = labelled_drop(
            float(reference.correct.sum()), reference.n, correct, n
        )
    out.update(policy.versus_past(*counts[:2], items, contrast, counts[2]))
    return out


def stream_min_p(
    reference: Reference,
    star: Reference,
    sizes: Sequence[int],
    grouped: bool,
    labelled: bool,
    rng: np.random.Generator,
) -> float:
    """The smallest p-value over :data:`P_SIGNALS` and the windows of one simulated
    stationary stream: windows of ``sizes`` rows drawn from ``reference``, tested against
    ``star`` (a resample of it)."""
    policy = AlarmPolicy(rule="bonferroni")  # holds the *_vs_past pools only
    contrast = bbse_accuracy_contrast(star.confusion)
    edges = confidence_groups(star.conf)
    cells, n_cells = reply_cells(reference.q, edges, float(np.median(sizes)))
    k = reference.q.shape[1]
    best = 1.0
    for m in sizes:
        idx = rng.integers(0, reference.n, m)
        groups = idx if grouped else None
        qw = reference.q[idx]
        n_eff = effective_size(multiplicity(groups, m))
        lab = (float(reference.correct[idx].sum()), m) if labelled else None
        pred, conf = reference.pred[idx], reference.conf[idx]
        p = p_value_signals(
            star,
            contrast,
            edges,
            pred,
            conf,
            window_counts(edges, pred, conf, k, (cells[idx], n_cells)),
            n_eff,
            cbpe(qw, star, groups=groups),
            cbpe_items(qw, star),
            lab,
            policy,
        )
        policy.pool([])
        best = min([best, *(v for v in p.values() if v is not None)])
    return best


def simulate_min_p(
    reference: Reference,
    sizes: Sequence[int],
    grouped: bool,
    labelled: bool,
    sims: int,
    seed: int = 0,
) -> Array:
    """Per simulated stationary stream (``sims`` of them, seeded), the smallest p-value
    over the signals and windows (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out = np.ones(sims)
    for s in range(sims):
        boot = rng.integers(0, reference.n, reference.n)
        star = Reference.build(reference.q[boot], reference.y[boot], reference.labels, boot=0)
        out[s] = stream_min_p(reference, star, sizes, grouped, labelled, rng)
    return out


def min_p_cutoff(minima: Array, share: float) -> float:
    """The largest cutoff ``c`` among the simulated minima with at most ``share`` of them
    below it (strictly: tied minima never push the rate over ``share``)."""
    ordered = np.sort(np.asarray(minima, dtype=np.float64))
    j = int(np.floor(share * len(ordered)))  # at most j minima may lie below c
    return float(ordered[min(j, len(ordered) - 1)])


def _fingerprint(reference: Reference) -> str:
    digest = hashlib.sha256(reference.q.tobytes())
    digest.update(reference.y.tobytes())
    return digest.hexdigest()


def bonferroni_cutoff(policy: AlarmPolicy, reason: str) -> Cutoff:
    """Bonferroni's cutoff for ``policy``, with the reason it is the rule."""
    bonf = policy.bonferroni
    return Cutoff(bonf, "bonferroni", policy.p_share, bonf, reason=reason)


def _simulate(
    reference: Reference, plan: list[int], grouped: bool, labelled: bool, policy: AlarmPolicy
) -> Cutoff:
    start = time.perf_counter()
    minima = simulate_min_p(reference, plan, grouped, labelled, policy.sims, policy.seed)
    return Cutoff(
        min_p_cutoff(minima, policy.p_share),
        "min-p",
        policy.p_share,
        policy.bonferroni,
        sims=policy.sims,
        reason=f"simulated from the reference ({len(P_SIGNALS)} p-value signals x "
        f"{policy.horizon} windows, seed {policy.seed})",
        seconds=time.perf_counter() - start,
    )


def calibrate(
    reference: Reference,
    sizes: Sequence[int],
    policy: AlarmPolicy,
    grouped: bool,
    labelled: bool,
    simulate: bool = True,
    why_not: str = "",
) -> Cutoff:
    """The p-value family's :class:`~verbcal.monitor.shift.Cutoff` for ``policy`` on
    streams of ``policy.horizon`` windows whose sizes cycle through ``sizes``: min-p when
    the policy asks for it and the simulation can stand in for the stream, else Bonferroni
    (``simulate=False`` with ``why_not`` says the caller knows it cannot). Cached per
    reference and inputs."""
    share = policy.p_share
    reason = why_not
    if policy.rule != "min-p":
        reason = "asked for (rule 'bonferroni')"
    elif reference.n < MIN_REFERENCE:
        reason = f"reference of {reference.n} rows (< {MIN_REFERENCE}): no simulation"
    elif share * policy.sims < 1:
        reason = f"{policy.sims} simulations hold no alarm at share {share:.3g}"
    if reason or not simulate or not sizes:
        return bonferroni_cutoff(policy, reason or "no windows")
    plan = [int(sizes[i % len(sizes)]) for i in range(policy.horizon)]
    key = (_fingerprint(reference), tuple(plan), grouped, labelled, share, policy.sims, policy.seed)
    with _CACHE_LOCK:  # the service calibrates from worker threads
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        pending = _PENDING.setdefault(key, threading.Lock())
    with pending:  # a second caller for the same key waits for the first's simulation
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        if cached is None:
            cached = _simulate(reference, plan, grouped, labelled, policy)
            with _CACHE_LOCK:
                if len(_CACHE) >= _CACHE_SIZE:
                    _CACHE.pop(next(iter(_CACHE)))
                _CACHE[key] = cached
    with _CACHE_LOCK:
        _PENDING.pop(key, None)
    return cached
