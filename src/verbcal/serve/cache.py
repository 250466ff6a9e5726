"""A bounded LRU cache of calibrated rows, one per loaded calibrator.

Verbalized distributions sit on a coarse grid (0.05, 0.01), so the same rows come back
again and again. A row is keyed by its exact bytes (the float64 values in the model's
label order, after the service's input checks), so only bit-identical inputs share an
entry; the value is what ``predict_proba`` returned for that row. Every calibrator
computes each row on its own (equal rows give equal outputs wherever they sit in a
batch), so a cached row is bit-identical to an uncached ``predict_proba`` of any batch
holding it; the tests check that for every method.

The cache belongs to the :class:`~verbcal.serve.registry.Served` entry, so a reload, which
builds new entries and swaps the whole mapping in one step, starts with empty caches while
requests in flight keep the old calibrator and its cache.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from pydantic_core import to_json

Array = NDArray[np.float64]
Predict = Callable[[Array], Array]


class Row(NamedTuple):
    """One calibrated row: probabilities (label order), index of the top label, its value,
    and those three as the JSON members of a ``/v1/calibrate`` item (rendered once)."""

    probs: tuple[float, ...]
    top: int
    confidence: float
    json: bytes

    @classmethod
    def of(cls, values: list[float], top: int, labels: Sequence[str]) -> Row:
        probs = dict(zip(labels, values, strict=True))
        member = {"probs": probs, "label": labels[top], "confidence": values[top]}
        return cls(tuple(values), top, values[top], to_json(member)[1:-1])


class CacheStats:
    """Rows answered from the cache and rows computed, kept across reloads (for /metrics)."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0


class RowCache:
    """Calibrated rows by the exact bytes of the verbalized row; at most ``size`` entries."""

    def __init__(self, labels: Sequence[str], size: int, stats: CacheStats | None = None) -> None:
        self.labels, self.size = tuple(labels), size
        self.key: Callable[..., bytes] = struct.Struct(f"<{len(self.labels)}d").pack
        self._rows: OrderedDict[bytes, Row] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = stats if stats is not None else CacheStats()

    def __len__(self) -> int:
        return len(self._rows)

    def calibrate(self, rows: Sequence[Sequence[float]], predict: Predict) -> list[Row]:
        """The calibrated rows for ``rows`` (each of length K), computing only the misses.

        ``predict`` (the calibrator's ``predict_proba``) is called at most once, on the
        distinct rows not in the cache, in their order of first appearance.
        """
        key = self.key
        keys = [key(*row) for row in rows]
        out: list[Row | None] = []
        missing: dict[bytes, int] = {}
        with self._lock:
            cached = self._rows
            for k in keys:
                hit = cached.get(k)
                if hit is not None:
                    cached.move_to_end(k)
                else:
                    missing.setdefault(k, len(missing))
                out.append(hit)
        if missing:
            firsts: dict[bytes, Sequence[float]] = {}
            for row, k in zip(rows, keys, strict=True):
                if k in missing and k not in firsts:
                    firsts[k] = row
            q = predict(np.array(list(firsts.values()), dtype=np.float64))
            fresh = [
                Row.of(values, top, self.labels)
                for values, top in zip(q.tolist(), q.argmax(axis=1).tolist(), strict=True)
            ]
            by_key = dict(zip(firsts, fresh, strict=True))
            out = [row if row is not None else by_key[k] for row, k in zip(out, keys, strict=True)]
            if self.size > 0:
                with self._lock:
                    for k, fresh_row in by_key.items():
                        self._rows[k] = fresh_row
                    while len(self._rows) > self.size:
                        self._rows.popitem(last=False)
        hits = len(keys) - sum(1 for k in keys if k in missing) if missing else len(keys)
        self.stats.hits += hits
        self.stats.misses += len(keys) - hits
        return out  # type: ignore[return-value]


def as_matrix(rows: Sequence[Row]) -> Array:
    """The calibrated rows as an (n, K) matrix."""
    return np.array([row.probs for row in rows], dtype=np.float64)
