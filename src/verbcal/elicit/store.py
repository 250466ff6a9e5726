"""The durable store: one SQLite row per (item, sample), committed as each reply arrives.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed row survives ``kill -9`` of
the process (it is in the WAL file), so a crash loses at most the requests in flight.
Rows are keyed by a hash of backend, model, prompt, parameters and sample index, so
re-running the same command finds its finished rows and requests only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    item_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    raw TEXT,
    error TEXT,
    mode TEXT,
    logprobs TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1,
    started REAL,
    finished REAL NOT NULL
)
"""


def request_key(
    backend: str, model: str, prompt: str, params: Mapping[str, Any], sample: int
) -> str:
    """The hash that identifies one request: same inputs, same key, so resume finds it."""
    blob = json.dumps(
        {"backend": backend, "model": model, "prompt": prompt, "params": params, "sample": sample},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Row:
    """One stored request outcome: a reply (``status='reply'``) or a final error."""

    key: str
    item_id: str
    sample: int
    status: str
    raw: str | None = None
    error: str | None = None
    mode: str | None = None
    logprobs: dict[str, float] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 1
    started: float | None = None


@dataclass(frozen=True)
class Usage:
    """What one stored request used: its status, tokens, and when it started and finished.

    ``started`` is when the first attempt began and ``finished`` when the row was stored
    (epoch seconds), so ``seconds`` includes retries and backoff.
    """

    status: str
    input_tokens: int
    output_tokens: int
    started: float | None
    finished: float

    @property
    def seconds(self) -> float | None:
        """Wall-clock seconds from the first attempt to the stored outcome (None if unknown)."""
        return None if self.started is None else max(0.0, self.finished - self.started)


class StoreError(OSError):
    """The store file cannot be opened or written (the message names it and what to do)."""


class Store:
    """A SQLite WAL file of replies; every :meth:`put` is its own committed transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(
                f"{path}: cannot open the reply store ({exc}). Check that its folder exists"
                " and is writable and that the path is not a folder, or pass --store PATH"
            ) from None

    def put(self, backend: str, model: str, row: Row) -> None:
        """Write one row and commit it at once (replacing an earlier error for the same key)."""
        self._db.execute(
            "INSERT OR REPLACE INTO replies (key, item_id, sample, backend, model, status, raw,"
            " error, mode, logprobs, input_tokens, output_tokens, attempts, started, finished)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.key,
                row.item_id,
                row.sample,
                backend,
                model,
                row.status,
                row.raw,
                row.error,
                row.mode,
                None if row.logprobs is None else json.dumps(row.logprobs),
                row.input_tokens,
                row.output_tokens,
                row.attempts,
                row.started,
                time.time(),
            ),
        )

    def get_many(self, keys: Iterable[str]) -> dict[str, Row]:
        """The stored rows among ``keys``, by key."""
        found: dict[str, Row] = {}
        wanted = list(keys)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = (
                "SELECT key, item_id, sample, status, raw, error, mode, logprobs, input_tokens,"
                f" output_tokens, attempts, started FROM replies WHERE key IN ({marks})"
            )
            for rec in self._db.execute(query, chunk):
                found[rec[0]] = Row(
                    key=rec[0],
                    item_id=rec[1],
                    sample=rec[2],
                    status=rec[3],
                    raw=rec[4],
                    error=rec[5],
                    mode=rec[6],
                    logprobs=None if rec[7] is None else json.loads(rec[7]),
                    input_tokens=rec[8],
                    output_tokens=rec[9],
                    attempts=rec[10],
                    started=rec[11],
                )
        return found

    def usage(self, keys: Iterable[str]) -> dict[str, Usage]:
        """Token usage and timing of the stored rows among ``keys`` (replies and errors), by key."""
        found: dict[str, Usage] = {}
        wanted = list(keys)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = (
                "SELECT key, status, input_tokens, output_tokens, started, finished"
                f" FROM replies WHERE key IN ({marks})"
            )
            for key, status, tokens_in, tokens_out, started, finished in self._db.execute(
                query, chunk
            ):
                found[key] = Usage(status, tokens_in, tokens_out, started, finished)
        return found

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection (autocommit), for tables that live beside ``replies``."""
        return self._db

    def count(self) -> int:
        """How many rows the store holds."""
        return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
