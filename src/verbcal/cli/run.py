"""``verbcal run``: the whole chain (elicit → calibrate → evaluate → thresholds → report)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from verbcal.calibration import CalibratorError
from verbcal.cli import batch as bopt
from verbcal.cli import options as opt
from verbcal.cli.app import app, console, err_console, print_error
from verbcal.pipeline import RunError, RunOptions, RunResult, parse_methods
from verbcal.predictions import PredictionsError
from verbcal.provenance import describe
from verbcal.run_metrics import RunMetrics


@app.command("run")
def run_command(
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="Start from this predictions JSONL/CSV (or recorded:<name>): no LLM calls.",
        ),
    ] = None,
    predictions: Annotated[
        str | None, typer.Option("--predictions", hidden=True, help="Old name of --data.")
    ] = None,
    task: Annotated[
        Path | None,
        typer.Option(
            help="Task spec (YAML) or a built-in task name (translation-quality, hallucination, or either with -verbal); needed unless --data."
        ),
    ] = None,
    input: Annotated[
        Path | None, typer.Option("--input", help="Items to classify (JSONL or CSV).")
    ] = None,
    backend: opt.Backend = None,
    model: opt.Model = None,
    base_url: opt.BaseUrl = None,
    concurrency: opt.Concurrency = 8,
    rpm: opt.Rpm = None,
    tpm: opt.Tpm = None,
    store: Annotated[
        Path | None, typer.Option(help="SQLite store (default: RUN_DIR/store.sqlite).")
    ] = None,
    samples: opt.Samples = 1,
    temperature: opt.Temperature = None,
    max_items: opt.MaxItems = None,
    max_tokens: opt.MaxTokens = 256,
    timeout: opt.Timeout = 120.0,
    retries: opt.Retries = 6,
    max_requests: opt.MaxRequests = None,
    max_cost: opt.MaxCost = None,
    dry_run: opt.DryRun = False,
    http: opt.Http = "sdk",
    structured: opt.Structured = True,
    prices: opt.Prices = None,
    calib_frac: opt.CalibFrac = 0.5,
    methods: Annotated[
        str,
        typer.Option(
            help="Calibrators: 'default' (identity, resoftmax, temperature, best), 'all', or a "
            "comma-separated list; 'best' = the best of vector, matrix, platt, isotonic, "
            "histogram by cross-validated NLL on the calibration part."
        ),
    ] = "default",
    seed: Annotated[int, typer.Option(min=0, help="Seed of the split, folds and bootstrap.")] = 0,
    precision: Annotated[
        float,
        typer.Option(callback=opt.open_unit, help="Target precision of the per-class thresholds."),
    ] = opt.DEFAULT_PRECISION,
    confidence: opt.Confidence = 0.95,
    boot: opt.Boot = 1000,
    bins: opt.Bins = 15,
    labels: Annotated[
        str | None,
        typer.Option(help="Comma-separated label order for --data (default: the file's)."),
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="Miscoverage of the conformal prediction sets.")
    ] = 0.1,
    abstain_cost: Annotated[
        float, typer.Option(help="Cost of abstaining in the cost comparison (wrong = 1).")
    ] = 0.3,
    by: Annotated[
        str | None, typer.Option(help="A record field to slice the test metrics by.")
    ] = None,
    report: Annotated[bool, typer.Option(help="Write report.html (needs matplotlib).")] = True,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the results of an earlier run in --out.")
    ] = False,
    progress: opt.ShowProgress = True,
    batch: bopt.Batch = False,
    batch_retries: bopt.BatchRetries = 2,
    batch_fallback: bopt.BatchFallback = "none",
    batch_max_requests: bopt.BatchMaxRequests = None,
    batch_max_bytes: bopt.BatchMaxBytes = None,
    poll_interval: bopt.PollInterval = 30.0,
    no_wait: bopt.NoWait = False,
) -> None:
    """Elicit, calibrate on one part, evaluate on the rest, pick thresholds, write a report.

    Writes RUN_DIR/predictions.jsonl, split.json, calibration.jsonl, test.jsonl,
    calibrators/<method>.json, recommended.json (a copy of the recommended calibrator),
    metrics.json and report.html. Every choice (parameters, the best alternative, the recommended
    method, thresholds) is made on the calibration part; the test part is only scored.

    Example: verbcal run --data recorded:tweets --out runs/tweets

    Example: verbcal run --task sentiment.yaml --input items.jsonl --backend openai
    --model gpt-4o-mini --out runs/gpt4o-mini

    --batch elicits through the provider's batch API (see `verbcal elicit --help`).

    When eliciting, the first 401/403/404 or a budget reached (--max-requests,
    --max-cost) stops the run before any analysis (exit 2 or 3) with replies kept in the
    store and the command that resumes; --dry-run prints the plan and its cost only.
    """
    from verbcal.cli.elicit import report_stop

    try:
        options = RunOptions(
            methods=parse_methods(methods),
            calib_frac=calib_frac,
            seed=seed,
            precision=precision,
            confidence=confidence,
            n_boot=boot,
            n_bins=bins,
            report=report,
            alpha=alpha,
            abstain_cost=abstain_cost,
            by=by,
        )
        result = _dispatch(
            out,
            options,
            data if data is not None else predictions,
            task,
            input,
            labels,
            overwrite,
            progress,
            {
                "backend": backend,
                "model": model,
                "base_url": base_url,
                "store": store,
                "concurrency": concurrency,
                "rpm": rpm,
                "tpm": tpm,
                "samples": samples,
                "temperature": temperature,
                "max_items": max_items,
                "max_tokens": max_tokens,
                "timeout": timeout,
                "retries": retries,
                "structured": structured,
                "prices": prices,
                "max_requests": max_requests,
                "max_cost": max_cost,
                "http": http,
                "batch": bopt.batch_options(
                    batch, batch_retries, batch_fallback, batch_max_requests, batch_max_bytes,
                    poll_interval, no_wait,
                ),
            },
            dry_run,
        )  # fmt: skip
    except _stopped() as exc:
        raise typer.Exit(report_stop(exc)) from exc  # type: ignore[arg-type]
    except _pending() as exc:
        from verbcal.cli.elicit import resume_command

        describe = exc.describe  # type: ignore[attr-defined]
        err_console.print(describe(resume_command()), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(0) from None
    except (RunError, PredictionsError, CalibratorError, ValueError, OSError, RuntimeError) as exc:
        from verbcal.elicit.redact import redact

        print_error(redact(str(exc)))
        raise typer.Exit(2) from exc
    except ImportError as exc:
        print_error(f"{exc}. Install the extras: pip install 'verbcal[elicit,report]'")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: finished replies are in the store; re-run the same command "
            f"(with --overwrite if {out}/metrics.json exists) to resume"
        )
        raise typer.Exit(130) from None
    if result is not None:
        if result.elicitation is not None:  # what the LLM answered, as `verbcal elicit` prints
            from verbcal.cli.elicit import print_summary

            print_summary(result.elicitation)
        print_run_summary(result)


def _stopped() -> type[Exception]:
    """:class:`ElicitStopped`, or a class nothing raises when the elicit extra is missing."""
    try:
        from verbcal.elicit import ElicitStopped
    except ImportError:
        return _NeverRaised
    return ElicitStopped


class _NeverRaised(Exception):
    pass


def _pending() -> type[Exception]:
    """``--batch --no-wait`` with batches in flight (or a class nothing raises)."""
    try:
        from verbcal.elicit.batch.job import BatchPending
    except ImportError:
        return _NeverRaised
    return BatchPending


def _dispatch(
    out: Path,
    options: RunOptions,
    predictions: str | None,
    task: Path | None,
    items: Path | None,
    labels: str | None,
    overwrite: bool,
    progress: bool,
    elicit_args: dict[str, Any],
    dry_run: bool = False,
) -> RunResult | None:
    from verbcal import pipeline

    if dry_run:
        _plan_only(out, predictions, task, items, elicit_args)
        return None
    label_list = [s.strip() for s in labels.split(",")] if labels else None
    if predictions is not None:
        if items is not None:
            raise RunError("give either --data or --task with --input, not both")
        if label_list is None and task is not None:
            from verbcal.task import load_task

            label_list = list(load_task(task).labels)
        return pipeline.run_from_predictions(
            predictions, out, options, labels=label_list, overwrite=overwrite
        )
    if task is None or items is None:
        raise RunError(
            "give --task and --input to elicit predictions, or --data to start from a file"
        )
    from verbcal.elicit import ElicitOptions

    elicit_args["backend"] = opt.require_backend(elicit_args["backend"])

    return pipeline.run(
        task,
        items,
        out,
        ElicitOptions(**elicit_args),
        options,
        console=err_console,
        progress=progress,
        overwrite=overwrite,
    )


def _plan_only(
    out: Path,
    predictions: str | None,
    task: Path | None,
    items: Path | None,
    elicit_args: dict[str, Any],
) -> None:
    """``--dry-run``: print what eliciting would send and cost; call nothing, write nothing."""
    if predictions is not None:
        raise RunError("--dry-run plans LLM calls, and --predictions makes none: drop one")
    if task is None or items is None:
        raise RunError("--dry-run plans the elicitation: give --task and --input")
    from verbcal.cli.elicit import print_dry_run
    from verbcal.elicit import ElicitOptions, dry_run

    store = elicit_args["store"] or out / "store.sqlite"
    backend = opt.require_backend(elicit_args["backend"])
    options = ElicitOptions(**{**elicit_args, "store": store, "backend": backend})
    if options.batch is not None:
        from verbcal.elicit.batch.job import dry_run_batch

        bopt.print_batch_plan(dry_run_batch(task, items, out / "predictions.jsonl", options))
        return
    print_dry_run(dry_run(task, items, out / "predictions.jsonl", options))


def print_run_summary(result: RunResult) -> None:
    """Test metrics per method, the recommendation and where everything went."""
    metrics = RunMetrics.from_dict(result.metrics)
    table = Table(
        title=f"verbcal run: {metrics.n_calibration} calibration / {metrics.n_test} test items",
        caption="CV NLL: cross-validated on the calibration part; -: not scored that way"
        " (auto: see 'recommended by auto')",
    )
    table.add_column("method")
    table.add_column("CV NLL (calib.)", justify="right")
    for name in ("accuracy", "ece", "nll", "brier"):
        table.add_column(f"test {name}", justify="right")
    for method, entry in metrics.methods.items():
        mark = " [bold](recommended)[/]" if method == metrics.recommended else ""
        cv = entry.cv_nll
        cells = [f"{cv:.4f}" if isinstance(cv, float) and math.isfinite(cv) else "-"]
        for name in ("accuracy", "ece", "nll", "brier"):
            lo, hi = entry.ci[name]
            cells.append(f"{entry.test[name]:.3f} [dim][{lo:.3f}, {hi:.3f}][/]")
        table.add_row(escape(method) + mark, *cells)
    console.print(table)
    sources = metrics.run.get("provenance")
    console.print(f"probabilities: {describe(sources)}", highlight=False, markup=False)
    if metrics.best_alternative:
        console.print(f"best alternative by CV NLL: {metrics.best_alternative}", markup=False)
    if metrics.auto:
        console.print(f"recommended by auto: {escape(metrics.auto['reason'])}", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    console.print(f"run directory: {result.out}", markup=False)
    if result.report is not None:
        console.print(f"report: {result.report}", markup=False)
