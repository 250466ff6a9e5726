"""The study grid: every variant fitted and scored on each repeated split, in parallel.

Each split is evaluated by :func:`verbcal.evaluation.evaluate_split`; this module only
cuts the grid into worker tasks and turns the typed scores into tidy and threshold rows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal import datasets
from verbcal.calibration import (
    DEFAULT_CANDIDATES,
    AutoCalibrator,
    Calibrator,
)
from verbcal.calibration.specs import Variant
from verbcal.decide import apply_threshold, pr_curve, threshold_for
from verbcal.evaluation import evaluate_split, fit_methods, keyed_split
from verbcal.predictions import Predictions
from verbcal.study.config import (
    MIN_TEST,
    RULES,
    StudyConfig,
    StudyError,
    parse_variant,
    resolve_sizes,
)
from verbcal.study.rows import MetricRow, ThresholdOutcome, ThresholdRow

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


# ---------------------------------------------------------------- one task: one split


@dataclass(frozen=True)
class Task:
    dataset: str
    size: int
    repeats: tuple[int, ...]


@dataclass(frozen=True)
class _Shared:
    """What every worker needs: the data and the grid's fixed settings."""

    data: dict[str, tuple[FloatArray, IntArray]]
    replies: dict[str, str]
    """Which reply each dataset was read from (``verbal``: ``auto`` also weighs ``words``)."""
    variants: tuple[Variant, ...]
    seed: int
    bins: int
    targets: tuple[float, ...]
    threshold_methods: tuple[str, ...]
    confidence: float


_SHARED: _Shared | None = None


def _init_worker(shared: _Shared) -> None:
    global _SHARED
    _SHARED = shared
    try:  # small BLAS calls run faster on one thread than contended on several
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


def _run_task(task: Task) -> tuple[Task, list[MetricRow], list[ThresholdRow]]:
    shared = _SHARED
    assert shared is not None, "worker not initialised"
    probs, y = shared.data[task.dataset]
    rows: list[MetricRow] = []
    thresholds: list[ThresholdRow] = []
    for repeat in task.repeats:
        split = keyed_split(y, task.size, shared.seed, task.dataset, repeat)
        calib = split.calib
        scores = evaluate_split(
            probs, y, split, shared.variants, n_bins=shared.bins, reply=shared.replies[task.dataset]
        )
        for score in scores:
            calibrator = score.calibrator
            floor = calibrator.floor_
            params = {
                "temperature": calibrator.state.get("temperature", math.nan),
                "floor": floor if floor is not None else math.nan,
                "nll_fit": calibrator.fit_info.get("nll_after", math.nan),
            }
            if isinstance(calibrator, AutoCalibrator):
                names = calibrator.candidates or DEFAULT_CANDIDATES
                params |= {f"weight_{m}": calibrator.weights_.get(m, 0.0) for m in names}
            for name, value in (*score.metrics.items(), *params.items()):
                if value is not None and not math.isnan(value):
                    rows.append(
                        MetricRow(task.dataset, score.method, task.size, repeat, name, float(value))
                    )
            if score.method in shared.threshold_methods:
                q_cal = calibrator.predict_proba(probs[calib])
                for row in threshold_rows(q_cal, y[calib], score.q_test, y[split.test], shared):
                    thresholds.append(
                        ThresholdRow(task.dataset, score.method, task.size, repeat, *row)
                    )
    return task, rows, thresholds


def fit_variants(
    variants: Sequence[Variant], probs: FloatArray, y: IntArray
) -> dict[str, Calibrator]:
    """Every variant fitted on the same calibration part (:func:`verbcal.evaluation.fit_methods`:
    a floor fitted jointly with T is fitted once per floor mode and prior)."""
    return fit_methods(variants, probs, y)


