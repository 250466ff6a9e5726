"""The batch ledger: every batch (intent first) and the requests it holds, in the reply store.

Two tables beside ``replies`` in the same SQLite file. A batch's row and its items are
written in one transaction *before* the submit call ("intent"); the provider's id is
added once the call returns ("submitted"). A run that finds an intent without an id
looks for the batch at the provider (metadata or counts, see :mod:`.providers`) before
submitting anything, so a kill between submit and record cannot submit twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS batches (
    token TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    base_url TEXT,
    mode TEXT NOT NULL,
    state TEXT NOT NULL,
    provider_id TEXT,
    file_id TEXT,
    status TEXT,
    n INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    counts TEXT,
    detail TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS batch_items (
    token TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    key TEXT NOT NULL,
    item_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    PRIMARY KEY (token, custom_id)
)""",
)

OPEN = ("intent", "submitted", "ended")
"""States whose requests may still come back: never submit their items again."""
STATES = (*OPEN, "unsent", "collected", "failed")
"""``intent``: recorded, submit not confirmed; ``submitted``: the provider has it;
``ended``: processing over, results not yet stored; ``unsent``: an intent the provider
never got; ``collected``: results stored; ``failed``: the provider refused the batch."""


@dataclass(frozen=True)
class BatchRow:
    """One recorded batch."""

    token: str
    backend: str
    model: str
    base_url: str | None
    mode: str
    state: str
    provider_id: str | None
    file_id: str | None
    status: str | None
    n: int
    bytes: int
    counts: dict[str, int]
    detail: str | None
    created: float


@dataclass(frozen=True)
class Entry:
    """One request in a batch: its custom_id and where its reply goes."""

    custom_id: str
    key: str
    item_id: str
    sample: int


_COLUMNS = (
    "token, backend, model, base_url, mode, state, provider_id, file_id, status, n, bytes,"
    " counts, detail, created"
)


class Ledger:
    """Batches and their items on an open SQLite connection (autocommit)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        for statement in SCHEMA:
            db.execute(statement)

    def intent(self, row: BatchRow, entries: Iterable[Entry]) -> None:
        """Record a batch about to be submitted, with its items, in one transaction."""
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                f"INSERT INTO batches ({_COLUMNS}, updated) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.token,
                    row.backend,
                    row.model,
                    row.base_url,
                    row.mode,
                    "intent",
                    None,
                    None,
                    None,
                    row.n,
                    row.bytes,
                    "{}",
                    None,
                    row.created,
                    now,
                ),
            )
            self.db.executemany(
                "INSERT INTO batch_items (token, custom_id, key, item_id, sample)"
                " VALUES (?, ?, ?, ?, ?)",
                [(row.token, e.custom_id, e.key, e.item_id, e.sample) for e in entries],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def update(self, token: str, **fields: object) -> None:
        """Set some columns of one batch (``counts`` as a dict)."""
        if "counts" in fields:
            fields["counts"] = json.dumps(fields["counts"], sort_keys=True)
        names = ", ".join(f"{name} = ?" for name in fields)
        self.db.execute(
            f"UPDATE batches SET {names}, updated = ? WHERE token = ?",
            (*fields.values(), time.time(), token),
        )

    def batches(self, states: Iterable[str] = STATES) -> list[BatchRow]:
        """The recorded batches in the given states, oldest first."""
        wanted = list(states)
        marks = ",".join("?" * len(wanted))
        query = f"SELECT {_COLUMNS} FROM batches WHERE state IN ({marks}) ORDER BY created"
        return [_batch_row(rec) for rec in self.db.execute(query, wanted)]

    def entries(self, token: str) -> list[Entry]:
        """The requests of one batch."""
        query = "SELECT custom_id, key, item_id, sample FROM batch_items WHERE token = ?"
        return [Entry(*rec) for rec in self.db.execute(query, (token,))]

    def open_keys(self) -> set[str]:
        """Store keys of the requests in batches that may still answer."""
        marks = ",".join("?" * len(OPEN))
        query = (
            "SELECT DISTINCT i.key FROM batch_items i JOIN batches b ON b.token = i.token"
            f" WHERE b.state IN ({marks})"
        )
        return {rec[0] for rec in self.db.execute(query, OPEN)}

    def provider_ids(self) -> set[str]:
        """Provider ids already claimed by a recorded batch."""
        query = "SELECT provider_id FROM batches WHERE provider_id IS NOT NULL"
        return {rec[0] for rec in self.db.execute(query)}


def _batch_row(rec: tuple[Any, ...]) -> BatchRow:
    token, backend, model, base_url, mode, state, provider_id, file_id, status = rec[:9]
    n, size, counts, detail, created = rec[9:]
    return BatchRow(
        token, backend, model, base_url, mode, state, provider_id, file_id, status,
        n, size, json.loads(counts or "{}"), detail, created,
    )  # fmt: skip
