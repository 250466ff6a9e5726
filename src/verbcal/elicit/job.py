"""An elicitation job, ``elicit()``: plan the requests, run what the store lacks, write the
output from the store."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from verbcal.elicit.batch.options import BatchOptions
from verbcal.elicit.decisions_backend import DECISION_BACKENDS, task_question
from verbcal.elicit.engine import Engine, EngineConfig, EngineStats, Job, Stop, estimate_tokens
from verbcal.elicit.pricing import Price, estimate_cost, load_prices, lookup
from verbcal.elicit.progress import StatusProgress
from verbcal.elicit.records import ItemPlan, build_record, parse_row, row_status
from verbcal.elicit.store import Row, Store, request_key
from verbcal.parse import ParsedReply
from verbcal.predictions import write_jsonl
from verbcal.task import Task, load_task, read_items

_SAMPLE_PREFIX = re.compile(r"^sample \d+: ")


class ElicitError(ValueError):
    """Options that cannot work together; the message says what to change."""


class ElicitStopped(RuntimeError):
    """The run stopped early: a fatal backend error (401/403/404) or a budget was reached.

    Every reply received is in the store (``store``); ``unsent`` requests were never sent.
    Re-running the same call (after fixing the cause) sends only what is missing.
    """

    def __init__(self, stop: Stop, backend: str, store: Path, sent: int, unsent: int) -> None:
        self.stop, self.backend, self.store = stop, backend, store
        self.sent, self.unsent = sent, unsent
        self.exit_code = 2 if stop.kind == "fatal" else 3
        super().__init__(self.describe())

    def describe(self, resume: str = "re-run the same call") -> str:
        """The message: what stopped the run, what was kept, and how to resume."""
        if self.stop.kind == "fatal":
            head = f"stopped ({self.backend} backend): {self.stop.message}"
            how = "Fix that, then resume with"
        else:
            head = f"stopped: {self.stop.message}"
            how = "Resume with (each run may spend its budget again)"
        return (
            f"{head}\n{self.sent} requests sent; every reply received is kept in {self.store};"
            f" {self.unsent} requests not sent.\n{how}: {resume}"
        )


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
    max_requests: int | None = None
    max_cost: float | None = None
    http: str = "sdk"
    limiter: Callable[[str, float], Any] | None = field(default=None, compare=False)
    """Shared rate limiters (see :attr:`EngineConfig.limiter`); None: one per run."""
    batch: BatchOptions | None = None
    """Use the provider's batch API (:mod:`verbcal.elicit.batch`); None: live calls."""

    def check(self) -> None:
        """Raise :class:`ElicitError` on impossible combinations."""
        if self.backend not in BACKENDS:
            raise ElicitError(f"unknown backend {self.backend!r}: choose {', '.join(BACKENDS)}")
        if self.samples < 1 or self.concurrency < 1:
            raise ElicitError("--samples and --concurrency must be at least 1")
        if self.max_requests is not None and self.max_requests < 1:
            raise ElicitError("--max-requests must be at least 1")
        if self.max_cost is not None and not self.max_cost > 0:
            raise ElicitError("--max-cost must be a positive amount in USD")
        if self.http not in ("sdk", "lean"):
            raise ElicitError(f"--http {self.http!r}: choose sdk or lean")
        if self.http == "lean" and self.backend not in ("openai", "local"):
            raise ElicitError("--http lean is for the openai and local backends only")
        if self.batch is not None:
            problem = self.batch.problem(self.backend)
            if problem is None and self.label_logprobs:
                problem = "--label-logprobs is not available with --batch; drop one of them"
            if problem is not None:
                raise ElicitError(problem)
        if self.backend in DECISION_BACKENDS and self.samples != 1:
            raise ElicitError(
                f"--samples {self.samples}: the {self.backend} backend reads probabilities from"
                " the model's scores, one answer per item; use --samples 1"
            )
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

    def make_backend(self, model: str, base_url: str | None) -> Backend:
        """The backend these options ask for (one per run, or one per Ray actor)."""
        return make_backend(
            self.backend,
            model,
            base_url,
            timeout=self.timeout,
            concurrency=self.concurrency,
            structured=self.structured,
            http=self.http,
        )

    def engine_config(
        self, price: tuple[float, float] | None, limiter: Callable[[str, float], Any] | None
    ) -> EngineConfig:
        """The engine's limits, retries and budgets from these options."""
        return EngineConfig(
            concurrency=self.concurrency,
            rpm=self.rpm,
            tpm=self.tpm,
            max_retries=self.retries,
            backoff_base=self.backoff_base,
            max_requests=self.max_requests,
            max_cost=self.max_cost,
            price=price,
            limiter=limiter,
        )


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
    errors: Counter[str] = field(default_factory=Counter)
    """The first issue of each item whose request failed for good, counted."""

    @property
    def all_failed(self) -> bool:
        """Every item's request failed for good (nothing usable was received)."""
        return self.n_items > 0 and self.status_counts.get("error", 0) == self.n_items

    @classmethod
    def of(
        cls,
        records: Sequence[dict[str, Any]],
        *,
        out: str | Path,
        store: Path,
        stats: EngineStats,
        opts: ElicitOptions,
        model: str,
        prices: Any,
        n_requests_planned: int,
        n_from_store: int,
        started: float,
        notes: list[str],
    ) -> ElicitResult:
        """The summary of a run that wrote ``records``: counts, cost and time derived here."""
        return cls(
            out=Path(out),
            store=store,
            n_items=len(records),
            status_counts=Counter(r["status"] for r in records),
            issue_counts=parse_issues(records),
            stats=stats,
            n_requests_planned=n_requests_planned,
            n_from_store=n_from_store,
            seconds=time.monotonic() - started,
            cost=estimate_cost(
                opts.backend, model, stats.input_tokens, stats.output_tokens, prices
            ),
            backend=opts.backend,
            model=model,
            notes=notes,
            errors=Counter(
                r["issues"][0] for r in records if r["status"] == "error" and r.get("issues")
            ),
        )


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
    if opts.backend in DECISION_BACKENDS:
        return _plan_decisions(task, items, opts, model)
    temp = opts.sample_temperature
    params = {"temperature": temp, "max_tokens": opts.max_tokens, "structured": opts.structured}
    schema = task.json_schema() if opts.structured else None
    source = provenance(opts, model)
    plans: list[ItemPlan] = []
    jobs: dict[str, Job] = {}
    for item in items:
        prompt = task.render_prompt(str(item["text"]), item)
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
        plans.append(ItemPlan(item, tuple(keys), lp_key, source))
    return plans, jobs


