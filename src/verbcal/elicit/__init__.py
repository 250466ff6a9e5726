"""Elicitation: ask an LLM backend for a label distribution per item, durably and resumably.

``elicit(task, items, out, ElicitOptions(...))`` plans one request per (item, sample),
skips those already in the SQLite store, runs the rest through the async engine (each
reply committed as it arrives), then writes the predictions JSONL from the store.
"""

from __future__ import annotations

from verbcal.elicit.backends import BackendError
from verbcal.elicit.run import ElicitError, ElicitOptions, ElicitResult, elicit

__all__ = ["BackendError", "ElicitError", "ElicitOptions", "ElicitResult", "elicit"]
