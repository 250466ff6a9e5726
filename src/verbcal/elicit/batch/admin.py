"""``verbcal batch status|collect|cancel --store S``: the recorded batches, from the store alone.

Each recorded batch names its backend, model and server, so these need no task or items;
keys come from the environment as for ``elicit``. ``collect`` stores the results; the
``elicit --batch`` command that submitted them writes the predictions when re-run
(answered requests are not sent again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from verbcal.elicit.batch.ledger import BatchRow, Ledger
from verbcal.elicit.batch.providers import make_provider
from verbcal.elicit.batch.runner import Runner, Tally
from verbcal.elicit.store import Store


def _groups(ledger: Ledger) -> list[tuple[str, str, str | None, str]]:
    """Distinct (backend, model, server, mode) among the recorded batches."""
    return sorted(
        {(r.backend, r.model, r.base_url, r.mode) for r in ledger.batches()},
        key=lambda group: tuple(str(part) for part in group),
    )


def _each(
    path: str | Path,
    act: Callable[[Runner], Awaitable[None]],
    report: Callable[[str], None],
    timeout: float,
) -> tuple[list[BatchRow], Tally]:
    """Run ``act`` on a runner per recorded group; the batches afterwards and the tally."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such store; pass the --store of the elicit run")
    total = Tally()
    with Store(path) as store:
        ledger = Ledger(store.db)
        for backend, model, base_url, mode in _groups(ledger):
            provider = make_provider(backend, model, base_url, timeout)
            runner = Runner(
                store, ledger, provider, backend=backend, base_url=base_url, mode=mode,
                report=report,
            )  # fmt: skip

            async def go(runner: Runner = runner) -> None:
                try:
                    await runner.reconcile()
                    await act(runner)
                finally:
                    await runner.provider.aclose()

            asyncio.run(go())
            for name in ("batches", "requests", "replies", "errors"):
                setattr(total, name, getattr(total, name) + getattr(runner.tally, name))
        return ledger.batches(), total


async def _refresh(runner: Runner) -> None:
    for row in runner.mine(("submitted", "ended")):
        assert row.provider_id is not None
        info = await runner.provider.retrieve(row.provider_id)
        runner.ledger.update(row.token, status=info.status, counts=info.counts)


def status(
    path: str | Path, report: Callable[[str], None] = print, timeout: float = 60.0
) -> list[BatchRow]:
    """Every recorded batch, with the open ones' state refreshed from the provider."""
    return _each(path, _refresh, report, timeout)[0]


def collect(
    path: str | Path,
    *,
    wait: bool = True,
    poll_interval: float = 30.0,
    report: Callable[[str], None] = print,
    timeout: float = 60.0,
) -> tuple[list[BatchRow], Tally]:
    """Store the results of ended batches; with ``wait``, poll until none is open."""

    async def act(runner: Runner) -> None:
        await runner.wait(poll_interval, once=not wait)

    return _each(path, act, report, timeout)


def cancel(
    path: str | Path, report: Callable[[str], None] = print, timeout: float = 60.0
) -> list[BatchRow]:
    """Ask the provider to cancel every open batch (collect their partial results later)."""

    async def act(runner: Runner) -> None:
        await runner.cancel()

    return _each(path, act, report, timeout)[0]
