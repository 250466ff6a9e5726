"""Calibration in production: label-free accuracy estimates and alarms on streams built from
the bundled recorded replies, against NannyML's CBPE on the same windows.

Each stream: a bundled set (tweets, drug-reviews: 3 sentiment labels; bbc-news: 5 topics;
mt-quality, halueval: 2 judge labels) is split 50/50 at random (stratified by label) into a
reference part, on which a temperature calibrator is fitted and the monitor's reference is
built, and a test part; the stream is 20 windows of 500 items drawn with replacement from
the test part (the parts hold 60-100 items, so items repeat; their ids go in as groups).
Scenarios (change at window 11 where there is one):

* ``stationary``: every window from the test part;
* ``covariate``: covariate shift, items of another kind within the same task. An item's
  *kind* is whether its input (the text the model read: ``text``, or ``source`` +
  ``translation``, or ``query`` + ``response``; :data:`INPUT_FIELDS`) is longer than the
  set's median; the same rule for every set, fixed before any run. From window 11 one kind
  makes :data:`KIND_SHARE` (0.8) of every window instead of about half (sampling weights on
  the kind alone, never the label; even seeds over-represent long inputs, odd seeds short
  ones); the reference holds the natural mix. ``P(correct | reply)`` is unchanged, which is
  what CBPE (verbcal's and NannyML's) assumes;
* ``label_shift``: from window 11 the gold-label mix moves towards the class the model gets
  most wrong, by as much as makes the expected accuracy 10 points lower (label shift: each
  class's items are unchanged; streams where no mix can do that are skipped);
* ``other_set``: from window 11 half of every window is items of the other sentiment set
  (tweets <-> drug-reviews), calibrated with the calibrator they were not fitted on. This
  is a *calibration* shift (``P(correct | reply)`` differs between the sets), outside the
  assumption of every label-free estimator here, reported as such;
* ``model_flat`` / ``model_sharp``: from window 11 the verbalized rows are raised to the power
  0.5 / 2 and renormalised (a model change that keeps every prediction, moves confidence).

Per window: the absolute error of each estimate against the window's realised accuracy,
and whether its 95 % CI covers it; ``floor``: the error an oracle that knew each row's
probability of being right (taken as its CBPE item estimate) would still make on average,
``sqrt(2/pi)`` times the window's Poisson-binomial SD (:func:`oracle_error`). Per stream:
any alarm (false alarm on ``stationary``), the signals that fired, and for changed streams
the detection delay (windows after the change until the first alarm; "within 2" =
alarmed at window 11 or 12), and for ``label_shift`` the power of the best label-free
test that knows the change (:func:`oracle_power`: an upper bound on the chance that any
monitor holding a 5 % false-alarm rate alarms within 2 windows). Every number is also
given per bundled set.

Estimates: ``cbpe`` (verbcal's headline: mean calibrated confidence + the reference's per-bin
gap, or the BBSE-corrected one when the predicted-label mix shifted), ``cbpe_plain`` (mean
calibrated confidence), ``atc``, ``bbse``, ``nannyml`` (``nannyml.CBPE``, multiclass accuracy,
fitted on the same reference part with the raw verbalized rows as scores and verbcal's
predictions as ``y_pred``; its own isotonic calibration; chunk size 500).

NannyML's binary CBPE is used for the two-label sets (the raw score of the second label).

    python benchmarks/bench_monitor.py [--streams 40] [--nannyml-streams 10] [--only S,..]
        [--rule min-p|bonferroni] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML phones home otherwise

from verbcal import datasets
from verbcal.calibration import make_calibrator
from verbcal.monitor import P_RULES, AlarmPolicy, Reference, count_windows, monitor
from verbcal.monitor.estimate import cbpe_items, multiplicity

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]
WINDOW, N_WINDOWS, CHANGE = 500, 20, 10
OTHER = {"tweets": "drug-reviews", "drug-reviews": "tweets"}
INPUT_FIELDS = ("text", "source", "translation", "query", "response")
"""The fields holding what the model read; an item's kind is their total length."""
KIND_SHARE = 0.8
"""After the change, the over-represented kind's share of every window (naturally 0.5)."""
ESTIMATES = ("cbpe", "cbpe_plain", "atc", "bbse")


