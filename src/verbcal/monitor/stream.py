"""Windows of a prediction stream and the per-window monitor rows.

Windows are consecutive blocks of ``size`` rows (:func:`count_windows`; a last partial
block is kept when it holds at least half a window) or calendar-free time buckets of
``every`` seconds starting at the earliest timestamp (:func:`time_windows`; empty buckets
are skipped). :func:`monitor` turns each window into one row (a dict, JSON-ready) with the
estimates, tests, realised metrics where labels exist, and the alarm.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal.monitor.estimate import (
    MonitorError,
    Reference,
    atc,
    bbse,
    cbpe,
    cbpe_items,
    check_q,
    effective_size,
    labelled,
    multiplicity,
    top_label,
)
from verbcal.monitor.familywise import calibrate, p_value_signals, window_counts
from verbcal.monitor.shift import (
    AlarmPolicy,
    bbse_accuracy_contrast,
    confidence_groups,
    label_mix_shift,
    label_shift_fit,
    reply_cells,
)

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]
HIST_BINS = 10
"""Equal-width confidence histogram bins on [0, 1] kept per window for the report."""
LABEL_SHIFT_P = 0.01
"""Below this label-mix p-value the headline estimate is the label-shift-corrected one."""

_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Window:
    """Rows of one window: indices into the stream, a name, and its time span if any."""

    name: str
    index: IntArray
    start: str | None = None
    end: str | None = None


def count_windows(n: int, size: int) -> list[Window]:
    """Consecutive windows of ``size`` rows; a last partial one is kept if >= size / 2."""
    if size < 1:
        raise MonitorError(f"--window must be at least 1, got {size}")
    out = []
    for k, start in enumerate(range(0, n, size)):
        stop = min(n, start + size)
        if stop - start < size / 2 and k > 0:
            break
        out.append(Window(str(k + 1), np.arange(start, stop, dtype=np.int64)))
    return out


def parse_every(text: str) -> float:
    """``30m``, ``6h``, ``1d``, ``1w`` (or seconds: ``90s``) as seconds."""
    match = _EVERY.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise MonitorError(f"--every {text!r}: write a positive number and s, m, h, d or w (1d)")
    return float(match.group(1)) * _UNIT[match.group(2)]


def parse_time(value: Any, where: str) -> float:
    """A timestamp as epoch seconds: a number (seconds), or ISO 8601 text (UTC if no zone)."""
    if isinstance(value, bool) or value is None:
        raise MonitorError(f"{where}: no timestamp")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise MonitorError(f"{where}: timestamp {value!r} is not finite")
        return float(value)
    text = str(value).strip()
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise MonitorError(
                f"{where}: timestamp {text!r} is neither ISO 8601 nor epoch seconds"
            ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def time_windows(times: Sequence[float], every: float) -> list[Window]:
    """Buckets of ``every`` seconds from the earliest time; empty buckets are skipped."""
    t = np.asarray(times, dtype=np.float64)
    if len(t) == 0:
        return []
    origin = float(t.min())
    bucket = np.floor((t - origin) / every).astype(np.int64)
    out = []
    for b in np.unique(bucket):
        idx = np.flatnonzero(bucket == b).astype(np.int64)
        lo = origin + float(b) * every
        out.append(Window(_iso(lo), idx, _iso(lo), _iso(lo + every)))
    return out


def _hist(conf: Array) -> list[int]:
    bins = np.clip(np.ceil(conf * HIST_BINS) - 1, 0, HIST_BINS - 1).astype(np.int64)
    return [int(c) for c in np.bincount(bins, minlength=HIST_BINS)]


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def monitor(
    reference: Reference,
    q: Array,
    windows: Sequence[Window],
    y: IntArray | None = None,
    policy: AlarmPolicy | None = None,
    level: float = 0.95,
    groups: Sequence[Any] | None = None,
    label_shift_headline: bool = False,
) -> list[dict[str, Any]]:
    """One row per window (see the module docstring); ``y`` holds gold indices, -1 where
    unknown. ``policy`` defaults to alpha 0.05 over a horizon of ``len(windows)`` (>= 20).
    ``groups`` (e.g. item ids) marks rows that are the same item seen again: CIs and tests
    then count a window by its effective number of distinct items.

    The headline estimate is CBPE. With ``label_shift_headline`` it is BBSE's
    label-shift-corrected CBPE when the predicted label mix has shifted (p < 0.01) *and*
    pure label shift explains the window (:func:`verbcal.monitor.shift.label_shift_fit`,
    p >= 0.01); off by default, because on the bundled benchmark the switch made the
    estimate worse under covariate shift and no better under label shift (BBSE needs a
    larger reference than 100 items).

    The p-value signals' common cutoff is the policy's :class:`~verbcal.monitor.shift.Cutoff`
    if it has one, else set here (:func:`verbcal.monitor.familywise.calibrate`: min-p from
    streams simulated with these windows' sizes, ids if ``groups``, labels if ``y`` has
    any; Bonferroni with ``label_shift_headline``, whose estimate it does not simulate).
    Each row names it (``p_cutoff``, ``p_rule``)."""
    qa = check_q(q, "stream")
    policy = policy or AlarmPolicy(horizon=max(20, len(windows)))
    k = qa.shape[1]
    if k != reference.q.shape[1]:
        raise MonitorError(f"stream has {k} labels, the reference {reference.q.shape[1]}")
    sizes = [len(w.index) for w in windows if len(w.index)]
    if policy.cutoff is None:
        has_labels = y is not None and bool(np.any(np.asarray(y) >= 0))
        policy.use(
            calibrate(
                reference,
                sizes,
                policy,
                grouped=groups is not None,
                labelled=has_labels,
                simulate=not label_shift_headline,
                why_not="the label-shift headline is not simulated" if label_shift_headline else "",
            )
        )
    rows = []
    contrast = bbse_accuracy_contrast(reference.confusion)
    edges = confidence_groups(reference.conf)
    cells, n_cells = reply_cells(qa, edges, float(np.median(sizes)) if sizes else 0.0)
    for window in windows:
        qw = qa[window.index]
        if len(qw) == 0:
            continue
        pred, conf = top_label(qw)
        gw = None if groups is None else np.asarray(groups, dtype=object)[window.index]
        n_eff = effective_size(multiplicity(gw, len(qw)))
        est = cbpe(qw, reference, level, groups=gw)
        plain = cbpe(qw, reference, level, corrected=False, groups=gw)
        est_atc = atc(qw, reference, level, groups=gw)
        est_bbse, w = bbse(qw, reference, level, groups=gw)
        p_fit = label_shift_fit(reference.pred, reference.conf, reference.y, w, pred, conf, n_eff)
        p_mix = label_mix_shift(reference.pred, pred, k, n_eff)
        use_bbse = label_shift_headline and p_mix < LABEL_SHIFT_P and p_fit >= LABEL_SHIFT_P
        headline = est_bbse if use_bbse else est
        items = cbpe_items(qw, reference)
        sampling = float(np.std(items) / np.sqrt(n_eff))
        stat = policy.cusum(headline.value, sampling)
        yw = None if y is None else np.asarray(y, dtype=np.int64)[window.index]
        known = None if yw is None else yw >= 0
        lab = None
        if known is not None and known.any():
            lab = (float(np.sum(pred[known] == yw[known])), int(known.sum()))  # type: ignore[index]
        counts = window_counts(edges, pred, conf, k, (cells[window.index], n_cells))
        p_values = p_value_signals(
            reference,
            contrast,
            edges,
            pred,
            conf,
            counts,
            n_eff,
            headline,
            items,
            lab,
            policy,
        )
        p_conf = float(p_values["confidence_shift"])  # type: ignore[arg-type]
        row: dict[str, Any] = {
            "window": window.name,
            "start": window.start,
            "end": window.end,
            "n": len(qw),
            "est_accuracy": _r(headline.value),
            "est_accuracy_low": _r(headline.low),
            "est_accuracy_high": _r(headline.high),
            "est_method": "bbse" if use_bbse else "cbpe",
            "est_accuracy_cbpe": _r(est.value),
            "est_accuracy_cbpe_low": _r(est.low),
            "est_accuracy_cbpe_high": _r(est.high),
            "est_accuracy_cbpe_plain": _r(plain.value),
            "est_accuracy_atc": _r(est_atc.value),
            "est_accuracy_atc_low": _r(est_atc.low),
            "est_accuracy_atc_high": _r(est_atc.high),
            "est_accuracy_bbse": _r(est_bbse.value),
            "est_accuracy_bbse_low": _r(est_bbse.low),
            "est_accuracy_bbse_high": _r(est_bbse.high),
            "label_shift_weights": {
                label: _r(float(v)) for label, v in zip(reference.labels, w, strict=True)
            },
            "confidence_p": _r(p_conf),
            "label_mix_p": _r(p_mix),
            "shift_p": _r(min(1.0, 2 * min(p_conf, p_mix))),
            "label_shift_fit_p": _r(p_fit),
            "estimates_disagree": [
                name
                for name, other in (("atc", est_atc), ("bbse", est_bbse))
                if other.high < headline.low or other.low > headline.high
            ],
            "n_effective": _r(n_eff),
            "mean_confidence": _r(float(conf.mean())),
            "confidence_hist": _hist(conf),
            "n_labelled": 0,
            "accuracy": None,
        }
        if yw is not None and known is not None:
            row["n_labelled"] = int(known.sum())
            if known.any():
                real = labelled(qw[known], yw[known], level)
                row.update(
                    accuracy=_r(real.accuracy.value),
                    accuracy_low=_r(real.accuracy.low),
                    accuracy_high=_r(real.accuracy.high),
                    ece=_r(real.ece.value),
                    ece_low=_r(real.ece.low),
                    ece_high=_r(real.ece.high),
                    nll=_r(real.nll.value),
                    nll_low=_r(real.nll.low),
                    nll_high=_r(real.nll.high),
                )
        changes = {
            "confidence_change": policy.change("confidence_change", counts[0], n_eff),
            "label_mix_change": policy.change("label_mix_change", counts[1], n_eff),
        }
        fired = policy.fired(p_values, stat, changes)
        policy.pool(fired)
        row["cusum"] = _r(stat)
        row["cusum_confidence"] = _r(changes["confidence_change"])
        row["cusum_label_mix"] = _r(changes["label_mix_change"])
        row["p_values"] = {name: _r(p) for name, p in p_values.items()}
        row["p_cutoff"] = policy.per_test
        row["p_rule"] = policy.rule_used
        row["alarm"] = bool(fired)
        row["signal"] = ",".join(fired) if fired else None
        rows.append(row)
    return rows
