"""``verbcal report``: rebuild the self-contained HTML report of a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from verbcal.calibration import CalibratorError
from verbcal.cli.app import app, console, print_error
from verbcal.predictions import PredictionsError, check_output


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `verbcal run`.")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the HTML (default RUN_DIR/report.html).")
    ] = None,
) -> None:
    """Write one self-contained HTML report (inline styles and images, nothing fetched).

    Example: verbcal report runs/tweets --out tweets-report.html
    """
    from verbcal.report import ReportError, write_report

    try:
        if out is not None:
            check_output(out)
        path = write_report(run_dir, out)
    except ImportError as exc:
        print_error(f"{exc}. Install matplotlib: pip install 'verbcal[report]'")
        raise typer.Exit(2) from exc
    except (ReportError, PredictionsError, CalibratorError, KeyError, OSError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    console.print(f"report: {path}", markup=False)