@dataclass
class Part:
    probs: Array
    y: IntArray
    kind: IntArray | None = None
    """Per item: 1 when its input is longer than the set's median input, else 0."""


@dataclass
class Stream:
    """One stream's raw rows, gold labels and which windows are after the change."""

    dataset: str
    reference: Part
    probs: Array
    y: IntArray
    changed: bool
    groups: IntArray
    """Item identity per row (a test-part index; other-set items offset by 100000)."""
    oracle_power: float | None = None
    """Label shift: the power of the best label-free test that knows the change (see
    :func:`oracle_power`)."""


@dataclass
class Tally:
    errors: dict[str, list[float]] = field(default_factory=dict)
    covered: dict[str, list[bool]] = field(default_factory=dict)
    alarmed: list[bool] = field(default_factory=list)
    delays: list[int | None] = field(default_factory=list)
    drops: list[float] = field(default_factory=list)
    oracle: list[float] = field(default_factory=list)
    disagree: list[bool] = field(default_factory=list)
    """Per scored window: whether ATC's or BBSE's CI missed the headline's."""
    signals: dict[str, int] = field(default_factory=dict)
    """How many streams each signal alarmed (after the change where there is one)."""
    cutoffs: list[tuple[float, float, str]] = field(default_factory=list)
    """Per stream: the p-value signals' cutoff, Bonferroni's, and the rule used."""
    seconds: list[float] = field(default_factory=list)
    """Per stream: the seconds ``monitor`` took (the simulation included)."""

    def add(self, name: str, error: float, covered: bool | None = None, where: str = "") -> None:
        self.errors.setdefault(name, []).append(error)
        if covered is not None:
            self.covered.setdefault(name, []).append(covered)
        if where:  # the same again, per bundled set
            self.add(f"{name}@{where}", error, covered)


def input_length(record: dict[str, Any]) -> int:
    """Characters of what the model read (the record's :data:`INPUT_FIELDS`)."""
    return sum(len(str(record[f])) for f in INPUT_FIELDS if isinstance(record.get(f), str))


def load(name: str) -> Part:
    data = datasets.load(f"recorded:{name}").labelled()
    length = np.array([input_length(r) for r in data.records], dtype=np.float64)
    kind = np.asarray(length > np.median(length), dtype=np.int64)
    return Part(data.probs, data.y, kind)


