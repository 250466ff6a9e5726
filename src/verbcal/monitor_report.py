"""The self-contained HTML report of ``verbcal monitor`` (inline SVG, nothing fetched).

It shows the timeline (estimated accuracy with its CI band, realised accuracy with its
Wilson interval where labels exist, the reference accuracy, alarms in red), the confidence
histogram of every window next to the reference's as a heat strip, and the rows.
"""

from __future__ import annotations

import html
from typing import Any

from verbcal.report import CSS

W, H, PAD = 860, 300, 48


def _e(value: Any) -> str:
    return html.escape(str(value))


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def timeline_svg(rows: list[dict[str, Any]], reference_accuracy: float) -> str:
    """Estimated vs realised accuracy per window, with bands and alarm markers."""
    n = len(rows)
    values = [reference_accuracy]
    for r in rows:
        values += [r["est_accuracy_low"], r["est_accuracy_high"]]
        if r.get("accuracy") is not None:
            values += [r["accuracy_low"], r["accuracy_high"]]
    lo = max(0.0, min(v for v in values if v is not None) - 0.05)
    hi = min(1.0, max(v for v in values if v is not None) + 0.05)

    def x(i: float) -> float:
        return PAD + (W - 2 * PAD) * (i + 0.5) / max(n, 1)

    def y(v: float) -> float:
        return H - PAD + (v - lo) / max(hi - lo, 1e-9) * (2 * PAD - H)

    parts = [f"<svg viewBox='0 0 {W} {H}' width='100%' role='img' aria-label='timeline'>"]
    for t in range(6):
        v = lo + (hi - lo) * t / 5
        parts.append(
            f"<line x1='{PAD}' x2='{W - PAD}' y1='{y(v):.1f}' y2='{y(v):.1f}' stroke='#e5e7eb'/>"
            f"<text x='{PAD - 6}' y='{y(v) + 4:.1f}' font-size='11' text-anchor='end'"
            f" fill='#6b7280'>{v:.2f}</text>"
        )
    band = [f"{x(i):.1f},{y(r['est_accuracy_high']):.1f}" for i, r in enumerate(rows)]
    band += [
        f"{x(i):.1f},{y(r['est_accuracy_low']):.1f}" for i, r in reversed(list(enumerate(rows)))
    ]
    parts.append(f"<polygon points='{' '.join(band)}' fill='#93c5fd' opacity='0.45'/>")
    line = " ".join(f"{x(i):.1f},{y(r['est_accuracy']):.1f}" for i, r in enumerate(rows))
    parts.append(f"<polyline points='{line}' fill='none' stroke='#1d4ed8' stroke-width='2'/>")
    ry = y(reference_accuracy)
    parts.append(
        f"<line x1='{PAD}' x2='{W - PAD}' y1='{ry:.1f}' y2='{ry:.1f}' stroke='#6b7280'"
        " stroke-dasharray='5,4'/>"
    )
    for i, r in enumerate(rows):
        if r.get("accuracy") is not None:
            parts.append(
                f"<line x1='{x(i):.1f}' x2='{x(i):.1f}' y1='{y(r['accuracy_low']):.1f}'"
                f" y2='{y(r['accuracy_high']):.1f}' stroke='#111827'/>"
                f"<circle cx='{x(i):.1f}' cy='{y(r['accuracy']):.1f}' r='3.5' fill='#111827'>"
                f"<title>window {_e(r['window'])}: realised {r['accuracy']:.3f}</title></circle>"
            )
        if r["alarm"]:
            parts.append(
                f"<path d='M{x(i) - 6:.1f},{PAD - 20} l12,0 l-6,12 z' fill='#dc2626'>"
                f"<title>window {_e(r['window'])}: {_e(r['signal'])}</title></path>"
            )
        if n <= 40 or i % max(1, n // 20) == 0:
            parts.append(
                f"<text x='{x(i):.1f}' y='{H - PAD + 16}' font-size='10' text-anchor='middle'"
                f" fill='#6b7280'>{_e(str(r['window'])[:10])}</text>"
            )
    parts.append(
        f"<text x='{PAD}' y='{H - 8}' font-size='11' fill='#374151'>blue: estimated accuracy"
        " (line) and its CI (band); black: realised accuracy with Wilson CI; dashed: reference"
        " accuracy; red triangles: alarms</text></svg>"
    )
    return "".join(parts)


def histogram_strip(rows: list[dict[str, Any]], reference_hist: list[int]) -> str:
    """Each window's confidence histogram (10 bins on [0, 1]) as a shaded column."""
    columns = [("ref", reference_hist)] + [(str(r["window"]), r["confidence_hist"]) for r in rows]
    cw = max(8.0, min(40.0, (W - 2 * PAD) / len(columns)))
    ch = 16
    width, height = PAD + cw * len(columns) + 10, ch * 10 + 40
    parts = [f"<svg viewBox='0 0 {width} {height}' width='{width}' height='{height}'>"]
    for b in range(10):
        parts.append(
            f"<text x='{PAD - 6}' y='{10 + ch * (9 - b) + 12}' font-size='10' text-anchor='end'"
            f" fill='#6b7280'>{b / 10:.1f}–{(b + 1) / 10:.1f}</text>"
        )
    for j, (name, hist) in enumerate(columns):
        total = max(1, sum(hist))
        for b, count in enumerate(hist):
            share = count / total
            colour = "#111827" if j == 0 else "#1d4ed8"
            parts.append(
                f"<rect x='{PAD + j * cw:.1f}' y='{10 + ch * (9 - b)}' width='{cw - 1:.1f}'"
                f" height='{ch - 1}' fill='{colour}' opacity='{0.05 + 0.95 * share:.3f}'>"
                f"<title>{_e(name)}: {share:.1%} in ({b / 10:.1f}, {(b + 1) / 10:.1f}]</title></rect>"
            )
        if j == 0 or len(columns) <= 40:
            parts.append(
                f"<text x='{PAD + j * cw + cw / 2:.1f}' y='{10 + ch * 10 + 14}' font-size='9'"
                f" text-anchor='middle' fill='#6b7280'>{_e(name[:6])}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _share(policy: dict[str, Any]) -> str:
    """How alpha is split (older monitor.json files lack the split: said so)."""
    if "p_share" not in policy:
        return f"split over {len(policy['signals'])} signals"
    return (
        f"{policy['p_share']:.3g} to the p-value signals as one family, "
        f"{policy['cusum_share']:.3g} to the CUSUMs"
    )


def _rule(policy: dict[str, Any]) -> str:
    """The p-value family's rule, as monitor.json states it."""
    rule = policy.get("p_rule", "bonferroni")
    if rule == "min-p":
        return (
            f"min-p: P(smallest p over the signals and windows below it) = "
            f"{policy['p_share']:.3g} on {policy['p_simulations']} stationary streams "
            f"simulated from the reference; Bonferroni's would be "
            f"{policy['bonferroni_per_test']:.2g}"
        )
    reason = policy.get("p_rule_reason")
    return f"Bonferroni: {reason}" if reason else "Bonferroni"


def render(result: dict[str, Any]) -> str:
    """The report page for what ``verbcal monitor`` writes to monitor.json."""
    rows, ref, policy = result["windows"], result["reference"], result["policy"]
    alarms = [r for r in rows if r["alarm"]]
    head = [
        "window",
        "n",
        "est. accuracy [CI]",
        "CBPE",
        "ATC [CI]",
        "BBSE",
        "realised [CI]",
        "ECE",
        "shift p",
        "alarm",
    ]
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=l' if i == 0 else ''}>{c}</td>"
            for i, c in enumerate(
                [
                    _e(r["window"]),
                    str(r["n"]),
                    f"{_f(r['est_accuracy'])} [{_f(r['est_accuracy_low'])}, "
                    f"{_f(r['est_accuracy_high'])}] ({_e(r['est_method'])})",
                    _f(r["est_accuracy_cbpe"]),
                    f"{_f(r['est_accuracy_atc'])} [{_f(r['est_accuracy_atc_low'])}, "
                    f"{_f(r['est_accuracy_atc_high'])}]",
                    _f(r["est_accuracy_bbse"]),
                    "–"
                    if r.get("accuracy") is None
                    else f"{_f(r['accuracy'])} [{_f(r['accuracy_low'])}, {_f(r['accuracy_high'])}]",
                    _f(r.get("ece")),
                    _f(r["shift_p"], 4),
                    f"<b style='color:#dc2626'>{_e(r['signal'].replace(',', ', '))}</b>"
                    if r["alarm"]
                    else "",
                ]
            )
        )
        + "</tr>"
        for r in rows
    )
    th = "".join(f"<th{' class=l' if i == 0 else ''}>{h}</th>" for i, h in enumerate(head))
    status = (
        f"<p><b style='color:#dc2626'>{len(alarms)} of {len(rows)} windows alarmed</b>: "
        + "; ".join(
            f"{_e(r['window'])} ({_e(r['signal'].replace(',', ', '))})" for r in alarms[:10]
        )
        + "</p>"
        if alarms
        else f"<p><b style='color:#059669'>no alarm</b> in {len(rows)} windows</p>"
    )
    facts = (
        f"<p>Calibrator {_e(result['calibrator'])}; reference {_e(ref['source'])}: "
        f"{ref['n']} labelled items, accuracy {ref['accuracy']:.3f}, ATC threshold "
        f"{ref['atc_threshold']:.4f} (ties counted {ref['atc_tie_fraction']:.2f}). Data "
        f"{_e(result['data'])}, windows {_e(result['windows_by'])}.</p>"
        f"<p>Alarms: false-alarm rate {policy['alpha']} per stream of {policy['horizon']} "
        f"windows, {_e(_share(policy))}; the p-value signals (tests against the reference, "
        "and the *_vs_past tests of each window against all earlier windows pooled) fire at "
        f"p &lt; {policy['per_test']:.2g} ({_e(_rule(policy))}), the CUSUMs of the "
        "estimate, the confidence distribution and the label mix against the first "
        f"{policy['baseline']} windows at {policy['cusum_threshold']:.2f}. The headline "
        "estimate is CBPE (mean "
        "calibrated confidence plus the reference's per-bin gap); BBSE's label-shift-corrected "
        "estimate is in its own column.</p>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>verbcal monitor: {_e(result['data'])}</title><style>{CSS}</style></head><body>"
        f"<main><h1>verbcal monitor</h1>{status}{facts}"
        "<h2>Accuracy over time</h2>"
        f"<div class='card'>{timeline_svg(rows, ref['accuracy'])}</div>"
        "<h2>Confidence histograms</h2><p>Share of each window's items per top-label "
        "confidence bin (darker: more); the first column is the reference.</p>"
        f"<div class='card'>{histogram_strip(rows, ref['confidence_hist'])}</div>"
        f"<h2>Windows</h2><div class='scroll'><table><tr>{th}</tr>{body}</table></div>"
        "</main></body></html>"
    )
