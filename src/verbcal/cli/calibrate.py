"""CLI commands of the calibration core: evaluate, fit, apply, compare."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from verbcal import datasets, engines
from verbcal.calibrate import METHODS, Calibrator, CalibratorError, make_calibrator, parse_methods
from verbcal.cli.app import app, console, err_console
from verbcal.compare import compare as run_compare
from verbcal.compare import summarise
from verbcal.metrics import DEFAULT_BINS, METRICS, bootstrap_ci, summary
from verbcal.predictions import (
    Predictions,
    PredictionsError,
    is_parquet,
    with_probs,
    write_records,
)

DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        "-d",
        help="Predictions JSONL/CSV/Parquet (file, directory or glob), or recorded:<name>.",
    ),
]
LabelsOption = Annotated[
    str | None,
    typer.Option(help="Comma-separated label order (default: the first record's order)."),
]
BinsOption = Annotated[int, typer.Option("--bins", help="Equal-width bins for ECE/MCE.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]

METRIC_NOTES = (
    "ECE/MCE: top-label, {bins} equal-width bins, right-closed (a value on an edge goes to the "
    "lower bin, 0 to the first, 1 to the last). NLL: q clipped at 1e-12. Brier: sum over "
    "classes. AUROC: positive = 2nd label (K = 2), else macro one-vs-rest. Macro-F1 over all labels."
)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn input and usage errors into one red line and exit status 2."""
    try:
        yield
    except (PredictionsError, CalibratorError, ValueError, OSError, ImportError) as exc:
        # soft_wrap: the message stays one line however long the path, for logs and grep
        # escape: paths and labels with [brackets] are text, not rich markup
        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(2) from exc


def load_labelled(data: str, labels: str | None, action: str) -> Predictions:
    """Read predictions, report adjustments, keep the rows with a gold label."""
    label_list = [s.strip() for s in labels.split(",")] if labels else None
    predictions = datasets.load(data, label_list)
    err_console.print(predictions.describe(), highlight=False, markup=False)
    labelled = predictions.labelled()
    if len(labelled) == 0:
        predictions.require_gold(action)
    if len(labelled) < len(predictions):
        err_console.print(
            f"{len(predictions) - len(labelled)} rows without a gold label are left out"
        )
    return labelled


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


