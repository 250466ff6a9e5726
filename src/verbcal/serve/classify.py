"""``/v1/classify``: ask the LLM through the ``verbcal elicit`` engine, then calibrate.

The engine, store and record builder are the ones ``verbcal elicit`` uses: the same
retries, rate limits and parsing, and the SQLite store as a cache (a text asked before,
with the same prompt and parameters, is answered from the store).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

from verbcal.elicit import ElicitOptions
from verbcal.elicit.backends import (
    DEFAULT_MODELS,
    Backend,
    BackendError,
    Reply,
    Request,
    make_backend,
)
from verbcal.elicit.engine import Engine, EngineConfig, Job, RateLimiter
from verbcal.elicit.job import plan_requests
from verbcal.elicit.records import build_record
from verbcal.elicit.redact import redact
from verbcal.elicit.store import Row, Store
from verbcal.serve.calibrate import calibrate_rows
from verbcal.serve.config import ClassifyConfig, ServeConfigError
from verbcal.serve.registry import Served
from verbcal.task import Task, load_task


class UpstreamError(Exception):
    """The LLM backend refused the whole run; answered as 502 with the (redacted) reason."""


class _Bounded:
    """A backend whose calls share one semaphore: ``concurrency`` holds across all requests."""

    def __init__(self, backend: Backend, limit: int) -> None:
        self.inner = backend
        self.name, self.model = backend.name, backend.model
        self._slots = asyncio.Semaphore(limit)

    async def complete(self, request: Request) -> Reply:
        async with self._slots:
            return await self.inner.complete(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Classifier:
    """One task, one backend, one store and one engine, shared by every classify request."""

    def __init__(self, config: ClassifyConfig) -> None:
        self.config = config
        self.task: Task = load_task(config.task)
        self.options = ElicitOptions(
            backend=config.backend,
            model=config.model,
            base_url=config.base_url,
            store=config.store or ":memory:",
            concurrency=config.concurrency,
            rpm=config.rpm,
            max_tokens=config.max_tokens,
            timeout=config.timeout,
            retries=config.retries,
        )
        self.options.check()
        self.model = config.model or DEFAULT_MODELS[config.backend]
        self.llm_requests = 0
        self._stack = ExitStack()
        self._backend: Backend | None = None
        self._store: Store | None = None
        self._limiters: dict[str, RateLimiter] = {}
        self._refused: str | None = None
        self._probe: asyncio.Future[None] | None = None
        self._probed = 0.0
        self.probe_interval = 10.0
        """Seconds between two background probes of a refusing backend (see :meth:`ready`)."""

    def check_labels(self, served: Served) -> None:
        """The calibrator must know exactly the task's labels."""
        if set(served.labels) != set(self.task.labels):
            raise ServeConfigError(
                f"calibrator {served.name!r} has labels {list(served.labels)} but the task"
                f" {self.config.task} has {list(self.task.labels)}: fit the calibrator on this task"
            )

    async def start(self) -> None:
        """Start the embedded model if asked for, then the backend and store."""
        base_url = self.options.base_url
        if self.options.backend == "local":
            from verbcal.elicit.local import local_server

            base_url = await asyncio.to_thread(
                self._stack.enter_context, local_server(parallel=min(self.options.concurrency, 4))
            )
        backend = make_backend(
            self.options.backend,
            self.model,
            base_url,
            timeout=self.options.timeout,
            concurrency=self.options.concurrency,
        )
        self._backend = _Bounded(backend, self.options.concurrency)
        self._store = self._stack.enter_context(Store(self.options.store or ":memory:"))

    def _engine(self, on_done: Callable[[Job, Row], None]) -> Engine:
        """A fresh engine per request (its own stop flag) sharing backend, store and limits."""
        if self._backend is None or self._store is None:
            raise RuntimeError("the classifier is not started")
        config = EngineConfig(
            concurrency=self.options.concurrency,
            rpm=self.options.rpm,
            max_retries=self.options.retries,
            limiter=self._limiter,
        )
        return Engine(self._backend, self._store, config, on_done)

    def _limiter(self, kind: str, per_minute: float) -> RateLimiter:
        """One rate limiter per kind for the whole service, whatever the number of requests."""
        if kind not in self._limiters:
            self._limiters[kind] = RateLimiter(per_minute)
        return self._limiters[kind]

    @property
    def refused(self) -> str | None:
        """Why the backend refused the last whole run (None: it did not, or it answers again)."""
        return self._refused

    def ready(self) -> bool:
        """False while the backend refuses; then probes it in the background (never waits).

        A load balancer that stops sending requests to an unready service would otherwise
        never see it recover: the probe (one request, at most every :attr:`probe_interval`
        seconds, one at a time) clears the refusal once the backend answers again.
        """
        if self._refused is None:
            return True
        idle = self._probe is None or self._probe.done()
        if idle and time.monotonic() - self._probed >= self.probe_interval:
            self._probed = time.monotonic()
            self._probe = asyncio.ensure_future(self._probe_backend())
        return False

    async def _probe_backend(self) -> None:
        if self._backend is None:
            return
        _, jobs = plan_requests(
            self.task, [{"id": "probe", "text": "ok"}], self.options, self.model
        )
        request = next(iter(jobs.values())).request
        try:
            await self._backend.complete(request)
        except BackendError as exc:
            if exc.fatal:
                self._refused = str(exc)
                return
        except Exception:  # an unexpected failure is no proof of a refusal
            pass
        self._refused = None

    async def close(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()
        self._stack.close()

    async def classify(
        self,
        served: Served,
        items: Sequence[dict[str, Any]],
        accept_threshold: float | None,
        set_mass: float | None,
    ) -> tuple[list[dict[str, Any]], Counter[str]]:
        """One record per item (input order) and the count of each status."""
        outcomes: dict[str, str] = {}  # job key -> status of the row stored by this request
        engine = self._engine(lambda job, row: outcomes.__setitem__(job.key, row.status))
        plans, jobs = plan_requests(self.task, items, self.options, self.model)
        done = {k for k, r in engine.store.get_many(jobs).items() if r.status != "error"}
        pending = [job for key, job in jobs.items() if key not in done]
        if pending:
            try:
                await engine.run(pending)
            finally:
                self.llm_requests += engine.stats.requests
            replies = sum(1 for status in outcomes.values() if status != "error")
            stop = engine.stop
            if stop is not None and stop.kind == "fatal":
                unsent = len(pending) - len(outcomes)
                if unsent or not replies:  # the backend refused the run, not just one item
                    self._refused = redact(stop.message)
                    raise UpstreamError(
                        f"{self._refused} ({len(pending) - replies} of {len(pending)} requests"
                        " got no reply; the replies received are stored and the next request"
                        " tries the others again)"
                    )
            if replies:
                self._refused = None
        rows = engine.store.get_many(jobs)
        records = [build_record(plan, rows, self.task.labels) for plan in plans]
        usable = [i for i, r in enumerate(records) if r["probs"] is not None]
        calibrated = (
            calibrate_rows(
                served,
                [records[i]["probs"] for i in usable],
                [records[i]["id"] for i in usable],
                accept_threshold,
                set_mass,
            )
            if usable
            else []
        )
        out = [_empty(record) for record in records]
        for i, item in zip(usable, calibrated, strict=True):
            out[i].update(item)
        return out, Counter(r["status"] for r in records)


def _empty(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "status": record["status"],
        "verbalized_probs": record["probs"],
        "probs": None,
        "label": None,
        "confidence": None,
        "issues": record["issues"],
    }
