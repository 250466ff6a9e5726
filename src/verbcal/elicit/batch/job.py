"""``elicit`` through a provider's batch API: plan as live, submit what is missing, collect.

The requests are the live ones (:func:`verbcal.elicit.job.plan_requests`), keyed the same
way in the same store, and the output is built by the same code: a run may mix live and
batch replies, and a reply parses the same whichever way it came.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from verbcal.elicit.backends import DEFAULT_MODELS, BackendError
from verbcal.elicit.batch.ledger import Ledger
from verbcal.elicit.batch.providers import line_for, make_provider, request_mode
from verbcal.elicit.batch.runner import BatchFailed, Runner, encode, split
from verbcal.elicit.engine import Engine, EngineStats, Job, Stop, estimate_tokens, worst_case_cost
from verbcal.elicit.job import ElicitOptions, ElicitResult, ElicitStopped
from verbcal.elicit.pricing import Price, batch_price, load_prices
from verbcal.elicit.records import ItemPlan, build_record
from verbcal.elicit.store import Store
from verbcal.predictions import write_jsonl
from verbcal.task import Task, load_task


class BatchPending(RuntimeError):
    """``--no-wait``: the batches are submitted and recorded; nothing is written yet."""

    exit_code = 0

    def __init__(self, batches: int, requests: int, store: Path) -> None:
        self.batches, self.requests, self.store = batches, requests, store
        super().__init__(self.describe())

    def describe(self, resume: str = "re-run the same command") -> str:
        """What is in flight and how to finish."""
        return (
            f"{self.batches} batch(es) ({self.requests} requests) in flight, recorded in"
            f" {self.store}. Check them with: verbcal batch status --store {self.store}\n"
            f"Finish with: {resume} (it polls and collects them; nothing is submitted twice)"
        )


def _budget(
    pending: Sequence[Job], opts: ElicitOptions, price: Price | None, spent: list[float]
) -> tuple[list[Job], bool]:
    """The pending jobs that ``--max-requests`` / ``--max-cost`` (batch prices) allow.

    ``spent`` is (requests, worst-case USD) already submitted by this run; it is not changed.
    """
    allowed: list[Job] = []
    count, cost = spent
    for job in pending:
        most = 0.0 if price is None else worst_case_cost(job.request, price)
        over_n = opts.max_requests is not None and count + 1 > opts.max_requests
        if over_n or (opts.max_cost is not None and cost + most > opts.max_cost):
            return allowed, True
        count, cost = count + 1, cost + most
        allowed.append(job)
    return allowed, False


def _report(console: Console | None, progress: bool) -> Callable[[str], None]:
    def report(text: str) -> None:
        if console is not None and progress:
            console.print(text, highlight=False, markup=False)

    return report


async def _run_batches(
    runner: Runner, jobs: dict[str, Job], opts: ElicitOptions, price: Price | None
) -> tuple[list[Job], Stop | None]:
    """Submit, poll and collect until every job is answered or given up; (given up, stop).

    An error that retries cannot fix (401, 403, 404, another 4xx, or retries spent)
    becomes :class:`BatchFailed`.
    """
    try:
        return await _rounds(runner, jobs, opts, price)
    except BackendError as exc:
        raise BatchFailed(Stop("fatal", str(exc), exc.status)) from exc


async def _rounds(
    runner: Runner, jobs: dict[str, Job], opts: ElicitOptions, price: Price | None
) -> tuple[list[Job], Stop | None]:
    bopts = opts.batch
    assert bopts is not None
    most_n, most_bytes = bopts.limits(opts.backend)
    spent = [0.0, 0.0]
    stop: Stop | None = None
    failures = 0
    while True:
        await runner.reconcile()  # intents left by a kill, or by an unanswered submit
        rows = runner.store.get_many(jobs)
        in_flight = runner.ledger.open_keys()
        given_up = {k for k, n in runner.tally.failures.items() if n > bopts.retries}
        pending = [
            job for key, job in jobs.items()
            if key not in in_flight and key not in given_up
            and (key not in rows or rows[key].status == "error")
        ]  # fmt: skip
        if stop is None and pending:
            allowed, refused = _budget(pending, opts, price, spent)
            lines = [encode(runner.provider.line(j.key, j.request, runner.mode)) for j in allowed]
            try:
                for start, end in split(lines, most_n, most_bytes):
                    await runner.submit(allowed[start:end])
                    spent[0] += end - start
                    spent[1] += sum(
                        0.0 if price is None else worst_case_cost(j.request, price)
                        for j in allowed[start:end]
                    )
            except BackendError as exc:
                failures = await _again(runner, exc, failures, opts)
                continue
            if refused:
                stop = Stop("budget", _budget_message(opts))
        if not runner.mine(("submitted", "ended")):
            return [jobs[k] for k in given_up if k in jobs], stop
        try:
            ended = await runner.poll()
            failures = 0
        except BackendError as exc:
            failures = await _again(runner, exc, failures, opts)
            continue
        if ended == 0:
            if not bopts.wait:
                open_rows = runner.mine(("submitted", "ended"))
                raise BatchPending(len(open_rows), sum(r.n for r in open_rows), runner.store.path)
            await asyncio.sleep(bopts.poll_interval)


async def _again(runner: Runner, exc: BackendError, failures: int, opts: ElicitOptions) -> int:
    """Wait before trying a failed submit or poll again; raise once retries are spent."""
    if exc.fatal or not exc.retryable or failures >= opts.retries:
        raise exc
    failures += 1
    runner.report(f"{exc}; trying again ({failures} of {opts.retries})")
    await asyncio.sleep(opts.backoff_base * 2**failures)
    return failures


def _budget_message(opts: ElicitOptions) -> str:
    if opts.max_cost is not None:
        return f"--max-cost ${opts.max_cost:g} reached (at batch prices, worst case per request)"
    return f"--max-requests {opts.max_requests} reached"


def elicit_batch(
    task: Task,
    plans: Sequence[ItemPlan],
    jobs: dict[str, Job],
    out: str | Path,
    store_path: Path,
    opts: ElicitOptions,
    model: str,
    prices: dict[str, Price],
    live: Price | None,
    started: float,
    *,
    console: Console | None = None,
    progress: bool = True,
) -> ElicitResult:
    """Run ``jobs`` through the batch API, then write ``out`` like a live run.

    Called by :func:`verbcal.elicit.elicit` when ``opts.batch`` is set. Raises
    :class:`ElicitStopped` (401/403/404, a refused or invalid batch, a budget) and
    :class:`BatchPending` (``wait=False`` with batches in flight), both with every
    result received kept in the store.
    """
    assert opts.batch is not None
    price = batch_price(live)
    stats, notes = EngineStats(), list[str]()
    with Store(store_path) as store:
        n_done = sum(1 for r in store.get_many(jobs).values() if r.status == "reply")
        provider = make_provider(opts.backend, model, opts.base_url, opts.timeout)
        runner = Runner(
            store, Ledger(store.db), provider, backend=opts.backend, base_url=opts.base_url,
            mode=request_mode(opts.backend, opts.structured), report=_report(console, progress),
        )  # fmt: skip
        try:
            given_up, stop = asyncio.run(_drive(runner, jobs, opts, price))
        except BatchFailed as exc:
            given_up, stop = [], exc.stop
        tally = runner.tally
        stats.requests = tally.requests
        stats.input_tokens, stats.output_tokens = tally.input_tokens, tally.output_tokens
        stats.cost = _cost(price, tally.input_tokens, tally.output_tokens)
        notes.append(_cost_note(tally, price, live))
        if given_up and stop is None and opts.batch.fallback == "live":
            live_stats, stop = _live(given_up, store, opts, model, live)
            notes.append(f"{len(given_up)} requests sent live after {opts.batch.retries} retries")
            _add(stats, live_stats)
        rows = store.get_many(jobs)
    if stop is not None:
        unsent = sum(1 for key in jobs if key not in rows or rows[key].status == "error")
        raise ElicitStopped(stop, opts.backend, store_path, stats.requests, unsent)
    records = [build_record(plan, rows, task.labels) for plan in plans]
    write_jsonl(out, records)
    result = ElicitResult.of(
        records, out=out, store=store_path, stats=stats, opts=opts, model=model, prices=prices,
        n_requests_planned=len(jobs), n_from_store=n_done, started=started, notes=notes,
    )  # fmt: skip
    result.cost = None if price is None else stats.cost
    return result


async def _drive(
    runner: Runner, jobs: dict[str, Job], opts: ElicitOptions, price: Price | None
) -> tuple[list[Job], Stop | None]:
    try:
        return await _run_batches(runner, jobs, opts, price)
    finally:
        await runner.provider.aclose()


def _cost(price: Price | None, tokens_in: int, tokens_out: int) -> float:
    return 0.0 if price is None else (tokens_in * price[0] + tokens_out * price[1]) / 1e6


def _cost_note(tally: Any, price: Price | None, live: Price | None) -> str:
    """The batch-versus-live cost report of this run's batch tokens."""
    head = (
        f"batch API: {tally.batches} batches, {tally.requests} requests submitted,"
        f" {tally.replies} replies, {tally.errors} errored/expired;"
        f" tokens {tally.input_tokens} in, {tally.output_tokens} out"
    )
    if price is None or live is None:
        return head + "; cost unknown (no price for this model; pass --prices)"
    batch = _cost(price, tally.input_tokens, tally.output_tokens)
    full = _cost(live, tally.input_tokens, tally.output_tokens)
    return f"{head}; cost ${batch:.6f} at batch prices (the same tokens live: ${full:.6f})"