def threshold_rows(
    q_cal: FloatArray, y_cal: IntArray, q_test: FloatArray, y_test: IntArray, shared: _Shared
) -> Iterator[ThresholdOutcome]:
    """Per class, target and rule: the threshold from the calibration part, tested on the rest.

    ``met`` is 1 when the test precision at the threshold reaches the target, 0 when not,
    nan when no threshold was reachable or no test item was predicted.
    """
    for cls in range(q_cal.shape[1]):
        curve = pr_curve(q_cal, y_cal, cls)
        for target in shared.targets:
            for rule in RULES:
                t: float | None
                if rule == "bound":
                    t = threshold_for(
                        q_cal,
                        y_cal,
                        cls,
                        precision=target,
                        confidence=shared.confidence,
                        procedure="pointwise",  # the rule docs/study/findings.md measured
                    ).threshold
                elif rule == "point":
                    passing = np.flatnonzero(curve.precision >= target)
                    t = float(curve.thresholds[passing[-1]]) if len(passing) else None
                else:
                    t = target
                if t is None:
                    yield ThresholdOutcome(
                        cls, target, rule, False, math.nan, 0, math.nan, math.nan, math.nan
                    )
                    continue
                chosen = apply_threshold(q_test[:, cls], t)
                n_pred = int(chosen.sum())
                support = int(np.sum(y_test == cls))
                hits = int(np.sum(chosen & (y_test == cls)))
                precision = hits / n_pred if n_pred else math.nan
                recall = hits / support if support else math.nan
                met = float(precision >= target - 1e-12) if n_pred else math.nan
                yield ThresholdOutcome(
                    cls, target, rule, True, float(t), n_pred, precision, recall, met
                )


def cross_fit(
    result: StudyResult, dataset: str, methods: Sequence[str], size: int
) -> dict[str, FloatArray]:
    """Out-of-sample predictions for every item: split 0 at ``size``, each half fitted on
    the other (two-fold cross-fitting), so each item is predicted once."""
    probs, y = result.data[dataset]
    split = keyed_split(y, size, result.config.seed, dataset, 0)
    variants = [parse_variant(m) for m in methods]
    reply = result.info[dataset].reply
    out = {m: np.empty_like(probs) for m in methods}
    for fit_idx, predict_idx in ((split.calib, split.test), (split.test, split.calib)):
        fitted = fit_methods(variants, probs[fit_idx], y[fit_idx], reply=reply)
        for m in methods:
            out[m][predict_idx] = fitted[m].predict_proba(probs[predict_idx])
    return out


# ---------------------------------------------------------------- the whole grid


@dataclass
class DatasetInfo:
    name: str
    spec: str
    labels: tuple[str, ...]
    n: int
    sizes: list[int]
    notes: list[str]
    wellformed: dict[str, Any]
    reply: str = "probs"
    """Which reply the rows were read from (``probs`` or ``verbal``)."""


@dataclass
class StudyResult:
    config: StudyConfig
    info: dict[str, DatasetInfo]
    rows: list[MetricRow]
    thresholds: list[ThresholdRow]
    data: dict[str, tuple[FloatArray, IntArray]]
    workers: int = 1
    seconds: float = 0.0


def load_datasets(config: StudyConfig) -> tuple[dict[str, DatasetInfo], dict[str, Predictions]]:
    """Read every dataset (labelled rows only) and check it can be split as asked."""
    info, loaded = {}, {}
    for name, spec in config.datasets.items():
        predictions = datasets.load(spec).labelled()
        if len(predictions) < 2 * MIN_TEST // 3:
            raise StudyError(
                f"datasets: {name} has {len(predictions)} labelled items; the study needs at least {2 * MIN_TEST // 3}"
            )
        full = datasets.load(spec)
        sizes, notes = resolve_sizes(len(predictions), config.sizes)
        if not sizes:
            raise StudyError(
                f"sizes: none of {config.sizes} fits {name} ({len(predictions)} items)"
            )
        info[name] = DatasetInfo(
            name,
            spec,
            predictions.labels,
            len(predictions),
            sizes,
            notes,
            wellformedness(full),
            predictions.reply,
        )
        loaded[name] = predictions
    return info, loaded


