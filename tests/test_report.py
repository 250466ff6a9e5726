"""The HTML report: self-contained, complete, and rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("matplotlib")

from verbcal.cli import app
from verbcal.pipeline import RunOptions, run_from_predictions
from verbcal.report import ReportError, render_report

ARTEFACTS = Path(os.environ.get("VERBCAL_ARTEFACTS") or Path(__file__).parent / "artefacts")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "drug-reviews"
    run_from_predictions("recorded:drug-reviews", out, RunOptions(n_boot=200))
    return out


def test_report_is_self_contained(run_dir: Path) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # Nothing is fetched: no http(s) or protocol-relative src/href, no @import, no url(http...).
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)
    assert not re.search(r"@import|url\(\s*['\"]?\s*(https?:)?//", text, re.IGNORECASE)
    assert "<script" not in text.lower()
    images = re.findall(r"<img [^>]*src='([^']*)'", text)
    assert len(images) >= 11
    assert all(src.startswith("data:image/png;base64,") for src in images)


def test_report_shows_every_section(run_dir: Path) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    for heading in (
        "Replies",
        "Metrics on the test part",
        "Reliability on the test part",
        "Confidence on the test part",
        "Decisions: thresholds per class",
        "Selective prediction",
        "Decisions: abstain, sets, costs",
        "Fitted calibrators",
        "Run",
    ):
        assert f"<h2>{heading}" in text, heading
    for method in ("identity", "resoftmax", "temperature"):
        assert f"calibrators/{method}.json" in text
    assert "best alternative" in text and "recommended" in text
    assert "ok: 190 (100%)" in text
    assert "floor" in text


def test_report_command_rewrites_the_report(run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "r.html"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8").count("data:image/png;base64,") >= 11


def test_report_of_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"metrics\.json"):
        render_report(tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "metrics.json" in result.output
    (tmp_path / "metrics.json").write_text('{"format": "verbcal-calibrator", "version": 1}')
    with pytest.raises(ReportError, match="format 'verbcal-calibrator', not 'verbcal-run'"):
        render_report(tmp_path)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.server
def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        message = "headless Chromium is needed to check the report (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI must install it (see .ci/run)")
        pytest.skip(message)
    import matplotlib.image as mpimg

    report = run_dir / "report.html"
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTEFACTS / "report.png"
    shot.unlink(missing_ok=True)
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2000",
            f"--screenshot={shot}",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.is_file(), f"no screenshot written; stderr: {done.stderr[-2000:]}"
    assert shot.stat().st_size > 50_000, "the screenshot is suspiciously small"
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    rgb = pixels[..., :3]
    assert float(rgb.std()) > 0.05, "the page rendered blank"
    # Plots rendered: a good share of pixels carry the plots' saturated blue.
    blue = (rgb[..., 2] > 0.8) & (rgb[..., 0] < 0.4) & (rgb[..., 1] < 0.6)
    assert blue.mean() > 0.005, "no plot visible in the first screen"


def test_binary_runs_show_the_routing_section(tmp_path: Path) -> None:
    """A judge run (binary) gets review rate vs unreviewed errors; a 3-label run does not."""
    from verbcal.predictions import ReadOptions, reading

    with reading(ReadOptions(source="verbal")):
        run_from_predictions(
            "recorded:halueval",
            tmp_path / "judge",
            RunOptions(methods=("identity", "temperature"), n_boot=50),
        )
        html = render_report(tmp_path / "judge")
    assert "Routing: review rate vs errors that pass unreviewed" in html
    section = html.split("Routing: review rate")[1].split("</table>")[0]
    assert section.count("<tr>") >= 1 + 2  # header, identity, temperature (+ auto's choice)
    assert "review 0%" in section and "review 50%" in section
