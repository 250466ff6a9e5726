"""One self-contained HTML report for a run directory (``verbcal report RUN_DIR``).

Styles are inline and every plot is a PNG ``data:`` URI: the file opens offline, from
a mail attachment, with nothing fetched from a network. The report reads what
``verbcal run`` wrote (metrics.json, split.json, predictions.jsonl, calibrators/) and
redraws the test-part plots from the saved calibrators.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal import provenance
from verbcal.calibration import Calibrator
from verbcal.metrics import LOWER_IS_BETTER, METRICS
from verbcal.predictions import read_predictions
from verbcal.run_metrics import RunMetrics


class ReportError(ValueError):
    """A directory that is not a complete run; the message says what is missing."""


METRIC_NAMES = {
    "accuracy": "Accuracy",
    "macro_f1": "Macro-F1",
    "ece": "ECE",
    "mce": "MCE",
    "nll": "NLL",
    "brier": "Brier",
    "auroc": "AUROC",
}
STATUS_COLOURS = {"ok": "#10b981", "repaired": "#eab308", "failed": "#ef4444", "error": "#7f1d1d"}
PLOT_ORDER = ("identity", "resoftmax", "temperature")

CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --card:#ffffff;
        --accent:#2563eb; --good:#047857; --warn:#b45309; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue",
       Arial, "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 64px; }
header { padding: 8px 0 18px; border-bottom: 1px solid var(--line); margin-bottom: 22px; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 18px; margin: 34px 0 12px; letter-spacing: -0.005em; }
h3 { font-size: 14px; margin: 0 0 8px; color: var(--muted); font-weight: 600;
     text-transform: uppercase; letter-spacing: .04em; }
p { margin: 6px 0; }
.sub { color: var(--muted); font-size: 14px; }
.lead { max-width: 860px; }
.grid { display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(330px, 1fr)); }
.grid.two { grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); }
.grid.four { grid-template-columns: repeat(auto-fit, minmax(250px, 1fr)); }
.cards { display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px;
        box-shadow: 0 1px 2px rgba(15, 23, 42, .04); }
.stat .value { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; }
.stat .label { color: var(--muted); font-size: 12.5px; }
.stat .delta { font-size: 12.5px; color: var(--muted); }
figure { margin: 0; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 6px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 10px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; text-transform: uppercase; letter-spacing: .03em;
     background: #f1f5f9; }
th:first-child, td:first-child { text-align: left; }
td.l, th.l { text-align: left; }
tr.rec td { background: #eff6ff; }
.ci { display: block; color: var(--muted); font-size: 11.5px; white-space: nowrap; }
.best { font-weight: 700; color: var(--accent); }
.pill { display: inline-block; padding: 2px 10px; border-radius: 999px; font-size: 12.5px;
        color: #fff; margin: 2px 6px 2px 0; font-variant-numeric: tabular-nums; }
.tag { display: inline-block; padding: 1px 8px; border-radius: 6px; font-size: 11.5px;
       background: #e0e7ff; color: #3730a3; margin-left: 6px; vertical-align: 1px; }
.no { color: var(--warn); }
.note { background: #fffbeb; border: 1px solid #fde68a; border-radius: 8px; padding: 8px 12px;
        font-size: 13.5px; margin: 8px 0; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
       font-size: 12.5px; background: #f1f5f9; padding: 1px 5px; border-radius: 4px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; font-size: 13.5px; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--line);
         padding-top: 12px; }
@media (max-width: 640px) { main { padding: 16px 12px 40px; } h1 { font-size: 21px; }
  .grid.two { grid-template-columns: 1fr; } }
@media print { body { background: #fff; } .card { box-shadow: none; break-inside: avoid; } }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{float(value):.{digits}f}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(
            f"{path} is missing: is this a run directory from `verbcal run`?"
        ) from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Everything the report shows: metrics, split, and per method the test distributions."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory")
    try:
        metrics = RunMetrics.from_dict(_read_json(root / "metrics.json"))
    except ValueError as exc:
        raise ReportError(f"{root / 'metrics.json'}: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise ReportError(
            f"{root / 'metrics.json'}: not a metrics.json of `verbcal run` ({exc!r})"
        ) from None
    split = _read_json(root / "split.json")
    labels = metrics.labels
    predictions = read_predictions(root / "predictions.jsonl", labels)
    position = {item_id: i for i, item_id in enumerate(predictions.ids)}
    missing = [i for i in split["test"] if i not in position]
    if missing:
        raise ReportError(f"{len(missing)} test ids of split.json are not in predictions.jsonl")
    test = np.array([position[i] for i in split["test"]], dtype=np.int64)
    calib = np.array([position[i] for i in split["calibration"]], dtype=np.int64)
    p_test, y_test = predictions.probs[test], predictions.y[test]
    q_test: dict[str, NDArray[np.float64]] = {}
    q_calib: dict[str, NDArray[np.float64]] = {}
    for method, entry in metrics.methods.items():
        calibrator = Calibrator.load(root / entry.calibrator)
        q_test[method] = calibrator.predict_proba(p_test)
        q_calib[method] = calibrator.predict_proba(predictions.probs[calib])
    return {
        "root": root,
        "metrics": metrics,
        "split": split,
        "labels": labels,
        "y_test": y_test,
        "y_calib": predictions.y[calib],
        "q_test": q_test,
        "q_calib": q_calib,
    }


# ---------------------------------------------------------------- figures


def _figures(data: dict[str, Any]) -> dict[str, Any]:
    from verbcal import plots

    metrics = data["metrics"]
    y = data["y_test"]
    methods = _plot_methods(metrics)
    n_bins = int(metrics.options.get("n_bins", 15))
    out: dict[str, Any] = {"reliability": [], "histogram": []}
    for method in methods:
        title = _method_title(metrics, method)
        fig, ax = plots.new_figure(4.4, 4.2)
        plots.reliability_diagram(ax, data["q_test"][method], y, n_bins=n_bins, title=title)
        out["reliability"].append((method, plots.figure_to_data_uri(fig)))
        fig, ax = plots.new_figure(4.4, 2.9)
        plots.confidence_histogram(ax, data["q_test"][method], y, title=title)
        out["histogram"].append((method, plots.figure_to_data_uri(fig)))
    rec = metrics.recommended
    thresholds = {
        label: entry["calibration"].get("threshold")
        if entry["calibration"].get("reachable")
        else None
        for label, entry in (metrics.methods[rec].thresholds or {}).items()
    }
    fig, ax = plots.new_figure(5.6, 4.4)
    plots.pr_curves(
        ax,
        data["q_calib"][rec],
        data["y_calib"],
        data["labels"],
        thresholds,
        title=f"{rec}: calibration part",
    )
    out["pr_calib"] = plots.figure_to_data_uri(fig)
    fig, ax = plots.new_figure(5.6, 4.4)
    plots.pr_curves(
        ax, data["q_test"][rec], y, data["labels"], thresholds, title=f"{rec}: test part"
    )
    out["pr_test"] = plots.figure_to_data_uri(fig)
    fig, ax = plots.new_figure(5.6, 4.4)
    for k, method in enumerate(metrics.methods):
        plots.risk_coverage_plot(
            ax,
            data["q_test"][method],
            y,
            label=method,
            colour=plots.PALETTE[k % len(plots.PALETTE)],
            title="risk-coverage on the test part" if k == 0 else "",
        )
    out["risk"] = plots.figure_to_data_uri(fig)
    return out


def _plot_methods(metrics: RunMetrics) -> list[str]:
    """Uncalibrated, re-softmax, temperature, the best alternative, then any others."""
    present = list(metrics.methods)
    first = [m for m in PLOT_ORDER if m in present]
    best = str(metrics.best_alternative)
    if best in present and best not in first:
        first.append(best)
    return first + [m for m in present if m not in first]


def _method_title(metrics: RunMetrics, method: str) -> str:
    names = {
        "identity": "uncalibrated (verbalized)",
        "resoftmax": "re-softmax",
        "temperature": "invert softmax + temperature",
    }
    title = names.get(method, method)
    if method == metrics.best_alternative:
        title += " (best alternative)"
    return title


# ---------------------------------------------------------------- sections


def _header(metrics: RunMetrics) -> str:
    run = metrics.run
    task = run.get("task") or {}
    name = task.get("name") or Path(str(run.get("source", "predictions"))).stem
    if run.get("mode") == "elicit":
        backend = f"{run.get('backend')} / {run.get('model')}"
        kind = provenance.short(run.get("provenance"))
        origin = (
            f"{_e(kind)} probabilities elicited from <b>{_e(backend)}</b>,"
            f" items <code>{_e(run.get('items'))}</code>"
        )
    else:
        origin = f"from the predictions file <code>{_e(run.get('source'))}</code> (no LLM calls in this run)"
    instruction = (
        f"<p class='lead'>{_e(task['instruction'])}</p>" if task.get("instruction") else ""
    )
    return (
        f"<header><h1>Calibration report: {_e(name)}</h1>"
        f"<p class='sub'>{origin} · labels {_e(', '.join(metrics.labels))} · "
        f"created {_e(metrics.created)} · verbcal {_e(metrics.verbcal)}</p>"
        f"{instruction}</header>"
    )


def _headline(metrics: RunMetrics) -> str:
    methods = metrics.methods
    rec = metrics.recommended
    base = methods["identity"].test if "identity" in methods else None
    after = methods[rec].test

    def delta(metric: str) -> str:
        if not base:
            return ""
        return f"<div class='delta'>uncalibrated {_num(base[metric])}</div>"

    cards = [
        ("items", _num(metrics.n_records), f"{metrics.n_labelled} usable with a gold label"),
        (
            "calibration / test",
            f"{metrics.n_calibration} / {metrics.n_test}",
            f"stratified, seed {metrics.options['seed']}",
        ),
        (
            "recommended",
            _e(rec),
            "auto: built by cross-validated NLL on the calibration part",
        ),
        ("test ECE", _num(after["ece"]), delta("ece")),
        ("test NLL", _num(after["nll"]), delta("nll")),
        ("test accuracy", _num(after["accuracy"]), delta("accuracy")),
    ]
    body = "".join(
        f"<div class='card stat'><div class='label'>{_e(label)}</div>"
        f"<div class='value'>{value}</div>"
        + (extra if extra.startswith("<") else f"<div class='label'>{_e(extra)}</div>")
        + "</div>"
        for label, value, extra in cards
    )
    return f"<section class='cards'>{body}</section>"


def _status(metrics: RunMetrics) -> str:
    counts = metrics.status_counts
    total = max(1, sum(counts.values()))
    order = ["ok", "repaired", "failed", "error"]
    keys = [k for k in order if k in counts] + [k for k in counts if k not in order]
    pills = "".join(
        f"<span class='pill' style='background:{STATUS_COLOURS.get(k, '#64748b')}'>"
        f"{_e(k)}: {counts[k]} ({counts[k] / total:.0%})</span>"
        for k in keys
    )
    run = metrics.run
    issues = run.get("issue_counts") or {}
    issue_text = ""
    if issues:
        rows = "".join(
            f"<tr><td class='l'>{_e(k)}</td><td>{v}</td></tr>" for k, v in issues.items()
        )
        issue_text = (
            "<div class='scroll'><table><tr><th class='l'>most frequent parse issues</th>"
            f"<th>items</th></tr>{rows}</table></div>"
        )
    left = metrics.n_records - metrics.n_labelled
    extra = (
        f"<p class='sub'>{left} record(s) without a usable distribution or a gold label are left out of "
        "the analysis (listed in <code>split.json</code>).</p>"
        if left
        else ""
    )
    return (
        "<h2>Replies</h2><div class='card'><h3>parse status</h3>"
        f"<p>{pills}</p>{extra}{issue_text}</div>"
    )


def _metrics_table(metrics: RunMetrics) -> str:
    methods = metrics.methods
    best: dict[str, float] = {}
    for metric in METRICS:
        values = [
            m.test[metric]
            for m in methods.values()
            if m.test.get(metric) is not None and not math.isnan(m.test[metric])
        ]
        if values:
            best[metric] = min(values) if metric in LOWER_IS_BETTER else max(values)
    head = "".join(
        f"<th>{METRIC_NAMES[m]}{'&thinsp;↓' if m in LOWER_IS_BETTER else '&thinsp;↑'}</th>"
        for m in METRICS
    )
    rows = []
    for name, entry in methods.items():
        cells = []
        for metric in METRICS:
            value = entry.test.get(metric)
            lo, hi = (entry.ci.get(metric) or [None, None])[:2]
            cls = " class='best'" if value is not None and value == best.get(metric) else ""
            cells.append(
                f"<td><span{cls}>{_num(value)}</span>"
                f"<span class='ci'>[{_num(lo)}, {_num(hi)}]</span></td>"
            )
        tags = ""
        if name == metrics.recommended:
            tags += "<span class='tag'>recommended</span>"
        if name == metrics.best_alternative:
            tags += "<span class='tag'>best alternative</span>"
        rec = " class='rec'" if name == metrics.recommended else ""
        rows.append(
            f"<tr{rec}><td class='l'><b>{_e(name)}</b>{tags}<span class='ci'>{_e(entry.role)}</span></td>"
            f"<td>{_num(entry.cv_nll)}</td>{''.join(cells)}</tr>"
        )
    conv = metrics.conventions
    return (
        "<h2>Metrics on the test part</h2><div class='card'><div class='scroll'><table>"
        f"<tr><th class='l'>method</th><th>CV NLL (calib.)</th>{head}</tr>{''.join(rows)}</table></div>"
        f"<p class='sub'>Test part: {metrics.n_test} items, never used to fit or choose anything. "
        f"Brackets: 95% CIs from {_e(conv.get('ci', 'a percentile bootstrap'))}. "
        f"ECE/MCE: {_e(conv.get('ece', 'top-label'))}. CV NLL: {_e(conv.get('cv', ''))}. The best"
        " alternative has the lowest CV NLL; a stack (auto) has none of its own (n/a): its weights"
        " maximise the out-of-fold log score. Best value per column in blue.</p></div>"
    )


def _figure_grid(
    title: str, caption: str, figures: Sequence[tuple[str, str]], columns: str = "two"
) -> str:
    items = "".join(
        f"<figure class='card'><img alt='{_e(title)}: {_e(name)}' src='{uri}'></figure>"
        for name, uri in figures
    )
    return f"<h2>{_e(title)}</h2><p class='sub lead'>{caption}</p><div class='grid {columns}'>{items}</div>"


def _thresholds(metrics: RunMetrics, figures: dict[str, Any]) -> str:
    rec = metrics.recommended
    opts = metrics.options
    rows = []
    for label, entry in (metrics.methods[rec].thresholds or {}).items():
        cal = entry["calibration"]
        test = entry.get("test") or {}
        if cal.get("reachable"):
            first = (
                f"<td>{_num(cal.get('threshold'))}</td><td>{_num(cal.get('precision'))}</td>"
                f"<td>{_num(cal.get('precision_lower_bound'))}</td><td>{_num(cal.get('recall'))}</td>"
            )
        else:
            first = (
                f"<td colspan='4' class='l no' title='{_e(cal.get('note', ''))}'>unreachable: "
                f"the best lower bound is {_num(cal.get('precision_lower_bound'))} "
                f"({_num(cal.get('true_positives'))} of {_num(cal.get('n_predicted'))} correct at "
                f"best); label more items, or lower the target or the confidence</td>"
            )
        rows.append(
            f"<tr><td class='l'><b>{_e(label)}</b></td>{first}<td>{_num(cal.get('support'))}</td>"
            f"<td>{_num(test.get('precision'))}</td><td>{_num(test.get('recall'))}</td>"
            f"<td>{_num(test.get('predicted'))}</td></tr>"
        )
    table = (
        "<div class='scroll'><table><tr><th class='l'>class</th><th>threshold</th><th>precision</th>"
        "<th>lower bound</th><th>recall</th><th>support</th><th>test precision</th>"
        f"<th>test recall</th><th>test predicted</th></tr>{''.join(rows)}</table></div>"
    )
    return (
        f"<h2>Decisions: thresholds per class ({_e(rec)})</h2>"
        f"<p class='sub lead'>An item counts as predicted <i>c</i> when its calibrated probability of "
        f"<i>c</i> is at least the threshold. Each threshold is chosen on the calibration part "
        f"so that its true precision is at least {opts['precision']} with confidence "
        f"{opts['confidence']}, the choice of threshold included (Learn-then-Test over "
        "data-independent ranks; the lower bound is at the per-test confidence); the test "
        "columns show what it gave on unseen items. Dots on the curves are the distinct operating points (verbalized grids "
        "give few); rings mark the chosen thresholds.</p>"
        f"<div class='card'>{table}</div>"
        "<div class='grid two' style='margin-top:16px'>"
        f"<figure class='card'><img alt='PR curves, calibration part' src='{figures['pr_calib']}'></figure>"
        f"<figure class='card'><img alt='PR curves, test part' src='{figures['pr_test']}'></figure></div>"
    )


def _selective(metrics: RunMetrics, figures: dict[str, Any]) -> str:
    coverages = None
    rows = []
    for name, entry in metrics.methods.items():
        sel = entry.selective or {}
        at = sel.get("accuracy_at_coverage", {})
        coverages = coverages or list(at)
        cells = "".join(f"<td>{_num(at.get(c))}</td>" for c in coverages or [])
        rows.append(
            f"<tr><td class='l'>{_e(name)}</td><td>{_num(sel.get('aurc'))}</td>{cells}</tr>"
        )
    head = "".join(f"<th>acc. at {float(c):.0%}</th>" for c in coverages or [])
    return (
        "<h2>Selective prediction</h2><div class='grid two'>"
        f"<figure class='card'><img alt='risk-coverage curves' src='{figures['risk']}'>"
        "<figcaption>Keep the most confident items, abstain on the rest: error rate of the kept "
        "items against the share kept. Methods that rank the items alike draw the same "
        "curve.</figcaption></figure>"
        "<div class='card'><h3>on the test part</h3><div class='scroll'><table>"
        f"<tr><th class='l'>method</th><th>AURC&thinsp;↓</th>{head}</tr>{''.join(rows)}</table></div>"
        "<p class='sub'>AURC: area under the risk-coverage curve. Accuracy at a coverage: of the "
        "most confident share of the test items.</p></div></div>"
    )


ROUTING_RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
"""Review rates shown in the routing section."""


def _routing(data: dict[str, Any]) -> str:
    """Binary runs (an LLM judge): review rate against errors that pass unreviewed."""
    from verbcal.decide.route import review_curve

    labels = data["labels"]
    if len(labels) != 2:
        return ""
    rows = []
    for name, q in data["q_test"].items():
        curve = review_curve(q, data["y_test"], 1, points=11)
        by_rate = {round(point["review_rate"], 1): point for point in curve}
        cells = [_pct(by_rate.get(rate, {}).get("unreviewed_error_rate")) for rate in ROUTING_RATES]
        rows.append([_e(name), *cells])
    head = ["method", *(f"review {rate:.0%}" for rate in ROUTING_RATES)]
    return (
        "<h2>Routing: review rate vs errors that pass unreviewed</h2><div class='card'>"
        + _table(head, rows)
        + "<p class='sub'>Test part: the items whose probability is nearest 0.5 go to a person "
        "first, the rest are decided by the more probable label; each cell is the share of "
        "all test items whose error passes unreviewed. <code>verbcal route</code> chooses "
        "accept and reject thresholds with a precision guarantee.</p></div>"
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table: the first column left-aligned, cells given as HTML."""
    th = "".join(f"<th{' class=l' if i == 0 else ''}>{h}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=l' if i == 0 else ''}>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<div class='scroll'><table><tr>{th}</tr>{body}</table></div>"


def _pct(value: Any) -> str:
    return (
        "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"
    )


def _decisions(metrics: RunMetrics) -> str:
    """Abstain band, conformal sets, costs, confidence bands and slices (runs that have them)."""
    methods = {n: e.decisions for n, e in metrics.methods.items() if e.decisions is not None}
    if not methods:
        return ""
    rec = metrics.recommended
    opts = metrics.options
    ours = methods.get(rec) or next(iter(methods.values()))
    band_rows = [
        [
            f"<b>{_e(label)}</b>",
            _num(b["lower"]),
            _num(b["upper"]),
            _pct(b["calibration"]["abstain_rate"]),
            _pct(b["test"]["abstain_rate"]),
            _num(b["test"]["accept_precision"]),
            _num(b["test"]["reject_precision"]),
        ]
        for label, b in ours["abstain"].items()
    ]
    sets_rows = [
        [f"<b>{_e(name)}</b>"]
        + [
            f"{_num(d['sets'][score]['coverage'])} / {_num(d['sets'][score]['mean_size'])} / "
            f"{_pct(d['sets'][score]['singleton_rate'])}"
            for score in ("lac", "aps")
        ]
        for name, d in methods.items()
    ]
    cost_rows = [
        [
            f"<b>{_e(name)}</b>",
            _num(d["cost"]["expected_cost"]),
            _num(d["cost"]["realised_cost"]),
            _num(d["cost"]["actions"].get("abstain")),
        ]
        for name, d in methods.items()
    ]
    conf_rows = [
        [f"<b>{_e(name)}</b>"]
        + [f"{_num(b['accuracy'])} vs {_num(b['mean_confidence'])} ({b['n']})" for b in d["bands"]]
        for name, d in methods.items()
    ]
    bands = ours["bands"]
    conf_head = ["method"] + [f"{b['band']} [{b['lower']:g}, {b['upper']:g})" for b in bands]
    html_parts = [
        f"<h2>Decisions: abstain, sets, costs ({_e(rec)} and the others)</h2>",
        "<div class='grid two'>",
        f"<div class='card'><h3>abstain band per class ({_e(rec)})</h3>",
        _table(
            [
                "class",
                "reject ≤",
                "accept ≥",
                "abstained (calib.)",
                "abstained (test)",
                "test accept prec.",
                "test reject prec.",
            ],
            band_rows,
        ),
        f"<p class='sub'>Accept the class above the upper threshold, reject it below the lower, "
        f"abstain in between; each side has precision ≥ {opts['precision']} with confidence "
        f"{opts['confidence']}, chosen on the calibration part (n/a: that side reaches no "
        "threshold with these many items).</p></div>",
        "<div class='card'><h3>conformal prediction sets (test part)</h3>",
        _table(
            ["method", "LAC: coverage / size / singletons", "APS: coverage / size / singletons"],
            sets_rows,
        ),
        f"<p class='sub'>Split conformal at α = {opts.get('alpha', 0.1)}: the set holds the gold "
        f"label with probability ≥ {1 - opts.get('alpha', 0.1):g} on average over items; "
        "calibrated probabilities give smaller sets, not more valid ones.</p></div>",
        "<div class='card'><h3>cost per item (test part)</h3>",
        _table(["method", "expected", "realised", "abstained"], cost_rows),
        f"<p class='sub'>Each method's probabilities pick the action of least expected cost (a wrong "
        f"answer costs 1, abstaining {opts.get('abstain_cost', 0.3)}). Expected: what the "
        "probabilities promise; realised: what it cost with the gold labels.</p></div>",
        "<div class='card'><h3>accuracy vs confidence per band (test part)</h3>",
        _table(conf_head, conf_rows),
        "<p class='sub'>Accuracy vs mean confidence (items) of the items whose largest probability "
        "falls in the band; the last band includes 1.</p></div>",
        "</div>",
    ]
    if "slices" in ours:
        slice_rows = [
            [
                f"<b>{_e(name)}</b>",
                str(entry["n"]),
                *(
                    f"{_num(entry[m])}<span class='ci'>[{_num(entry['ci'][m][0])}, "
                    f"{_num(entry['ci'][m][1])}]</span>"
                    for m in ("accuracy", "ece", "nll")
                ),
            ]
            for name, entry in ours["slices"].items()
        ]
        html_parts.append(
            f"<div class='card' style='margin-top:16px'><h3>per {_e(opts.get('by'))} ({_e(rec)}, test part)</h3>"
            + _table([_e(opts.get("by")), "items", "accuracy", "ECE", "NLL"], slice_rows)
            + "</div>"
        )
    return "".join(html_parts)


def _param_text(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(f"{_e(key)} = {_num(value, 4)}")
        elif isinstance(value, list) and all(isinstance(v, int | float | list) for v in value):
            shape = np.asarray(value, dtype=object).shape
            parts.append(f"{_e(key)}: {'×'.join(map(str, shape))} values")
        elif isinstance(value, list):
            parts.append(f"{_e(key)}: {len(value)} fitted map{'s' if len(value) != 1 else ''}")
        else:
            parts.append(f"{_e(key)}: {_e(value)[:60]}")
    return "<br>".join(parts) or "—"


def _parameters(metrics: RunMetrics) -> str:
    rows = []
    for name, entry in metrics.methods.items():
        fit = entry.fit
        floor = entry.floor
        rows.append(
            f"<tr><td class='l'><b>{_e(name)}</b></td><td class='l'>{_param_text(entry.params)}</td>"
            f"<td class='l'>{_e(floor.get('describe', ''))}</td>"
            f"<td>{_num(fit.get('nll_before'))}</td><td>{_num(fit.get('nll_after'))}</td>"
            f"<td class='l'><code>{_e(entry.calibrator)}</code></td></tr>"
        )
    return (
        "<h2>Fitted calibrators</h2><div class='card'><div class='scroll'><table>"
        "<tr><th class='l'>method</th><th class='l'>parameters</th><th class='l'>floor</th>"
        "<th>NLL before (calib.)</th><th>NLL after (calib.)</th><th class='l'>file</th></tr>"
        f"{''.join(rows)}</table></div><p class='sub'>Fitted on the {metrics.n_calibration} "
        "calibration items. The floor replaces zeros before taking logs; it is chosen by NLL "
        "on the calibration part unless fixed. Apply a calibrator to new predictions with "
        "<code>verbcal apply --calibrator FILE --data new.jsonl --out calibrated.jsonl</code>.</p></div>"
    )


def _facts(metrics: RunMetrics) -> str:
    run = metrics.run
    facts: list[tuple[str, str]] = [
        ("probabilities", _e(provenance.describe(run.get("provenance"))))
    ]
    if run.get("mode") == "elicit":
        facts += [
            ("backend / model", _e(f"{run.get('backend')} / {run.get('model')}")),
            ("samples, temperature", _e(f"{run.get('samples')}, {run.get('temperature')}")),
        ]
        if run.get("base_url"):
            facts.append(("base URL", f"<code>{_e(run['base_url'])}</code>"))
        req = run.get("requests") or {}
        facts.append(
            (
                "requests",
                _e(
                    f"{req.get('planned')} planned, {req.get('from_store')} from the store, "
                    f"{req.get('sent')} sent, {req.get('retries')} retries"
                ),
            )
        )
    tokens = run.get("tokens")
    if tokens:
        facts.append(
            (
                "tokens sent in this run",
                _e(f"{tokens.get('input', 0):,} in, {tokens.get('output', 0):,} out"),
            )
        )
    if "cost_usd" in run:
        cost = run["cost_usd"]
        facts.append(
            (
                "cost",
                "unknown (no price for this model)" if cost is None else f"${cost:.4f} (estimate)",
            )
        )
    if run.get("elicit_seconds") is not None:
        facts.append(("elicitation time", f"{run['elicit_seconds']:.1f} s"))
    counts = metrics.label_counts
    for part in ("calibration", "test"):
        if part in counts:
            facts.append(
                (f"gold labels, {part}", _e(", ".join(f"{k} {v}" for k, v in counts[part].items())))
            )
    opts = metrics.options
    facts.append(
        (
            "options",
            _e(
                f"methods {', '.join(opts.get('methods', []))}; calib-frac {opts.get('calib_frac')}; "
                f"seed {opts.get('seed')}; bins {opts.get('n_bins')}; bootstrap {opts.get('n_boot')}"
            ),
        )
    )
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    notes = "".join(f"<div class='note'>{_e(n)}</div>" for n in metrics.notes)
    notes += "".join(f"<div class='note'>{_e(n)}</div>" for n in run.get("notes", []) or [])
    return f"<h2>Run</h2><div class='card'><dl>{body}</dl>{notes}</div>"


def render_report(run_dir: str | Path) -> str:
    """The report of a run directory as one HTML string."""
    data = load_run(run_dir)
    metrics = data["metrics"]
    figures = _figures(data)
    title = metrics.run.get("task", {}) or {}
    sections = [
        _header(metrics),
        _headline(metrics),
        _status(metrics),
        _metrics_table(metrics),
        _figure_grid(
            "Reliability on the test part",
            "Bars: accuracy of the test items per confidence bin; orange: the gap to their "
            "mean confidence; dashed: perfect calibration; numbers: items per bin.",
            figures["reliability"],
        ),
        _figure_grid(
            "Confidence on the test part",
            "Top-label confidence of correct (blue) and wrong (red) test items. The distance "
            "between the mean confidence and the accuracy is the overall over-confidence.",
            figures["histogram"],
        ),
        _thresholds(metrics, figures),
        _selective(metrics, figures),
        _routing(data),
        _decisions(metrics),
        _parameters(metrics),
        _facts(metrics),
        "<footer>Made by verbcal. Self-contained: styles and images are inside this file; "
        "it fetches nothing. Metrics, split and calibrators are in the run directory "
        "(<code>metrics.json</code>, <code>split.json</code>, <code>calibrators/</code>).</footer>",
    ]
    name = title.get("name") or "verbcal run"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>verbcal report: {_e(name)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) and return its path."""
    target = Path(out) if out is not None else Path(run_dir) / "report.html"
    text = render_report(run_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


__all__ = ["ReportError", "load_run", "render_report", "write_report"]
