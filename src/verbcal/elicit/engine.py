"""The async engine: bounded concurrency, rate limits, retries with backoff, a store write per reply.

The engine stops early, without losing anything, in two cases: the first error that no
retry can fix (:attr:`BackendError.fatal`: 401, 403, 404) and a budget reached
(``max_requests``, ``max_cost``). Then no new request is sent, the requests in flight
finish and are stored, and :attr:`Engine.stop` says why.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from verbcal.elicit.backends import Backend, BackendError, Reply, Request
from verbcal.elicit.redact import redact
from verbcal.elicit.store import Row, Store


@dataclass(frozen=True)
class Job:
    """One request to make: where its reply goes (key, item, sample) and what to send."""

    key: str
    item_id: str
    sample: int
    request: Request


@dataclass(frozen=True)
class EngineConfig:
    """Concurrency, rate limits (per minute; None = unlimited) and the retry policy."""

    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 600.0
    max_requests: int | None = None
    max_cost: float | None = None
    price: tuple[float, float] | None = None
    """USD per million (input, output) tokens; needed for ``max_cost``."""
    limiter: Callable[[str, float], Any] | None = field(default=None, compare=False)
    """Seam for limits shared beyond this engine: ``limiter("rpm" | "tpm", per_minute)`` returns
    an object with ``async acquire(cost)`` and ``settle(delta)``; None: a :class:`RateLimiter`."""


@dataclass(frozen=True)
class Stop:
    """Why the engine stopped before the end: a fatal backend error or a budget."""

    kind: str  # "fatal" or "budget"
    message: str
    status: int | None = None


@dataclass
class EngineStats:
    """What the engine did: requests sent, retries, errors by kind, tokens used."""

    requests: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    """USD for the tokens used, when the engine knows a price (else 0)."""


class RateLimiter:
    """A token bucket refilled at ``per_minute / 60`` per second; costs may overdraw it."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``clock`` and ``sleep`` are injectable so tests can run the bucket on virtual time."""
        if per_minute <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self._clock, self._sleep = clock, sleep
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until ``cost`` (or a full bucket, for large costs) is available, then take it."""
        async with self._lock:
            while True:
                self._refill()
                need = min(cost, self.capacity)
                if self.level >= need:
                    self.level -= cost
                    return
                await self._sleep((need - self.level) / self.rate)

    def settle(self, delta: float) -> None:
        """Charge (or refund, if negative) the difference between actual and estimated cost."""
        self.level -= delta


def estimate_tokens(request: Request) -> int:
    """A rough token count for rate limiting: 4 characters a token plus the reply budget."""
    return request.size // 4 + request.max_tokens


def worst_case_cost(request: Request, price: tuple[float, float]) -> float:
    """The most one request can cost: its prompt's estimated tokens and its full reply budget."""
    return (request.size / 4 * price[0] + request.max_tokens * price[1]) / 1e6


class _BudgetReached(Exception):
    """Raised before sending a request that the budget does not allow."""


