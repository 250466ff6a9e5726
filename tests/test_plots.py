"""Plots draw on the Axes they are given and encode to PNG data URIs."""

from __future__ import annotations

import base64

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from verbcal import plots
from verbcal.metrics import reliability


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(3), size=200)
    y = np.array([rng.choice(3, p=row) for row in q])
    return q, y


def _png(uri: str) -> bytes:
    assert uri.startswith("data:image/png;base64,")
    raw = base64.b64decode(uri.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return raw


def test_reliability_diagram_bars_match_metrics(data: tuple[np.ndarray, np.ndarray]) -> None:
    q, y = data
    fig, ax = plots.new_figure()
    returned = plots.reliability_diagram(ax, q, y, n_bins=10, title="demo")
    assert returned is ax
    non_empty = [b for b in reliability(q, y, n_bins=10) if b.count > 0]
    heights = [patch.get_height() for patch in ax.containers[0]]
    assert heights == pytest.approx([b.accuracy for b in non_empty])
    counts = {t.get_text() for t in ax.texts}
    assert {str(b.count) for b in non_empty} <= counts
    assert ax.get_title(loc="left") == "demo"
    assert len(_png(plots.figure_to_data_uri(fig))) > 5_000


def test_reliability_diagram_gap_bars_span_confidence_and_accuracy(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    q, y = data
    fig, ax = plots.new_figure()
    plots.reliability_diagram(ax, q, y, n_bins=5)
    non_empty = [b for b in reliability(q, y, n_bins=5) if b.count > 0]
    for patch, b in zip(ax.containers[1], non_empty, strict=True):
        assert patch.get_y() == pytest.approx(min(b.accuracy, b.confidence))
        assert patch.get_height() == pytest.approx(abs(b.accuracy - b.confidence))
    plots.figure_to_data_uri(fig)


def test_confidence_histogram_counts_every_item(data: tuple[np.ndarray, np.ndarray]) -> None:
    q, y = data
    fig, ax = plots.new_figure()
    plots.confidence_histogram(ax, q, y)
    top = ax.containers[-1]  # stacked: the last container holds correct + wrong
    assert sum(p.get_height() for p in ax.containers[0]) + sum(
        p.get_height() for p in top
    ) == pytest.approx(len(y))
    fig2, ax2 = plots.new_figure()
    plots.confidence_histogram(ax2, q)
    assert sum(p.get_height() for p in ax2.patches) == pytest.approx(len(y))
    plots.figure_to_data_uri(fig)
    plots.figure_to_data_uri(fig2)


def test_pr_curves_one_line_per_class_and_marks_thresholds(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    q, y = data
    fig, ax = plots.new_figure()
    plots.pr_curves(ax, q, y, ["a", "b", "c"], thresholds={"a": 0.5, "b": None, "c": 0.9})
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 3
    assert "unreachable" in legend[1] and "unreachable" not in legend[0]
    assert any(t.get_text() == "t=0.5" for t in ax.texts)
    plots.figure_to_data_uri(fig)


def test_risk_coverage_plot_ends_at_full_coverage_with_the_error_rate(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    q, y = data
    fig, ax = plots.new_figure()
    plots.risk_coverage_plot(ax, q, y, label="m")
    line = ax.get_lines()[0]
    xs, ys = line.get_xdata(), line.get_ydata()
    assert xs[-1] == pytest.approx(1.0)
    assert ys[-1] == pytest.approx(np.mean(q.argmax(axis=1) != y))
    assert "AURC" in ax.get_legend().get_texts()[0].get_text()
    plots.figure_to_data_uri(fig)


def test_figure_to_data_uri_closes_the_figure() -> None:
    import matplotlib.pyplot as plt

    fig, _ = plots.new_figure()
    before = len(plt.get_fignums())
    plots.figure_to_data_uri(fig)
    assert len(plt.get_fignums()) == before - 1
