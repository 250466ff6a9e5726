"""Plots and the findings page of ``verbcal study`` (see :mod:`verbcal.study`).

Every number in ``findings.md`` comes from the :class:`~verbcal.study.grid.StudyResult` it is
given, so rerunning the command printed at the top of the page regenerates it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal.calibration import (
    BETA_BOUNDS,
    METHODS,
    apply_floor,
    parse_spec,
    softmax,
)
from verbcal.calibration.specs import UNCALIBRATED
from verbcal.metrics import LOWER_IS_BETTER
from verbcal.study.config import RULES, parse_variant
from verbcal.study.grid import StudyResult
from verbcal.study.summary import by_key, paired, threshold_summary

FloatArray = NDArray[np.float64]
SummaryKey = tuple[str, str, int, str]
COMPARE_METRICS = ("ece", "mce", "nll", "brier", "accuracy")
SIZE_METRICS = ("ece", "nll", "brier", "mce")
MAP_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def _index(rows: Sequence[dict[str, Any]]) -> dict[SummaryKey, dict[str, Any]]:
    return {(r["dataset"], r["method"], r["size"], r["metric"]): r for r in rows}


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _cell(row: Mapping[str, Any] | None, digits: int = 3) -> str:
    if row is None or math.isnan(row["mean"]):
        return "–"
    return f"{row['mean']:.{digits}f} [{row['lo']:.{digits}f}, {row['hi']:.{digits}f}]"


def _signed(d: Mapping[str, float], digits: int = 3) -> str:
    if math.isnan(d["mean"]):
        return "–"
    return f"{d['mean']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _base_methods(methods: Sequence[str]) -> list[str]:
    """Variants compared side by side: every method with its default options, plus variants
    of methods other than temperature (whose floor and prior variants have their own
    sections), the baseline first."""
    return [m for m in methods if "[" not in m or parse_variant(m).method != "temperature"]


def _reference(methods: Sequence[str]) -> str | None:
    """The temperature-scaling variant the findings compare against: ``temperature`` itself
    (floor fitted) if listed, else the first temperature variant."""
    if "temperature" in methods:
        return "temperature"
    return next((m for m in methods if parse_variant(m).method == "temperature"), None)


def _full_size(result: StudyResult, dataset: str) -> int:
    """The 'all' size (n // 2) when it is in the grid, else the largest size run."""
    info = result.info[dataset]
    return info.n // 2 if info.n // 2 in info.sizes else max(info.sizes)


def _command(result: StudyResult, out: Path | None = None) -> str:
    source = result.config.source
    if source == "default grid":
        config = ""
    elif Path(source).suffix in (".yaml", ".yml"):
        config = f" --config {source}"
    else:
        config = " --config <the study YAML>"
    return f"verbcal study{config} --out {out if out is not None else 'study-out'}"


# ---------------------------------------------------------------- reliability diagrams


def reliability_methods(
    result: StudyResult, summary: Mapping[SummaryKey, Mapping[str, Any]], dataset: str
) -> list[str]:
    """The variants whose cross-fitted reliability diagrams are drawn: the baselines, the
    reference temperature variant and the best other variant by mean test NLL."""
    reference = _reference(result.config.methods)
    shown = [m for m in (UNCALIBRATED, "resoftmax", reference) if m in result.config.methods]
    best = best_method(result, summary, dataset)
    if best:
        shown.append(best)
    return shown


def reliability_size(result: StudyResult, dataset: str) -> int:
    """The calibration size whose split 0 is cross-fitted for the diagrams."""
    return _full_size(result, dataset)


def best_method(
    result: StudyResult, summary: Mapping[SummaryKey, Mapping[str, Any]], dataset: str
) -> str | None:
    """Lowest mean test NLL at the 'all' size among the variants other than the baselines
    (uncalibrated, identity, resoftmax, temperature)."""
    size = _full_size(result, dataset)
    scored = [
        (summary[(dataset, m, size, "nll")]["mean"], m)
        for m in result.config.methods
        if m not in (UNCALIBRATED, "resoftmax", _reference(result.config.methods))
        and parse_variant(m).method != "identity"
        and (dataset, m, size, "nll") in summary
    ]
    return min(scored)[1] if scored else None


# ---------------------------------------------------------------- plots


def write_plots(
    result: StudyResult,
    rows: Sequence[dict[str, Any]],
    out: Path,
    cross_fitted: Mapping[str, Mapping[str, FloatArray]],
) -> dict[str, Path]:
    """PNG files: metric vs size, floor sensitivity and reliability diagrams, per dataset.

    ``cross_fitted``: dataset → method → out-of-sample predictions of every item
    (:func:`verbcal.study.grid.cross_fit` of :func:`reliability_methods`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    from verbcal.plots import PALETTE, reliability_diagram, style_axes

    summary = _index(rows)
    files: dict[str, Path] = {}
    for dataset, info in result.info.items():
        methods = _base_methods(result.config.methods)
        banded = {UNCALIBRATED, _reference(result.config.methods)}
        fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), dpi=100, layout="constrained")
        for ax, metric in zip(axes.ravel(), SIZE_METRICS, strict=True):
            style_axes(ax, f"{dataset}: test {metric.upper()}")
            for j, method in enumerate(methods):
                keys = [(dataset, method, s, metric) for s in info.sizes]
                points = [summary[k] for k in keys if k in summary]
                if not points:
                    continue
                x = np.array([p["size"] for p in points], dtype=float)
                mean = np.array([p["mean"] for p in points])
                err = np.maximum(
                    0.0,
                    [[p["mean"] - p["lo"] for p in points], [p["hi"] - p["mean"] for p in points]],
                )
                colours = (*PALETTE, "#111827", "#a16207", "#be185d")
                colour = colours[j % len(colours)]
                style = "-" if j < len(colours) else "--"
                ax.plot(
                    x,
                    mean,
                    marker="o",
                    markersize=3,
                    linewidth=1.3,
                    color=colour,
                    linestyle=style,
                    label=method,
                )
                if method in banded:  # intervals for the two references only, to stay legible
                    ax.fill_between(
                        x, mean - err[0], mean + err[1], color=colour, alpha=0.15, linewidth=0
                    )
            ax.set_xscale("log")
            if metric == "nll":
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(NullFormatter())
                ax.set_ylabel("log scale", fontsize=8)
            ticks = [s for i, s in enumerate(info.sizes) if i == 0 or s > 1.12 * info.sizes[i - 1]]
            ax.set_xticks(ticks, [str(s) for s in ticks])
            ax.minorticks_off()
            ax.set_xlabel("calibration-set size (items)", fontsize=9)
        axes[0, 0].legend(fontsize=7, frameon=False, ncol=2)
        fig.suptitle(
            f"{dataset}: mean over {result.config.repeats} splits; bands: 95% percentile "
            "interval (uncalibrated and temperature scaling)",
            fontsize=10,
        )
        files[f"size_{dataset}"] = _save(fig, out / f"size_{dataset}.png", plt)

        floors = [m for m in result.config.methods if m.startswith("temperature")]
        if len(floors) > 1:
            size = _full_size(result, dataset)
            fig, axes = plt.subplots(
                1, 2, figsize=(10, 0.35 * len(floors) + 1.6), dpi=100, layout="constrained"
            )
            for ax, metric in zip(axes, ("nll", "ece"), strict=True):
                style_axes(ax, f"{dataset}: test {metric.upper()} at size {size}")
                ys = np.arange(len(floors))
                found: list[Mapping[str, Any] | None] = [
                    summary.get((dataset, m, size, metric)) for m in floors
                ]
                mean = np.array([p["mean"] if p else np.nan for p in found])
                lo = np.array([p["lo"] if p else np.nan for p in found])
                hi = np.array([p["hi"] if p else np.nan for p in found])
                ax.errorbar(
                    mean,
                    ys,
                    xerr=np.maximum(0.0, [mean - lo, hi - mean]),
                    fmt="o",
                    capsize=3,
                    color=PALETTE[0],
                )
                ax.set_yticks(ys, floors, fontsize=8)
                ax.invert_yaxis()
            files[f"floor_{dataset}"] = _save(fig, out / f"floor_{dataset}.png", plt)

        shown = reliability_methods(result, summary, dataset)
        best = best_method(result, summary, dataset)
        if shown:
            predictions = cross_fitted[dataset]
            y = result.data[dataset][1]
            fig, axes = plt.subplots(
                1,
                len(shown),
                figsize=(4.2 * len(shown), 4.3),
                dpi=100,
                layout="constrained",
                squeeze=False,
            )
            for ax, method in zip(axes[0], shown, strict=True):
                title = f"{method} (best other, by NLL)" if method == best else method
                reliability_diagram(
                    ax, predictions[method], y, n_bins=result.config.bins, title=title
                )
            fig.suptitle(
                f"{dataset}: every item predicted once, out of sample (two-fold cross-fit)",
                fontsize=10,
            )
            files[f"reliability_{dataset}"] = _save(fig, out / f"reliability_{dataset}.png", plt)
    return files


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, facecolor="white")
    plt.close(fig)
    return path


# ---------------------------------------------------------------- findings.md


def findings_markdown(
    result: StudyResult, rows: Sequence[dict[str, Any]], out: Path | None = None
) -> str:
    """The findings page: one section per question of the study, tables with intervals."""
    summary = _index(rows)
    table = by_key(result.rows)
    cfg = result.config
    parts = [
        "# Findings\n",
        f"Reproduce every number on this page with `{_command(result, out)}` "
        f"({len(cfg.methods)} method variants, sizes {cfg.sizes}, {cfg.repeats} stratified "
        f"splits per size, seed {cfg.seed}; `all` = n // 2 items, the rest of each split is the "
        "test part). Intervals are **95% percentile intervals over the repeated splits** "
        "(2.5th to 97.5th percentile of the per-split values): they show how much a result "
        "moves from one random calibration set to another, not a standard error. ECE and MCE "
        f"are top-label with {cfg.bins} equal-width bins (right-closed); NLL clips q at 1e-12. "
        "`uncalibrated` is the verbalized distribution normalised to sum 1.\n",
    ]
    notes = [f"- {name}: {note}" for name, info in result.info.items() for note in info.notes]
    if notes:
        parts.append("Sizes skipped:\n" + "\n".join(notes) + "\n")
    parts.append(_wellformed_section(result))
    parts.append(_compare_section(result, summary, table))
    parts.append(_resoftmax_section(result, summary, table))
    parts.append(_auto_section(result, table))
    parts.append(_floor_section(result, summary, table))
    parts.append(_size_section(result, table))
    parts.append(_threshold_section(result))
    return "\n".join(parts)


def _wellformed_section(result: StudyResult) -> str:
    header = [
        "dataset",
        "items",
        "K",
        "rows not summing to 1",
        "sum range",
        "exact 0 (entries / rows)",
        "rows with a 1",
        "smallest entry",
        "decimals",
        "on 0.05 grid",
        "distinct values",
        "distinct top-label values",
        "distinct rows",
        "mean top",
        "top ≥ 0.9",
        "accuracy",
    ]
    body = []
    for name, info in result.info.items():
        w = info.wellformed
        body.append(
            [
                name,
                str(w["items"]),
                str(w["labels"]),
                str(w["rows_off_sum"]),
                f"{w['sum_min']:.4g}–{w['sum_max']:.4g}",
                f"{w['zero_entries']} / {w['rows_with_zero']}",
                str(w["rows_with_one"]),
                f"{w['min_entry']:.3g}",
                str(w["decimals"]),
                f"{w['share_on_0.05_grid']:.0%}",
                str(w["distinct_values"]),
                str(w["distinct_top"]),
                str(w["distinct_rows"]),
                f"{w['top_mean']:.3f}",
                f"{w['share_top_ge_0.9']:.0%}",
                f"{w['accuracy']:.3f}",
            ]
        )
    return (
        "## How well-formed are the recorded distributions?\n\n"
        "Computed on the values as the LLM wrote them (before normalisation). `decimals`: the "
        "fewest decimals that write every value exactly (2 = a 0.01 grid). Distinct top-label "
        "values bound the operating points a threshold can choose from.\n\n" + _table(header, body)
    )


def _compare_section(
    result: StudyResult,
    summary: Mapping[SummaryKey, Mapping[str, Any]],
    table: Mapping[tuple[str, str, int, str], dict[int, float]],
) -> str:
    methods = _base_methods(result.config.methods)
    text = [
        "## Which calibrator? (test part, calibration set = all: n // 2 items)\n",
        "Mean [95% percentile interval] over the splits; the best mean per column in bold. "
        "Floors are fitted on the calibration part where a method uses one (variants with "
        "fixed floors are in the floor section). `T` is the median fitted temperature; `T → 0` "
        "the share of splits where the fit ran to the solver's bound T = 1e-6: when every "
        "calibration item is classified correctly the NLL keeps falling as T shrinks, the "
        "calibrated distribution becomes one-hot, and each test error then costs -ln(1e-12) "
        "= 27.6 nats.\n",
    ]
    for dataset in result.info:
        size = _full_size(result, dataset)
        best = {}
        for metric in COMPARE_METRICS:
            means = [
                summary[(dataset, m, size, metric)]["mean"]
                for m in methods
                if (dataset, m, size, metric) in summary
            ]
            if means:
                best[metric] = min(means) if metric in LOWER_IS_BETTER else max(means)
        body = []
        for method in methods:
            cells = []
            for metric in COMPARE_METRICS:
                row = summary.get((dataset, method, size, metric))
                cell = _cell(row)
                cells.append(f"**{cell}**" if row and row["mean"] == best.get(metric) else cell)
            t = _median_param(table, dataset, method, size, "temperature")
            cells.append("" if math.isnan(t) else f"{t:.3g}")
            bound = _share_at_bound(table, dataset, method, size)
            cells.append("" if math.isnan(bound) else f"{bound:.0%}")
            body.append([method, *cells])
        text.append(f"### {dataset} (calibration {size}, test {result.info[dataset].n - size})\n")
        text.append(_table(["method", *COMPARE_METRICS, "T", "T → 0"], body))
    return "\n".join(text)


def _share_at_bound(
    table: Mapping[tuple[str, str, int, str], dict[int, float]],
    dataset: str,
    method: str,
    size: int,
) -> float:
    """Share of splits whose fitted T sits at the solver's lower bound (1 / BETA_BOUNDS[1]):
    no calibration item was misclassified, so the NLL kept falling as T went to 0."""
    values = np.array(list(table.get((dataset, method, size, "temperature"), {}).values()))
    return float(np.mean(values <= 1.0001 / BETA_BOUNDS[1])) if len(values) else math.nan


def _median_param(
    table: Mapping[tuple[str, str, int, str], dict[int, float]],
    dataset: str,
    method: str,
    size: int,
    name: str,
) -> float:
    values = list(table.get((dataset, method, size, name), {}).values())
    return float(np.median(values)) if values else math.nan


def _resoftmax_section(
    result: StudyResult,
    summary: Mapping[SummaryKey, Mapping[str, Any]],
    table: Mapping[tuple[str, str, int, str], dict[int, float]],
) -> str:
    ts = _reference(result.config.methods)
    if ts is None or "resoftmax" not in result.config.methods:
        return ""
    body, maps = [], []
    for dataset, info in result.info.items():
        size = _full_size(result, dataset)
        k = len(info.labels)
        t_r = _median_param(table, dataset, "resoftmax", size, "temperature")
        t_t = _median_param(table, dataset, ts, size, "temperature")
        floor = _median_param(table, dataset, ts, size, "floor")
        mode = parse_variant(ts).kwargs["floor_mode"]
        d_nll = paired(table, dataset, size, "nll", "resoftmax", ts)
        d_ece = paired(table, dataset, size, "ece", "resoftmax", ts)
        body.append(
            [
                dataset,
                f"{math.e / (math.e + k - 1):.3f}",
                f"{t_r:.3g}",
                f"{t_t:.3g}",
                _cell(summary.get((dataset, "resoftmax", size, "nll"))),
                _cell(summary.get((dataset, ts, size, "nll"))),
                _signed(d_nll),
                f"{d_nll['share_positive']:.0%}",
                _signed(d_ece),
            ]
        )
        for level in MAP_LEVELS:
            p = np.full((1, k), (1 - level) / (k - 1))
            p[0, 0] = level
            q_r = softmax(p / t_r)[0, 0]
            floored = apply_floor(p, floor, mode) if not math.isnan(floor) else p
            q_t = softmax(np.log(floored) / t_t)[0, 0]
            maps.append([dataset, f"{level:g}", f"{q_r:.3f}", f"{q_t:.3f}", f"{q_r - q_t:+.3f}"])
    shares = ", ".join(
        f"{name} {info.wellformed['share_top_ge_0.9']:.0%}" for name, info in result.info.items()
    )
    return (
        "## Re-softmax vs invert softmax: what the fitted T does\n\n"
        "`resoftmax` is softmax(p / T) on the probabilities; `temperature` is softmax(log p / T), "
        "i.e. q ∝ p^(1/T). At T = 1 re-softmax cannot output more than e / (e + K − 1) (column "
        "`cap at T=1`), so its fitted T must be far below 1 to undo the squashing. Between two "
        "classes the re-softmax log-odds are (p_i − p_j) / T, the invert-softmax log-odds "
        "log(p_i / p_j) / T: linear in the probability gap versus linear in the log ratio. One "
        "small T can make the two agree at one confidence level, not at all of them. Paired "
        "differences resoftmax − temperature per split (positive = re-softmax worse):\n\n"
        + _table(
            [
                "dataset",
                "cap at T=1",
                "T resoftmax (median)",
                "T temperature (median)",
                "NLL resoftmax",
                "NLL temperature",
                "ΔNLL (paired)",
                "splits resoftmax worse",
                "ΔECE (paired)",
            ],
            body,
        )
        + f"\nTop-label probability each fitted map (median T; `{ts}` with its median floor) "
        "gives a reply with top probability p and the rest split evenly. Where the columns agree, re-softmax with its fitted T "
        "imitates invert softmax. Re-softmax can never output a top probability above "
        "1 / (1 + (K − 1) e^(−1/T)), whatever the reply: it comes close to invert softmax where "
        "the data themselves want confidence capped (a fitted clip floor caps invert softmax "
        "too: at most 1 / (1 + (K − 1) floor^(1/T))) or where both maps saturate near 1, and "
        "falls behind where confident replies deserve probabilities near 1. Share of replies "
        f"with top ≥ 0.9: {shares}.\n\n"
        + _table(
            ["dataset", "verbalized top p", "resoftmax q", "temperature q", "difference"], maps
        )
    )


def _auto_section(
    result: StudyResult, table: Mapping[tuple[str, str, int, str], dict[int, float]]
) -> str:
    """What ``auto`` picked per dataset and size, and its NLL against the baselines."""
    if "auto" not in result.config.methods:
        return ""
    picked = sorted(
        {key[3] for key in table if key[1] == "auto" and key[3].startswith("weight_")},
        key=lambda m: METHODS[parse_spec(m.removeprefix("weight_")).method].complexity,
    )
    names = [m.removeprefix("weight_") for m in picked]
    fixed = [m for m in result.config.methods if m not in ("auto", "uncalibrated")]

    def mean(dataset: str, size: int, method: str, metric: str = "nll") -> float:
        values = list(table.get((dataset, method, size, metric), {}).values())
        return float(np.mean(values)) if values else math.nan

    body = []
    for dataset, info in result.info.items():
        for size in info.sizes:
            scores = {m: mean(dataset, size, m) for m in fixed}
            best = min(scores, key=lambda m: (math.isnan(scores[m]), scores[m]), default=None)
            shares = [_share(mean(dataset, size, "auto", p)) for p in picked]
            tag = " (n // 2)" if size == _full_size(result, dataset) else ""
            body.append(
                [
                    dataset,
                    f"{size}{tag}",
                    *shares,
                    _fmt(mean(dataset, size, "auto")),
                    _fmt(mean(dataset, size, "uncalibrated")),
                    "–" if best is None else f"{best} {_fmt(scores[best])}",
                ]
            )
    return "\n".join(
        [
            "## What `auto` built (mean weight over splits) and what it scored (mean test NLL)\n",
            "`auto` is built on the calibration part only, from 5-fold cross-validated "
            "predictions (2 shufflings): by default a mixture of the candidates weighted to "
            "maximise the out-of-fold log score (stacking); a weight is a candidate's share of "
            "the mixture, averaged over the splits (– where it was not a candidate: `words` "
            "is one on confidence read from words only). `best fixed` is the variant (any but "
            "`auto` and `uncalibrated`) with the lowest mean test NLL at that size, known "
            "only after the fact.\n",
            _table(["dataset", "size", *names, "auto NLL", "uncalibrated NLL", "best fixed"], body),
        ]
    )


def _share(value: float) -> str:
    """A mean weight as a percentage; – where the candidate was not in the running."""
    return "–" if math.isnan(value) else f"{value:.0%}"


def _floor_section(
    result: StudyResult,
    summary: Mapping[SummaryKey, Mapping[str, Any]],
    table: Mapping[tuple[str, str, int, str], dict[int, float]],
) -> str:
    variants = [m for m in result.config.methods if m.startswith("temperature")]
    if len(variants) < 2:
        return ""
    text = [
        "## Sensitivity to the floor (temperature scaling, calibration set = all)\n",
        "`clip` floors take max(p, floor), `mix` floors (1 − a) p + a / K; `fit` chooses the "
        "floor on the calibration part jointly with T (by NLL). A clip floor below the smallest "
        "verbalized entry changes nothing. Floor and T: medians over the splits.\n",
    ]
    for dataset, info in result.info.items():
        size = _full_size(result, dataset)
        body = []
        for m in variants:
            body.append(
                [
                    m,
                    f"{_median_param(table, dataset, m, size, 'floor'):.3g}",
                    f"{_median_param(table, dataset, m, size, 'temperature'):.3g}",
                    _cell(summary.get((dataset, m, size, "nll"))),
                    _cell(summary.get((dataset, m, size, "ece"))),
                    _cell(summary.get((dataset, m, size, "brier"))),
                ]
            )
        text.append(
            f"### {dataset} (smallest verbalized entry {info.wellformed['min_entry']:.3g})\n"
        )
        text.append(_table(["variant", "floor", "T", "NLL", "ECE", "Brier"], body))
    return "\n".join(text)


def _size_section(
    result: StudyResult, table: Mapping[tuple[str, str, int, str], dict[int, float]]
) -> str:
    methods = result.config.methods
    ts = _reference(methods)
    if ts is None or UNCALIBRATED not in methods:
        return ""
    text = [
        "## How many labelled items? (calibration-set size)\n",
        f"Test: temperature scaling (`{ts}`) **beats the uncalibrated distribution with 95% confidence** at "
        "a size when the paired difference uncalibrated − temperature, computed per split on the "
        "same test part, has its 2.5th percentile over the splits above 0, for ECE and for NLL "
        "(i.e. temperature scaling wins in at least 97.5% of random calibration sets of that "
        "size). Cells: mean [2.5th, 97.5th percentile] of the difference (positive = "
        "temperature better), then the share of splits temperature wins. The per-split "
        "difference also carries the noise of the test part (ECE with 15 bins on 50-175 items "
        "is itself noisy), so the test is conservative.\n",
    ]
    verdicts = []
    for dataset, info in result.info.items():
        body: list[list[str]] = []
        first: dict[str, int | None] = {"both": None, "ece": None, "nll": None}
        for size in info.sizes:
            d_ece = paired(table, dataset, size, "ece", UNCALIBRATED, ts)
            d_nll = paired(table, dataset, size, "nll", UNCALIBRATED, ts)
            both = d_ece["lo"] > 0 and d_nll["lo"] > 0
            for key, passed in (("both", both), ("ece", d_ece["lo"] > 0), ("nll", d_nll["lo"] > 0)):
                if passed and first[key] is None:
                    first[key] = size
            body.append(
                [
                    str(size),
                    str(info.n - size),
                    _signed(d_ece),
                    f"{d_ece['share_positive']:.0%}",
                    _signed(d_nll),
                    f"{d_nll['share_positive']:.0%}",
                    "yes" if both else "no",
                    f"{_share_at_bound(table, dataset, ts, size):.0%}",
                ]
            )
        never = f"not reached up to {max(info.sizes)}"
        verdicts.append(
            f"- **{dataset}**: both {first['both'] or never}; ECE alone {first['ece'] or never}; "
            f"NLL alone {first['nll'] or never}"
        )
        text.append(f"### {dataset}\n")
        text.append(
            _table(
                [
                    "calibration",
                    "test",
                    "ΔECE",
                    "ECE wins",
                    "ΔNLL",
                    "NLL wins",
                    "beats with 95%",
                    "T → 0",
                ],
                body,
            )
        )
    text.append(
        "Smallest calibration-set size (items) where temperature scaling beats "
        "uncalibrated with 95% confidence:\n"
    )
    text.append("\n".join(verdicts) + "\n")
    richer = [m for m in _base_methods(methods) if m not in (UNCALIBRATED, ts)]
    if richer:
        text.append(
            "### Where the richer calibrators overfit\n\n"
            "Paired test-NLL difference method − temperature per size (positive = worse than "
            "temperature scaling), mean [percentile interval]; `gap` is the mean test NLL minus "
            "the NLL on the calibration part itself (large = overfitting).\n"
        )
        for dataset, info in result.info.items():
            body = []
            for m in richer:
                cells = []
                for size in info.sizes:
                    d = paired(table, dataset, size, "nll", m, ts)
                    test = table.get((dataset, m, size, "nll"), {})
                    fit = table.get((dataset, m, size, "nll_fit"), {})
                    common = sorted(set(test) & set(fit))
                    gap = float(np.mean([test[r] - fit[r] for r in common])) if common else math.nan
                    cells.append(f"{_signed(d, 2)} · gap {_fmt(gap, 2)}")
                body.append([m, *cells])
            text.append(f"#### {dataset}\n")
            text.append(_table(["method", *(str(s) for s in info.sizes)], body))
    return "\n".join(text)


def _threshold_section(result: StudyResult) -> str:
    if not result.thresholds:
        return ""
    summary = threshold_summary(result.thresholds)
    index = {
        (s["dataset"], s["method"], s["size"], s["cls"], s["target"], s["rule"]): s for s in summary
    }
    methods = result.config.threshold_methods
    text = [
        "## Do thresholds keep their promise?\n",
        "Per class c and target precision: a threshold t is chosen on the calibration part "
        "(items with q_c ≥ t count as predicted c) and the precision of the test part at t is "
        "compared with the target. Rules: `bound` = the smallest t whose one-sided "
        f"Clopper-Pearson lower bound on precision (confidence {result.config.confidence:g}) "
        "reaches the target (`verbcal.decide.threshold_for`); `point` = the smallest t whose "
        "calibration-part precision reaches it (no margin); `prob` = t = the target itself "
        "(trusting the probability, no labels beyond those used to calibrate). Cells: share of "
        "splits meeting the target on the test part / splits where a threshold was reachable "
        "and predicted ≥ 1 test item, then the mean test recall of those. Calibration set = all.\n",
    ]
    header = ["class", "target"] + [f"{m} · {rule}" for m in methods for rule in RULES]
    overall: dict[tuple[str, str, float], list[float]] = {}
    for dataset, info in result.info.items():
        size = _full_size(result, dataset)
        body = []
        for m in methods:
            for rule in RULES:
                for target in result.config.targets:
                    for cls in range(len(info.labels)):
                        s = index.get((dataset, m, size, cls, target, rule))
                        if s is not None:
                            pooled = overall.setdefault((m, rule, target), [0.0, 0.0, 0.0])
                            pooled[0] += s["kept"] * s["defined"] if s["defined"] else 0.0
                            pooled[1] += s["defined"]
                            pooled[2] += s["repeats"]
        for cls, label in enumerate(info.labels):
            for target in result.config.targets:
                cells = []
                for m in methods:
                    for rule in RULES:
                        s = index.get((dataset, m, size, cls, target, rule))
                        if s is None or s["defined"] == 0:
                            cells.append("– / 0")
                            continue
                        cells.append(f"{s['kept']:.2f} / {s['defined']} · r {_fmt(s['recall'], 2)}")
                body.append([label, f"{target:g}", *cells])
        text.append(f"### {dataset} (calibration {size}, test {info.n - size})\n")
        text.append(_table(header, body))
    if overall:
        lines = [
            f"| {m} | {rule} | {target:g} | {_fmt(met / defined if defined else math.nan, 2)} | "
            f"{defined / trials if trials else math.nan:.0%} | {int(trials)} |"
            for (m, rule, target), (met, defined, trials) in overall.items()
        ]
        text.append(
            "Pooled over every dataset, class and split (calibration set = all): share "
            "of thresholds that kept the promise on the test part, among those reachable with "
            "≥ 1 test item predicted (`usable`):\n\n"
            "| probabilities | rule | target | kept | usable | trials |\n|---|---|---|---|---|---|\n"
            + "\n".join(lines)
            + "\n"
        )
    return "\n".join(text)
