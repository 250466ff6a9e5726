"""``verbcal batch status|collect|cancel``, and the ``--batch`` options of ``elicit`` and ``run``."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from verbcal.cli.app import app, console, err_console, print_error

if TYPE_CHECKING:
    from verbcal.elicit.batch import BatchOptions
    from verbcal.elicit.batch.job import BatchPlan
    from verbcal.elicit.batch.ledger import BatchRow

Batch = Annotated[
    bool,
    typer.Option(
        "--batch",
        help="Use the provider's batch API (openai, anthropic): half price, within 24 h;"
        " every batch is recorded in the store, a re-run collects instead of resubmitting.",
    ),
]
BatchRetries = Annotated[
    int, typer.Option(min=0, help="New batches for errored or expired items (--batch).")
]
BatchFallback = Annotated[
    str,
    typer.Option(help="none | live: send items still failing after the retries live (--batch)."),
]
BatchMaxRequests = Annotated[
    int | None,
    typer.Option(min=1, help="Requests per batch (default: 50,000 openai, 100,000 anthropic)."),
]
BatchMaxBytes = Annotated[
    int | None,
    typer.Option(min=1, help="Bytes of request lines per batch (default: 200 MB / 256 MB)."),
]
PollInterval = Annotated[
    float, typer.Option(min=0.001, help="Seconds between checks of the batches in flight.")
]
NoWait = Annotated[
    bool,
    typer.Option("--no-wait", help="Submit the batches, record them and exit; re-run to collect."),
]
Store = Annotated[Path, typer.Option("--store", help="The SQLite store of the elicit run.")]

batch_app = typer.Typer(
    help="The provider batches recorded in a store: status, collect, cancel.",
    no_args_is_help=True,
)
app.add_typer(batch_app, name="batch")


def batch_options(
    batch: bool,
    retries: int,
    fallback: str,
    max_requests: int | None,
    max_bytes: int | None,
    poll_interval: float,
    no_wait: bool,
) -> BatchOptions | None:
    """The ``--batch`` options, or None for live calls (the others then must be unset)."""
    if not batch:
        if no_wait:
            raise typer.BadParameter("--no-wait needs --batch", param_hint="'--no-wait'")
        return None
    from verbcal.elicit.batch import BatchOptions

    return BatchOptions(
        retries=retries,
        fallback=fallback,
        max_requests=max_requests,
        max_bytes=max_bytes,
        poll_interval=poll_interval,
        wait=not no_wait,
    )


def print_batch_plan(plan: BatchPlan) -> None:
    """What ``--batch --dry-run`` would submit: batches, tokens, cost at batch and live prices."""

    def usd(cost: tuple[float, float] | None) -> str:
        if cost is None:
            return "unknown (no price for this model; pass --prices)"
        return f"${cost[0]:.4f} for input, at most ${cost[1]:.4f} in all"

    lines = [
        f"dry run: {plan.backend} / {plan.model} batch API ({plan.mode}); nothing was sent",
        f"items: {plan.n_items}; requests: {plan.n_requests} planned, {plan.n_from_store}"
        f" answered in the store ({plan.store}), {plan.n_in_flight} in batches in flight,"
        f" {sum(b[0] for b in plan.batches)} to submit in {len(plan.batches)} batches",
    ]
    for n, (size, nbytes, tokens_in, tokens_out) in enumerate(plan.batches, 1):
        lines.append(
            f"  batch {n}: {size} requests, {nbytes} bytes, ~{tokens_in} tokens in,"
            f" at most {tokens_out} out"
        )
    lines.append(f"cost at batch prices: {usd(plan.cost_batch)}")
    lines.append(f"cost of the same requests live: {usd(plan.cost_live)}")
    for line in lines:
        console.print(line, highlight=False, markup=False)


def _table(rows: list[BatchRow]) -> Table:
    table = Table(show_header=True)
    for name in ("batch", "provider id", "backend / model", "state", "status", "requests"):
        table.add_column(name)
    table.add_column("counts")
    table.add_column("created (UTC)")
    for row in rows:
        counts = " ".join(f"{k} {v}" for k, v in sorted(row.counts.items()) if v)
        made = datetime.datetime.fromtimestamp(row.created, datetime.UTC)
        table.add_row(
            row.token[:8], row.provider_id or "-", escape(f"{row.backend} / {row.model}"), row.state,
            row.status or "-", str(row.n), counts or "-", made.strftime("%Y-%m-%d %H:%M:%S"),
        )  # fmt: skip
    return table


def _report(text: str) -> None:
    err_console.print(text, highlight=False, markup=False)


def _run(action: str, store: Path, **kw: object) -> None:
    from verbcal.elicit import BackendError
    from verbcal.elicit.batch import admin
    from verbcal.elicit.redact import redact

    try:
        if action == "collect":
            rows, tally = admin.collect(store, report=_report, **kw)  # type: ignore[arg-type]
            console.print(
                f"collected: {tally.replies} replies, {tally.errors} errored or expired"
                f" (stored in {store}); re-run the elicit command to write the predictions"
                " and re-batch the errors",
                highlight=False,
            )
        elif action == "cancel":
            rows = admin.cancel(store, report=_report)
        else:
            rows = admin.status(store, report=_report)
    except BackendError as exc:
        print_error(redact(str(exc)))
        raise typer.Exit(2 if exc.fatal else 1) from exc
    except (OSError, ValueError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    console.print(_table(rows))


@batch_app.command("status")
def status_command(store: Store) -> None:
    """Every batch recorded in the store; the open ones refreshed from the provider."""
    _run("status", store)


@batch_app.command("collect")
def collect_command(
    store: Store,
    poll_interval: PollInterval = 30.0,
    no_wait: NoWait = False,
) -> None:
    """Store the results of ended batches (joined on custom_id); wait for open ones."""
    _run("collect", store, wait=not no_wait, poll_interval=poll_interval)


@batch_app.command("cancel")
def cancel_command(store: Store) -> None:
    """Cancel every open batch; `collect` then stores the results it had."""
    _run("cancel", store)
