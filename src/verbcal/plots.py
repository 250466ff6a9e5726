"""Plots for calibration reports: small functions that draw on a given matplotlib Axes.

Every function takes the Axes to draw on, so callers compose figures as they like::

    fig, ax = new_figure()
    reliability_diagram(ax, q, y, title="temperature")
    uri = figure_to_data_uri(fig)  # PNG as a data: URI, for a self-contained HTML report

matplotlib is an optional dependency (extra ``verbcal[report]``); this module selects the
non-interactive Agg backend when it is imported.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from verbcal.decide import apply_threshold, aurc, pr_curve, risk_coverage
from verbcal.metrics import DEFAULT_BINS, check_inputs, ece, reliability

INK = "#1f2937"
MUTED = "#6b7280"
GRID = "#e5e7eb"
ACCENT = "#2563eb"
GAP = "#f97316"
WRONG = "#ef4444"
PALETTE = ("#2563eb", "#f97316", "#10b981", "#8b5cf6", "#ef4444", "#0ea5e9", "#eab308", "#64748b")
"""Colours of successive classes or methods."""


def new_figure(width: float = 4.6, height: float = 4.0, dpi: int = 110) -> tuple[Figure, Axes]:
    """A figure with one Axes, sized for a report card (inches at ``dpi``)."""
    fig, ax = plt.subplots(figsize=(width, height), dpi=dpi, layout="constrained")
    return fig, ax


def style_axes(ax: Axes, title: str = "") -> None:
    """Light grid, no top/right spines, muted tick labels."""
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9ca3af")
    ax.tick_params(colors=MUTED, labelsize=8)
    ax.xaxis.label.set_color(INK)
    ax.yaxis.label.set_color(INK)
    if title:
        ax.set_title(title, color=INK, fontsize=10, loc="left", fontweight="bold")


def reliability_diagram(
    ax: Axes, q: ArrayLike, y: ArrayLike, n_bins: int = DEFAULT_BINS, title: str = ""
) -> Axes:
    """Top-label reliability diagram: accuracy per equal-width confidence bin.

    Bars show the accuracy of each non-empty bin, an orange outline the gap to the bin's
    mean confidence, the dashed diagonal perfect calibration; the count of items sits
    above each bar, and the ECE (top-label, ``n_bins`` equal-width bins) in the corner.
    """
    q_arr, y_arr = check_inputs(q, y)
    bins = reliability(q_arr, y_arr, n_bins=n_bins)
    width = 1.0 / n_bins
    style_axes(ax, title)
    ax.plot([0, 1], [0, 1], linestyle="--", color=MUTED, linewidth=1, label="perfect calibration")
    filled = [b for b in bins if b.count > 0]
    lefts = np.array([b.lower for b in filled])
    acc = np.array([b.accuracy for b in filled])
    conf = np.array([b.confidence for b in filled])
    ax.bar(
        lefts,
        acc,
        width=width,
        align="edge",
        color=ACCENT,
        alpha=0.85,
        edgecolor="white",
        linewidth=0.6,
        label="accuracy",
    )
    ax.bar(
        lefts,
        np.abs(conf - acc),
        bottom=np.minimum(conf, acc),
        width=width,
        align="edge",
        facecolor=(0.976, 0.451, 0.086, 0.18),
        edgecolor=GAP,
        hatch="////",
        linewidth=0.8,
        label="gap to mean confidence",
    )
    total = max(1, sum(b.count for b in bins))
    for b, left in zip(filled, lefts, strict=True):
        top = max(b.accuracy, b.confidence)
        ax.text(
            left + width / 2,
            min(top + 0.015, 1.02),
            str(b.count),
            ha="center",
            va="bottom",
            fontsize=7 if n_bins > 10 else 8,
            color=INK if b.count / total >= 0.05 else MUTED,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("confidence (top-label probability)", fontsize=9)
    ax.set_ylabel("accuracy", fontsize=9)
    score = ece(q_arr, y_arr, n_bins)
    ax.text(
        0.03,
        0.97,
        f"ECE {score:.3f}\nn = {len(y_arr)}",
        transform=ax.transAxes,
        va="top",
        fontsize=8.5,
        color=INK,
        bbox={"boxstyle": "round,pad=0.35", "facecolor": "white", "edgecolor": GRID},
    )
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=3,
        fontsize=7,
        frameon=False,
        handlelength=1.5,
        columnspacing=1.0,
    )
    return ax


def confidence_histogram(
    ax: Axes,
    q: ArrayLike,
    y: ArrayLike | None = None,
    n_bins: int = 20,
    title: str = "",
) -> Axes:
    """Histogram of top-label confidence; with gold labels, stacked right and wrong.

    Vertical lines mark the mean confidence and, with labels, the accuracy: their
    distance is the overall over- or under-confidence.
    """
    q_arr = np.atleast_2d(np.asarray(q, dtype=np.float64))
    confidence = q_arr.max(axis=1)
    edges = np.linspace(0.0, 1.0, n_bins + 1).tolist()
    style_axes(ax, title)
    if y is None:
        ax.hist(confidence, bins=edges, color=ACCENT, alpha=0.85, edgecolor="white")
    else:
        _, y_arr = check_inputs(q_arr, y)
        right = q_arr.argmax(axis=1) == y_arr
        ax.hist(
            [confidence[right], confidence[~right]],
            bins=edges,
            stacked=True,
            color=[ACCENT, WRONG],
            alpha=0.85,
            edgecolor="white",
            label=["correct", "wrong"],
        )
        accuracy = float(right.mean())
        ax.axvline(accuracy, color=INK, linewidth=1.2, label=f"accuracy {accuracy:.2f}")
    mean_conf = float(confidence.mean())
    ax.axvline(
        mean_conf, color=GAP, linewidth=1.2, linestyle="--", label=f"mean conf. {mean_conf:.2f}"
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence (top-label probability)", fontsize=9)
    ax.set_ylabel("items", fontsize=9)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return ax


def pr_curves(
    ax: Axes,
    probs: ArrayLike,
    y: ArrayLike,
    labels: Sequence[str],
    thresholds: Mapping[str, float | None] | None = None,
    title: str = "",
) -> Axes:
    """One precision-recall curve per class (item predicted ``c`` when ``q_c >= t``).

    Every distinct probability is an operating point (dots, from
    :func:`verbcal.decide.pr_curve`): verbalized grids give few.
    ``thresholds`` maps a label to a chosen threshold, drawn as a ringed marker at its
    operating point; ``None`` means no threshold reached the target (noted in the legend).
    """
    q_arr, y_arr = check_inputs(probs, y)
    style_axes(ax, title)
    for k, label in enumerate(labels):
        colour = PALETTE[k % len(PALETTE)]
        curve = pr_curve(q_arr, y_arr, k)
        precision, recall = curve.precision, np.nan_to_num(curve.recall)
        name = f"{label} ({curve.n_operating_points} points)"
        chosen = None if thresholds is None else thresholds.get(label, math.nan)
        if thresholds is not None and chosen is None:
            name += ", target unreachable"
        ax.plot(
            np.r_[0.0, recall],
            np.r_[precision[0], precision],
            drawstyle="steps-pre",
            color=colour,
            linewidth=1.4,
            label=name,
        )
        ax.plot(recall, precision, "o", color=colour, markersize=2.5)
        if chosen is not None and not math.isnan(chosen):
            at = apply_threshold(q_arr[:, k], chosen)
            n_at = int(at.sum())
            if n_at:
                p_at = float(np.mean(y_arr[at] == k))
                r_at = float(np.sum(at & (y_arr == k)) / max(1, int(np.sum(y_arr == k))))
                ax.plot(
                    r_at,
                    p_at,
                    marker="o",
                    markersize=9,
                    markerfacecolor="none",
                    markeredgecolor=colour,
                    markeredgewidth=2,
                )
                ax.annotate(
                    f"t={chosen:.3g}",
                    (r_at, p_at),
                    xytext=(6, -12),
                    textcoords="offset points",
                    fontsize=7,
                    color=colour,
                )
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall", fontsize=9)
    ax.set_ylabel("precision", fontsize=9)
    ax.legend(loc="lower left", fontsize=7, frameon=False)
    return ax


def risk_coverage_plot(
    ax: Axes,
    probs: ArrayLike,
    y: ArrayLike,
    label: str | None = None,
    title: str = "",
    colour: str | None = None,
) -> Axes:
    """Selective risk (error rate of the kept items) against coverage, keeping the most confident.

    Call it once per method on the same Axes to compare; the legend gives each curve's
    AURC (:func:`verbcal.decide.aurc`, lower is better).
    """
    q_arr, y_arr = check_inputs(probs, y)
    curve = risk_coverage(q_arr, y_arr)
    coverage, risk = curve.coverage, curve.risk
    area = aurc(q_arr, y_arr)
    style_axes(ax, title)
    text = f"AURC {area:.3f}" if label is None else f"{label} (AURC {area:.3f})"
    ax.plot(
        np.r_[0.0, coverage],
        np.r_[risk[0], risk],
        drawstyle="steps-pre",
        linewidth=1.5,
        color=colour or ACCENT,
        label=text,
    )
    ax.plot(coverage, risk, "o", markersize=2.5, color=colour or ACCENT)
    ax.set_xlim(0, 1.02)
    top = max(ax.get_ylim()[1] if ax.lines[:-2] else 0.0, float(risk.max()) * 1.08 + 0.01)
    ax.set_ylim(0, min(1.05, top))
    ax.set_xlabel("coverage (share of items kept)", fontsize=9)
    ax.set_ylabel("risk (error rate of kept items)", fontsize=9)
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=2,
        fontsize=7,
        frameon=False,
        handlelength=1.5,
    )
    return ax


def figure_to_data_uri(fig: Figure, dpi: int | None = None) -> str:
    """The figure as a PNG ``data:`` URI (base64), and the figure closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi, facecolor="white")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


__all__ = [
    "confidence_histogram",
    "figure_to_data_uri",
    "new_figure",
    "pr_curves",
    "reliability_diagram",
    "risk_coverage_plot",
]
