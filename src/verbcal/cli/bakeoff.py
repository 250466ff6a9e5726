"""``verbcal bakeoff``: compare set-ups (models, prompts, reply formats, sampling) after
calibration, with their cost, and recommend the cheapest that meets the decision target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from verbcal.cli import options as opt
from verbcal.cli.app import app, console, err_console, print_error
from verbcal.cli.calibrate import friendly_errors

if TYPE_CHECKING:
    from verbcal.bakeoff import DryRunArm


@app.command("bakeoff")
def bakeoff_command(
    config: Annotated[
        Path, typer.Option(help="Bakeoff YAML: labels or task, items, decision, arms.")
    ],
    out: Annotated[
        Path,
        typer.Option(help="Folder for bakeoff.json, calibrators/, bakeoff.md, report.html."),
    ] = Path("bakeoff-out"),
    calib_frac: opt.CalibFrac = 0.5,
    repeats: Annotated[
        int, typer.Option(min=1, help="Stratified calibration/test splits, the same for all arms.")
    ] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the splits and bootstrap resamples.")] = 0,
    n_boot: opt.Boot = 1000,
    max_cost: opt.MaxCost = None,
    store: Annotated[
        Path | None,
        typer.Option(help="SQLite store of the replies (default: OUT/bakeoff.store.sqlite)."),
    ] = None,
    dry_run: opt.DryRun = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print bakeoff.json to stdout instead of the table.")
    ] = False,
) -> None:
    """Elicit every arm through the same engine, calibrate each on the same splits, compare.

    Each arm is a backend + model + reply format (numeric, verbal, top-label) + samples, or
    replies recorded earlier (recorded: FILE, source: probs|verbal). Every arm is calibrated
    (auto) on the same calibration parts and scored on the same test parts; the 95% CIs are
    paired bootstrap CIs of each arm's difference to the best arm. The recommendation is the
    cheapest arm whose decision metric is within the CI of the best.

    --max-cost is a budget over the whole bakeoff; --dry-run prints the requests, tokens and
    cost per arm and sends nothing. A stopped run keeps every reply: re-run to resume.

    Example: verbcal bakeoff --config examples/bakeoff-judges-halueval.yaml --out bk
    """
    with friendly_errors():
        try:
            from verbcal.bakeoff import BakeoffConfig, run_bakeoff
            from verbcal.bakeoff import dry_run as plan
            from verbcal.elicit import ElicitStopped
        except ImportError as exc:
            raise ImportError(
                f"{exc.name} is missing: install the bakeoff extra (pip install 'verbcal[bakeoff]')"
            ) from exc
        settings = BakeoffConfig.load(config)
        if dry_run:
            rows = plan(settings, out, store)
            if as_json:
                print(json.dumps({"dry_run": [row.to_dict() for row in rows]}))
                return
            console.print(_dry_table(rows))
            console.print("Nothing was sent (--dry-run).", highlight=False)
            return
        try:
            result = run_bakeoff(
                settings,
                out,
                calib_frac=calib_frac,
                repeats=repeats,
                seed=seed,
                n_boot=n_boot,
                max_cost=max_cost,
                store=store,
                console=None if as_json else err_console,
            )
        except ElicitStopped as exc:
            message = exc.describe(f"verbcal bakeoff --config {config} --out {out}")
            print_error(message, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
    if as_json:
        print(json.dumps(result.document))
        return
    from verbcal.bakeoff.output import rich_table

    console.print(rich_table(result.document))
    console.print(
        f"[bold]recommended[/]: {escape(result.document['recommended'])} — "
        f"{escape(result.document['reason'])}",
        soft_wrap=True,
    )
    for name, path in result.files.items():
        if not name.startswith("calibrator:"):
            console.print(f"  {name}: {path}", markup=False, highlight=False)
    console.print(f"  calibrators: {out / 'calibrators'}", markup=False, highlight=False)


def _dry_table(rows: list[DryRunArm]) -> Table:
    table = Table(title="bakeoff --dry-run", title_justify="left", header_style="bold")
    for column in (
        "arm",
        "model",
        "items",
        "requests",
        "in store",
        "input tokens ≈",
        "output tokens ≤",
        "cost ≈ USD",
        "cost ≤ USD",
    ):
        table.add_column(column, justify="left" if column in ("arm", "model") else "right")

    def usd(value: float | None) -> str:
        return "unknown" if value is None else f"{value:.4f}"

    for row in rows:
        if row.recorded:
            table.add_row(escape(row.arm), "recorded", "-", "0", "-", "-", "-", "0", "0")
            continue
        table.add_row(
            escape(row.arm),
            escape(row.model),
            str(row.n_items),
            str(row.n_requests),
            str(row.n_from_store),
            str(row.input_tokens),
            str(row.output_tokens_max),
            usd(row.cost_input),
            usd(row.cost_max),
        )
    return table
