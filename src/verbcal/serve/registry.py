"""The calibrators being served, swapped as a whole on reload.

``Registry.models`` is one immutable mapping: a request reads it once and keeps that
snapshot, so a reload (a new mapping assigned in one step) never changes a calibrator
under a request in flight, and a file that fails to load leaves the old mapping serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from verbcal.calibration import Calibrator, CalibratorError
from verbcal.serve.cache import CacheStats, Read, RowCache
from verbcal.serve.config import DEFAULT_CACHE_ROWS
from verbcal.serve.wire import row_reader


def load_calibrator(path: str | Path) -> Calibrator:
    """The one place the service loads a calibrator (the calibrator API's entry point)."""
    return Calibrator.load(path)


def calibrator_labels(calibrator: Calibrator) -> tuple[str, ...]:
    """The label order of a fitted calibrator: its output columns."""
    return tuple(calibrator.labels_)


@dataclass(frozen=True)
class Served:
    """One loaded calibrator with what the service needs at hand."""

    name: str
    path: str
    calibrator: Calibrator
    labels: tuple[str, ...]
    index: Mapping[str, int]
    loaded_at: float
    cache: RowCache = field(compare=False, repr=False)
    """Calibrated rows of this calibrator; a reload builds a new entry, so a fresh cache."""
    read_rows: Read = field(compare=False, repr=False)
    """Reads ``probs`` objects (JSON text) into rows in label order, checking them."""

    @property
    def method(self) -> str:
        return self.calibrator.method


Check = Callable[[Mapping[str, "Served"]], None]
"""Called on a freshly loaded set before it may serve; raises ``ValueError`` to refuse it."""


class ReloadError(Exception):
    """Some calibrator files did not load; ``errors`` maps model name to the reason."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {why}" for name, why in errors.items()))
        self.errors = errors


def load_one(
    name: str, path: str, cache_rows: int = DEFAULT_CACHE_ROWS, stats: CacheStats | None = None
) -> Served:
    calibrator = load_calibrator(path)
    labels = calibrator_labels(calibrator)
    if len(labels) < 2:
        raise CalibratorError(f"{path}: the calibrator names no labels; refit it with verbcal fit")
    index = MappingProxyType({label: k for k, label in enumerate(labels)})
    cache = RowCache(labels, cache_rows, stats)
    return Served(name, path, calibrator, labels, index, time.time(), cache, row_reader(labels))


class Registry:
    """Name → loaded calibrator; :meth:`reload` re-reads every file and swaps atomically."""

    def __init__(
        self,
        paths: Mapping[str, str],
        check: Check | None = None,
        cache_rows: int = DEFAULT_CACHE_ROWS,
    ) -> None:
        self.paths = dict(paths)
        self.check = check
        self.cache_rows = cache_rows
        self.cache_stats = {name: CacheStats() for name in self.paths}
        """Hits and misses per model name, carried across reloads (the caches are not)."""
        self.models: Mapping[str, Served] = self._load_all()
        self.generation = 1
        self._lock = asyncio.Lock()

    def _load_all(self) -> Mapping[str, Served]:
        loaded: dict[str, Served] = {}
        errors: dict[str, str] = {}
        for name, path in self.paths.items():
            try:
                loaded[name] = load_one(name, path, self.cache_rows, self.cache_stats[name])
            except (CalibratorError, OSError, KeyError, TypeError, ValueError) as exc:
                errors[name] = str(exc) or type(exc).__name__
        if errors:
            raise ReloadError(errors)
        if self.check is not None:
            try:
                self.check(loaded)
            except ValueError as exc:
                raise ReloadError({"classify": str(exc)}) from exc
        return MappingProxyType(loaded)

    async def reload(self) -> Mapping[str, Served]:
        """Load every file again (off the event loop); swap only if all of them load."""
        async with self._lock:
            fresh = await asyncio.to_thread(self._load_all)
            self.models = fresh
            self.generation += 1
            return fresh
