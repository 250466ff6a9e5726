"""The study: calibrators compared on repeated stratified splits of labelled predictions.

A grid of datasets × method variants × calibration-set sizes × R repeated stratified
splits. Every variant is fitted on the calibration part of a split and scored on the
rest of it (the test part); all variants see the same split, so differences between
them are paired. :func:`run_study` returns tidy rows, :func:`summarise` means with
95% intervals, :func:`write_outputs` the CSV/JSON files, plots and ``findings.md``.

Configuration (YAML; see ``examples/study.yaml``), every key optional:

``datasets``
    name → predictions file (JSONL or CSV with gold labels) or ``recorded:<name>``.
    Relative paths are read relative to the config file. Default: the three bundled
    recorded sets (``recorded:tweets``, ``recorded:drug-reviews``, ``recorded:bbc-news``).
``methods``
    list of method specs, as every command takes them (see
    :mod:`verbcal.calibration.specs`): a calibrator name (identity, floor, temperature,
    resoftmax, vector, matrix, platt, isotonic, histogram, auto), optionally with options in
    brackets: ``temperature[floor=1e-4]``, ``temperature[floor=fit,mode=mix]``,
    ``temperature[prior=none]``, ``matrix[reg=0.1]``, ``histogram[bins=5]``.
    ``uncalibrated`` is ``identity``: the verbalized distribution itself, normalised,
    nothing fitted. Default: :data:`DEFAULT_METHODS`.
``sizes``
    calibration-set sizes: integers, or ``all`` (alias ``half``) = n // 2 for a dataset of
    n labelled items, the largest calibration set that leaves a test part at least as
    large (the paper's 50/50 protocol). The rest of each split is the test part. An
    integer size that leaves fewer than ``MIN_TEST`` (30) test items is skipped for that
    dataset (noted in the findings). Default ``[25, 50, 100, all]``.
``repeats``
    random stratified splits per (dataset, size); default 50.
``seed``
    integer seed; default 0. The split of (dataset, size, repeat) is drawn from
    ``numpy.random.SeedSequence(seed, spawn_key=(crc32(dataset name), size, repeat))``, so
    results do not depend on the number of workers or on the rest of the grid.
``bins``
    equal-width bins of ECE/MCE; default 15.
``targets``
    target precisions of the threshold-promise question; default [0.8, 0.9, 0.95].
``threshold_methods``
    variants whose thresholds are tested (each must be in ``methods``);
    default ``[uncalibrated, temperature]``.
``confidence``
    confidence of the Clopper-Pearson bound used to choose thresholds; default 0.95.

Tidy rows (``tidy.csv``): ``dataset, method, size, repeat, metric, value``. Metrics are
:data:`verbcal.metrics.METRICS` on the test part, plus the fitted parameters
``temperature`` (T, temperature and resoftmax), ``floor`` (the floor value, variants that
use one) and ``nll_fit`` (NLL on the calibration part itself, to show overfitting); for
``auto``, ``picked_<method>`` is 1 where auto chose that candidate and 0 elsewhere (its
mean is the share of splits).

Intervals: ``lo`` and ``hi`` are the 2.5th and 97.5th percentiles of the R per-repeat
values (a percentile interval over repeats, not a standard error): they say how much a
result moves from one random calibration set to another of the same size.
"""

from __future__ import annotations

import csv
import json
import math
import os
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal import datasets
from verbcal.calibration import (
    DEFAULT_CANDIDATES,
    AutoCalibrator,
    Calibrator,
)
from verbcal.calibration.specs import UNCALIBRATED as UNCALIBRATED
from verbcal.calibration.specs import MethodError, Variant, parse_spec
from verbcal.compare import stratified_split
from verbcal.decide import apply_threshold, pr_curve, threshold_for
from verbcal.jsonio import json_ready
from verbcal.metrics import DEFAULT_BINS, METRICS, summary
from verbcal.predictions import Predictions

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

