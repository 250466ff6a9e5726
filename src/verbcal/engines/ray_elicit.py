"""``verbcal elicit --engine ray``: the elicitation engine on a pool of long-lived Ray actors.

Each of ``actors`` Ray actors is an async actor that keeps, for the whole job, one event
loop, one backend (one HTTP client and its connection pool) and one
:class:`verbcal.elicit.engine.Engine` with ``ceil(concurrency / actors)`` workers pulling
requests from one queue: the same retries, parsing and statuses as on one machine. The
driver cuts the items into batches and keeps :data:`BATCHES_IN_FLIGHT` batches queued on
every actor, so an actor's workers never wait for a batch to drain before the next fills
in: the whole job keeps ``concurrency`` requests in flight until the last batch.
``--rpm``/``--tpm`` are one token bucket for the whole job: a named actor that every engine
asks before each request. ``--max-requests``/``--max-cost`` are split evenly over the
actors, so the job never spends more than the budget.

Stops: a 401/403/404 or a budget reached in any actor halts every actor (the requests in
flight finish and are kept), and :func:`elicit_ray` raises
:class:`verbcal.elicit.ElicitStopped`, as the local engine does.

Durability: the driver writes each finished batch to ``<out>.parts/part-<run>-<n>.jsonl``
(atomically) as it arrives. A re-run reads the parts, keyed by item id, and asks only for
the items that have no answer there (an ``error`` record is asked again); the driver needs
no file system shared with the workers. A killed job loses at most the batches in flight.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from verbcal.elicit import ElicitError, ElicitOptions, ElicitResult, ElicitStopped
from verbcal.elicit.backends import DEFAULT_MODELS
from verbcal.elicit.engine import Engine, EngineStats, Job, RateLimiter, Stop
from verbcal.elicit.job import plan_requests
from verbcal.elicit.pricing import load_prices, lookup
from verbcal.elicit.progress import StatusProgress
from verbcal.elicit.records import build_record, parse_row
from verbcal.elicit.store import Row
from verbcal.engines.ray_cluster import ray_session, require_ray
from verbcal.parse import ParsedReply
from verbcal.predictions import write_jsonl, write_records
from verbcal.task import Task, load_task, read_items

BATCHES_IN_FLIGHT = 3
"""Batches queued on each actor at once: while one drains, the next ones keep its workers busy."""


class TokenBuckets:
    """The job's shared rate limits (a named Ray actor): one :class:`RateLimiter` per kind."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.buckets = {k: RateLimiter(v) for k, v in (("rpm", rpm), ("tpm", tpm)) if v}

    async def acquire(self, kind: str, cost: float) -> None:
        await self.buckets[kind].acquire(cost)

    def settle(self, kind: str, delta: float) -> None:
        self.buckets[kind].settle(delta)


class SharedLimiter:
    """The engine-side face of one bucket of :class:`TokenBuckets` (the engine's limiter seam)."""

    def __init__(self, buckets: Any, kind: str) -> None:
        self.buckets, self.kind = buckets, kind

    async def acquire(self, cost: float = 1.0) -> None:
        await self.buckets.acquire.remote(self.kind, cost)

    def settle(self, delta: float) -> None:
        self.buckets.settle.remote(self.kind, delta)