def _add(stats: EngineStats, more: EngineStats) -> None:
    stats.requests += more.requests
    stats.retries += more.retries
    stats.input_tokens += more.input_tokens
    stats.output_tokens += more.output_tokens
    stats.cost += more.cost


def _live(
    jobs: list[Job], store: Store, opts: Any, model: str, price: Price | None
) -> tuple[EngineStats, Stop | None]:
    """``--batch-fallback live``: send the given-up requests as live calls."""
    backend = opts.make_backend(model, opts.base_url)
    engine = Engine(backend, store, opts.engine_config(price, opts.limiter))

    async def go() -> EngineStats:
        try:
            return await engine.run(jobs)
        finally:
            await backend.aclose()

    return asyncio.run(go()), engine.stop


@dataclass(frozen=True)
class BatchPlan:
    """What ``elicit --batch`` would submit, computed without calling anything."""

    backend: str
    model: str
    store: Path
    mode: str
    n_items: int
    n_requests: int
    n_from_store: int
    n_in_flight: int
    batches: list[tuple[int, int, int, int]]
    """Per batch: requests, bytes, input tokens (estimated), output tokens at most."""
    cost_batch: tuple[float, float] | None
    cost_live: tuple[float, float] | None
    """USD (input, at most in all) at batch and at live prices."""


