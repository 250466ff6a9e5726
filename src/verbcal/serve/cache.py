"""A bounded LRU cache of calibrated rows, one per loaded calibrator.

Verbalized distributions sit on a coarse grid (0.05, 0.01), so the same rows come back
again and again. A row is keyed by its exact bytes (the float64 values in the model's
label order, after the service's input checks), so only bit-identical inputs share an
entry; the value is what ``predict_proba`` returned for that row. In front of it, the
``/v1/calibrate`` fast path keys rows by the exact JSON text of their ``probs`` object
(:meth:`RowCache.calibrate_texts`): a text seen before is answered without being parsed,
because the same text always reads as the same row. Every calibrator
computes each row on its own (equal rows give equal outputs wherever they sit in a
batch), so a cached row is bit-identical to an uncached ``predict_proba`` of any batch
holding it; the tests check that for every method.

The cache belongs to the :class:`~verbcal.serve.registry.Served` entry, so a reload, which
builds new entries and swaps the whole mapping in one step, starts with empty caches while
requests in flight keep the old calibrator and its cache.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from itertools import compress
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from pydantic_core import to_json

Array = NDArray[np.float64]
Predict = Callable[[Array], Array]
Read = Callable[[Sequence[bytes]], Array]
"""JSON texts of label-keyed rows → an (n, K) matrix; raises on a text it refuses."""


class Row(NamedTuple):
    """One calibrated row: probabilities (label order), index of the top label, its value,
    and those three as the JSON members of a ``/v1/calibrate`` item (rendered once)."""

    probs: tuple[float, ...]
    top: int
    confidence: float
    json: bytes

    @classmethod
    def render(cls, q: Array, template: bytes, names: Sequence[bytes]) -> list[Row]:
        """Rows for calibrated distributions ``q`` (n, K), their JSON filled into ``template``
        (from :func:`row_template`); ``names`` are the labels as JSON. Each value is written as
        ``to_json`` writes it (all of them in one call), so the members equal
        ``to_json({"probs": ..., "label": ..., "confidence": ...})``, byte for byte."""
        k = q.shape[1]
        values, tops = q.tolist(), q.argmax(axis=1).tolist()
        numbers = to_json(q.ravel().tolist())[1:-1].split(b",")  # floats hold no comma
        return [
            cls(
                tuple(row),
                top,
                row[top],
                template % (*numbers[k * r : k * r + k], names[top], numbers[k * r + top]),
            )
            for r, (row, top) in enumerate(zip(values, tops, strict=True))
        ]


def row_template(labels: Sequence[str]) -> bytes:
    """A ``%``-template of a row's JSON members: the K values in label order, then the top
    label (as JSON) and its value."""
    members = b",".join(to_json(label).replace(b"%", b"%%") + b":%b" for label in labels)
    return b'"probs":{' + members + b'},"label":%b,"confidence":%b'


class CacheStats:
    """Rows answered from the cache and rows computed, kept across reloads (for /metrics)."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0


class RowCache:
    """Calibrated rows by the exact bytes of the verbalized row; at most ``size`` entries."""

    def __init__(self, labels: Sequence[str], size: int, stats: CacheStats | None = None) -> None:
        self.labels, self.size = tuple(labels), size
        self._template, self._names = row_template(self.labels), [to_json(x) for x in labels]
        self.key_type = np.dtype((np.void, 8 * len(self.labels)))
        """A row's K float64 values as one bytes key."""
        self._rows: OrderedDict[bytes, Row] = OrderedDict()
        self._texts: OrderedDict[bytes, Row] = OrderedDict()
        """Rows by the JSON text they were read from; the oldest entry leaves first."""
        self._lock = threading.Lock()
        self.stats = stats if stats is not None else CacheStats()

    def __len__(self) -> int:
        return len(self._rows)

    def calibrate(self, rows: Array | Sequence[Sequence[float]], predict: Predict) -> list[Row]:
        """The calibrated rows for ``rows`` (an (n, K) matrix), computing only the misses.

        ``predict`` (the calibrator's ``predict_proba``) is called at most once, on the
        distinct rows not in the cache, in their order of first appearance.
        """
        matrix = np.ascontiguousarray(rows, dtype=np.float64).reshape(-1, len(self.labels))
        keys: list[bytes] = matrix.view(self.key_type).ravel().tolist()  # type: ignore[assignment]
        with self._lock:
            out: list[Row | None] = list(map(self._rows.get, keys))
            misses = out.count(None)
            deque(map(self._rows.move_to_end, compress(keys, out)), maxlen=0)  # recently used
        if not misses:
            self.stats.hits += len(keys)
            return out  # type: ignore[return-value]
        todo = list(dict.fromkeys(k for k, row in zip(keys, out, strict=True) if row is None))
        q = predict(np.frombuffer(bytearray(b"".join(todo)), np.float64).reshape(len(todo), -1))
        fresh = dict(zip(todo, Row.render(q, self._template, self._names), strict=True))
        if self.size > 0:
            with self._lock:
                self._rows.update(fresh)
                while len(self._rows) > self.size:
                    self._rows.popitem(last=False)
        self.stats.hits += len(keys) - misses
        self.stats.misses += misses
        return [row or fresh[k] for row, k in zip(out, keys, strict=True)]

    def calibrate_texts(self, texts: Sequence[bytes], read: Read, predict: Predict) -> list[Row]:
        """The calibrated rows for rows given as JSON texts, reading only texts not seen before.

        ``read`` (which checks the texts and raises on any it refuses) is called at most
        once, on the new texts; their rows then go through :meth:`calibrate`.
        """
        if self.size == 0:
            return self.calibrate(read(texts), predict)
        out = list(map(self._texts.get, texts))
        misses = out.count(None)
        if not misses:
            self.stats.hits += len(texts)
            return out  # type: ignore[return-value]
        new = list(compress(texts, map(operator.not_, out)))
        fresh = dict(zip(new, self.calibrate(read(new), predict), strict=True))
        self.stats.hits += len(texts) - misses  # calibrate() counted the new texts
        with self._lock:
            self._texts.update(fresh)
            while len(self._texts) > self.size:
                self._texts.popitem(last=False)
        return [row or fresh[text] for row, text in zip(out, texts, strict=True)]


def as_matrix(rows: Sequence[Row]) -> Array:
    """The calibrated rows as an (n, K) matrix."""
    return np.array([row.probs for row in rows], dtype=np.float64)
