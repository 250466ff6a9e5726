"""``elicit()``: plan the requests, run what the store lacks, write the output from the store."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from verbcal.elicit.backends import (
    BACKENDS,
    DEFAULT_MODELS,
    Backend,
    BackendError,
    Request,
    make_backend,
)
from verbcal.elicit.engine import Engine, EngineConfig, EngineStats, Job
from verbcal.elicit.pricing import estimate_cost, load_prices
from verbcal.elicit.progress import StatusProgress
from verbcal.elicit.records import ItemPlan, build_record, sample_status, write_jsonl
from verbcal.elicit.store import Row, Store, request_key
from verbcal.task import Task, load_task, read_items

_SAMPLE_PREFIX = re.compile(r"^sample \d+: ")


class ElicitError(ValueError):
    """Options that cannot work together; the message says what to change."""


@dataclass(frozen=True)
class ElicitOptions:
    """Everything ``verbcal elicit`` can be told (see the CLI for each option's meaning)."""

    backend: str = "local"
    model: str | None = None
    base_url: str | None = None
    store: str | Path | None = None
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    samples: int = 1
    temperature: float | None = None
    label_logprobs: bool = False
    max_items: int | None = None
    max_tokens: int = 256
    timeout: float = 120.0
    retries: int = 6
    backoff_base: float = 1.0
    structured: bool = True
    prices: str | Path | None = None
    limiter: Callable[[str, float], Any] | None = field(default=None, compare=False)
    """Shared rate limiters (see :attr:`EngineConfig.limiter`); None: one per run."""

    def check(self) -> None:
        """Raise :class:`ElicitError` on impossible combinations."""
        if self.backend not in BACKENDS:
            raise ElicitError(f"unknown backend {self.backend!r}: choose {', '.join(BACKENDS)}")
        if self.samples < 1 or self.concurrency < 1:
            raise ElicitError("--samples and --concurrency must be at least 1")
        if self.label_logprobs and self.backend not in ("openai", "local"):
            raise ElicitError(
                f"--label-logprobs needs logprobs, which the {self.backend} API does not return;"
                " use --backend openai or local, or drop the option"
            )

    @property
    def sample_temperature(self) -> float:
        """The temperature asked for: 0 for one reply, 0.7 by default when sampling."""
        if self.temperature is not None:
            return self.temperature
        return 0.0 if self.samples == 1 else 0.7


@dataclass
class ElicitResult:
    """What a run did, for the summary."""

    out: Path
    store: Path
    n_items: int
    status_counts: Counter[str]
    issue_counts: Counter[str]
    stats: EngineStats
    n_requests_planned: int
    n_from_store: int
    seconds: float
    cost: float | None
    backend: str
    model: str
    notes: list[str] = field(default_factory=list)


def label_prompt(task: Task, text: str) -> str:
    """A prompt whose first answer token names a label, for ``--label-logprobs``."""
    return (
        f"{task.instruction}\n\nText:\n{text}\n\n"
        f"Answer with exactly one label from: {', '.join(task.labels)}.\nLabel:"
    )


def plan_requests(
    task: Task, items: Sequence[dict[str, Any]], opts: ElicitOptions, model: str
) -> tuple[list[ItemPlan], dict[str, Job]]:
    """One plan per item and one job per distinct request key."""
    temp = opts.sample_temperature
    params = {"temperature": temp, "max_tokens": opts.max_tokens, "structured": opts.structured}
    schema = task.json_schema() if opts.structured else None
    plans: list[ItemPlan] = []
    jobs: dict[str, Job] = {}
    for item in items:
        prompt = task.render_prompt(str(item["text"]))
        keys = []
        for sample in range(opts.samples):
            key = request_key(opts.backend, model, prompt, params, sample)
            seed = sample if temp > 0 else None
            request = Request(prompt, schema, temp, opts.max_tokens, seed)
            jobs.setdefault(key, Job(key, str(item["id"]), sample, request))
            keys.append(key)
        lp_key = None
        if opts.label_logprobs:
            lp_prompt = label_prompt(task, str(item["text"]))
            lp_key = request_key(opts.backend, model, lp_prompt, {"kind": "label_logprobs"}, 0)
            lp_request = Request(lp_prompt, max_tokens=3, logprob_labels=task.labels)
            jobs.setdefault(lp_key, Job(lp_key, str(item["id"]), -1, lp_request))
        plans.append(ItemPlan(item, tuple(keys), lp_key))
    return plans, jobs


@contextmanager
def _endpoint(opts: ElicitOptions, console: Console | None) -> Iterator[str | None]:
    """The base URL to talk to; for ``local``, start the embedded server for the duration."""
    if opts.backend != "local":
        yield opts.base_url
        return
    from verbcal.elicit.local import local_server

    status = (
        console.status("Loading the embedded model SmolLM2-135M-Instruct...") if console else None
    )
    loading = time.monotonic()
    with status or nullcontext():
        server = local_server(parallel=min(opts.concurrency, 4))
        url = server.__enter__()
    if console is not None:
        seconds = time.monotonic() - loading
        console.print(f"Embedded model ready at {url} (loaded in {seconds:.1f} s)", highlight=False)
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


def default_store(out: str | Path) -> Path:
    """``preds.jsonl`` -> ``preds.store.sqlite`` next to it."""
    out = Path(out)
    return out.with_name(out.stem + ".store.sqlite")


def elicit(
    task: Task | str | Path,
    items: str | Path | Sequence[dict[str, Any]],
    out: str | Path,
    options: ElicitOptions | None = None,
    *,
    console: Console | None = None,
    progress: bool = True,
) -> ElicitResult:
    """Ask a backend for a label distribution per item; resume from the store; write ``out``."""
    opts = options or ElicitOptions()
    opts.check()
    task = task if isinstance(task, Task) else load_task(task)
    rows_in = list(items) if not isinstance(items, (str, Path)) else read_items(items, task)
    if opts.max_items is not None:
        rows_in = rows_in[: opts.max_items]
    model = opts.model or DEFAULT_MODELS[opts.backend]
    plans, jobs = plan_requests(task, rows_in, opts, model)
    store_path = Path(opts.store) if opts.store else default_store(out)
    prices = load_prices(opts.prices)
    started = time.monotonic()
    with Store(store_path) as store:
        done = {k: r for k, r in store.get_many(jobs).items() if r.status != "error"}
        pending = [job for key, job in jobs.items() if key not in done]
        stats, notes = EngineStats(), list[str]()
        if pending:
            stats, notes = _run_pending(pending, store, opts, model, task, console, progress)
        rows = store.get_many(jobs)
    records = [build_record(plan, rows, task.labels) for plan in plans]
    write_jsonl(out, records)
    cost = estimate_cost(opts.backend, model, stats.input_tokens, stats.output_tokens, prices)
    return ElicitResult(
        out=Path(out),
        store=store_path,
        n_items=len(records),
        status_counts=Counter(r["status"] for r in records),
        issue_counts=_parse_issues(records),
        stats=stats,
        n_requests_planned=len(jobs),
        n_from_store=len(done),
        seconds=time.monotonic() - started,
        cost=cost,
        backend=opts.backend,
        model=model,
        notes=notes,
    )


def _parse_issues(records: Sequence[dict[str, Any]]) -> Counter[str]:
    """How often each parse issue occurs (request errors are counted by status instead)."""
    found: Counter[str] = Counter()
    for record in records:
        if record["status"] != "error":
            found.update(_SAMPLE_PREFIX.sub("", issue) for issue in record["issues"])
    return found


def _run_pending(
    pending: list[Job],
    store: Store,
    opts: ElicitOptions,
    model: str,
    task: Task,
    console: Console | None,
    progress: bool,
) -> tuple[EngineStats, list[str]]:
    with _endpoint(opts, console) as base_url:
        backend = make_backend(
            opts.backend,
            model,
            base_url,
            timeout=opts.timeout,
            concurrency=opts.concurrency,
            structured=opts.structured,
        )
        config = EngineConfig(
            concurrency=opts.concurrency,
            rpm=opts.rpm,
            tpm=opts.tpm,
            max_retries=opts.retries,
            backoff_base=opts.backoff_base,
            limiter=opts.limiter,
        )
        with StatusProgress(len(pending), console, enabled=progress) as bar:

            def on_done(job: Job, row: Row) -> None:
                # parse only to show live counts; the output is parsed from the store anyway
                bar.advance(sample_status(row, task.labels) if progress else row.status)

            engine = Engine(backend, store, config, on_done)
            stats = asyncio.run(_drive(engine, backend, pending))
        return stats, list(getattr(backend, "notes", []))


async def _drive(engine: Engine, backend: Backend, jobs: list[Job]) -> EngineStats:
    try:
        return await engine.run(jobs)
    finally:
        await backend.aclose()


__all__ = ["BackendError", "ElicitError", "ElicitOptions", "ElicitResult", "elicit"]
