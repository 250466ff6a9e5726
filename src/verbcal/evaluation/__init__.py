"""One evaluation core: split → fit on the calibration part only → score on the test part.

``compare``, ``run`` (the pipeline), ``study`` and the bakeoff all evaluate calibrators
the same way, through this package; their report modules only render its results.

Architecture (imports in one direction; numpy, scipy and verbcal's core modules only):

* :mod:`~verbcal.evaluation.splits`: stratified calibration/test splits
  (:class:`Split`, :func:`stratified_split`, :func:`check_split`, the two seeding
  protocols :func:`repeated_splits` and :func:`keyed_split`);
* :mod:`~verbcal.evaluation.results`: typed results (:class:`MethodScore` per method and
  split, :class:`Evaluation` for a set of splits, :class:`PairedDifference`);
* :mod:`~verbcal.evaluation.core`: the loop (:func:`fit_methods`,
  :func:`evaluate_split`, :func:`evaluate_splits`) and :func:`paired_bootstrap`.

Typical use::

    from verbcal.evaluation import check_split, evaluate_splits, repeated_splits

    check_split(y, 0.5, labels)
    splits = repeated_splits(y, 0.5, repeats=20, seed=0)
    ev = evaluate_splits(probs, y, splits, ["identity", "temperature", "auto"], labels=labels)
    ev.summary()                          # mean and sd per (method, metric)
    ev.paired("temperature", "identity", "nll")   # per-split differences, percentile interval

Conventions: ``probs`` (n, K) verbalized distributions (rows need not sum to 1), ``y``
(n,) integer gold labels; methods are method specs (:mod:`verbcal.calibration.specs`);
metrics are :data:`verbcal.metrics.METRICS` on the test part.
"""

from verbcal.evaluation.core import (
    evaluate_split,
    evaluate_splits,
    fit_methods,
    paired_bootstrap,
    variants,
)
from verbcal.evaluation.results import (
    Evaluation,
    MethodScore,
    PairedDifference,
    mean_sd_rows,
    paired_over_splits,
    percentile_interval,
)
from verbcal.evaluation.splits import (
    Split,
    calibration_size,
    check_split,
    keyed_split,
    repeated_splits,
    split_rng,
    stratified_split,
)

__all__ = [
    "Evaluation",
    "MethodScore",
    "PairedDifference",
    "Split",
    "calibration_size",
    "check_split",
    "evaluate_split",
    "evaluate_splits",
    "fit_methods",
    "keyed_split",
    "mean_sd_rows",
    "paired_bootstrap",
    "paired_over_splits",
    "percentile_interval",
    "repeated_splits",
    "split_rng",
    "stratified_split",
    "variants",
]