class Elicitor:
    """A Ray async actor: one engine for the whole job, fed batch after batch.

    :meth:`run` queues a batch's requests on the actor's engine and returns the batch's
    output records once its last reply is in; several batches may be queued at once, and
    the engine's workers take their requests in order, so they never idle between batches.
    """

    def __init__(self, task: Task, options: ElicitOptions, buckets: Any | None, price: Any) -> None:
        self.task, self.options, self.price = task, options, price
        self.model = options.model or DEFAULT_MODELS[options.backend]
        self.limiter = None if buckets is None else (lambda kind, _: SharedLimiter(buckets, kind))
        self.engine: Engine | None = None
        self.halted = False
        self.parsed: dict[str, ParsedReply] = {}
        self.waiting: dict[str, asyncio.Future[Row | None]] = {}

    async def ready(self) -> bool:
        """Build the engine (the HTTP client's imports included); answers once the actor is up."""
        if self.engine is None:
            self._start()
        return True

    def _start(self) -> Engine:
        """The actor's engine and workers, built once, on the actor's event loop."""
        opts = self.options
        backend = opts.make_backend(self.model, opts.base_url)
        config = opts.engine_config(self.price, self.limiter)
        self.engine = Engine(backend, _Rows(), config)  # type: ignore[arg-type]
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.workers = [asyncio.ensure_future(self._work()) for _ in range(opts.concurrency)]
        return self.engine

    async def _work(self) -> None:
        engine = self.engine
        assert engine is not None
        while True:
            job = await self.queue.get()
            row = None
            if engine.stop is None and not self.halted:
                try:
                    row = await engine.run_job(job)
                except Exception as exc:  # never leave a batch waiting forever
                    engine.stop = engine.stop or Stop("fatal", f"{type(exc).__name__}: {exc}")
            if row is not None:
                result = parse_row(row, self.task.labels)
                if result is not None:
                    self.parsed[row.key] = result
            waiting = self.waiting.pop(job.key, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(row)

    def halt(self) -> None:
        """Send no new request (the job stopped elsewhere); requests in flight finish."""
        self.halted = True

    async def run(
        self, items: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], Stop | None, int]:
        """The records of ``items`` (input order), why the actor stopped (or None), and unsent.

        After a stop the records cover only the items with every reply in; ``unsent`` counts
        the requests of this batch that were never sent.
        """
        engine = self.engine or self._start()
        loop = asyncio.get_running_loop()
        plans, jobs = plan_requests(self.task, items, self.options, self.model)
        rows: dict[str, Row] = {}
        pending: dict[str, asyncio.Future[Row | None]] = {}
        for key, job in jobs.items():
            if key not in self.waiting:  # a request already in flight is not sent twice
                self.waiting[key] = loop.create_future()
                self.queue.put_nowait(job)
            pending[key] = self.waiting[key]
        for key, waiting in pending.items():
            row = await waiting
            if row is not None:
                rows[key] = row
        stop = engine.stop or (Stop("halted", "stopped by another actor") if self.halted else None)
        complete = [plan for plan in plans if all(k in rows for k in _keys(plan))]
        records = [build_record(plan, rows, self.task.labels, self.parsed) for plan in complete]
        unsent = sum(1 for key in jobs if key not in rows)
        for key in jobs:
            self.parsed.pop(key, None)
        return records, stop, unsent

    async def summary(self) -> dict[str, Any]:
        """What this actor's engine did (requests, retries, tokens) and its backend's notes."""
        if self.engine is None:
            return {"requests": 0, "retries": 0, "input_tokens": 0, "output_tokens": 0, "notes": []}
        stats = self.engine.stats
        return {
            "requests": stats.requests,
            "retries": stats.retries,
            "input_tokens": stats.input_tokens,
            "output_tokens": stats.output_tokens,
            "notes": list(getattr(self.engine.backend, "notes", [])),
        }


class _Rows:
    """The engine's store on an actor: rows go back to the driver with their batch, not kept.

    (The driver's part files are the durable store; keeping every row on the actor would
    grow with the job.)
    """

    def put(self, backend: str, model: str, row: Row) -> None:
        """Nothing to keep."""


def _keys(plan: Any) -> list[str]:
    return [*plan.keys, *([plan.logprob_key] if plan.logprob_key else [])]


def _split(total: float | None, actors: int, index: int) -> Any:
    """Actor ``index``'s share of a job-wide budget (None: no budget)."""
    if total is None:
        return None
    if isinstance(total, int):
        return total // actors + (1 if index < total % actors else 0)
    return total / actors


def default_parts(out: str | Path) -> Path:
    """``preds.jsonl`` -> ``preds.parts/`` next to it."""
    out = Path(out)
    return out.with_name(out.stem + ".parts")