DEFAULT_DATASETS: dict[str, str] = {
    "tweets": "recorded:tweets",
    "drug-reviews": "recorded:drug-reviews",
    "bbc-news": "recorded:bbc-news",
}
DEFAULT_METHODS: tuple[str, ...] = (
    UNCALIBRATED,
    "floor",
    "resoftmax",
    "temperature",
    "temperature[prior=none]",
    "temperature[floor=1e-2]",
    "temperature[floor=1e-3]",
    "temperature[floor=1e-4]",
    "temperature[floor=1e-6]",
    "temperature[floor=1e-8]",
    "temperature[mode=mix]",
    "temperature[floor=1e-2,mode=mix]",
    "temperature[floor=1e-4,mode=mix]",
    "temperature[floor=1e-6,mode=mix]",
    "vector",
    "matrix",
    "platt",
    "isotonic",
    "histogram",
    "auto",
)
"""The default variants: every core method (floor fitted where one is used), the
uncalibrated baseline, temperature scaling by maximum likelihood and under fixed clip and
mix floors, and ``auto``."""
DEFAULT_SIZES: tuple[int | str, ...] = (25, 50, 100, "all")
DEFAULT_REPEATS = 50
DEFAULT_TARGETS: tuple[float, ...] = (0.8, 0.9, 0.95)
DEFAULT_THRESHOLD_METHODS: tuple[str, ...] = (UNCALIBRATED, "temperature")
MIN_TEST = 30
"""An integer calibration size must leave at least this many test items."""
PARAMS: tuple[str, ...] = ("temperature", "floor", "nll_fit")
"""Fitted parameters recorded next to the metrics in the tidy rows."""
RULES: tuple[str, ...] = ("bound", "point", "prob")
"""Threshold rules: ``bound`` = smallest threshold whose Clopper-Pearson lower bound on the
calibration part reaches the target (:func:`verbcal.decide.threshold_for`, procedure
"pointwise"); ``point`` =
smallest threshold whose point precision on the calibration part reaches it; ``prob`` =
the target itself as threshold (trust the probability: no labels used)."""
CONFIG_KEYS = (
    "datasets",
    "methods",
    "sizes",
    "repeats",
    "seed",
    "bins",
    "targets",
    "threshold_methods",
    "confidence",
)


class StudyError(ValueError):
    """A study configuration that cannot run: says which key and what to write instead."""


# ---------------------------------------------------------------- method variants


def parse_variant(spec: str) -> Variant:
    """A method spec (see :mod:`verbcal.calibration.specs`), errors naming the ``methods`` key."""
    try:
        return parse_spec(spec)
    except MethodError as exc:
        raise StudyError(f"methods: {exc}") from exc


# ---------------------------------------------------------------- configuration