@app.command()
def evaluate(
    data: DataOption,
    calibrator: Annotated[
        Path | None, typer.Option(help="A calibrator from `verbcal fit` to apply first.")
    ] = None,
    bins: BinsOption = DEFAULT_BINS,
    labels: LabelsOption = None,
    boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Score predictions against gold labels, with 95% bootstrap confidence intervals.

    Without --calibrator it scores the normalised verbalized distribution itself (no floor).

    Example: verbcal evaluate --data recorded:tweets --calibrator ts.json
    """
    with friendly_errors():
        fitted = Calibrator.load(calibrator) if calibrator else None
        order = ",".join(fitted.labels or ()) if fitted and fitted.labels else labels
        predictions = load_labelled(data, order, "evaluate")
        q = fitted.predict_proba(predictions.probs) if fitted else predictions.probs
        scores = summary(q, predictions.y, n_bins=bins)
        ci = bootstrap_ci(q, predictions.y, n_boot=boot, seed=seed, n_bins=bins)
    if as_json:
        out: dict[str, Any] = {"n": len(predictions), **scores, "bins": bins}
        out["ci"] = {m: list(v) for m, v in ci.items()}
        print(json.dumps(out))
        return
    title = f"{escape(predictions.source)}: " + (
        f"{fitted.method} calibrator ({fitted.floor.describe()})"
        if fitted
        else "verbalized (uncalibrated)"
    )
    table = Table(title=title, caption=METRIC_NOTES.format(bins=bins))
    for column in ("metric", "value", "95% CI"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in METRICS:
        lo, hi = ci[metric]
        table.add_row(metric, _fmt(scores[metric]), f"[{_fmt(lo)}, {_fmt(hi)}]")
    console.print(table)
    console.print(f"n = {len(predictions)}, bootstrap: {boot} percentile resamples, seed {seed}")


@app.command()
def fit(
    method: Annotated[str, typer.Option(help=f"One of: {', '.join(METHODS)}.")],
    data: DataOption,
    out: Annotated[Path, typer.Option(help="Where to write the calibrator JSON.")],
    floor: Annotated[
        str, typer.Option(help="Floor for zeros before log: a number in (0, 1), or 'fit'.")
    ] = "fit",
    floor_mode: Annotated[
        str, typer.Option(help="clip: max(p, floor); mix: (1 - a) p + a / K.")
    ] = "clip",
    labels: LabelsOption = None,
) -> None:
    """Fit a calibrator on labelled predictions and save it as a small JSON file.

    Example: verbcal fit --method temperature --data recorded:tweets --out ts.json
    """
    with friendly_errors():
        if floor_mode not in ("clip", "mix"):
            raise CalibratorError(f"--floor-mode must be clip or mix, got {floor_mode!r}")
        predictions = load_labelled(data, labels, "fitting")
        calibrator = make_calibrator(method, floor=floor, floor_mode=floor_mode)
        calibrator.fit(predictions.probs, predictions.y, labels=predictions.labels)
        calibrator.save(out)
    info = calibrator.fit_info
    floor_text = calibrator.floor.describe() if calibrator.uses_floor else "not used"
    console.print(f"[bold]{method}[/] fitted on {int(info['n'])} items; floor: {floor_text}")
    for name, value in calibrator.params.items():
        console.print(f"  {name} = {value}", highlight=False)
    console.print(
        f"NLL on the fitting data: {info['nll_before']:.4f} (verbalized) → {info['nll_after']:.4f}"
    )
    for warning in calibrator.warnings:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}")
    console.print(f"saved to {out}", markup=False)


@app.command()
def apply(
    calibrator: Annotated[Path, typer.Option(help="A calibrator written by `verbcal fit`.")],
    data: DataOption,
    out: Annotated[
        Path,
        typer.Option(help="Output .jsonl or .parquet (one file, input order), or a directory."),
    ],
    engine: Annotated[
        str, typer.Option(help="local | ray | spark (ray and spark read Parquet).")
    ] = "local",
    out_format: Annotated[
        str | None,
        typer.Option(help="parquet | jsonl: the shards' format when --out is a directory."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto | ray://HOST:10001 (default: start one).")
    ] = None,
    master: Annotated[
        str | None,
        typer.Option(help="Spark master: local[2] | spark://HOST:7077 (default local[*])."),
    ] = None,
) -> None:
    """Apply a fitted calibrator to new predictions (the original kept as verbalized_probs).

    Parquet input (a file, a directory or a glob) runs batch by batch on the chosen engine
    and gains top_label and confidence columns; see docs/scale.md.

    Example: verbcal apply --calibrator ts.json --data new.jsonl --out calibrated.jsonl
    """
    with friendly_errors():
        fitted = Calibrator.load(calibrator)
        if engine != "local" or is_parquet(datasets.resolve(data)):
            rows = engines.apply(
                engine, fitted, datasets.resolve(data), out, out_format, address, master
            )
            console.print(f"wrote {rows} records to {out} (engine {engine})", markup=False)
            return
        predictions = datasets.load(data, fitted.labels)
        err_console.print(predictions.describe(), highlight=False, markup=False)
        q = fitted.predict_proba(predictions.probs)
        write_records(out, with_probs(predictions, q))
    console.print(
        f"wrote {len(predictions.records)} records to {out} ({len(q)} calibrated)", markup=False
    )


@app.command()
def compare(
    data: DataOption,
    methods: Annotated[str, typer.Option(help="'all' or a comma-separated list.")] = "all",
    calib_frac: Annotated[float, typer.Option(help="Share of items used to fit.")] = 0.5,
    repeats: Annotated[int, typer.Option(help="Random stratified splits.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the splits.")] = 0,
    bins: BinsOption = DEFAULT_BINS,
    labels: LabelsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit every method on calibration splits and score it on the rest: mean ± sd over repeats.

    Example: verbcal compare --data recorded:drug-reviews --methods identity,resoftmax,temperature
    """
    with friendly_errors():
        names = parse_methods(methods)
        predictions = load_labelled(data, labels, "compare")
        with Progress(
            TextColumn("compare"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=as_json,
        ) as progress:
            task = progress.add_task("splits", total=repeats)
            results = run_compare(
                predictions.probs,
                predictions.y,
                predictions.labels,
                names,
                calib=calib_frac,
                repeats=repeats,
                seed=seed,
                n_bins=bins,
                on_repeat=lambda _: progress.advance(task),
            )
    rows = summarise(results)
    if as_json:
        print(json.dumps(rows))
        return
    show_compare(predictions, rows, results, calib_frac, repeats, bins)


def show_compare(
    predictions: Predictions,
    rows: list[dict[str, Any]],
    results: list[Any],
    calib_frac: float,
    repeats: int,
    bins: int,
) -> None:
    """The comparison table, one row per method, best mean per metric in bold."""
    n_calib = round(calib_frac * len(predictions))
    table = Table(
        title=f"{escape(predictions.source)}: {repeats} stratified splits, "
        f"~{n_calib} calibration / {len(predictions) - n_calib} test items (mean ± sd)",
        caption=METRIC_NOTES.format(bins=bins),
    )
    table.add_column("method", no_wrap=True)
    for metric in METRICS:
        table.add_column(metric, justify="right", no_wrap=True)
    table.add_column("median T", justify="right", no_wrap=True)
    lower_is_better = {"ece", "mce", "nll", "brier"}
    best = {}
    for metric in METRICS:
        means = [r["mean"] for r in rows if r["metric"] == metric and not math.isnan(r["mean"])]
        if means:
            best[metric] = min(means) if metric in lower_is_better else max(means)
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for metric in METRICS:
            row = next(r for r in rows if r["method"] == method and r["metric"] == metric)
            text = f"{row['mean']:.3f} [dim]±{row['sd']:.3f}[/]"
            cells.append(f"[bold]{text}[/]" if row["mean"] == best.get(metric) else text)
        temps = sorted(
            r.params["temperature"]
            for r in results
            if r.method == method and "temperature" in r.params
        )
        cells.append(f"{temps[len(temps) // 2]:.3g}" if temps else "")
        table.add_row(method, *cells)
    console.print(table)
