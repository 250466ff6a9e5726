"""``verbcal elicit``: ask an LLM for a label distribution per item, durably and resumably."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from verbcal.cli import options as opt
from verbcal.cli.app import app, console, err_console

if TYPE_CHECKING:
    from verbcal.elicit import ElicitResult

STATUS_ORDER = ("ok", "repaired", "failed", "error")


@app.command("elicit")
def elicit_command(
    task: Annotated[Path, typer.Option(help="Task spec (YAML): labels, instruction, fields.")],
    input: Annotated[Path, typer.Option("--input", help="Items to classify (JSONL or CSV).")],
    out: Annotated[Path, typer.Option(help="Predictions JSONL to write (input order).")],
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
    progress: opt.ShowProgress = True,
) -> None:
    """Ask an LLM for a probability per label for every item; write predictions JSONL.

    Each reply is committed to the SQLite store as it arrives: re-run the same command after
    a crash and only the missing requests are sent. Keys come from the environment
    (OPENAI_API_KEY, ANTHROPIC_API_KEY, AWS credentials) and are never written anywhere.

    Example: verbcal elicit --task sentiment.yaml --input items.jsonl --out preds.jsonl
    --backend openai --model gpt-4o-mini --concurrency 16
    """
    try:  # imported here so that the other commands work without the elicit extra
        from verbcal.elicit import BackendError, ElicitError, ElicitOptions, elicit
        from verbcal.elicit.redact import redact
        from verbcal.task import TaskError
    except ImportError as exc:
        err_console.print(f"[bold red]error:[/] {exc}; run: pip install 'verbcal[elicit]'")
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
    )
    try:
        result = elicit(task, input, out, options, console=err_console, progress=progress)
    except (TaskError, ElicitError, BackendError, ValueError, OSError, RuntimeError) as exc:
        err_console.print(f"[bold red]error:[/] {redact(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        where = store or out.with_name(out.stem + ".store.sqlite")
        err_console.print(
            f"interrupted: every finished reply is in {where}; re-run the same command to resume"
        )
        raise typer.Exit(130) from None
    print_summary(result)


def print_summary(result: ElicitResult) -> None:
    """Counts per status, top parse issues, tokens, cost and time."""
    console.print(f"[bold]verbcal elicit: {result.backend} / {result.model}[/]", highlight=False)
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