@dataclass
class StudyConfig:
    """What to run; see the module docstring for every key."""

    datasets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DATASETS))
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    sizes: list[int | str] = field(default_factory=lambda: list(DEFAULT_SIZES))
    repeats: int = DEFAULT_REPEATS
    seed: int = 0
    bins: int = DEFAULT_BINS
    targets: list[float] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    threshold_methods: list[str] = field(default_factory=lambda: list(DEFAULT_THRESHOLD_METHODS))
    confidence: float = 0.95
    source: str = "default grid"

    @property
    def variants(self) -> list[Variant]:
        return [parse_variant(m) for m in self.methods]

    @classmethod
    def from_mapping(cls, data: Any, base: Path | None = None, source: str = "") -> StudyConfig:
        """Validated config from parsed YAML; relative dataset paths resolve against ``base``."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise StudyError("the study config must be a mapping of keys (datasets, methods ...)")
        unknown = sorted(set(data) - set(CONFIG_KEYS))
        if unknown:
            raise StudyError(
                f"unknown config key(s) {', '.join(map(str, unknown))}; known: {', '.join(CONFIG_KEYS)}"
            )
        config = cls(source=source or "config")
        if "datasets" in data:
            config.datasets = _datasets(data["datasets"], base)
        if "methods" in data:
            methods = data["methods"]
            if not isinstance(methods, list) or not methods:
                raise StudyError("methods: give a non-empty list of method variants")
            names = [parse_variant(m).name for m in methods]
            if len(set(names)) != len(names):
                raise StudyError("methods: a variant is listed twice")
            config.methods = names
        if "sizes" in data:
            config.sizes = _sizes(data["sizes"])
        for key in ("repeats", "seed", "bins"):
            if key in data:
                value = data[key]
                low = 0 if key == "seed" else 1
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise StudyError(f"{key}: must be an integer >= {low}, got {value!r}")
                setattr(config, key, value)
        if "targets" in data:
            targets = data["targets"]
            if not isinstance(targets, list) or not all(_unit(t) for t in targets):
                raise StudyError("targets: give a list of precisions strictly between 0 and 1")
            config.targets = [float(t) for t in targets]
        if "confidence" in data:
            if not _unit(data["confidence"]):
                raise StudyError("confidence: must lie strictly between 0 and 1")
            config.confidence = float(data["confidence"])
        if "threshold_methods" in data:
            chosen = data["threshold_methods"]
            if not isinstance(chosen, list):
                raise StudyError("threshold_methods: give a list of variants from methods")
            config.threshold_methods = [parse_variant(m).name for m in chosen]
        missing = [m for m in config.threshold_methods if m not in config.methods]
        if missing and "threshold_methods" in data:
            raise StudyError(f"threshold_methods: {', '.join(missing)} not listed in methods")
        config.threshold_methods = [m for m in config.threshold_methods if m in config.methods]
        return config

    @classmethod
    def load(cls, path: str | Path) -> StudyConfig:
        """Read and validate a YAML config file."""
        import yaml

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StudyError(f"{path}: cannot read the study config ({exc.strerror})") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise StudyError(f"{path}: not valid YAML ({exc})") from exc
        return cls.from_mapping(data, base=path.parent, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        keys = CONFIG_KEYS
        return {k: getattr(self, k) for k in keys}


def _unit(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1


def _datasets(value: Any, base: Path | None) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise StudyError("datasets: give a mapping name → predictions file (or recorded:<name>)")
    out = {}
    for name, spec in value.items():
        if not isinstance(spec, str) or not spec:
            raise StudyError(f"datasets: {name!r} must map to a file path, got {spec!r}")
        if not spec.startswith(datasets.PREFIX) and base is not None:
            path = Path(spec)
            spec = str(path if path.is_absolute() else base / path)
        out[str(name)] = spec
    return out


def _sizes(value: Any) -> list[int | str]:
    if not isinstance(value, list) or not value:
        raise StudyError("sizes: give a non-empty list of integers and/or 'all'")
    out: list[int | str] = []
    for size in value:
        if size in ("all", "half"):
            out.append("all")
        elif isinstance(size, int) and not isinstance(size, bool) and size >= 2:
            out.append(size)
        else:
            raise StudyError(f"sizes: {size!r} is not an integer >= 2 or 'all'")
    return out


def resolve_sizes(n: int, sizes: Sequence[int | str]) -> tuple[list[int], list[str]]:
    """Calibration sizes for n items (sorted, distinct) and notes on the ones skipped."""
    chosen, notes = set(), []
    for size in sizes:
        if size == "all":
            chosen.add(n // 2)
        elif isinstance(size, int) and size <= n - MIN_TEST:
            chosen.add(size)
        else:
            notes.append(
                f"size {size} skipped: it leaves fewer than {MIN_TEST} of {n} items to test"
            )
    return sorted(chosen), notes


def split_rng(seed: int, dataset: str, size: int, repeat: int) -> np.random.Generator:
    """The generator of one split, independent of the worker and of the rest of the grid."""
    key = (zlib.crc32(dataset.encode("utf-8")), size, repeat)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


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
    variants: tuple[Variant, ...]
    seed: int
    bins: int
    targets: tuple[float, ...]
    threshold_methods: tuple[str, ...]
    confidence: float


_SHARED: _Shared | None = None

MetricRow = tuple[str, str, int, int, str, float]
ThresholdRow = tuple[str, str, int, int, int, float, str, bool, float, int, float, float, float]
THRESHOLD_COLUMNS = (
    "dataset",
    "method",
    "size",
    "repeat",
    "cls",
    "target",
    "rule",
    "reachable",
    "threshold",
    "test_predicted",
    "test_precision",
    "test_recall",
    "met",
)


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
        rng = split_rng(shared.seed, task.dataset, task.size, repeat)
        calib, test = stratified_split(y, task.size, rng)
        fitted = fit_variants(shared.variants, probs[calib], y[calib])
        for variant in shared.variants:
            calibrator = fitted[variant.name]
            q = calibrator.predict_proba(probs[test])
            scores = summary(q, y[test], n_bins=shared.bins)
            floor = calibrator.floor_
            params = {
                "temperature": calibrator.params.get("temperature", math.nan),
                "floor": floor if floor is not None else math.nan,
                "nll_fit": calibrator.fit_info.get("nll_after", math.nan),
            }
            if isinstance(calibrator, AutoCalibrator):
                names = calibrator.candidates or DEFAULT_CANDIDATES
                params |= {f"picked_{m}": float(m == calibrator.chosen_) for m in names}
            for name, value in (*scores.items(), *params.items()):
                if value is not None and not math.isnan(value):
                    rows.append((task.dataset, variant.name, task.size, repeat, name, float(value)))
            if variant.name in shared.threshold_methods:
                q_cal = calibrator.predict_proba(probs[calib])
                for row in threshold_rows(q_cal, y[calib], q, y[test], shared):
                    thresholds.append((task.dataset, variant.name, task.size, repeat, *row))
    return task, rows, thresholds


def fit_variants(
    variants: Sequence[Variant], probs: FloatArray, y: IntArray
) -> dict[str, Calibrator]:
    """Every variant fitted on the same calibration part.

    The floor fitted jointly with T depends only on the data, the floor mode and the
    prior on T, so it is fitted once per such key and handed to every other temperature
    variant that fits it; the result equals fitting each on its own.
    """
    floors: dict[tuple[Any, ...], float] = {}
    fitted = {}
    for variant in variants:
        reuse = floors.get(variant.floor_key) if variant.fits_floor else None
        calibrator = variant.make(floor=reuse).fit(probs, y)
        if variant.fits_floor and reuse is None and calibrator.floor_ is not None:
            floors[variant.floor_key] = calibrator.floor_
        fitted[variant.name] = calibrator
    return fitted


def threshold_rows(
    q_cal: FloatArray, y_cal: IntArray, q_test: FloatArray, y_test: IntArray, shared: _Shared
) -> Iterator[tuple[int, float, str, bool, float, int, float, float, float]]:
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
                    yield cls, target, rule, False, math.nan, 0, math.nan, math.nan, math.nan
                    continue
                chosen = apply_threshold(q_test[:, cls], t)
                n_pred = int(chosen.sum())
                support = int(np.sum(y_test == cls))
                hits = int(np.sum(chosen & (y_test == cls)))
                precision = hits / n_pred if n_pred else math.nan
                recall = hits / support if support else math.nan
                met = float(precision >= target - 1e-12) if n_pred else math.nan
                yield cls, target, rule, True, float(t), n_pred, precision, recall, met


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
            name, spec, predictions.labels, len(predictions), sizes, notes, wellformedness(full)
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


# ---------------------------------------------------------------- summaries


def by_key(rows: Sequence[MetricRow]) -> dict[tuple[str, str, int, str], dict[int, float]]:
    """(dataset, method, size, metric) → {repeat: value}."""
    out: dict[tuple[str, str, int, str], dict[int, float]] = defaultdict(dict)
    for dataset, method, size, repeat, metric, value in rows:
        out[(dataset, method, size, metric)][repeat] = value
    return out


def interval(values: Sequence[float] | FloatArray) -> tuple[float, float, float]:
    """Mean and the 2.5th / 97.5th percentiles (nan for no values)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return math.nan, math.nan, math.nan
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(v.mean()), float(lo), float(hi)


