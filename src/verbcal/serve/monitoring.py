"""The service keeps and learns: a durable log of served predictions, label feedback, and
per-model monitoring (``/v1/feedback``, ``/v1/monitor/{model}``, gauges on ``/metrics``).

The log (``verbcal serve --log-predictions PATH``) is SQLite in WAL mode with
``synchronous=FULL``: a prediction is on disk (fsynced) before its answer is sent. Writes go
through one writer thread that commits whatever requests are waiting in one transaction
(group commit): each answer still waits for the fsync of its own rows, but concurrent
requests share fsyncs and the event loop never blocks on the disk. One row
per served item: id (the client's, or ``srv-<hex>`` when it sent none; the answer carries
it), model, calibrator version (sha256 of the calibrator file, 12 hex digits), time (epoch
seconds), the verbalized row and the calibrated row (JSON lists in the model's label
order), and the label once feedback gives it. An id logged again for the same model
replaces the older row.

Monitoring a model reads its last ``window x horizon`` logged rows, cut into consecutive
windows of ``window`` rows (the last, current one may be partial), and runs
:func:`verbcal.monitor.monitor` on them. The estimated accuracy needs no reference (mean
calibrated confidence); shift tests, ATC, BBSE and the reference-based alarms need one
(``--monitor-reference NAME=PATH``, labelled predictions, calibrated with the model's
current calibrator). The labelled window is the last ``window`` rows that have feedback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from verbcal.serve.calibrate import InputError, checked_rows, field_error
from verbcal.serve.observe import LOGGER as LOGGER_NAME
from verbcal.serve.registry import Served
from verbcal.serve.schemas import JSONBytes

LOGGER = logging.getLogger(LOGGER_NAME)

if TYPE_CHECKING:
    from verbcal.monitor import AlarmPolicy, Cutoff, Reference
    from verbcal.serve.app import Service

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    model TEXT NOT NULL,
    calibrator_version TEXT NOT NULL,
    time REAL NOT NULL,
    raw TEXT NOT NULL,
    calibrated TEXT NOT NULL,
    label TEXT,
    label_time REAL,
    UNIQUE (model, id) ON CONFLICT REPLACE
);
CREATE INDEX IF NOT EXISTS by_id ON predictions (id);
CREATE INDEX IF NOT EXISTS by_model_label ON predictions (model, label, seq);
"""