def run_study(
    config: StudyConfig,
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> StudyResult:
    """Run the grid; ``on_progress(done, total)`` is called as splits finish.

    The output does not depend on ``workers``: each split is seeded on its own and the
    rows are sorted by (dataset, size, repeat) before they are returned.
    """
    import time

    start = time.perf_counter()
    variants = tuple(config.variants)
    info, loaded = load_datasets(config)
    data = {name: (p.probs, p.y) for name, p in loaded.items()}
    shared = _Shared(
        data,
        {name: i.reply for name, i in info.items()},
        variants,
        config.seed,
        config.bins,
        tuple(config.targets),
        tuple(config.threshold_methods),
        config.confidence,
    )
    chunk = max(1, min(5, config.repeats // 4)) if workers > 1 else config.repeats
    tasks = [
        Task(name, size, tuple(range(r, min(r + chunk, config.repeats))))
        for name in config.datasets
        for size in info[name].sizes
        for r in range(0, config.repeats, chunk)
    ]
    total, done = sum(len(t.repeats) for t in tasks), 0
    results: list[tuple[Task, list[MetricRow], list[ThresholdRow]]] = []
    if on_progress:
        on_progress(0, total)
    if workers <= 1:
        with _blas_single_thread():
            _init_worker(shared)
            for task in tasks:
                results.append(_run_task(task))
                done += len(task.repeats)
                if on_progress:
                    on_progress(done, total)
    else:
        with (
            _env(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
            ProcessPoolExecutor(
                max_workers=workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(shared,),
            ) as pool,
        ):
            futures: list[Future[tuple[Task, list[MetricRow], list[ThresholdRow]]]] = [
                pool.submit(_run_task, task) for task in tasks
            ]
            from concurrent.futures import as_completed

            for future in as_completed(futures):
                results.append(future.result())
                done += len(results[-1][0].repeats)
                if on_progress:
                    on_progress(done, total)
    order = {(t.dataset, t.size, t.repeats[0]): i for i, t in enumerate(tasks)}
    results.sort(key=lambda r: order[(r[0].dataset, r[0].size, r[0].repeats[0])])
    rows = [row for _, task_rows, _ in results for row in task_rows]
    thresholds = [row for _, _, task_rows in results for row in task_rows]
    return StudyResult(config, info, rows, thresholds, data, workers, time.perf_counter() - start)


@contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _blas_single_thread() -> Any:
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except ImportError:
        return nullcontext()


# ---------------------------------------------------------------- well-formedness


def wellformedness(predictions: Predictions) -> dict[str, Any]:
    """How the distributions were written: sums, zeros, grid, distinct values and rows.

    Computed on the values as written in the file (before normalisation), over the
    records with a distribution.
    """
    try:
        raw = np.array(
            [
                [float(predictions.records[r]["probs"][label]) for label in predictions.labels]
                for r in predictions.rows
            ]
        )
    except (KeyError, TypeError, ValueError):  # not a plain dict per record: use what was read
        raw = predictions.probs
    sums = raw.sum(axis=1)
    normalised = predictions.probs
    top = normalised.max(axis=1)
    decimals = next(
        (d for d in range(0, 7) if np.all(np.abs(np.rint(raw * 10**d) - raw * 10**d) < 1e-6)),
        None,
    )
    on_005 = np.abs(np.rint(raw * 20) - raw * 20) < 1e-6
    labelled = predictions.y >= 0
    correct = np.argmax(normalised, axis=1) == predictions.y
    return {
        "items": len(raw),
        "labels": len(predictions.labels),
        "unusable": predictions.n_unusable,
        "sum_min": float(sums.min()),
        "sum_max": float(sums.max()),
        "rows_off_sum": int(np.sum(np.abs(sums - 1) > 1e-6)),
        "zero_entries": int(np.sum(raw == 0)),
        "rows_with_zero": int(np.sum(np.any(raw == 0, axis=1))),
        "rows_with_one": int(np.sum(np.any(raw == 1, axis=1))),
        "min_entry": float(raw.min()),
        "decimals": decimals,
        "share_on_0.05_grid": float(on_005.mean()),
        "distinct_values": len(np.unique(np.round(raw, 9))),
        "distinct_top": len(np.unique(np.round(top, 9))),
        "distinct_rows": len(np.unique(np.round(raw, 9), axis=0)),
        "top_mean": float(top.mean()),
        "share_top_ge_0.9": float(np.mean(top >= 0.9 - 1e-9)),
        "accuracy": float(np.mean(correct[labelled])) if labelled.any() else math.nan,
    }