def dry_run_batch(
    task: Task | str | Path, items: Any, out: str | Path, opts: ElicitOptions
) -> BatchPlan:
    """Plan the batches that ``elicit --batch`` would submit now, with tokens and cost."""
    from verbcal.elicit.job import _items, _price, default_store, plan_requests

    opts.check()
    assert opts.batch is not None
    task = task if isinstance(task, Task) else load_task(task)
    model = opts.model or DEFAULT_MODELS[opts.backend]
    _, jobs = plan_requests(task, _items(task, items, opts), opts, model)
    store_path = Path(opts.store) if opts.store else default_store(out)
    done: set[str] = set()
    in_flight: set[str] = set()
    if store_path.exists():
        with Store(store_path) as store:
            done = {k for k, r in store.get_many(jobs).items() if r.status == "reply"}
            in_flight = Ledger(store.db).open_keys()
    todo = [job for key, job in jobs.items() if key not in done and key not in in_flight]
    mode = request_mode(opts.backend, opts.structured)
    lines = [encode(line_for(opts.backend, model, j.key, j.request, mode)) for j in todo]
    batches = []
    for start, end in split(lines, *opts.batch.limits(opts.backend)):
        part = [j.request for j in todo[start:end]]
        tokens_in = sum(estimate_tokens(r) - r.max_tokens for r in part)
        batches.append(
            (
                end - start,
                sum(map(len, lines[start:end])),
                tokens_in,
                sum(r.max_tokens for r in part),
            )
        )
    live = _price(opts, model, load_prices(opts.prices))

    def cost(price: Price | None) -> tuple[float, float] | None:
        if price is None:
            return None
        tokens_in = sum(b[2] for b in batches)
        tokens_out = sum(b[3] for b in batches)
        return _cost(price, tokens_in, 0), _cost(price, tokens_in, tokens_out)

    return BatchPlan(
        backend=opts.backend,
        model=model,
        store=store_path,
        mode=mode,
        n_items=len({job.item_id for job in jobs.values()}),
        n_requests=len(jobs),
        n_from_store=len(done),
        n_in_flight=len(in_flight & set(jobs)),
        batches=batches,
        cost_batch=cost(batch_price(live)),
        cost_live=cost(live),
    )
