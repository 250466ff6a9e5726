"""The bakeoff's outputs: rows, the recommendation, ``bakeoff.json``, calibrators, the HTML report.

**Recommendation** (:func:`recommend`): among the arms whose decision metric is not shown
worse than the best arm's — the 95% paired-bootstrap CI of the difference contains 0 —
the cheapest by cost per 1,000 items; ties go to the lower calibrated NLL. Arms without a
known cost (recorded replies, models without a price) are chosen only when no arm in that
set has one: then the one with the lowest calibrated NLL. The reason is one sentence; it
says so when no threshold met the target on any calibration part (the decision metric
then cannot separate the arms).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from verbcal.bakeoff.collect import ArmReplies
from verbcal.bakeoff.score import SCORED, Scores, to_json_value, within_best

METRIC_TITLES = {
    "accuracy": "accuracy",
    "ece": "ECE",
    "nll": "NLL",
    "brier": "Brier",
    "auroc": "AUROC",
    "ece_raw": "raw ECE",
    "nll_raw": "raw NLL",
    "decision_metric": "decision metric",
}


def decision_title(scores: Scores, labels: Sequence[str]) -> str:
    """The decision metric in words, e.g. ``review rate at precision 0.9``."""
    spec = scores.decision
    label = labels[spec.positive]
    if spec.metric == "recall":
        return f"recall of {label} at precision {spec.precision:g}"
    return f"review rate at precision {spec.precision:g} ({label} accepted or rejected)"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (numpy linear), None without values."""
    return float(np.percentile(values, q)) if values else None