def backoff_delay(attempt: int, retry_after: float | None, config: EngineConfig) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a lower bound."""
    ceiling = min(config.backoff_max, config.backoff_base * 2 ** (attempt - 1))
    delay = random.uniform(0, ceiling)
    if retry_after is not None:
        delay = min(retry_after, config.retry_after_max) + random.uniform(0, 0.1 * ceiling)
    return delay


class Engine:
    """Runs jobs against one backend and commits each outcome to the store as it arrives."""

    def __init__(
        self,
        backend: Backend,
        store: Store,
        config: EngineConfig,
        on_done: Callable[[Job, Row], None] | None = None,
    ) -> None:
        self.backend, self.store, self.config = backend, store, config
        self.on_done = on_done
        self.stats = EngineStats()
        self.stop: Stop | None = None
        self._in_flight_cost = 0.0
        make = config.limiter or (lambda _kind, rate: RateLimiter(rate))
        self._rpm = make("rpm", config.rpm) if config.rpm else None
        self._tpm = make("tpm", config.tpm) if config.tpm else None

    async def run(self, jobs: Sequence[Job]) -> EngineStats:
        """Run the jobs; each sent one ends as a stored reply or error, none is dropped.

        After a :class:`Stop` (see :attr:`stop`) the jobs not yet started are left unsent.
        """
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        workers = [
            asyncio.create_task(self._worker(queue))
            for _ in range(max(1, min(self.config.concurrency, len(jobs))))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
        return self.stats

    async def _worker(self, queue: asyncio.Queue[Job]) -> None:
        while self.stop is None:
            try:
                job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if await self.run_job(job) is None:
                return  # not sent: the job stays for the next run

    async def run_job(self, job: Job) -> Row | None:
        """Send one job (with its retries), store its row and report it; None if not sent.

        None means a budget refused the job (see :attr:`stop`); the job stays for the next run.
        For callers that feed jobs one at a time (``verbcal.engines.ray_elicit``).
        """
        try:
            row = await self._attempt(job)
        except _BudgetReached:
            return None
        self.store.put(self.backend.name, self.backend.model, row)
        if self.on_done is not None:
            self.on_done(job, row)
        return row

    async def _attempt(self, job: Job) -> Row:
        started = time.time()
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = await self._send(job.request)
            except BackendError as exc:
                if exc.fatal and self.stop is None:
                    self.stop = Stop("fatal", str(exc), exc.status)
                if not exc.retryable or attempt > self.config.max_retries:
                    note = "" if not exc.retryable else f" (gave up after {attempt} attempts)"
                    return self._error_row(job, f"{exc}{note}", attempt, started)
                self._count_retry(str(exc))
                await asyncio.sleep(backoff_delay(attempt, exc.retry_after, self.config))
            except _BudgetReached:
                raise
            except Exception as exc:  # an SDK surprise: record it, never lose the item
                message = f"unexpected {type(exc).__name__}: {exc}"
                return self._error_row(job, message, attempt, started)
            else:
                return Row(
                    key=job.key,
                    item_id=job.item_id,
                    sample=job.sample,
                    status="reply",
                    raw=reply.text,
                    mode=reply.mode,
                    logprobs=reply.logprobs,
                    input_tokens=reply.input_tokens,
                    output_tokens=reply.output_tokens,
                    attempts=attempt,
                    started=started,
                )

    async def _send(self, request: Request) -> Reply:
        estimate = estimate_tokens(request)
        if self._rpm is not None:
            await self._rpm.acquire()
        if self._tpm is not None:
            await self._tpm.acquire(estimate)
        most = self._check_budget(request)  # no await between the check and the count
        self.stats.requests += 1
        self._in_flight_cost += most
        try:
            reply = await self.backend.complete(request)
        finally:
            self._in_flight_cost -= most
        self.stats.input_tokens += reply.input_tokens
        self.stats.output_tokens += reply.output_tokens
        price = self.config.price
        if price is not None:
            self.stats.cost += (
                reply.input_tokens * price[0] + reply.output_tokens * price[1]
            ) / 1e6
        if self._tpm is not None and (reply.input_tokens or reply.output_tokens):
            self._tpm.settle(reply.input_tokens + reply.output_tokens - estimate)
        return reply

    def _check_budget(self, request: Request) -> float:
        """The request's worst-case cost; raise :class:`_BudgetReached` if it is not allowed."""
        config = self.config
        if self.stop is not None and self.stop.kind == "budget":
            raise _BudgetReached
        if config.max_requests is not None and self.stats.requests >= config.max_requests:
            self._stop_budget(f"--max-requests {config.max_requests} reached")
        most = 0.0 if config.price is None else worst_case_cost(request, config.price)
        if config.max_cost is not None:
            committed = self.stats.cost + self._in_flight_cost
            if committed + most > config.max_cost:
                self._stop_budget(
                    f"--max-cost ${config.max_cost:g} reached (spent ${self.stats.cost:.4f},"
                    f" ${self._in_flight_cost:.4f} in flight; the next request may cost"
                    f" up to ${most:.4f})"
                )
        return most

    def _stop_budget(self, message: str) -> None:
        if self.stop is None:
            self.stop = Stop("budget", message)
        raise _BudgetReached

    def _count_retry(self, message: str) -> None:
        self.stats.retries += 1
        reason = message.split(":")[0][:60]
        self.stats.retry_reasons[reason] = self.stats.retry_reasons.get(reason, 0) + 1

    @staticmethod
    def _error_row(job: Job, message: str, attempts: int, started: float) -> Row:
        return Row(
            key=job.key,
            item_id=job.item_id,
            sample=job.sample,
            status="error",
            error=redact(message),
            attempts=attempts,
            started=started,
        )
