"""Prometheus metrics (one registry per app) and structured JSON log lines."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CacheView = Callable[[], Iterable[tuple[str, int, int, int]]]
"""Yields (model, hits, misses, rows held) for the row caches."""


class CacheCollector(Collector):
    """The row caches' hits, misses and sizes, read at scrape time (nothing per request)."""

    def __init__(self, view: CacheView) -> None:
        self.view = view

    def collect(self) -> Iterator[Any]:
        hits = CounterMetricFamily(
            "verbcal_cache_hits", "Rows answered from the row cache, by model.", labels=["model"]
        )
        misses = CounterMetricFamily(
            "verbcal_cache_misses", "Rows computed by the calibrator, by model.", labels=["model"]
        )
        rows = GaugeMetricFamily(
            "verbcal_cache_rows", "Rows held in the row cache, by model.", labels=["model"]
        )
        for model, hit, miss, held in self.view():
            hits.add_metric([model], hit)
            misses.add_metric([model], miss)
            rows.add_metric([model], held)
        yield from (hits, misses, rows)


LOGGER = "verbcal.serve"
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "color_message",
}


class Metrics:
    """The service's counters and histograms, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "verbcal_http_requests",
            "HTTP requests by route and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "verbcal_http_request_duration_seconds",
            "Time to answer a request, by route.",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.items = Counter(
            "verbcal_items_calibrated",
            "Items calibrated, by model.",
            ["model"],
            registry=self.registry,
        )
        self.classify_status = Counter(
            "verbcal_classify_items",
            "Classified items by parse status.",
            ["status"],
            registry=self.registry,
        )
        self.llm_requests = Counter(
            "verbcal_llm_requests", "Requests sent to the LLM backend.", registry=self.registry
        )
        self.llm_errors = Counter(
            "verbcal_llm_errors",
            "Classify items whose LLM request failed for good.",
            registry=self.registry,
        )
        self.reloads = Counter(
            "verbcal_reloads",
            "Calibrator reloads by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[str, Any] = {}
        self._items: dict[str, Any] = {}

    def watch_caches(self, view: CacheView) -> None:
        self.registry.register(CacheCollector(view))

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request (labelled children looked up once, then reused)."""
        key = (route, method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        latency = self._latency.get(route)
        if latency is None:
            latency = self._latency[route] = self.latency.labels(route)
        latency.observe(seconds)

    def count_items(self, model: str, n: int) -> None:
        counter = self._items.get(model)
        if counter is None:
            counter = self._items[model] = self.items.labels(model)
        counter.inc(n)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def log_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: JSON lines on stderr for verbcal and uvicorn."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": handler},
        "loggers": {
            name: {"handlers": ["json"], "level": level.upper(), "propagate": False}
            for name in (LOGGER, "uvicorn", "uvicorn.error")
        }
        | {"uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}},
    }


def ensure_handler(level: str) -> logging.Logger:
    """The service logger; given a JSON handler when nothing configured one (app used directly)."""
    logger = logging.getLogger(LOGGER)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())
    return logger