def split(part: Part, rng: np.random.Generator) -> tuple[Part, Part]:
    ref, test = [], []
    for label in np.unique(part.y):
        idx = rng.permutation(np.flatnonzero(part.y == label))
        ref.append(idx[: len(idx) // 2])
        test.append(idx[len(idx) // 2 :])
    r, t = np.concatenate(ref), np.concatenate(test)
    kind = part.kind
    return (
        Part(part.probs[r], part.y[r], None if kind is None else kind[r]),
        Part(part.probs[t], part.y[t], None if kind is None else kind[t]),
    )


def kind_weights(test: Part, kind: int, share: float = KIND_SHARE) -> Array | None:
    """Per-item sampling weights making items of ``kind`` a ``share`` of the draws (the
    label never enters; None when the test part lacks either kind)."""
    assert test.kind is not None
    mine = test.kind == kind
    if mine.all() or not mine.any():
        return None
    return np.where(mine, share / mine.sum(), (1 - share) / (~mine).sum())


def reshape(probs: Array, power: float) -> Array:
    p = np.maximum(probs, 1e-3) ** power
    return np.asarray(p / p.sum(axis=1, keepdims=True), dtype=np.float64)


def draw(part: Part, n: int, rng: np.random.Generator, weights: Array | None = None) -> IntArray:
    p = None if weights is None else weights / weights.sum()
    return np.asarray(rng.choice(len(part.y), size=n, p=p), dtype=np.int64)


def label_shift_weights(test: Part, predicted: IntArray, drop: float) -> Array | None:
    """Per-item sampling weights moving the label mix towards the worst class so that the
    expected accuracy falls by ``drop`` (None when no mix can)."""
    k = int(test.y.max()) + 1
    correct = (predicted == test.y).astype(np.float64)
    prior = np.bincount(test.y, minlength=k) / len(test.y)
    acc_y = np.array(
        [correct[test.y == c].mean() if np.any(test.y == c) else 1.0 for c in range(k)]
    )
    worst = int(np.argmin(acc_y))
    base = float(np.sum(prior * acc_y))
    if base - acc_y[worst] < drop:
        return None
    lam = drop / (base - acc_y[worst])
    target = (1 - lam) * prior + lam * np.eye(k)[worst]
    return np.asarray(target[test.y] / prior[test.y], dtype=np.float64)


def oracle_power(
    test: Part, weights: Array, seed: int, n: int = 2 * WINDOW, alpha: float = 0.05
) -> float:
    """Power of the Neyman-Pearson test of "no change" against the exact change, on the
    ``n`` rows of the two windows after it, at level ``alpha`` (seeded Monte Carlo, 4000
    draws each way). It sees what any label-free monitor sees, the reply (rows with the same
    verbalized reply are one value), and knows the pre- and post-change distributions of
    replies exactly. A monitor whose false-alarm rate over a stream is <= alpha raises an
    alarm by the second window after the change with at most this probability: "alarm by
    then" is itself a level-alpha test of those windows, and no such test beats this one."""
    rng = np.random.default_rng([seed, 1])
    _, reply = np.unique(np.round(test.probs, 9), axis=0, return_inverse=True)
    reply = reply.reshape(-1)
    p0 = np.bincount(reply) / len(reply)  # before: the test part uniformly
    p1 = np.bincount(reply, weights=weights) / weights.sum()  # after: the weighted draw
    llr = np.log(np.maximum(p1, 1e-300) / p0)
    null = rng.multinomial(n, p0, size=4000) @ llr
    alt = rng.multinomial(n, p1, size=4000) @ llr
    return float(np.mean(alt > np.quantile(null, 1 - alpha)))


def build(scenario: str, name: str, seed: int) -> Stream | None:
    rng = np.random.default_rng(seed)
    power = None
    ref, test = split(load(name), rng)
    idx = draw(test, WINDOW * CHANGE, rng)
    before, ys, gs = [test.probs[idx]], [test.y[idx]], [idx]
    after_n = WINDOW * (N_WINDOWS - CHANGE)
    if scenario == "stationary":
        idx = draw(test, after_n, rng)
        after, after_y, after_g = test.probs[idx], test.y[idx], idx
    elif scenario == "label_shift":
        cal = make_calibrator("temperature").fit(ref.probs, ref.y)
        weights = label_shift_weights(test, cal.predict(test.probs), 0.10)
        if weights is None:
            return None
        idx = draw(test, after_n, rng, weights)
        after, after_y, after_g = test.probs[idx], test.y[idx], idx
        power = oracle_power(test, weights, seed)
    elif scenario == "covariate":
        weights = kind_weights(test, kind=1 - seed % 2)  # even seeds: long items, odd: short
        if weights is None:
            return None
        idx = draw(test, after_n, rng, weights)
        after, after_y, after_g = test.probs[idx], test.y[idx], idx
    elif scenario == "other_set":
        other = load(OTHER[name])
        mine, theirs = draw(test, after_n // 2, rng), draw(other, after_n // 2, rng)
        after = np.concatenate([test.probs[mine], other.probs[theirs]])
        after_y = np.concatenate([test.y[mine], other.y[theirs]])
        after_g = np.concatenate([mine, theirs + 100000])
        order = rng.permutation(after_n)
        after, after_y, after_g = after[order], after_y[order], after_g[order]
    elif scenario in ("model_flat", "model_sharp"):
        idx = draw(test, after_n, rng)
        after = reshape(test.probs[idx], 0.5 if scenario == "model_flat" else 2.0)
        after_y, after_g = test.y[idx], idx
    else:
        raise ValueError(scenario)
    probs = np.concatenate([*before, after])
    y = np.concatenate([*ys, after_y])
    groups = np.concatenate([*gs, after_g])
    return Stream(name, ref, probs, y, scenario != "stationary", groups, power)


def nannyml_estimates(stream: Stream, q_ref: Array, q: Array) -> list[float] | None:
    """NannyML CBPE accuracy per 500-row chunk (None when nannyml is not installed)."""
    try:
        import nannyml as nml
        import pandas as pd
    except ImportError:
        return None
    k = q.shape[1]
    cols = {str(c): f"p{c}" for c in range(k)}

    binary = k == 2  # NannyML's binary CBPE: the score of label 1, labels as 0/1

    def frame(raw: Array, pred: IntArray, y: IntArray | None) -> Any:
        df = pd.DataFrame({f"p{c}": raw[:, c] for c in range(k)})
        df["y_pred"] = pred if binary else [str(v) for v in pred]
        if y is not None:
            df["y_true"] = y if binary else [str(v) for v in y]
        return df

    ref = frame(stream.reference.probs, q_ref.argmax(axis=1), stream.reference.y)
    ana = frame(stream.probs, q.argmax(axis=1), None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = nml.CBPE(
            y_pred_proba="p1" if binary else cols,
            y_pred="y_pred",
            y_true="y_true",
            metrics=["accuracy"],
            chunk_size=WINDOW,
            problem_type="classification_binary" if binary else "classification_multiclass",
        )
        est.fit(ref)
        out = est.estimate(ana).to_df()
    values = out[("accuracy", "value")].tolist()
    return [float(v) for v in values[:N_WINDOWS]]


def oracle_error(q: Array, ref: Reference, groups: IntArray) -> float:
    """Expected absolute error of an oracle that knows every row's probability of being
    right, taken as its CBPE item estimate: the realised accuracy still scatters around
    the mean of those by the window's Poisson-binomial noise (repeats share an outcome), so
    ``E|N(0, sd)| = sqrt(2 / pi) sd`` is what no label-free estimate can beat on average."""
    p = cbpe_items(q, ref)
    sd = float(np.sqrt(np.sum(multiplicity(groups, len(p)) * p * (1 - p)))) / len(p)
    return float(np.sqrt(2 / np.pi) * sd)


def run_stream(stream: Stream, tally: Tally, with_nannyml: bool, rule: str = "min-p") -> None:
    cal = make_calibrator("temperature").fit(stream.reference.probs, stream.reference.y)
    q_ref = cal.predict_proba(stream.reference.probs)
    ref = Reference.build(q_ref, stream.reference.y)
    q = cal.predict_proba(stream.probs)
    windows = count_windows(len(q), WINDOW)
    policy = AlarmPolicy(alpha=0.05, horizon=N_WINDOWS, rule=rule)
    start = time.perf_counter()
    rows = monitor(ref, q, windows, policy=policy, groups=stream.groups.tolist())
    tally.seconds.append(time.perf_counter() - start)
    tally.cutoffs.append((policy.per_test, policy.bonferroni, policy.rule_used))
    realised = [float(np.mean(q[w.index].argmax(axis=1) == stream.y[w.index])) for w in windows]
    nanny = nannyml_estimates(stream, q_ref, q) if with_nannyml else None
    for i, (row, truth) in enumerate(zip(rows, realised, strict=True)):
        if stream.changed and i < CHANGE:
            continue  # errors are scored where the scenario applies
        tally.add(
            "cbpe",
            abs(row["est_accuracy"] - truth),
            row["est_accuracy_low"] <= truth <= row["est_accuracy_high"],
            where=stream.dataset,
        )
        tally.disagree.append(bool(row["estimates_disagree"]))
        rows_i = windows[i].index
        floor = oracle_error(q[rows_i], ref, stream.groups[rows_i])
        tally.add("floor", floor, where=stream.dataset)
        tally.add("cbpe_plain", abs(row["est_accuracy_cbpe_plain"] - truth))
        tally.add(
            "atc",
            abs(row["est_accuracy_atc"] - truth),
            row["est_accuracy_atc_low"] <= truth <= row["est_accuracy_atc_high"],
        )
        tally.add(
            "bbse",
            abs(row["est_accuracy_bbse"] - truth),
            row["est_accuracy_bbse_low"] <= truth <= row["est_accuracy_bbse_high"],
        )
        if nanny is not None:
            tally.add("nannyml", abs(nanny[i] - truth), where=stream.dataset)
            tally.add("cbpe_same", abs(row["est_accuracy"] - truth), where=stream.dataset)
    scored = rows[CHANGE:] if stream.changed else rows
    for name in sorted({n for r in scored if r["signal"] for n in r["signal"].split(",")}):
        tally.signals[name] = tally.signals.get(name, 0) + 1
    tally.alarmed.append(any(r["alarm"] for r in rows))
    if stream.changed:
        tally.alarmed[-1] = any(r["alarm"] for r in rows[CHANGE:])
        first = next((i - CHANGE for i, r in enumerate(rows) if i >= CHANGE and r["alarm"]), None)
        pre = any(r["alarm"] for r in rows[:CHANGE])
        tally.delays.append(None if pre else first)
        tally.drops.append(float(np.mean(realised[:CHANGE]) - np.mean(realised[CHANGE:])))
        if stream.oracle_power is not None:
            tally.oracle.append(stream.oracle_power)


def summarise(name: str, tally: Tally) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": name, "streams": len(tally.alarmed)}
    for est, errors in tally.errors.items():
        out[f"mae_{est}"] = float(np.mean(errors))
        out[f"n_{est}"] = len(errors)
    for est, cov in tally.covered.items():
        out[f"coverage_{est}"] = float(np.mean(cov))
    out["alarm_rate"] = float(np.mean(tally.alarmed))
    out["disagree_share"] = float(np.mean(tally.disagree)) if tally.disagree else 0.0
    out["alarms"] = int(np.sum(tally.alarmed))
    out["signals"] = dict(sorted(tally.signals.items()))
    cut = np.array([c for c, _, _ in tally.cutoffs])
    bonf = np.array([b for _, b, _ in tally.cutoffs])
    out["cutoff_min"], out["cutoff_median"], out["cutoff_max"] = (
        float(np.min(cut)),
        float(np.median(cut)),
        float(np.max(cut)),
    )
    out["cutoff_below_bonferroni"] = int(np.sum(cut < bonf))
    out["rules"] = sorted({r for _, _, r in tally.cutoffs})
    out["monitor_seconds_median"] = float(np.median(tally.seconds))
    if tally.delays:
        found = [d for d in tally.delays if d is not None]
        out["alarmed_within_2"] = float(np.mean([d is not None and d <= 1 for d in tally.delays]))
        out["n_within_2"] = int(sum(d is not None and d <= 1 for d in tally.delays))
        out["median_delay"] = float(np.median(found)) if found else None
        out["mean_realised_drop"] = float(np.mean(tally.drops))
    if tally.oracle:
        out["oracle_within_2"] = float(np.mean(tally.oracle))
        out["oracle_below_half"] = int(np.sum(np.array(tally.oracle) < 0.5))
    return out


ALL_SETS = ("tweets", "drug-reviews", "bbc-news", "mt-quality", "halueval")
SCENARIOS: dict[str, tuple[str, ...]] = {
    "stationary": ALL_SETS,
    "covariate": ALL_SETS,
    "label_shift": ALL_SETS,
    "other_set": ("tweets", "drug-reviews"),
    "model_flat": ALL_SETS,
    "model_sharp": ALL_SETS,
}


def run(
    streams: int,
    nannyml_streams: int,
    scenarios: Callable[[str], bool] = lambda s: True,
    rule: str = "min-p",
) -> list[dict[str, Any]]:
    results = []
    for scenario, names in SCENARIOS.items():
        if not scenarios(scenario):
            continue
        tally = Tally()
        count = streams * (3 if scenario == "stationary" else 1)  # false alarms need many
        for s in range(count):
            name = names[s % len(names)]
            stream = build(scenario, name, 1000 + s)
            if stream is None:
                continue
            run_stream(stream, tally, s < nannyml_streams, rule)
        results.append(summarise(scenario, tally))
    return results


def table(results: list[dict[str, Any]]) -> str:
    head = "| scenario | streams | MAE cbpe | MAE floor | MAE plain | MAE atc | MAE bbse | MAE nannyml (same streams: cbpe) | coverage cbpe / atc / bbse | alarm rate | within 2 |"
    lines = [head, "|" + "---|" * 11]
    for r in results:
        nanny = "–"
        if "mae_nannyml" in r:
            nanny = f"{r['mae_nannyml']:.3f} ({r['mae_cbpe_same']:.3f}, {r['n_nannyml']} windows)"
        lines.append(
            f"| {r['scenario']} | {r['streams']} | {r['mae_cbpe']:.3f} | {r['mae_floor']:.3f} | {r['mae_cbpe_plain']:.3f} | {r['mae_atc']:.3f} | "
            f"{r['mae_bbse']:.3f} | {nanny} | {r['coverage_cbpe']:.3f} / {r['coverage_atc']:.3f} / {r['coverage_bbse']:.3f} | "
            f"{r['alarm_rate']:.3f} | {r.get('alarmed_within_2', '–') if 'alarmed_within_2' not in r else format(r['alarmed_within_2'], '.2f')} |"
        )
    lines += [
        "",
        "| scenario | set | MAE cbpe | MAE floor | coverage cbpe | MAE nannyml (cbpe on its windows) |",
    ]
    lines.append("|" + "---|" * 6)
    for r in results:
        for key in sorted(k for k in r if k.startswith("mae_cbpe@")):
            where = key.split("@", 1)[1]
            nanny = "–"
            if f"mae_nannyml@{where}" in r:
                nanny = f"{r[f'mae_nannyml@{where}']:.3f} ({r[f'mae_cbpe_same@{where}']:.3f})"
            lines.append(
                f"| {r['scenario']} | {where} | {r[key]:.3f} | {r[f'mae_floor@{where}']:.3f} | "
                f"{r[f'coverage_cbpe@{where}']:.3f} | {nanny} |"
            )
    for r in results:
        if "oracle_within_2" in r:
            lines += [
                "",
                f"{r['scenario']}: alarmed within 2 windows {r['alarmed_within_2']:.2f}; the "
                f"best label-free test that knows the change (NP, level 0.05) "
                f"{r['oracle_within_2']:.2f} on average, below 0.5 in {r['oracle_below_half']} "
                f"of {r['streams']} streams",
            ]
    lines += ["", "windows whose ATC or BBSE interval misses the headline's:"]
    lines += [f"- {r['scenario']}: {r['disagree_share']:.2f}" for r in results]
    lines += ["", "signals that alarmed (streams; after the change where there is one):"]
    lines += [f"- {r['scenario']}: {r['signals'] or 'none'}" for r in results]
    lines += [
        "",
        "p-value cutoff per stream (min / median / max; below Bonferroni's), rule, monitor s:",
    ]
    lines += [
        f"- {r['scenario']}: {r['cutoff_min']:.2g} / {r['cutoff_median']:.2g} / "
        f"{r['cutoff_max']:.2g} ({r['cutoff_below_bonferroni']} of {r['streams']} below), "
        f"{', '.join(r['rules'])}, median {r['monitor_seconds_median']:.1f} s"
        for r in results
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--streams", type=int, default=40, help="streams per scenario (x3 stationary)"
    )
    parser.add_argument(
        "--nannyml-streams", type=int, default=10, help="streams also run through NannyML"
    )
    parser.add_argument("--only", default="", help="comma-separated scenarios")
    parser.add_argument(
        "--rule",
        default="min-p",
        choices=P_RULES,
        help="the p-value signals' family-wise rule (AlarmPolicy.rule)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    start = time.perf_counter()
    results = run(args.streams, args.nannyml_streams, lambda s: not only or s in only, args.rule)
    try:
        import nannyml

        nanny = f"nannyml {nannyml.__version__}"
    except ImportError:
        nanny = "nannyml not installed: its column is empty (pip install nannyml)"
    if args.json:
        print(json.dumps({"results": results, "nannyml": nanny}, indent=2))
    else:
        print(table(results))
        print(f"\n{nanny}; {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
