"""``verbcal elicit``: ask an LLM for a label distribution per item, durably and resumably."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from verbcal.cli import batch as bopt
from verbcal.cli import options as opt
from verbcal.cli.app import app, console, err_console, print_error

if TYPE_CHECKING:
    from verbcal.elicit import DryRun, ElicitOptions, ElicitResult, ElicitStopped

STATUS_ORDER = ("ok", "repaired", "refused", "failed", "error")


@app.command("elicit")
def elicit_command(
    task: Annotated[
        Path,
        typer.Option(
            help="Task spec (YAML): labels, instruction, fields; or a built-in task name "
            "(translation-quality, hallucination, or either with -verbal)."
        ),
    ],
    input: Annotated[
        Path, typer.Option("--input", help="Items to classify (JSONL, CSV or Parquet).")
    ],
    out: Annotated[Path, typer.Option(help="Predictions .jsonl or .parquet (input order).")],
    backend: opt.Backend = None,
    model: opt.Model = None,
    base_url: opt.BaseUrl = None,
    concurrency: opt.Concurrency = 8,
    rpm: opt.Rpm = None,
    tpm: opt.Tpm = None,
    store: Annotated[
        Path | None, typer.Option(help="SQLite store (default: <out>.store.sqlite).")
    ] = None,
    samples: opt.Samples = 1,
    temperature: opt.Temperature = None,
    label_logprobs: Annotated[
        bool, typer.Option(help="Also score labels by first-token log-probability.")
    ] = False,
    max_items: opt.MaxItems = None,
    max_tokens: opt.MaxTokens = 256,
    timeout: opt.Timeout = 120.0,
    retries: opt.Retries = 6,
    structured: opt.Structured = True,
    prices: opt.Prices = None,
    max_requests: opt.MaxRequests = None,
    max_cost: opt.MaxCost = None,
    dry_run: opt.DryRun = False,
    http: opt.Http = "sdk",
    progress: opt.ShowProgress = True,
    engine: Annotated[
        str, typer.Option(help="local | ray: a pool of Ray actors (see docs/scale.md).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto | ray://HOST:10001 (default: start one).")
    ] = None,
    actors: Annotated[int, typer.Option(help="Ray actors; --concurrency is split among them.")] = 2,
    batch_size: Annotated[
        int, typer.Option(help="Items per Ray batch (the unit of resume).")
    ] = 100,
    batch: bopt.Batch = False,
    batch_retries: bopt.BatchRetries = 2,
    batch_fallback: bopt.BatchFallback = "none",
    batch_max_requests: bopt.BatchMaxRequests = None,
    batch_max_bytes: bopt.BatchMaxBytes = None,
    poll_interval: bopt.PollInterval = 30.0,
    no_wait: bopt.NoWait = False,
) -> None:
    """Ask an LLM for a probability per label for every item; write predictions JSONL.

    Each reply is committed to the SQLite store as it arrives: re-run the same command after
    a crash and only the missing requests are sent. Keys come from the environment
    (OPENAI_API_KEY, ANTHROPIC_API_KEY, AWS credentials) and are never written anywhere.

    The first 401, 403 or 404 stops the run at once (exit 2), and so does a budget reached
    (--max-requests, --max-cost; exit 3): replies received are kept, and the message gives
    the command that resumes. --dry-run prints the plan and its estimated cost only.

    --batch sends the requests through the provider's batch API (openai, anthropic) at
    half the price: each batch is recorded in the store before it is submitted, and a
    re-run (or `verbcal batch collect --store S`) collects instead of submitting again.

    Example: verbcal elicit --task sentiment.yaml --input items.jsonl --out preds.jsonl
    --backend openai --model gpt-4o-mini --concurrency 16
    """
    try:  # imported here so that the other commands work without the elicit extra
        from verbcal.elicit import BackendError, ElicitError, ElicitOptions, ElicitStopped
        from verbcal.elicit import dry_run as plan
        from verbcal.elicit.batch.job import BatchPending
        from verbcal.elicit.redact import redact
        from verbcal.task import TaskError
    except ImportError as exc:
        print_error(f"{exc}; run: pip install 'verbcal[elicit]'")
        raise typer.Exit(2) from exc
    options = ElicitOptions(
        backend=opt.require_backend(backend),
        model=model,
        base_url=base_url,
        store=store,
        concurrency=concurrency,
        rpm=rpm,
        tpm=tpm,
        samples=samples,
        temperature=temperature,
        label_logprobs=label_logprobs,
        max_items=max_items,
        max_tokens=max_tokens,
        timeout=timeout,
        retries=retries,
        structured=structured,
        prices=prices,
        max_requests=max_requests,
        max_cost=max_cost,
        http=http,
        batch=bopt.batch_options(
            batch, batch_retries, batch_fallback, batch_max_requests, batch_max_bytes,
            poll_interval, no_wait,
        ),
    )  # fmt: skip
    try:
        if dry_run and options.batch is not None:
            from verbcal.elicit.batch.job import dry_run_batch

            bopt.print_batch_plan(dry_run_batch(task, input, out, options))
            return
        if dry_run:
            print_dry_run(plan(task, input, out, options))
            return
        if engine == "ray":
            from verbcal.engines.ray_elicit import elicit_ray

            result = elicit_ray(
                task,
                input,
                out,
                options,
                actors=actors,
                batch_size=batch_size,
                address=address,
                console=err_console,
                progress=progress,
            )
        elif engine == "local":
            result = elicit_to(out, task, input, options, progress)
        else:
            raise ElicitError(f"unknown engine {engine!r}: choose local or ray")
    except ElicitStopped as exc:
        raise typer.Exit(report_stop(exc)) from exc
    except BatchPending as exc:
        err_console.print(
            exc.describe(resume_command()), highlight=False, markup=False, soft_wrap=True
        )
        raise typer.Exit(exc.exit_code) from None
    except (
        TaskError,
        ElicitError,
        BackendError,
        ValueError,
        OSError,
        RuntimeError,
        ImportError,
    ) as exc:
        print_error(redact(str(exc)))
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        where = store or out.with_name(out.stem + ".store.sqlite")
        if engine == "ray":
            where = out.with_name(out.stem + ".parts")  # verbcal.engines.ray_elicit.default_parts
        err_console.print(
            f"interrupted: every finished reply is in {where}; re-run the same command to resume"
        )
        raise typer.Exit(130) from None
    print_summary(result)
    if result.all_failed:
        raise typer.Exit(report_all_failed(result))


def report_all_failed(result: ElicitResult) -> int:
    """Say that every request failed, with the most common reason; return exit code 1."""
    reason, count = result.errors.most_common(1)[0] if result.errors else ("unknown", 0)
    message = (
        f"every request failed ({result.n_items} items; {count} with: {reason}). The errors"
        f" are in {result.store}; fix the cause, then re-run the same command to retry them"
    )
    print_error(message, soft_wrap=True)
    return 1


def resume_command() -> str:
    """The command line this process was started with, to be run again."""
    return shlex.join(["verbcal", *sys.argv[1:]])


def report_stop(exc: ElicitStopped) -> int:
    """Print why the run stopped and how to resume; return the exit code."""
    from verbcal.elicit.redact import redact

    print_error(redact(exc.describe(resume_command())), soft_wrap=True)
    return exc.exit_code


def print_dry_run(plan: DryRun) -> None:
    """The plan of a run: requests, tokens, cost, and one prompt as it would be sent."""

    def usd(value: float | None) -> str:
        return (
            "unknown (no price for this model; pass --prices)" if value is None else f"${value:.4f}"
        )

    lines = [
        f"dry run: {plan.backend} / {plan.model} ({plan.mode}); nothing was sent",
        f"items: {plan.n_items}; requests: {plan.n_requests} planned, {plan.n_from_store} in the"
        f" store ({plan.store}), {plan.n_to_send} to send (retries not counted)",
        f"tokens (estimated at 4 characters a token): {plan.input_tokens} in, at most"
        f" {plan.output_tokens_max} out",
        f"cost: {usd(plan.cost_input)} for input, at most {usd(plan.cost_max)} in all",
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False)
    if plan.example_prompt is not None:
        console.print("first request's prompt:", highlight=False)
        console.print(plan.example_prompt, highlight=False, markup=False)


def elicit_to(
    out: Path, task: Path, items: Path, options: ElicitOptions, progress: bool
) -> ElicitResult:
    """Run ``elicit``; for a ``.parquet`` out, write its JSONL next to it and convert."""
    from verbcal.elicit import elicit
    from verbcal.elicit.job import default_store
    from verbcal.predictions import PARQUET_SUFFIXES, write_parquet

    if not out.name.lower().endswith(PARQUET_SUFFIXES):
        return elicit(task, items, out, options, console=err_console, progress=progress)
    staged = out.with_name(f".{out.name}.jsonl")
    options = replace(options, store=options.store or default_store(out))
    result = elicit(task, items, staged, options, console=err_console, progress=progress)
    lines = staged.read_text(encoding="utf-8").splitlines()
    write_parquet(out, [json.loads(line) for line in lines])
    staged.unlink()
    result.out = out
    return result


def print_summary(result: ElicitResult) -> None:
    """Counts per status, top parse issues, tokens, cost and time."""
    console.print(
        f"[bold]verbcal elicit: {escape(result.backend)} / {escape(result.model)}[/]",
        highlight=False,
    )
    table = Table(show_header=True)
    table.add_column("status")
    table.add_column("items", justify="right")
    table.add_column("share", justify="right")
    total = max(1, result.n_items)
    for status in STATUS_ORDER:
        count = result.status_counts.get(status, 0)
        table.add_row(status, str(count), f"{count / total:.1%}")
    console.print(table)
    stats = result.stats
    cost = (
        "unknown (no price for this model; pass --prices)"
        if result.cost is None
        else (f"${result.cost:.4f} (estimate)")
    )
    lines = [
        f"items: {result.n_items}; requests: {result.n_requests_planned} planned, "
        f"{result.n_from_store} from the store, {stats.requests} sent, {stats.retries} retries",
        f"tokens this run: {stats.input_tokens} in, {stats.output_tokens} out; cost: {cost}",
        f"time: {result.seconds:.1f} s; output: {result.out}; store: {result.store}",
    ]
    for line in lines:
        console.print(line, highlight=False)
    if result.issue_counts:
        console.print("top parse issues:")
        for issue, count in result.issue_counts.most_common(5):
            console.print(f"  {count:>6}  {issue}", highlight=False, markup=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
