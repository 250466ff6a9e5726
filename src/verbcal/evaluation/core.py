"""The evaluation loop: fit on the calibration part only, score on the test part.

:func:`evaluate_splits` is the one loop behind ``compare``, ``run`` and ``study``: for
each :class:`~verbcal.evaluation.splits.Split`, every method is fitted on
``probs[split.calib]`` (:func:`fit_methods`) and scored on ``probs[split.test]``
(:func:`verbcal.metrics.summary`). Nothing fitted ever sees a test item.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal.calibration import AutoCalibrator, Calibrator, reply_options
from verbcal.calibration.specs import Variant, parse_spec
from verbcal.evaluation.results import Evaluation, MethodScore, PairedDifference
from verbcal.evaluation.splits import Split
from verbcal.metrics import DEFAULT_BINS, _boot_chunk, bootstrap_ci, bootstrap_indices, summary

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Options = Mapping[str, Mapping[str, Any]]
"""Constructor options per method spec, overriding the spec's own (e.g. a fixed floor)."""


def variants(
    methods: Sequence[str] | Sequence[Variant],
    options: Options | None = None,
    reply: str = "probs",
) -> list[Variant]:
    """The methods as variants, ``options`` merged into each spec's options.

    ``reply="verbal"`` (confidence read from words) adds
    :func:`~verbcal.calibration.reply_options` (``auto`` weighs ``words`` unless its spec or
    ``options`` name candidates), as :func:`~verbcal.calibration.make_calibrator` does.
    """
    out = []
    for method in methods:
        variant = method if isinstance(method, Variant) else parse_spec(method)
        extra = dict((options or {}).get(variant.name, {}))
        extra |= reply_options(variant, reply, extra)
        if extra:
            variant = Variant(
                variant.name,
                variant.method,
                tuple({**variant.kwargs, **extra}.items()),
                variant.given,
            )
        out.append(variant)
    return out


def fit_methods(
    methods: Sequence[str] | Sequence[Variant],
    probs: FloatArray,
    y: IntArray,
    *,
    labels: Sequence[str] | None = None,
    options: Options | None = None,
    prefitted: Mapping[str, Calibrator] | None = None,
    reply: str = "probs",
) -> dict[str, Calibrator]:
    """Every method fitted on ``(probs, y)``, by name; ``prefitted`` ones are used as given.
    ``reply``: ``probs`` or ``verbal``, which reply the rows were read from (see
    :func:`variants`).

    The floor fitted jointly with T depends only on the data, the floor mode and the
    prior on T, so it is fitted once per such key and handed to every other temperature
    variant that fits it; the result equals fitting each on its own (each such
    calibrator still reports its floor as fitted). ``auto`` takes the methods fitted
    before it as members where they match its candidates, instead of refitting them.
    """
    chosen = variants(methods, options, reply)
    floors: dict[tuple[Any, ...], float] = {}
    fitted: dict[str, Calibrator] = {}
    for variant in chosen:
        if prefitted and variant.name in prefitted:
            fitted[variant.name] = prefitted[variant.name]
            continue
        reuse = floors.get(variant.floor_key) if variant.fits_floor else None
        calibrator = variant.make(floor=reuse)
        if isinstance(calibrator, AutoCalibrator):  # its members may be fitted already
            calibrator.fit(probs, y, labels=labels, reuse=list(fitted.values()))
        else:
            calibrator.fit(probs, y, labels=labels)
        if reuse is not None:
            calibrator.set_params(floor="fit")
        elif variant.fits_floor and calibrator.floor_ is not None:
            floors[variant.floor_key] = calibrator.floor_
        fitted[variant.name] = calibrator
    return fitted


def evaluate_split(
    probs: FloatArray,
    y: IntArray,
    split: Split,
    methods: Sequence[str] | Sequence[Variant],
    *,
    labels: Sequence[str] | None = None,
    n_bins: int = DEFAULT_BINS,
    options: Options | None = None,
    prefitted: Mapping[str, Calibrator] | None = None,
    n_boot: int = 0,
    seed: int = 0,
    reply: str = "probs",
) -> list[MethodScore]:
    """Every method fitted on the calibration part of ``split`` and scored on its test part.

    ``n_boot > 0`` adds percentile bootstrap intervals over the test items (``seed``).
    """
    fitted = fit_methods(
        methods,
        probs[split.calib],
        y[split.calib],
        labels=labels,
        options=options,
        prefitted=prefitted,
        reply=reply,
    )
    p_test, y_test = probs[split.test], y[split.test]
    scores = []
    for name, calibrator in fitted.items():
        q = calibrator.predict_proba(p_test)
        ci = bootstrap_ci(q, y_test, n_boot=n_boot, seed=seed, n_bins=n_bins) if n_boot else None
        scores.append(
            MethodScore(name, split.repeat, summary(q, y_test, n_bins=n_bins), calibrator, q, ci)
        )
    return scores


def evaluate_splits(
    probs: FloatArray,
    y: IntArray,
    splits: Sequence[Split],
    methods: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    n_bins: int = DEFAULT_BINS,
    options: Options | None = None,
    n_boot: int = 0,
    seed: int = 0,
    on_split: Callable[[Split, list[MethodScore]], None] | None = None,
    reply: str = "probs",
) -> Evaluation:
    """Every method on every split (see :func:`evaluate_split`), as one :class:`Evaluation`.

    ``methods`` are method specs (:mod:`verbcal.calibration.specs`), validated before any
    fit; ``on_split`` is called after each split with its scores.
    """
    chosen = variants(methods, options, reply)
    scores: list[MethodScore] = []
    for split in splits:
        mine = evaluate_split(
            probs, y, split, chosen, labels=labels, n_bins=n_bins, n_boot=n_boot, seed=seed
        )
        scores.extend(mine)
        if on_split is not None:
            on_split(split, mine)
    names = tuple(v.name for v in chosen)
    return Evaluation(names, tuple(splits), tuple(scores), np.asarray(y), n_bins)


def paired_bootstrap(
    a: MethodScore,
    b: MethodScore,
    y_test: IntArray,
    metric: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    n_bins: int = DEFAULT_BINS,
) -> PairedDifference:
    """a − b on one test part, with a percentile bootstrap interval over its items.

    Both methods are scored on the same resamples (:func:`verbcal.metrics.bootstrap_indices`
    with ``seed``), so the interval is of the paired difference. Resamples where the
    metric is nan for either method (AUROC with one class) are left out.
    """
    if a.repeat != b.repeat:
        raise ValueError(f"{a.method} and {b.method} come from different splits: not paired")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got {n_boot} and {level}")
    y_arr = np.asarray(y_test, dtype=np.int64)
    diffs = [
        _boot_chunk(a.q_test, y_arr, idx, [metric], n_bins)[metric]
        - _boot_chunk(b.q_test, y_arr, idx, [metric], n_bins)[metric]
        for idx in bootstrap_indices(len(y_arr), n_boot, seed)
    ]
    values = np.concatenate(diffs)
    values = values[~np.isnan(values)]
    mean = a.metrics[metric] - b.metrics[metric]
    if not len(values):
        nan = float("nan")
        return PairedDifference(
            a.method, b.method, metric, mean, nan, nan, nan, 0, "bootstrap", level
        )
    lo, hi = np.percentile(values, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    share = float(np.mean(values > 0))
    return PairedDifference(
        a.method,
        b.method,
        metric,
        mean,
        float(lo),
        float(hi),
        share,
        len(values),
        "bootstrap",
        level,
    )


__all__ = ["evaluate_split", "evaluate_splits", "fit_methods", "paired_bootstrap", "variants"]