def summarise(rows: Sequence[MetricRow]) -> list[dict[str, Any]]:
    """One row per (dataset, method, size, metric): mean, lo, hi over repeats, and n."""
    out = []
    for (dataset, method, size, metric), values in by_key(rows).items():
        mean, lo, hi = interval(list(values.values()))
        out.append(
            {
                "dataset": dataset,
                "method": method,
                "size": size,
                "metric": metric,
                "mean": mean,
                "lo": lo,
                "hi": hi,
                "n": len(values),
            }
        )
    return out


def paired(
    table: Mapping[tuple[str, str, int, str], dict[int, float]],
    dataset: str,
    size: int,
    metric: str,
    a: str,
    b: str,
) -> dict[str, float]:
    """Paired difference a − b over the repeats both have: mean, percentile interval, share a > b."""
    left, right = (
        table.get((dataset, a, size, metric), {}),
        table.get((dataset, b, size, metric), {}),
    )
    common = sorted(set(left) & set(right))
    diff = np.array([left[r] - right[r] for r in common])
    mean, lo, hi = interval(diff)
    share = float(np.mean(diff > 0)) if len(diff) else math.nan
    return {"mean": mean, "lo": lo, "hi": hi, "share_positive": share, "n": len(diff)}


def threshold_summary(rows: Sequence[ThresholdRow]) -> list[dict[str, Any]]:
    """Per (dataset, method, size, cls, target, rule): how often the promise held.

    ``kept`` = share of repeats meeting the target on the test part, among those where a
    threshold was reachable and predicted at least one test item (``defined`` of them);
    ``reachable`` = share of repeats where the calibration part gave a threshold.
    """
    groups: dict[tuple[Any, ...], list[ThresholdRow]] = defaultdict(list)
    for row in rows:
        groups[(row[0], row[1], row[2], row[4], row[5], row[6])].append(row)
    out = []
    for (dataset, method, size, cls, target, rule), members in groups.items():
        met = np.array([r[12] for r in members])
        defined = ~np.isnan(met)
        recall = np.array([r[11] for r in members])
        out.append(
            {
                "dataset": dataset,
                "method": method,
                "size": size,
                "cls": cls,
                "target": target,
                "rule": rule,
                "repeats": len(members),
                "reachable": float(np.mean([r[7] for r in members])),
                "defined": int(defined.sum()),
                "kept": float(met[defined].mean()) if defined.any() else math.nan,
                "recall": float(np.nanmean(recall)) if np.any(~np.isnan(recall)) else math.nan,
            }
        )
    return out