def file_version(path: str) -> str:
    """The first 12 hex digits of the sha256 of a calibrator file ("unknown" if unreadable)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    except OSError:
        return "unknown"


def new_id() -> str:
    return "srv-" + uuid.uuid4().hex


@dataclass(frozen=True)
class _Write:
    """One request's served items, waiting for the log's writer."""

    model: str
    version: str
    time: float
    ids: list[str]
    raw: list[list[float]]
    calibrated: Sequence[Sequence[float]]
    done: Future[None]

    def rows(self) -> Iterator[tuple[str, str, str, float, str, str]]:
        for i, r, c in zip(self.ids, self.raw, self.calibrated, strict=True):
            yield (i, self.model, self.version, self.time, json.dumps(r), json.dumps(list(c)))


class PredictionLog:
    """The durable SQLite log of served predictions (thread-safe; one connection)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(f"--log-predictions {self.path}: cannot open the log ({exc})") from exc
        self._lock = threading.Lock()
        self.changes = 0
        """Bumped on every write: monitoring results are cached against it."""
        self.commits = 0
        """Transactions committed by the writer (fewer than writes when they were grouped)."""
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="prediction-log", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the file."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        with self._lock:
            self._db.close()

    def submit(
        self,
        served: Served,
        version: str,
        ids: Sequence[str],
        raw: Any,
        calibrated: Sequence[Sequence[float]],
    ) -> Future[None]:
        """Queue the served items for the writer; the future is done once they are committed
        and fsynced (or holds the error that stopped them)."""
        raw_rows = np.asarray(raw, dtype=np.float64).tolist()
        if len(raw_rows) != len(ids) or len(calibrated) != len(ids):
            raise ValueError(f"{len(ids)} ids, {len(raw_rows)} rows, {len(calibrated)} calibrated")
        done: Future[None] = Future()
        write = _Write(served.name, version, time.time(), list(ids), raw_rows, calibrated, done)
        if not self._writer.is_alive():
            done.set_exception(RuntimeError(f"the prediction log {self.path} is closed"))
        else:
            self._queue.put(write)
        return done

    def log(
        self,
        served: Served,
        version: str,
        ids: Sequence[str],
        raw: Any,
        calibrated: Sequence[Sequence[float]],
    ) -> None:
        """Store the served items (committed and fsynced before returning)."""
        self.submit(served, version, ids, raw, calibrated).result()

    async def log_async(
        self,
        served: Served,
        version: str,
        ids: Sequence[str],
        raw: Any,
        calibrated: Sequence[Sequence[float]],
    ) -> None:
        """:meth:`log` for the event loop: it waits for the commit without blocking."""
        await asyncio.wrap_future(self.submit(served, version, ids, raw, calibrated))

    def _write_loop(self) -> None:
        """Commit every write waiting in the queue in one transaction, until ``None``."""
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Write]) -> None:
        rows = [row for write in batch for row in write.rows()]
        try:
            with self._lock, self._db:
                self._db.executemany(
                    "INSERT INTO predictions (id, model, calibrator_version, time, raw, calibrated)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self.changes += len(batch)
                self.commits += 1
        except Exception as exc:  # every waiting request hears why (the writer keeps going)
            for write in batch:
                write.done.set_exception(exc)
            return
        for write in batch:
            write.done.set_result(None)

    def models_of(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """For each id, the models it was logged under."""
        found: dict[str, list[str]] = {i: [] for i in ids}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                query = f"SELECT id, model FROM predictions WHERE id IN ({marks})"
                for item, model in self._db.execute(query, chunk):
                    found[item].append(model)
        return found

    def label(self, labels: Sequence[tuple[str, str, str]]) -> None:
        """Set (model, id, label) triples in one transaction."""
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE predictions SET label = ?, label_time = ? WHERE model = ? AND id = ?",
                [(label, now, model, item) for model, item, label in labels],
            )
            self.changes += 1

    def recent(self, model: str, limit: int, labelled: bool = False) -> list[tuple[Any, ...]]:
        """The last ``limit`` rows of a model, oldest first: (id, version, time, raw,
        calibrated, label)."""
        where = "model = ?" + (" AND label IS NOT NULL" if labelled else "")
        query = (
            "SELECT id, calibrator_version, time, raw, calibrated, label FROM predictions"
            f" WHERE {where} ORDER BY seq DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(query, (model, limit)).fetchall()
        return rows[::-1]

    def counts(self, model: str) -> tuple[int, int]:
        """(logged rows, rows with a label) of a model."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COUNT(label) FROM predictions WHERE model = ?", (model,)
            ).fetchone()
        return int(row[0]), int(row[1])


class Monitoring:
    """Per-model monitoring over the log, cached until the log or the calibrator changes."""

    def __init__(
        self,
        log: PredictionLog,
        references: Mapping[str, str],
        window: int = 500,
        horizon: int = 20,
        alpha: float = 0.05,
    ) -> None:
        self.log, self.references = log, dict(references)
        self.window, self.horizon, self.alpha = window, horizon, alpha
        self._refs: dict[tuple[str, float], Reference] = {}
        self._cache: dict[str, tuple[tuple[int, float, bool], dict[str, Any]]] = {}
        self._cutoffs: dict[tuple[str, float], Cutoff] = {}
        self._warming: dict[tuple[str, float], threading.Thread] = {}
        self._lock = threading.Lock()

    def reference(self, served: Served) -> Reference | None:
        """The model's reference, calibrated with its current calibrator (None if none)."""
        path = self.references.get(served.name)
        if path is None:
            return None
        key = (served.name, served.loaded_at)
        if key not in self._refs:
            from verbcal import datasets
            from verbcal.monitor import Reference

            data = datasets.load(path, served.labels).labelled()
            q = served.calibrator.predict_proba(data.probs)
            self._refs[key] = Reference.build(q, data.y, served.labels)
        return self._refs[key]

    def policy(self, served: Served) -> tuple[Reference, AlarmPolicy] | None:
        """The model's reference and alarm policy (None without a reference). The policy's
        p-value cutoff is simulated once per reference (seconds; full windows, labels
        possible, not once per size of the growing last window) in a background thread:
        until it is set, Bonferroni's stands in and the policy says so, so no request
        waits for the simulation."""
        from verbcal.monitor import AlarmPolicy
        from verbcal.monitor.familywise import bonferroni_cutoff

        ref = self.reference(served)
        if ref is None:
            return None
        policy = AlarmPolicy(alpha=self.alpha, horizon=self.horizon)
        cutoff = self._cutoffs.get((served.name, served.loaded_at))
        if cutoff is None:
            self.warm(served)
            cutoff = bonferroni_cutoff(
                policy, "until the min-p cutoff, being simulated from the reference, is set"
            )
        policy.use(cutoff)
        return ref, policy

    def warm(self, served: Served) -> threading.Thread:
        """Start (once per model and calibrator) the background thread that sets the
        model's p-value cutoff; the running or finished thread."""
        key = (served.name, served.loaded_at)
        with self._lock:
            thread = self._warming.get(key)
            if thread is None:
                thread = threading.Thread(
                    target=self._set_cutoff,
                    args=(served, key),
                    name=f"monitor-cutoff-{served.name}",
                    daemon=True,
                )
                self._warming[key] = thread
                thread.start()
        return thread

    def _set_cutoff(self, served: Served, key: tuple[str, float]) -> None:
        from verbcal.monitor import AlarmPolicy
        from verbcal.monitor.familywise import bonferroni_cutoff, calibrate

        ref = self.reference(served)
        if ref is None:
            return
        policy = AlarmPolicy(alpha=self.alpha, horizon=self.horizon)
        try:
            cutoff = calibrate(ref, [self.window], policy, grouped=False, labelled=True)
        except Exception as exc:  # the service keeps alarming under Bonferroni and says why
            LOGGER.exception("min-p simulation failed", extra={"model": served.name})
            cutoff = bonferroni_cutoff(policy, f"the min-p simulation failed: {exc!r}")
        self._cutoffs[key] = cutoff

    def summary(self, served: Served) -> dict[str, Any]:
        """The model's current window (and the labelled window), as ``/v1/monitor`` answers."""
        # a summary made under the stand-in cutoff is redone once the simulated one is set
        ready = (served.name, served.loaded_at) in self._cutoffs
        key = (self.log.changes, served.loaded_at, ready)
        with self._lock:
            cached = self._cache.get(served.name)
            if cached is not None and cached[0] == key:
                return cached[1]
        result = self._compute(served)
        with self._lock:
            self._cache[served.name] = (key, result)
        return result

    def _compute(self, served: Served) -> dict[str, Any]:
        from verbcal.monitor import Window, cbpe, labelled, monitor

        logged, n_labelled = self.log.counts(served.name)
        out: dict[str, Any] = {
            "model": served.name,
            "calibrator_version": file_version(served.path),
            "logged": logged,
            "labelled": n_labelled,
            "window_size": self.window,
            "reference": self.references.get(served.name),
            "window": None,
            "labelled_window": None,
            "alarm": False,
            "signal": None,
        }
        rows = self.log.recent(served.name, self.window * self.horizon)
        if rows:
            q = np.array([json.loads(r[4]) for r in rows], dtype=np.float64)
            index = {label: k for k, label in enumerate(served.labels)}
            y = np.array([index.get(r[5], -1) if r[5] is not None else -1 for r in rows])
            starts = list(range(0, len(rows), self.window))
            windows = [
                Window(str(k + 1), np.arange(s, min(s + self.window, len(rows)), dtype=np.int64))
                for k, s in enumerate(starts)
            ]
            watched = self.policy(served)
            if watched is not None:
                current = monitor(watched[0], q, windows, y, watched[1])[-1]
                current["p_rule_reason"] = watched[1].cutoff.reason if watched[1].cutoff else ""
            else:
                last = q[windows[-1].index]
                est = cbpe(last, None, corrected=False)
                current = {
                    "window": windows[-1].name,
                    "n": len(last),
                    "est_accuracy": est.value,
                    "est_accuracy_low": est.low,
                    "est_accuracy_high": est.high,
                    "est_method": "cbpe (no reference: mean calibrated confidence)",
                    "alarm": False,
                    "signal": None,
                }
            current["first_time"] = rows[int(windows[-1].index[0])][2]
            current["last_time"] = rows[-1][2]
            out["window"] = current
            out["alarm"], out["signal"] = current["alarm"], current["signal"]
        labelled_rows = self.log.recent(served.name, self.window, labelled=True)
        known = [r for r in labelled_rows if r[5] in served.labels]
        if known:
            q = np.array([json.loads(r[4]) for r in known], dtype=np.float64)
            y = np.array([served.labels.index(r[5]) for r in known])
            real = labelled(q, y)
            out["labelled_window"] = {
                "n": real.n,
                **{
                    f"{name}{suffix}": getattr(getattr(real, name), attr)
                    for name in ("accuracy", "ece", "nll")
                    for suffix, attr in (("", "value"), ("_low", "low"), ("_high", "high"))
                },
            }
        return out


class MonitorCollector(Collector):
    """Per-model gauges read at scrape time: estimated accuracy, labelled-window ECE, alarm."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        monitoring = self.service.monitoring
        families = {
            "est": GaugeMetricFamily(
                "verbcal_monitor_estimated_accuracy",
                "Label-free estimated accuracy of the current window, by model.",
                labels=["model"],
            ),
            "ece": GaugeMetricFamily(
                "verbcal_monitor_labelled_ece",
                "Top-label ECE (15 bins) of the last labelled window, by model.",
                labels=["model"],
            ),
            "acc": GaugeMetricFamily(
                "verbcal_monitor_labelled_accuracy",
                "Accuracy of the last labelled window, by model.",
                labels=["model"],
            ),
            "alarm": GaugeMetricFamily(
                "verbcal_monitor_alarm",
                "1 when the current window raised an alarm, else 0, by model.",
                labels=["model"],
            ),
            "logged": GaugeMetricFamily(
                "verbcal_monitor_logged_predictions", "Predictions in the log.", labels=["model"]
            ),
            "labelled": GaugeMetricFamily(
                "verbcal_monitor_labelled_predictions",
                "Logged predictions with a feedback label.",
                labels=["model"],
            ),
        }
        if monitoring is not None:
            for name, served in self.service.registry.models.items():
                try:
                    s = monitoring.summary(served)
                except Exception:  # a scrape never fails for one model
                    continue
                families["logged"].add_metric([name], s["logged"])
                families["labelled"].add_metric([name], s["labelled"])
                families["alarm"].add_metric([name], 1.0 if s["alarm"] else 0.0)
                if s["window"] is not None:
                    families["est"].add_metric([name], s["window"]["est_accuracy"])
                if s["labelled_window"] is not None:
                    families["ece"].add_metric([name], s["labelled_window"]["ece"])
                    families["acc"].add_metric([name], s["labelled_window"]["accuracy"])
        yield from families.values()


def _feedback_items(body: Any) -> tuple[str | None, list[tuple[int, str, str]]]:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise InputError(
            [field_error(None, "items", 'send {"items": [{"id": ..., "label": ...}]}')]
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InputError([field_error(None, "model", "must be a model name (text)")])
    extra = set(body) - {"items", "model"}
    if extra:
        raise InputError(
            [field_error(None, sorted(extra)[0], "unknown field; send items (and model)")]
        )
    items, errors = [], []
    for i, item in enumerate(body["items"]):
        if not isinstance(item, dict):
            errors.append(field_error(i, None, "each item must be an object with id and label"))
            continue
        for name in ("id", "label"):
            if not isinstance(item.get(name), str) or not item.get(name):
                errors.append(field_error(i, name, f"missing or not text: give the {name}"))
        unknown = set(item) - {"id", "label"}
        if unknown:
            errors.append(field_error(i, sorted(unknown)[0], "unknown field; give id and label"))
        if not any(e["item"] == i for e in errors):
            items.append((i, item["id"], item["label"]))
    if errors:
        raise InputError(errors[:20])
    if not items:
        raise InputError([field_error(None, "items", "no items: give at least one")])
    return model, items


def add_routes(app: FastAPI, service: Service) -> None:
    """``/v1/feedback`` and ``/v1/monitor/{model}`` (only with ``--log-predictions``)."""
    monitoring = service.monitoring
    if monitoring is None:
        return

    @app.post("/v1/feedback", tags=["v1"])
    async def feedback(request: Request) -> Response:
        """Join gold labels to logged predictions: ``{"items": [{"id", "label"}], "model"?}``.

        An id that was never logged is a 404 naming the item; a label the model does not
        have, or an id logged under several models without ``model``, a 422. Nothing is
        written unless every item is good.
        """
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise InputError(
                [field_error(None, "body", f"malformed JSON: {exc}")], 400, "malformed_json"
            ) from exc
        model, items = _feedback_items(body)
        service.check_count(len(items))
        models = service.registry.models
        if model is not None and model not in models:
            raise InputError(
                [field_error(None, "model", f"unknown model {model!r}; loaded: {sorted(models)}")],
                404,
                "unknown_model",
            )
        found = monitoring.log.models_of([item for _, item, _ in items])
        missing, invalid, updates = [], [], []
        for i, item, label in items:
            owners = [m for m in found[item] if model is None or m == model]
            if not owners:
                where = f" for model {model!r}" if model else ""
                missing.append(field_error(i, "id", f"no logged prediction has id {item!r}{where}"))
                continue
            if len(owners) > 1:
                invalid.append(
                    field_error(i, "id", f"id {item!r} was served by {owners}: name the model")
                )
                continue
            owner = owners[0]
            labels = models[owner].labels if owner in models else ()
            if label not in labels:
                invalid.append(
                    field_error(
                        i, "label", f"unknown label {label!r}; model {owner!r} has {list(labels)}"
                    )
                )
                continue
            updates.append((owner, item, label))
        if missing:
            raise InputError(missing[:20], 404, "unknown_id")
        if invalid:
            raise InputError(invalid[:20])
        monitoring.log.label(updates)
        return JSONBytes({"labelled": len(updates)})

    @app.get("/v1/monitor/{model}", tags=["v1"])
    async def monitor_model(model: str) -> Response:
        """The model's current window: estimated accuracy with CI, shift tests and alarm
        (with a reference), and the last labelled window's accuracy, ECE and NLL."""
        models = service.registry.models
        if model not in models:
            raise InputError(
                [field_error(None, "model", f"unknown model {model!r}; loaded: {sorted(models)}")],
                404,
                "unknown_model",
            )
        summary = await asyncio.to_thread(monitoring.summary, models[model])
        return JSONBytes(summary)


async def log_served(
    service: Service, served: Served, ids: list[str | None], raw: Any, rows: Sequence[Any]
) -> list[str | None]:
    """Log served items when logging is on (returns once they are on disk); ids the
    client left out are filled in."""
    monitoring = service.monitoring
    if monitoring is None:
        return ids
    filled = [i if i is not None else new_id() for i in ids]
    await monitoring.log.log_async(
        served, service.version_of(served), [str(i) for i in filled], raw, [r.probs for r in rows]
    )
    return list(filled)


async def log_classified(
    service: Service, served: Served, client_ids: Sequence[str | None], out: list[dict[str, Any]]
) -> None:
    """Log the ``/v1/classify`` items that got a calibrated row (an item with no usable
    reply is no prediction) when logging is on; an item the client sent without an id gets
    a ``srv-<hex>`` id, in the log and in the answer (``out`` is updated in place)."""
    if service.monitoring is None:
        return
    usable = [i for i, item in enumerate(out) if item["probs"] is not None]
    if not usable:
        return
    for i in usable:
        if client_ids[i] is None:
            out[i]["id"] = new_id()
    raw = checked_rows(served, [out[i]["verbalized_probs"] for i in usable])
    calibrated = [[float(out[i]["probs"][label]) for label in served.labels] for i in usable]
    await service.monitoring.log.log_async(
        served, service.version_of(served), [str(out[i]["id"]) for i in usable], raw, calibrated
    )
