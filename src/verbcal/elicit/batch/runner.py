"""Submit, poll and collect batches for one (backend, model, server), durably.

Every step is recorded in the :class:`~.ledger.Ledger` before or right after it happens,
and every result is committed to the reply store as it is read, so a kill at any point
loses nothing: the next run reconciles intents (:meth:`Runner.reconcile`), polls the
batches in flight and collects what ended, and submits only requests that are neither
answered nor in a batch that may still answer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from verbcal.elicit.backends import BackendError
from verbcal.elicit.batch.ledger import OPEN, BatchRow, Entry, Ledger
from verbcal.elicit.batch.providers import BatchInfo, Provider
from verbcal.elicit.engine import Job, Stop
from verbcal.elicit.redact import redact
from verbcal.elicit.store import Row, Store


class BatchFailed(Exception):
    """A stop the run cannot get past: the message names the cause."""

    def __init__(self, stop: Stop) -> None:
        super().__init__(stop.message)
        self.stop = stop


@dataclass
class Tally:
    """What this process did through the batch API."""

    batches: int = 0
    requests: int = 0
    replies: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    """Errored, expired, cancelled or missing results per request key (this process)."""


def split(lines: Sequence[bytes], most_n: int, most_bytes: int) -> list[tuple[int, int]]:
    """Cut ``lines`` into consecutive (start, stop) ranges within both limits."""
    ranges: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, line in enumerate(lines):
        if len(line) > most_bytes:
            raise ValueError(
                f"one batch request line is {len(line)} bytes, over --batch-max-bytes"
                f" {most_bytes}; raise the limit or shorten the prompt"
            )
        if index > start and (index - start >= most_n or size + len(line) > most_bytes):
            ranges.append((start, index))
            start, size = index, 0
        size += len(line)
    if start < len(lines):
        ranges.append((start, len(lines)))
    return ranges


def encode(line: dict[str, object]) -> bytes:
    """One JSONL line, as uploaded."""
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


class Runner:
    """Batches of one backend, model and server: submit, reconcile, poll, collect, cancel."""

    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        provider: Provider,
        *,
        backend: str,
        base_url: str | None,
        mode: str,
        report: Callable[[str], None] = lambda _text: None,
    ) -> None:
        self.store, self.ledger, self.provider = store, ledger, provider
        self.backend, self.base_url, self.mode = backend, base_url, mode
        self.report = report
        self.tally = Tally()
        self._last: dict[str, str] = {}

    def mine(self, states: Sequence[str] = OPEN) -> list[BatchRow]:
        """Recorded batches of this backend, model and server in ``states``."""
        return [
            row
            for row in self.ledger.batches(states)
            if (row.backend, row.model, row.base_url)
            == (self.backend, self.provider.model, self.base_url)
        ]

    async def reconcile(self) -> None:
        """Settle each intent: adopt the provider's batch if it exists, else mark it unsent."""
        for row in self.mine(("intent",)):
            found = await self.provider.find(
                row.token, row.created, row.n, self.ledger.provider_ids()
            )
            if found is None:
                self.ledger.update(row.token, state="unsent", detail="never reached the provider")
                self.report(f"batch {row.token[:8]}: not submitted before the last stop")
            else:
                self.ledger.update(row.token, state="submitted", provider_id=found)
                self.report(f"batch {row.token[:8]}: found at the provider as {found}")

    async def submit(self, jobs: Sequence[Job]) -> None:
        """Record the batch (intent), upload, create, record the provider's id."""
        token = uuid.uuid4().hex[:24]
        lines = [encode(self.provider.line(job.key, job.request, self.mode)) for job in jobs]
        entries = [Entry(job.key, job.key, job.item_id, job.sample) for job in jobs]
        created = time.time()
        row = BatchRow(
            token, self.backend, self.provider.model, self.base_url, self.mode, "intent",
            None, None, None, len(jobs), sum(map(len, lines)), {}, None, created,
        )  # fmt: skip
        self.ledger.intent(row, entries)
        try:
            file_id = await self.provider.upload(token, lines)
            if file_id is not None:
                self.ledger.update(token, file_id=file_id)
            info = await self.provider.create(token, lines, file_id)
        except BackendError as exc:
            await self._after_failed_submit(row, exc)
            return
        self._submitted(row, info.provider_id, info)

    def _submitted(self, row: BatchRow, provider_id: str, info: BatchInfo | None) -> None:
        fields: dict[str, object] = {"state": "submitted", "provider_id": provider_id}
        if info is not None:
            fields.update(status=info.status, counts=info.counts)
        self.ledger.update(row.token, **fields)
        token, size = row.token, row.n
        self.tally.batches += 1
        self.tally.requests += size
        self.report(f"batch {token[:8]}: submitted as {provider_id} ({size} requests)")

    async def _after_failed_submit(self, row: BatchRow, exc: BackendError) -> None:
        """A refused create is unsent; an unanswered one is looked up before anything else."""
        if not exc.retryable:
            self.ledger.update(row.token, state="unsent", detail=redact(str(exc)))
            status = exc.status if exc.status is not None else 400
            raise BatchFailed(Stop("fatal", f"the batch was refused: {exc}", status)) from exc
        try:
            found = await self.provider.find(
                row.token, row.created, row.n, self.ledger.provider_ids()
            )
        except BackendError:  # it stays an intent: the next round looks again before submitting
            self.report(f"batch {row.token[:8]}: submit unanswered ({exc}); will look it up")
            raise
        if found is not None:
            self._submitted(row, found, None)
            return
        self.ledger.update(row.token, state="unsent", detail=redact(str(exc)))
        raise exc

    async def poll(self) -> int:
        """Check every open batch once; collect those that ended. How many ended."""
        ended = 0
        for row in self.mine(("submitted", "ended")):
            assert row.provider_id is not None
            info = await self.provider.retrieve(row.provider_id)
            self.ledger.update(row.token, status=info.status, counts=info.counts)
            self._progress(row, info)
            if info.failure is not None:
                self.ledger.update(row.token, state="failed", detail=redact(info.failure))
                message = f"batch {row.provider_id} failed validation: {info.failure}"
                raise BatchFailed(Stop("fatal", message, 400))
            if info.ended:
                self.ledger.update(row.token, state="ended")
                await self.collect(row, info)
                ended += 1
        return ended

    def _progress(self, row: BatchRow, info: BatchInfo) -> None:
        counts = " ".join(f"{k} {v}" for k, v in sorted(info.counts.items()) if v)
        line = f"batch {row.token[:8]} ({info.provider_id}): {info.status}; {counts or '-'}"
        if self._last.get(row.token) != line:
            self._last[row.token] = line
            self.report(line)

    async def collect(self, row: BatchRow, info: BatchInfo) -> None:
        """Store every result of an ended batch, joined on custom_id; then mark it collected.

        Requests already answered are left as they are; errored, expired, cancelled and
        missing results are stored as errors (so the next round or run asks again).
        """
        entries = {entry.custom_id: entry for entry in self.ledger.entries(row.token)}
        answered = {
            key for key, r in self.store.get_many(e.key for e in entries.values()).items()
            if r.status == "reply"
        }  # fmt: skip
        seen: set[str] = set()
        async for outcome in self.provider.results(info, row.mode):
            entry = entries.get(outcome.custom_id)
            if entry is None or outcome.custom_id in seen:
                continue  # not this batch's request, or a repeated line
            seen.add(outcome.custom_id)
            if entry.key in answered:
                continue
            if outcome.reply is not None:
                reply = outcome.reply
                self._put(entry, row, "reply", raw=reply.text, mode=reply.mode,
                          input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)  # fmt: skip
                self.tally.replies += 1
                self.tally.input_tokens += reply.input_tokens
                self.tally.output_tokens += reply.output_tokens
            else:
                self._fail(entry, row, outcome.error or "batch line without a result")
        for custom_id, entry in entries.items():
            if custom_id not in seen and entry.key not in answered:
                self._fail(entry, row, f"no result in batch {info.provider_id} ({info.status})")
        self.ledger.update(row.token, state="collected")
        self.report(f"batch {row.token[:8]} ({info.provider_id}): collected")

    def _fail(self, entry: Entry, row: BatchRow, error: str) -> None:
        self._put(entry, row, "error", error=redact(error))
        self.tally.errors += 1
        self.tally.failures[entry.key] += 1

    def _put(self, entry: Entry, row: BatchRow, status: str, **fields: object) -> None:
        stored = Row(entry.key, entry.item_id, entry.sample, status, started=row.created,
                     **fields)  # type: ignore[arg-type]  # fmt: skip
        self.store.put(self.backend, self.provider.model, stored)

    async def cancel(self) -> list[str]:
        """Ask the provider to cancel every open batch; their partial results stay collectable."""
        done = []
        for row in self.mine(("submitted",)):
            assert row.provider_id is not None
            info = await self.provider.cancel(row.provider_id)
            self.ledger.update(row.token, status=info.status, counts=info.counts)
            done.append(row.provider_id)
            self.report(f"batch {row.token[:8]} ({row.provider_id}): {info.status}")
        return done

    async def wait(self, poll_interval: float, *, once: bool = False) -> None:
        """Poll until no batch is open (or, with ``once``, until a pass collects nothing)."""
        while self.mine(("submitted", "ended")):
            if await self.poll() == 0:
                if once:
                    return
                await asyncio.sleep(poll_interval)