def arm_rows(
    scores: Scores,
    replies: Mapping[str, ArmReplies],
    dropped: Mapping[str, int],
    describe: Mapping[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """One JSON-ready row per arm, in config order (the ``arms`` of ``bakeoff.json``)."""
    rows = []
    for name, arm in scores.arms.items():
        got = replies[name]
        row: dict[str, Any] = {"arm": name, **describe.get(name, {}), "n": arm.n}
        row["n_dropped"] = dropped.get(name, 0)
        row.update({metric: arm.means[metric] for metric in SCORED})
        row["decision_precision"] = arm.decision_precision
        row["decision_reachable_share"] = arm.decision_reachable
        row["cost_per_1k"] = got.cost_per_1k
        row["latency_p50"] = percentile(got.latencies, 50)
        row["latency_p95"] = percentile(got.latencies, 95)
        row["requests"] = got.n_requests
        row["input_tokens"] = got.input_tokens
        row["output_tokens"] = got.output_tokens
        spread = got.spread
        row["sample_spread"] = (
            None if spread is None or np.isnan(spread).all() else float(np.nanmean(spread))
        )
        row["failed_replies"] = int(sum(1 for s in got.status if s == "failed"))
        for metric in SCORED:
            lo, hi = arm.diff_ci[metric]
            row[f"diff_to_best_{metric}_ci"] = [lo, hi]
        rows.append({key: _plain(value) for key, value in row.items()})
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [to_json_value(v) for v in value]
    return to_json_value(value)


def recommend(
    rows: Sequence[dict[str, Any]], scores: Scores, labels: Sequence[str]
) -> tuple[str, str]:
    """The recommended arm and the reason, in one sentence (see the module)."""
    best = scores.best["decision_metric"]
    by_name = {row["arm"]: row for row in rows}
    tied = [row for row in rows if within_best(scores, row["arm"])]
    if not tied:
        tied = [by_name[best]]
    title = decision_title(scores, labels)
    best_value = _fmt(by_name[best]["decision_metric"])
    priced = [row for row in tied if row["cost_per_1k"] is not None]
    unreachable = ""
    if all(row["decision_reachable_share"] == 0 for row in rows):
        unreachable = (
            "; no threshold met the precision target on any calibration part, so the"
            " decision metric cannot tell the arms apart here"
        )

    def nll(row: dict[str, Any]) -> float:
        return math.inf if row["nll"] is None else float(row["nll"])

    if priced:
        pick = min(priced, key=lambda row: (row["cost_per_1k"], nll(row)))
        where = (
            "it is also the best arm"
            if pick["arm"] == best
            else f"the best is {best} at {best_value}"
        )
        reason = (
            f"{pick['arm']} is the cheapest arm (${pick['cost_per_1k']:.4g} per 1,000 items)"
            f" whose {title} ({_fmt(pick['decision_metric'])}) is within the 95% paired"
            f" bootstrap CI of the best arm's ({where}; {len(tied)} of {len(rows)} arms are"
            f" that close){unreachable}."
        )
        return str(pick["arm"]), reason
    pick = min(tied, key=nll)
    reason = (
        f"No arm has a known cost, so among the {len(tied)} of {len(rows)} arms whose {title}"
        f" is within the 95% paired bootstrap CI of the best ({best}, {best_value}),"
        f" {pick['arm']} has the lowest calibrated NLL ({_fmt(pick['nll'])}){unreachable}."
    )
    return str(pick["arm"]), reason


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def pareto(points: Sequence[tuple[str, float, float]], lower_y: bool) -> list[str]:
    """Names of the points no other point beats on cost (x) and on y (both at least as good,
    one better); ``lower_y`` says whether a lower y is better."""
    front = []
    for name, x, y in points:
        sign = 1.0 if lower_y else -1.0
        beaten = any(
            (x2 <= x and sign * y2 <= sign * y) and (x2 < x or sign * y2 < sign * y)
            for other, x2, y2 in points
            if other != name
        )
        if not beaten:
            front.append(name)
    return front


def bakeoff_document(
    rows: list[dict[str, Any]], scores: Scores, labels: Sequence[str], config_source: str
) -> dict[str, Any]:
    """The content of ``bakeoff.json``: ``arms``, ``recommended``, ``reason`` and the protocol."""
    name, reason = recommend(rows, scores, labels)
    spec = scores.decision
    return {
        "arms": rows,
        "recommended": name,
        "reason": reason,
        "best": scores.best,
        "protocol": {
            "config": config_source,
            "n_items": scores.n_items,
            "labels": list(labels),
            "calib_frac": scores.calib_frac,
            "repeats": scores.repeats,
            "seed": scores.seed,
            "n_boot": scores.n_boot,
            "method": scores.method,
            "decision": {
                "positive": labels[spec.positive],
                "precision": spec.precision,
                "confidence": spec.confidence,
                "metric": spec.metric,
                "title": decision_title(scores, labels),
            },
            "ece": "top-label, 15 equal-width bins",
            "ci": "95% paired bootstrap of the difference to the best arm, averaged over repeats",
        },
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """``bakeoff.json`` (strict JSON: no NaN)."""
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------ the table


def rich_table(document: dict[str, Any]) -> Any:
    """A rich Table of the arms (the recommended one marked)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="bakeoff", title_justify="left", header_style="bold")
    for column in (
        "arm",
        "format",
        "n",
        "acc",
        "ECE raw→cal",
        "NLL raw→cal",
        "ΔNLL CI",
        "decision",
        "Δdecision CI",
        "$/1k",
        "p50 s",
    ):
        table.add_column(column, justify="left" if column in ("arm", "format") else "right")
    for row in document["arms"]:
        mark = " ★" if row["arm"] == document["recommended"] else ""
        table.add_row(
            escape(row["arm"]) + mark,
            str(row.get("format", "")),
            str(row["n"]),
            _fmt(row["accuracy"]),
            f"{_fmt(row['ece_raw'])}→{_fmt(row['ece'])}",
            f"{_fmt(row['nll_raw'])}→{_fmt(row['nll'])}",
            _ci(row["diff_to_best_nll_ci"]),
            _fmt(row["decision_metric"]),
            _ci(row["diff_to_best_decision_metric_ci"]),
            "n/a" if row["cost_per_1k"] is None else f"{row['cost_per_1k']:.4g}",
            _fmt(row["latency_p50"], 2),
        )
    return table


def _ci(pair: Sequence[float | None]) -> str:
    lo, hi = pair
    if lo is None or hi is None:
        return "n/a"
    return f"[{lo:+.3f}, {hi:+.3f}]"


def markdown_table(document: dict[str, Any]) -> str:
    """The arms as a Markdown table (for the README and docs)."""
    head = (
        "| arm | format | n | accuracy | ECE raw → cal | NLL raw → cal | ΔNLL to best (95% CI)"
        " | decision metric | Δ to best (95% CI) | $ / 1k items |"
    )
    lines = [head, "|" + "---|" * 10]
    for row in document["arms"]:
        mark = " **(recommended)**" if row["arm"] == document["recommended"] else ""
        cost = "n/a" if row["cost_per_1k"] is None else f"{row['cost_per_1k']:.4g}"
        lines.append(
            f"| {row['arm']}{mark} | {row.get('format', '')} | {row['n']} | "
            f"{_fmt(row['accuracy'])} | {_fmt(row['ece_raw'])} → {_fmt(row['ece'])} | "
            f"{_fmt(row['nll_raw'])} → {_fmt(row['nll'])} | {_ci(row['diff_to_best_nll_ci'])} | "
            f"{_fmt(row['decision_metric'])} | {_ci(row['diff_to_best_decision_metric_ci'])} |"
            f" {cost} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ HTML report


def write_report(path: Path, document: dict[str, Any], scores: Scores) -> None:
    """A self-contained HTML report: recommendation, table, cost plots, reliability diagrams."""
    from verbcal.plots import figure_to_data_uri, new_figure, reliability_diagram
    from verbcal.report import CSS

    rows = document["arms"]
    protocol = document["protocol"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>verbcal bakeoff</title><style>{CSS}</style></head><body><main>",
        "<header><h1>Bakeoff</h1>",
        f"<p class='sub'>{len(rows)} arms on the same {protocol['n_items']} labelled items;"
        f" {protocol['repeats']} stratified splits ({protocol['calib_frac']:g} calibration),"
        f" calibrator <code>{html.escape(protocol['method'])}</code>, seed {protocol['seed']}."
        "</p></header>",
        "<section><h2>Recommendation</h2>",
        f"<p class='lead'><span class='tag'>recommended</span> <b>{html.escape(document['recommended'])}</b></p>",
        f"<p class='lead'>{html.escape(document['reason'])}</p></section>",
        "<section><h2>Arms</h2><div class='scroll'>",
        _html_table(document),
        "</div>",
        f"<p class='sub'>Decision metric: {html.escape(protocol['decision']['title'])};"
        " thresholds chosen with Learn-then-Test (confidence"
        f" {protocol['decision']['confidence']:g}) on each calibration part, applied to its"
        " test part. Δ: the 95% paired bootstrap CI of the difference to the best arm."
        " ECE: top-label, 15 equal-width bins.</p></section>",
        "<section><h2>Cost</h2>",
    ]
    priced = [row for row in rows if row["cost_per_1k"] is not None]
    if priced:
        lower = scores.decision.lower_is_better
        figures = []
        for metric, lower_better, label in (
            ("nll", True, "calibrated NLL (lower is better)"),
            ("decision_metric", lower, protocol["decision"]["title"]),
        ):
            fig, ax = new_figure(5.2, 4.0)
            _cost_plot(ax, priced, metric, lower_better, label)
            figures.append(
                f"<figure><img alt='cost vs {metric}' src='{figure_to_data_uri(fig)}'>"
                f"<figcaption>cost per 1,000 items vs {html.escape(label)}; the line joins"
                " the Pareto front (no other arm is both cheaper and better)</figcaption></figure>"
            )
        parts.append("<div class='grid two'>" + "".join(figures) + "</div>")
    else:
        parts.append(
            "<p class='note'>No arm has a known cost (recorded replies, or models without a"
            " price): the cost plots are left out.</p>"
        )
    parts.append("</section><section><h2>Reliability</h2><div class='grid four'>")
    for name, arm in scores.arms.items():
        for which, q in (("raw", arm.pooled_raw), ("calibrated", arm.pooled_q)):
            assert q is not None and arm.pooled_y is not None
            fig, ax = new_figure(3.6, 3.4)
            reliability_diagram(ax, q, arm.pooled_y, title=f"{name}: {which}")
            parts.append(
                f"<figure><img alt='{html.escape(name)} {which}' src='{figure_to_data_uri(fig)}'>"
                f"<figcaption>{html.escape(name)}, {which}: test parts of all"
                f" {scores.repeats} splits pooled</figcaption></figure>"
            )
    parts.append("</div></section>")
    parts.append(
        "<footer>verbcal bakeoff · config "
        f"<code>{html.escape(str(protocol['config']))}</code></footer></main></body></html>"
    )
    path.write_text("\n".join(parts), encoding="utf-8")


def _cost_plot(
    ax: Any, rows: Sequence[dict[str, Any]], metric: str, lower: bool, label: str
) -> None:
    from verbcal.plots import ACCENT, INK, MUTED, style_axes

    style_axes(ax, label)
    points = [
        (row["arm"], float(row["cost_per_1k"]), float(row[metric]))
        for row in rows
        if row[metric] is not None
    ]
    front = set(pareto(points, lower))
    for name, x, y in points:
        ax.scatter([x], [y], color=ACCENT if name in front else MUTED, s=40, zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8, color=INK)
    line = sorted((x, y) for name, x, y in points if name in front)
    if len(line) > 1:
        ax.plot([x for x, _ in line], [y for _, y in line], color=ACCENT, linewidth=1.2)
    ax.set_xlabel("USD per 1,000 items", fontsize=9)
    ax.set_ylabel(metric, fontsize=9)


def _html_table(document: dict[str, Any]) -> str:
    head = (
        "arm",
        "format",
        "n",
        "accuracy",
        "ECE raw → cal",
        "NLL raw → cal",
        "Brier",
        "AUROC",
        "decision",
        "$ / 1k",
        "latency p50 / p95 s",
    )
    out = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in document["arms"]:
        rec = row["arm"] == document["recommended"]
        cells = [
            html.escape(row["arm"]),
            html.escape(str(row.get("format", ""))),
            str(row["n"]),
            _fmt(row["accuracy"]) + _ci_html(row["diff_to_best_accuracy_ci"]),
            f"{_fmt(row['ece_raw'])} → {_fmt(row['ece'])}" + _ci_html(row["diff_to_best_ece_ci"]),
            f"{_fmt(row['nll_raw'])} → {_fmt(row['nll'])}" + _ci_html(row["diff_to_best_nll_ci"]),
            _fmt(row["brier"]) + _ci_html(row["diff_to_best_brier_ci"]),
            _fmt(row["auroc"]) + _ci_html(row["diff_to_best_auroc_ci"]),
            _fmt(row["decision_metric"]) + _ci_html(row["diff_to_best_decision_metric_ci"]),
            "n/a" if row["cost_per_1k"] is None else f"{row['cost_per_1k']:.4g}",
            f"{_fmt(row['latency_p50'], 2)} / {_fmt(row['latency_p95'], 2)}",
        ]
        out.append(
            f"<tr{' class=rec' if rec else ''}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _ci_html(pair: Sequence[float | None]) -> str:
    return f"<span class='ci'>Δ {html.escape(_ci(pair))}</span>"


def write_outputs(
    out: Path,
    document: dict[str, Any],
    scores: Scores,
    calibrators: Mapping[str, Any],
    *,
    html_report: bool = True,
) -> dict[str, Path]:
    """Write ``bakeoff.json``, ``calibrators/<arm>.json``, ``bakeoff.md`` and ``report.html``."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["json"] = out / "bakeoff.json"
    write_json(files["json"], document)
    folder = out / "calibrators"
    folder.mkdir(exist_ok=True)
    for name, calibrator in calibrators.items():
        path = folder / f"{name}.json"
        calibrator.save(path)
        files[f"calibrator:{name}"] = path
    files["markdown"] = out / "bakeoff.md"
    files["markdown"].write_text(
        markdown_table(document) + f"\n\nRecommended: **{document['recommended']}**."
        f" {document['reason']}\n",
        encoding="utf-8",
    )
    if html_report:
        files["report"] = out / "report.html"
        write_report(files["report"], document, scores)
    return files


__all__ = [
    "arm_rows",
    "bakeoff_document",
    "decision_title",
    "markdown_table",
    "pareto",
    "recommend",
    "rich_table",
    "write_json",
    "write_outputs",
    "write_report",
]
