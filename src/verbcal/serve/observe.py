"""Prometheus metrics (one registry per app) and structured JSON log lines."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import msgspec
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


def json_line(
    created: float, level: str, logger: str, message: str, fields: Mapping[str, Any]
) -> str:
    """One log line: time (UTC, ms), level, logger, message, then ``fields``, as JSON."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    line = {
        "time": f"{stamp}.{int((created - int(created)) * 1000):03d}Z",
        "level": level,
        "logger": logger,
        "message": message,
        **fields,
    }
    return msgspec.json.encode(line, enc_hook=str).decode()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields
    (except those whose name starts with ``_``)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            k: v for k, v in record.__dict__.items() if k not in _RESERVED and k[0] != "_"
        }  # private attributes come from record factories (Ray's adds a timestamp)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        level = record.levelname.lower()
        return json_line(record.created, level, record.name, record.getMessage(), fields)


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler writing :class:`JsonFormatter` lines (stderr unless told otherwise)."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())


class RequestLog:
    """The one ``request`` line per HTTP request, at INFO with the request's fields.

    Where the service logger's lines go only to a :class:`JsonHandler` (the default set-up
    of ``verbcal serve`` and :func:`ensure_handler`), the line is written straight to its
    stream, as that handler would write it but without building a ``LogRecord`` (a
    quarter of the service's own time on a small request). With any other set-up (other
    handlers, filters, propagation to the root logger) it goes through ``logging``.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def __call__(self, fields: Mapping[str, Any]) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = self._direct()
        if handler is None:  # one line per request: skip the caller lookup
            record = logger.makeRecord(
                logger.name, logging.INFO, __file__, 0, "request", (), None, extra=dict(fields)
            )
            logger.handle(record)
            return
        line = json_line(time.time(), "info", logger.name, "request", fields)
        try:
            with handler.lock:  # type: ignore[union-attr]
                handler.stream.write(line + handler.terminator)
                handler.flush()
        except Exception:  # as logging does: a failed write is reported, the request goes on
            handler.handleError(logging.makeLogRecord({"msg": "request", **fields}))

    def _direct(self) -> JsonHandler | None:
        """The logger's only destination when it is a plain :class:`JsonHandler`, else None."""
        logger = self.logger
        if logger.propagate or logger.filters or len(logger.handlers) != 1:
            return None
        handler = logger.handlers[0]
        if type(handler) is not JsonHandler or handler.filters or handler.level > logging.INFO:
            return None
        return handler


def log_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: JSON lines on stderr for verbcal and uvicorn."""
    handler = {"class": f"{__name__}.JsonHandler", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
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
        logger.addHandler(JsonHandler(sys.stderr))
        logger.propagate = False
    logger.setLevel(level.upper())
    return logger
