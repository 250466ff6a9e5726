"""Elicitation: ask an LLM backend for a label distribution per item, durably and resumably.

``elicit(task, items, out, ElicitOptions(...))`` plans one request per (item, sample),
skips those already in the SQLite store, runs the rest through the async engine (each
reply committed as it arrives), then writes the predictions JSONL from the store. The first 401/403/404, or a budget
reached, raises :class:`ElicitStopped` with every reply received kept in the store;
``dry_run(...)`` plans and estimates without calling anything.
"""

from __future__ import annotations

from verbcal.elicit.backends import BackendError
from verbcal.elicit.job import (
    DryRun,
    ElicitError,
    ElicitOptions,
    ElicitResult,
    ElicitStopped,
    dry_run,
    elicit,
)

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
