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
``auto``, ``weight_<method>``: the candidate's weight in auto's calibrator (its stacking
weight; 1 or 0 under ``auto[rule=1se]``), so its mean over splits is the average share.

Intervals: ``lo`` and ``hi`` are the 2.5th and 97.5th percentiles of the R per-repeat
values (a percentile interval over repeats, not a standard error): they say how much a
result moves from one random calibration set to another of the same size.

The package, imports in one direction (each module imports only those above it):
:mod:`~verbcal.study.config` (the YAML config and method variants),
:mod:`~verbcal.study.rows` (the named tidy and threshold rows),
:mod:`~verbcal.study.grid` (the computation), :mod:`~verbcal.study.summary` (intervals,
paired differences, threshold summaries), :mod:`~verbcal.study.report` (plots and
``findings.md``), :mod:`~verbcal.study.outputs` (every file written).
"""

from verbcal.calibration.specs import UNCALIBRATED, Variant
from verbcal.evaluation import percentile_interval as interval
from verbcal.evaluation import split_rng
from verbcal.metrics import METRICS
from verbcal.study.config import (
    CONFIG_KEYS,
    DEFAULT_DATASETS,
    DEFAULT_METHODS,
    DEFAULT_REPEATS,
    DEFAULT_SIZES,
    DEFAULT_TARGETS,
    DEFAULT_THRESHOLD_METHODS,
    MIN_TEST,
    PARAMS,
    RULES,
    StudyConfig,
    StudyError,
    parse_variant,
    resolve_sizes,
)
from verbcal.study.grid import (
    DatasetInfo,
    StudyResult,
    Task,
    cross_fit,
    fit_variants,
    load_datasets,
    run_study,
    threshold_rows,
    wellformedness,
)
from verbcal.study.outputs import write_outputs
from verbcal.study.rows import (
    THRESHOLD_COLUMNS,
    TIDY_COLUMNS,
    MetricRow,
    ThresholdOutcome,
    ThresholdRow,
)
from verbcal.study.summary import (
    by_key,
    paired,
    summarise,
    summary_json,
    threshold_summary,
)

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_DATASETS",
    "DEFAULT_METHODS",
    "DEFAULT_REPEATS",
    "DEFAULT_SIZES",
    "DEFAULT_TARGETS",
    "DEFAULT_THRESHOLD_METHODS",
    "METRICS",
    "MIN_TEST",
    "PARAMS",
    "RULES",
    "THRESHOLD_COLUMNS",
    "TIDY_COLUMNS",
    "UNCALIBRATED",
    "DatasetInfo",
    "MetricRow",
    "StudyConfig",
    "StudyError",
    "StudyResult",
    "Task",
    "ThresholdOutcome",
    "ThresholdRow",
    "Variant",
    "by_key",
    "cross_fit",
    "fit_variants",
    "interval",
    "load_datasets",
    "paired",
    "parse_variant",
    "resolve_sizes",
    "run_study",
    "split_rng",
    "summarise",
    "summary_json",
    "threshold_rows",
    "threshold_summary",
    "wellformedness",
    "write_outputs",
]