def read_parts(parts: Path) -> dict[str, dict[str, Any]]:
    """The newest record per item id in the part files (later parts win)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(parts.glob("part-*.jsonl")):
        for line in path.read_text("utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                found[str(record["id"])] = record
    return found


def _batches(items: Sequence[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@dataclass
class _Outcome:
    """What the actors did, summed over the pool."""

    stats: EngineStats = field(default_factory=EngineStats)
    notes: list[str] = field(default_factory=list)
    stop: Stop | None = None
    unsent: int = 0
    startup: float = 0.0


def elicit_ray(
    task: Task | str | Path,
    items: str | Path | Sequence[dict[str, Any]],
    out: str | Path,
    options: ElicitOptions | None = None,
    *,
    actors: int = 2,
    batch_size: int = 100,
    address: str | None = None,
    parts: str | Path | None = None,
    console: Console | None = None,
    progress: bool = True,
    timings: dict[str, float] | None = None,
) -> ElicitResult:
    """Elicit on a Ray cluster (see the module doc); write ``out`` (JSONL or Parquet) in input order.

    Raises :class:`ElicitStopped` (every finished batch kept in the parts, ``out`` not
    written) at a 401/403/404 or a budget reached in any actor. ``timings``, if given, gets
    ``startup`` (seconds until every actor answered) and ``total``.
    """
    opts = options or ElicitOptions()
    opts.check()
    if opts.backend == "local":
        raise ElicitError(
            "--engine ray needs a server every actor can reach (--backend openai, anthropic or"
            " bedrock); the embedded local model runs on one machine: drop --engine ray"
        )
    if actors < 1 or batch_size < 1:
        raise ElicitError("--actors and --batch-size must be at least 1")
    if opts.max_requests is not None:
        actors = min(actors, opts.max_requests)  # every actor's share is at least one request
    task = task if isinstance(task, Task) else load_task(task)
    model = opts.model or DEFAULT_MODELS[opts.backend]
    prices = load_prices(opts.prices)
    price = (0.0, 0.0) if opts.backend == "local" else lookup(model, prices)
    if price is None and opts.max_cost is not None:
        raise ElicitError(f"--max-cost needs a price for {model!r}: pass --prices FILE")
    rows = list(items) if not isinstance(items, (str, Path)) else read_items(items, task)
    rows = rows[: opts.max_items] if opts.max_items is not None else rows
    parts_dir = Path(parts) if parts else default_parts(out)
    parts_dir.mkdir(parents=True, exist_ok=True)
    answered = {k: r for k, r in read_parts(parts_dir).items() if r.get("status") != "error"}
    todo = [row for row in rows if str(row["id"]) not in answered]
    started = time.monotonic()
    outcome = _Outcome()
    if todo:
        per_actor = max(1, math.ceil(opts.concurrency / actors))
        batches = list(_batches(todo, batch_size))
        outcome = _run(
            task, replace(opts, concurrency=per_actor), price, batches, actors, address,
            parts_dir, console, progress,
        )  # fmt: skip
    if timings is not None:
        timings.update(startup=outcome.startup, total=time.monotonic() - started)
    stats = outcome.stats
    if outcome.stop is not None:
        raise ElicitStopped(outcome.stop, opts.backend, parts_dir, stats.requests, outcome.unsent)
    fresh = read_parts(parts_dir)
    records = [fresh[str(row["id"])] for row in rows]
    write_records(out, records)
    return ElicitResult.of(
        records,
        out=out,
        store=parts_dir,
        stats=stats,
        opts=opts,
        model=model,
        prices=prices,
        n_requests_planned=len(rows) * opts.samples,
        n_from_store=(len(rows) - len(todo)) * opts.samples,
        started=started,
        notes=outcome.notes,
    )


def _run(
    task: Task,
    opts: ElicitOptions,
    price: Any,
    batches: list[list[dict[str, Any]]],
    actors: int,
    address: str | None,
    parts: Path,
    console: Console | None,
    progress: bool,
) -> _Outcome:
    """Run the batches on the actor pool, writing each batch as it finishes."""
    ray = require_ray()
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    outcome = _Outcome()
    with (
        ray_session(address),
        StatusProgress(sum(map(len, batches)), console, enabled=progress) as bar,
    ):
        buckets = None
        if opts.rpm or opts.tpm:
            bucket_actor = ray.remote(num_cpus=0)(TokenBuckets)
            buckets = bucket_actor.options(name=f"verbcal-limits-{run_id}").remote(
                opts.rpm, opts.tpm
            )
        actor_class = ray.remote(num_cpus=0, max_concurrency=1000, scheduling_strategy="SPREAD")(
            Elicitor
        )
        pool = []
        for index in range(actors):
            share = replace(
                opts,
                max_requests=_split(opts.max_requests, actors, index),
                max_cost=_split(opts.max_cost, actors, index),
            )
            pool.append(actor_class.remote(task, share, buckets, price))
        clock = time.monotonic()
        try:
            started = [actor.ready.remote() for actor in pool]
            queue = batches[::-1]
            running: dict[Any, int] = {}
            for _ in range(BATCHES_IN_FLIGHT):  # queued now: each actor starts them once up
                for index, actor in enumerate(pool):
                    if queue:
                        running[actor.run.remote(queue.pop())] = index
            ray.get(started)
            outcome.startup = time.monotonic() - clock
            number = 0
            while running:
                (ready,), _ = ray.wait(list(running), num_returns=1)
                index = running.pop(ready)
                records, stop, unsent = ray.get(ready)
                if records:
                    write_jsonl(parts / f"part-{run_id}-{number:06d}.jsonl", records)
                    number += 1
                for record in records:
                    bar.advance(record["status"])
                outcome.unsent += unsent
                if stop is not None and stop.kind != "halted" and outcome.stop is None:
                    if stop.kind == "budget" and actors > 1:
                        note = f" (one actor's share: the job's budget is split over {actors})"
                        stop = replace(stop, message=stop.message + note)
                    outcome.stop = stop
                    ray.get([actor.halt.remote() for actor in pool])
                if queue and outcome.stop is None:
                    running[pool[index].run.remote(queue.pop())] = index
            if outcome.stop is not None:
                outcome.unsent += sum(len(b) for b in queue) * opts.samples
            for summary in ray.get([actor.summary.remote() for actor in pool]):
                for name in ("requests", "retries", "input_tokens", "output_tokens"):
                    setattr(outcome.stats, name, getattr(outcome.stats, name) + summary[name])
                outcome.notes += [n for n in summary["notes"] if n not in outcome.notes]
        finally:
            for actor in pool:
                ray.kill(actor)
            if buckets is not None:
                ray.kill(buckets)
    return outcome