# ---------------------------------------------------------------- outputs


def write_outputs(result: StudyResult, out: Path) -> dict[str, Path]:
    """Tidy and summary tables, thresholds, well-formedness, plots and findings.md in ``out``."""
    from verbcal.study_report import findings_markdown, write_plots

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    tidy = out / "tidy.csv"
    _write_csv(tidy, ("dataset", "method", "size", "repeat", "metric", "value"), result.rows)
    files["tidy"] = tidy
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns: list[Sequence[Any]] = (
            [list(c) for c in zip(*result.rows, strict=True)] if result.rows else [[]] * 6
        )
        names = ("dataset", "method", "size", "repeat", "metric", "value")
        pq.write_table(pa.table(dict(zip(names, columns, strict=True))), out / "tidy.parquet")
        files["parquet"] = out / "tidy.parquet"
    except ImportError:
        pass
    rows = summarise(result.rows)
    keys = ("dataset", "method", "size", "metric", "mean", "lo", "hi", "n")
    _write_csv(out / "summary.csv", keys, [tuple(r[k] for k in keys) for r in rows])
    (out / "summary.json").write_text(json.dumps(json_ready(rows), indent=1) + "\n", "utf-8")
    files["summary"] = out / "summary.csv"
    _write_csv(out / "thresholds.csv", THRESHOLD_COLUMNS, result.thresholds)
    files["thresholds"] = out / "thresholds.csv"
    wellformed = {name: i.wellformed for name, i in result.info.items()}
    (out / "wellformedness.json").write_text(json.dumps(wellformed, indent=1) + "\n", "utf-8")
    files["wellformedness"] = out / "wellformedness.json"
    meta = {
        "config": result.config.to_dict(),
        "sizes": {name: i.sizes for name, i in result.info.items()},
        "notes": {name: i.notes for name, i in result.info.items()},
        "interval": "2.5th and 97.5th percentiles of the per-repeat values",
    }
    (out / "study.json").write_text(json.dumps(meta, indent=1) + "\n", "utf-8")
    files.update(write_plots(result, rows, out))
    (out / "findings.md").write_text(findings_markdown(result, rows, out), "utf-8")
    files["findings"] = out / "findings.md"
    return files


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])


def summary_json(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``--json`` output: {"dataset", "method", "size", "metric", "mean", "lo", "hi"}."""
    keys = ("dataset", "method", "size", "metric", "mean", "lo", "hi")
    return json_ready([{k: r[k] for k in keys} for r in rows])


__all__ = [
    "DEFAULT_METHODS",
    "METRICS",
    "StudyConfig",
    "StudyError",
    "StudyResult",
    "Variant",
    "paired",
    "parse_variant",
    "run_study",
    "summarise",
    "write_outputs",
]
