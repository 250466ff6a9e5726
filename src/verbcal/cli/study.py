"""``verbcal study``: the calibrator comparison grid on repeated splits, with findings."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from verbcal.cli import options as opt
from verbcal.cli.app import app, console, err_console
from verbcal.cli.calibrate import friendly_errors
from verbcal.jsonio import print_json
from verbcal.study import (
    StudyConfig,
    StudyError,
    run_study,
    summarise,
    summary_json,
    write_outputs,
)


@app.command()
def study(
    config: Annotated[
        Path | None,
        typer.Option(
            help="Study YAML (datasets, methods, sizes, repeats, seed); default grid if omitted."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for tables, plots and findings.md.")] = Path(
        "study-out"
    ),
    workers: Annotated[
        int,
        typer.Option(
            min=0, help="Worker processes (default: all cores); results do not depend on it."
        ),
    ] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary rows as JSON only.")
    ] = False,
    overwrite: opt.Overwrite = False,
) -> None:
    """Compare calibrators on repeated stratified splits: datasets × methods × sizes × repeats.

    Writes tidy.csv, summary.csv/json, thresholds.csv, wellformedness.json, PNG plots and
    findings.md to --out. Without --config it runs the default grid on the bundled replies.

    Example: verbcal study --out study-out --workers 2
    """
    with friendly_errors():
        if (out / "summary.csv").exists() and not overwrite:
            raise StudyError(f"{out} already holds a study; pass --overwrite or another --out")
        try:
            settings = StudyConfig.load(config) if config else StudyConfig()
        except ModuleNotFoundError as exc:
            raise StudyError(
                f"{exc.name} is missing: install the study extra (pip install 'verbcal[study]')"
            ) from exc
        n_workers = workers if workers > 0 else (os.cpu_count() or 1)
        start = time.perf_counter()
        with Progress(
            TextColumn("study"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("splits"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=as_json,
        ) as progress:
            task = progress.add_task("splits", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = run_study(settings, workers=n_workers, on_progress=advance)
        try:
            files = write_outputs(result, out)
        except ModuleNotFoundError as exc:
            raise StudyError(
                f"{exc.name} is missing: install the study extra (pip install 'verbcal[study]')"
            ) from exc
        elapsed = time.perf_counter() - start
    rows = summarise(result.rows)
    if as_json:
        print_json(summary_json(rows))
        return
    n_splits = sum(len(i.sizes) for i in result.info.values()) * settings.repeats
    console.print(
        f"[bold]study[/]: {len(result.info)} datasets × {len(settings.methods)} method variants, "
        f"{n_splits} splits, {len(result.rows)} tidy rows; {n_workers} workers, "
        f"{result.seconds:.1f} s grid, {elapsed:.1f} s with outputs"
    )
    for name, path in files.items():
        console.print(f"  {name}: {path}", markup=False, highlight=False)