def provenance(
    opts: ElicitOptions, model: str, question: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Where a record's probabilities came from (the ``provenance`` field of each record).

    ``kind`` is ``decision`` (read from a decision model's scores: ``question`` says which
    question was asked) or ``verbalized`` (numbers the model wrote, parsed from its reply).
    """
    out: dict[str, Any] = {"kind": "verbalized", "backend": opts.backend, "model": model}
    if question is not None:
        out.update(kind="decision", question=question["kind"])
        if "about" in question:
            out["about"] = question["about"]
    elif opts.samples > 1:
        out["samples"] = opts.samples
    return out


def _plan_decisions(
    task: Task, items: Sequence[dict[str, Any]], opts: ElicitOptions, model: str
) -> tuple[list[ItemPlan], dict[str, Job]]:
    """One decision question per item; the item's text is the input."""
    try:
        question = task_question(task)
    except BackendError as exc:
        raise ElicitError(str(exc)) from exc
    params = {"question": question.describe()}
    source = provenance(opts, model, params["question"])
    plans: list[ItemPlan] = []
    jobs: dict[str, Job] = {}
    for item in items:
        text = str(item["text"])
        key = request_key(opts.backend, model, text, params, 0)
        request = Request(text, max_tokens=opts.max_tokens, question=question)
        jobs.setdefault(key, Job(key, str(item["id"]), 0, request))
        plans.append(ItemPlan(item, (key,), None, source))
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
        console.print(
            f"Embedded model ready at {url} (loaded in {seconds:.1f} s)",
            highlight=False,
            markup=False,
        )
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


def default_store(out: str | Path) -> Path:
    """``preds.jsonl`` -> ``preds.store.sqlite`` next to it."""
    out = Path(out)
    return out.with_name(out.stem + ".store.sqlite")


def _price(opts: ElicitOptions, model: str, table: dict[str, Price]) -> Price | None:
    """The model's price; an error when ``--max-cost`` needs one that the table lacks."""
    price = (0.0, 0.0) if opts.backend == "local" else lookup(model, table)
    if price is None and opts.max_cost is not None:
        raise ElicitError(
            f"--max-cost needs a price for {model!r}, which the built-in table lacks; pass"
            ' --prices FILE with {"'
            + model
            + '": {"input": USD, "output": USD}} per million tokens'
        )
    return price


def elicit(
    task: Task | str | Path,
    items: str | Path | Sequence[dict[str, Any]],
    out: str | Path,
    options: ElicitOptions | None = None,
    *,
    console: Console | None = None,
    progress: bool = True,
) -> ElicitResult:
    """Ask a backend for a label distribution per item; resume from the store; write ``out``.

    Raises :class:`ElicitStopped` (after storing every reply received, without writing
    ``out``) at the first 401/403/404 or when ``max_requests`` / ``max_cost`` is reached.
    """
    opts = options or ElicitOptions()
    opts.check()
    task = task if isinstance(task, Task) else load_task(task)
    model = opts.model or DEFAULT_MODELS[opts.backend]
    plans, jobs = plan_requests(task, _items(task, items, opts), opts, model)
    store_path = Path(opts.store) if opts.store else default_store(out)
    prices = load_prices(opts.prices)
    price = _price(opts, model, prices)
    started = time.monotonic()
    if opts.batch is not None:  # the provider's batch API: verbcal.elicit.batch
        from verbcal.elicit.batch.job import elicit_batch

        batch = (task, plans, jobs, out, store_path, opts, model, prices, price, started)
        return elicit_batch(*batch, console=console, progress=progress)
    stop: Stop | None = None
    parsed: dict[str, ParsedReply] = {}  # filled as replies arrive, while the network waits
    with Store(store_path) as store:
        done = {k: r for k, r in store.get_many(jobs).items() if r.status != "error"}
        pending = [job for key, job in jobs.items() if key not in done]
        stats, notes = EngineStats(), list[str]()
        if pending:
            run = _run_pending(pending, store, opts, model, price, task, console, progress, parsed)
            stats, notes, stop = run
        rows = store.get_many(jobs)
    if stop is not None:
        unsent = sum(1 for key in jobs if key not in rows)
        raise ElicitStopped(stop, opts.backend, store_path, stats.requests, unsent)
    about = task.about if task.reply == "verbal" else None
    records = [build_record(plan, rows, task.labels, parsed, about) for plan in plans]
    write_jsonl(out, records)
    return ElicitResult.of(
        records,
        out=out,
        store=store_path,
        stats=stats,
        opts=opts,
        model=model,
        prices=prices,
        n_requests_planned=len(jobs),
        n_from_store=len(done),
        started=started,
        notes=notes,
    )


def _items(
    task: Task, items: str | Path | Sequence[dict[str, Any]], opts: ElicitOptions
) -> list[dict[str, Any]]:
    rows = list(items) if not isinstance(items, (str, Path)) else read_items(items, task)
    return rows if opts.max_items is None else rows[: opts.max_items]


@dataclass(frozen=True)
class DryRun:
    """What ``elicit`` would do, computed without calling anything."""

    backend: str
    model: str
    store: Path
    n_items: int
    n_requests: int
    n_from_store: int
    input_tokens: int
    """Estimated (4 characters a token) for the requests still to send."""
    output_tokens_max: int
    """The reply budget (``max_tokens``) summed over those requests: an upper bound."""
    cost_input: float | None
    cost_max: float | None
    """USD for the input tokens, and at most for input plus every reply's full budget."""
    example_prompt: str | None
    mode: str

    @property
    def n_to_send(self) -> int:
        """Requests that a real run would send (at least once each)."""
        return self.n_requests - self.n_from_store


@dataclass(frozen=True)
class Pending:
    """The planned requests a store does not hold yet, with estimated tokens and cost
    (what a dry run reports)."""

    todo: list[Request]
    n_from_store: int
    input_tokens: int
    """Estimated (4 characters a token)."""
    output_tokens_max: int
    """The reply budgets (``max_tokens``) summed: an upper bound."""
    cost_input: float | None
    cost_max: float | None
    """USD for the input tokens, and at most for input plus every reply's full budget."""


def pending_requests(jobs: Mapping[str, Job], store_path: Path, price: Price | None) -> Pending:
    """Which of ``jobs`` the store at ``store_path`` (if it exists) still lacks, and their cost."""
    done: set[str] = set()
    if store_path.exists():
        with Store(store_path) as store:
            done = {k for k, r in store.get_many(jobs).items() if r.status != "error"}
    todo = [job.request for key, job in jobs.items() if key not in done]
    tokens_in = sum(estimate_tokens(r) - r.max_tokens for r in todo)
    tokens_out = sum(r.max_tokens for r in todo)
    cost_in = cost_max = None
    if price is not None:
        cost_in = tokens_in * price[0] / 1e6
        cost_max = cost_in + tokens_out * price[1] / 1e6
    return Pending(todo, len(done), tokens_in, tokens_out, cost_in, cost_max)


def dry_run(
    task: Task | str | Path,
    items: str | Path | Sequence[dict[str, Any]],
    out: str | Path,
    options: ElicitOptions | None = None,
) -> DryRun:
    """Plan the requests, look them up in the store (if it exists) and estimate tokens and cost."""
    opts = options or ElicitOptions()
    opts.check()
    task = task if isinstance(task, Task) else load_task(task)
    model = opts.model or DEFAULT_MODELS[opts.backend]
    _, jobs = plan_requests(task, _items(task, items, opts), opts, model)
    store_path = Path(opts.store) if opts.store else default_store(out)
    pending = pending_requests(jobs, store_path, _price(opts, model, load_prices(opts.prices)))
    todo = pending.todo
    mode = "plain prompts"
    if opts.backend in DECISION_BACKENDS:
        mode = f"decision question: {todo[0].question.kind if todo else 'none to send'}"
    elif opts.structured:
        tool = opts.backend in ("anthropic", "bedrock")
        mode = "forced tool call" if tool else "JSON-schema output"
    if opts.label_logprobs:
        mode += " + label logprobs"
    return DryRun(
        backend=opts.backend,
        model=model,
        store=store_path,
        n_items=len({job.item_id for job in jobs.values()}),
        n_requests=len(jobs),
        n_from_store=pending.n_from_store,
        input_tokens=pending.input_tokens,
        output_tokens_max=pending.output_tokens_max,
        cost_input=pending.cost_input,
        cost_max=pending.cost_max,
        example_prompt=_example(todo[0]) if todo else None,
        mode=mode,
    )


def _example(request: Request) -> str:
    """The first request as it would be sent: its prompt, or input and question."""
    if request.question is None:
        return request.prompt
    question = json.dumps(request.question.describe(), ensure_ascii=False)
    return f"input: {request.prompt}\nquestion: {question}"


def parse_issues(records: Sequence[dict[str, Any]]) -> Counter[str]:
    """How often each parse issue occurs (request errors are counted by status instead)."""
    found: Counter[str] = Counter()
    for record in records:
        if record["status"] not in ("error", "refused"):  # counted by status instead
            found.update(_SAMPLE_PREFIX.sub("", issue) for issue in record["issues"])
    return found


def _run_pending(
    pending: list[Job],
    store: Store,
    opts: ElicitOptions,
    model: str,
    price: Price | None,
    task: Task,
    console: Console | None,
    progress: bool,
    parsed: dict[str, ParsedReply],
) -> tuple[EngineStats, list[str], Stop | None]:
    with _endpoint(opts, console) as base_url:
        backend = opts.make_backend(model, base_url)
        config = opts.engine_config(price, opts.limiter)
        with StatusProgress(len(pending), console, enabled=progress) as bar:

            def on_done(job: Job, row: Row) -> None:
                result = parse_row(row, task.labels, task.about if task.reply == "verbal" else None)
                if result is not None:
                    parsed[row.key] = result
                bar.advance(row_status(row, result))

            engine = Engine(backend, store, config, on_done)
            stats = asyncio.run(_drive(engine, backend, pending))
        return stats, list(getattr(backend, "notes", [])), engine.stop


async def _drive(engine: Engine, backend: Backend, jobs: list[Job]) -> EngineStats:
    try:
        return await engine.run(jobs)
    finally:
        await backend.aclose()


__all__ = [
    "BackendError",
    "DryRun",
    "ElicitError",
    "ElicitOptions",
    "ElicitResult",
    "ElicitStopped",
    "dry_run",
    "elicit",
]
