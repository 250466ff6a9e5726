"""``verbcal elicit --engine ray``: the elicitation engine on a pool of Ray actors.

The items are cut into batches; ``actors`` Ray actors each run :func:`verbcal.elicit.elicit`
(the async engine, retries, parsing, statuses: all as on one machine) on two batches at a
time, with ``concurrency / (2 * actors)`` requests in flight per batch, so the whole job
keeps ``concurrency`` requests in flight. ``--rpm``/``--tpm`` are one token bucket for the
whole job: a named actor that every engine asks before each request.

Durability: the driver writes each finished batch to ``<out>.parts/part-<run>-<n>.jsonl``
(atomically) as it arrives. A re-run reads the parts, keyed by item id, and asks only for
the items that have no answer there (an ``error`` record is asked again); the driver needs
no file system shared with the workers. A killed job loses at most the batches in flight.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from verbcal.elicit import ElicitError, ElicitOptions, ElicitResult, elicit
from verbcal.elicit.backends import DEFAULT_MODELS
from verbcal.elicit.engine import EngineStats, RateLimiter
from verbcal.elicit.progress import StatusProgress
from verbcal.engines.ray import ray_session, require_ray
from verbcal.predictions import write_jsonl, write_records
from verbcal.task import Task, load_task, read_items

BATCHES_PER_ACTOR = 2
"""Batches each actor runs at once: one drains while the next fills the pipe."""


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
    """A Ray actor that elicits whole batches with :func:`verbcal.elicit.elicit`."""

    def __init__(self, task: Task, options: ElicitOptions, buckets: Any | None) -> None:
        limiter = None if buckets is None else (lambda kind, _: SharedLimiter(buckets, kind))
        self.task = task
        self.options = replace(options, limiter=limiter, store=":memory:", max_items=None)

    def run(self, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The output records of ``items`` (input order) and what the run did."""
        with tempfile.TemporaryDirectory(prefix="verbcal-batch-") as temp:
            out = Path(temp) / "batch.jsonl"
            result = elicit(self.task, items, out, self.options, progress=False)
            records = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
        stats = result.stats
        done = {
            "requests": stats.requests,
            "retries": stats.retries,
            "input_tokens": stats.input_tokens,
            "output_tokens": stats.output_tokens,
            "issues": dict(result.issue_counts),
            "cost": result.cost,
            "notes": result.notes,
        }
        return records, done


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
) -> ElicitResult:
    """Elicit on a Ray cluster (see the module doc); write ``out`` (JSONL or Parquet) in input order."""
    opts = options or ElicitOptions()
    opts.check()
    if opts.backend == "local":
        raise ElicitError(
            "--engine ray needs a server every actor can reach (--backend openai, anthropic or"
            " bedrock); the embedded local model runs on one machine: drop --engine ray"
        )
    if actors < 1 or batch_size < 1:
        raise ElicitError("--actors and --batch-size must be at least 1")
    task = task if isinstance(task, Task) else load_task(task)
    rows = list(items) if not isinstance(items, (str, Path)) else read_items(items, task)
    rows = rows[: opts.max_items] if opts.max_items is not None else rows
    parts_dir = Path(parts) if parts else default_parts(out)
    parts_dir.mkdir(parents=True, exist_ok=True)
    answered = {k: r for k, r in read_parts(parts_dir).items() if r.get("status") != "error"}
    todo = [row for row in rows if str(row["id"]) not in answered]
    started = time.monotonic()
    totals: Counter[str] = Counter()
    issues: Counter[str] = Counter()
    costs: list[float | None] = []
    notes: list[str] = []
    if todo:
        per_batch = max(1, math.ceil(opts.concurrency / (actors * BATCHES_PER_ACTOR)))
        batch_opts = replace(opts, concurrency=per_batch)
        batches = list(_batches(todo, batch_size))
        for done in _run(task, batch_opts, batches, actors, address, parts_dir, console, progress):
            totals.update({k: v for k, v in done.items() if isinstance(v, int)})
            issues.update(done["issues"])
            costs.append(done["cost"])
            notes += [n for n in done["notes"] if n not in notes]
    fresh = read_parts(parts_dir)
    records = [fresh[str(row["id"])] for row in rows]
    write_records(out, records)
    stats = EngineStats(
        requests=totals["requests"],
        retries=totals["retries"],
        input_tokens=totals["input_tokens"],
        output_tokens=totals["output_tokens"],
    )
    return ElicitResult(
        out=Path(out),
        store=parts_dir,
        n_items=len(records),
        status_counts=Counter(r["status"] for r in records),
        issue_counts=issues,
        stats=stats,
        n_requests_planned=len(rows) * opts.samples,
        n_from_store=(len(rows) - len(todo)) * opts.samples,
        seconds=time.monotonic() - started,
        cost=None if not costs or None in costs else sum(c for c in costs if c is not None),
        backend=opts.backend,
        model=opts.model or DEFAULT_MODELS[opts.backend],
        notes=notes,
    )


def _run(
    task: Task,
    opts: ElicitOptions,
    batches: list[list[dict[str, Any]]],
    actors: int,
    address: str | None,
    parts: Path,
    console: Console | None,
    progress: bool,
) -> Iterator[dict[str, Any]]:
    """Run the batches on the actor pool; write each batch as it finishes, yield its stats."""
    ray = require_ray()
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
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
        actor_class = ray.remote(
            num_cpus=0, max_concurrency=BATCHES_PER_ACTOR, scheduling_strategy="SPREAD"
        )(Elicitor)
        pool = [actor_class.remote(task, opts, buckets) for _ in range(actors)]
        queue = batches[::-1]
        running: dict[Any, int] = {}
        for _ in range(BATCHES_PER_ACTOR):
            for index, actor in enumerate(pool):
                if queue:
                    running[actor.run.remote(queue.pop())] = index
        number = 0
        try:
            while running:
                (ready,), _ = ray.wait(list(running), num_returns=1)
                index = running.pop(ready)
                records, done = ray.get(ready)
                write_jsonl(parts / f"part-{run_id}-{number:06d}.jsonl", records)
                number += 1
                for record in records:
                    bar.advance(record["status"])
                if queue:
                    running[pool[index].run.remote(queue.pop())] = index
                yield done
        finally:
            for actor in pool:
                ray.kill(actor)
            if buckets is not None:
                ray.kill(buckets)
