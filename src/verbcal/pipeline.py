"""The pipeline behind ``verbcal run``: elicit → parse → split → calibrate → evaluate →
thresholds → report.

A run directory holds::

    predictions.jsonl        every record (from the LLM, or copied from --data)
    split.json               which ids went to calibration and which to test (and why some to neither)
    calibration.jsonl        the records of the calibration part (``verbcal split`` writes the same)
    test.jsonl               the records of the test part
    calibrators/<method>.json  each calibrator, fitted on the calibration part only
    recommended.json         a copy of the recommended calibrator, for ``verbcal apply``
    metrics.json             test metrics with bootstrap CIs, cross-validated NLL on the
                             calibration part, thresholds, selective prediction, decisions
                             (abstain band, conformal sets, costs, bands, slices), run facts
    report.html              the self-contained report (``verbcal report`` rebuilds it)

Honesty rules: every choice (calibrator parameters, floors, the best alternative method,
the recommended method, the thresholds) is made on the calibration part; the test part
is only ever scored.
"""

from __future__ import annotations

import math
import platform
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal import __version__, datasets, provenance
from verbcal.calibration import AutoCalibrator, candidates_for, specs, uncalibrated
from verbcal.decide import DEFAULT_PRECISION
from verbcal.evaluation import MethodScore, Split, check_split, evaluate_split, stratified_split
from verbcal.jsonio import json_ready, write_json
from verbcal.metrics import (
    CONFIDENCE_BANDS,
    DEFAULT_BINS,
    METRICS,
    by_band,
    by_slice,
    summary,
)
from verbcal.predictions import (
    Predictions,
    PredictionsError,
    field_values,
    reading_options,
    write_jsonl,
)
from verbcal.run_metrics import FORMAT, VERSION, MethodResult, RunMetrics

DEFAULT_METHODS: tuple[str, ...] = ("identity", "resoftmax", "temperature", "best")
"""``best`` stands for the best of :data:`ALTERNATIVES` by cross-validated NLL on the calibration
part; the recommended method is ``auto``'s choice (added when not listed)."""
ALTERNATIVES: tuple[str, ...] = ("vector", "matrix", "platt", "isotonic", "histogram")
COVERAGES = (0.5, 0.8, 0.9)
"""Coverages at which the selective accuracy is reported."""
MIN_ITEMS = 10


class RunError(ValueError):
    """A run that cannot go ahead as asked; the message says what to change."""


@dataclass(frozen=True)
class RunOptions:
    """What to fit and how to judge it (see ``verbcal run --help``)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    calib_frac: float = 0.5
    seed: int = 0
    precision: float = DEFAULT_PRECISION
    confidence: float = 0.95
    n_boot: int = 1000
    n_bins: int = DEFAULT_BINS
    cv_folds: int = 5
    report: bool = True
    alpha: float = 0.1
    """Miscoverage of the conformal prediction sets (coverage >= 1 - alpha)."""
    abstain_cost: float = 0.3
    """Cost of abstaining in the cost comparison (a wrong answer costs 1, a right one 0)."""
    by: str | None = None
    """A record field to slice the test metrics by (None: no slices)."""

    def check(self) -> None:
        if not self.methods:
            raise RunError("give at least one method")
        try:
            specs.parse_specs(",".join(self.methods), also=("best",))
        except specs.MethodError as exc:
            raise RunError(str(exc)) from exc
        if not 0 < self.calib_frac < 1:
            raise RunError(f"--calib-frac must lie in (0, 1), got {self.calib_frac}")
        if not (0 < self.precision < 1 and 0 < self.confidence < 1):
            raise RunError("--precision and --confidence must lie in (0, 1)")
        if self.cv_folds < 2:
            raise RunError("cv_folds must be at least 2")
        if not 0 < self.alpha < 1:
            raise RunError(f"--alpha must lie in (0, 1), got {self.alpha}")
        if not 0 <= self.abstain_cost <= 1:
            raise RunError(f"--abstain-cost must lie in [0, 1], got {self.abstain_cost}")
        if self.n_bins < 1 or self.n_boot < 1:
            raise RunError("--bins and --boot must be at least 1")


@dataclass
class RunResult:
    """Where the run went and its headline numbers."""

    out: Path
    metrics: dict[str, Any]
    report: Path | None
    notes: list[str] = field(default_factory=list)
    elicitation: Any = None
    """The :class:`~verbcal.elicit.ElicitResult` of a run that asked an LLM (else None)."""

    @property
    def recommended(self) -> str:
        return str(self.metrics["recommended"])


def parse_methods(spec: str) -> tuple[str, ...]:
    """``default``, or what :func:`verbcal.calibration.parse_methods` takes (``best`` allowed)."""
    text = spec.strip()
    if text in ("", "default"):
        return DEFAULT_METHODS
    return tuple(specs.parse_specs(text, also=("best",)))


# ---------------------------------------------------------------- the analysis


def status_counts(predictions: Predictions) -> dict[str, int]:
    """Parse status per record: the ``status`` field where the elicit step wrote one."""
    counts: Counter[str] = Counter()
    for record in predictions.records:
        status = record.get("status")
        if not isinstance(status, str):
            status = "ok" if record.get("probs") is not None else "failed"
        counts[status] += 1
    return dict(counts)


def _thresholds(
    q_calib: NDArray[np.float64],
    y_calib: NDArray[np.int64],
    q_test: NDArray[np.float64],
    y_test: NDArray[np.int64],
    labels: Sequence[str],
    precision: float,
    confidence: float,
) -> dict[str, dict[str, Any]]:
    """Per class: the threshold chosen on calibration, and what it gives on test."""
    from verbcal.decide import apply_threshold, threshold_for

    out: dict[str, dict[str, Any]] = {}
    for k, label in enumerate(labels):
        result = threshold_for(q_calib, y_calib, k, precision=precision, confidence=confidence)
        entry: dict[str, Any] = {"calibration": json_ready(result.to_dict())}
        if result.reachable and result.threshold is not None:
            chosen = apply_threshold(q_test[:, k], result.threshold)
            hits = int(np.sum(chosen & (y_test == k)))
            n_pos = int(np.sum(y_test == k))
            entry["test"] = {
                "predicted": int(chosen.sum()),
                "precision": hits / int(chosen.sum()) if chosen.any() else None,
                "recall": hits / n_pos if n_pos else None,
                "support": n_pos,
            }
        out[label] = entry
    return out


def _decisions(
    q_calib: NDArray[np.float64],
    y_calib: NDArray[np.int64],
    q_test: NDArray[np.float64],
    y_test: NDArray[np.int64],
    labels: Sequence[str],
    options: RunOptions,
    slice_keys: list[Any] | None,
) -> dict[str, Any]:
    """Abstain bands, conformal sets and costs chosen on calibration, scored on test; the
    test metrics per confidence band and, with ``options.by``, per slice."""
    from verbcal.decide import CostMatrix, abstain_band, cost_report, fit_sets, set_summary
    from verbcal.decide.sets import SCORES

    abstain: dict[str, Any] = {}
    for k, label in enumerate(labels):
        band = abstain_band(
            q_calib, y_calib, k, precision=options.precision, confidence=options.confidence
        )
        abstain[label] = {
            "upper": band.upper,
            "lower": band.lower,
            "calibration": band.evaluate(q_calib, y_calib),
            "test": band.evaluate(q_test, y_test),
        }
    sets: dict[str, Any] = {}
    for score in SCORES:
        fitted = fit_sets(q_calib, y_calib, alpha=options.alpha, score=score)
        sets[score] = {**set_summary(fitted.predict(q_test), y_test), **fitted.to_dict()}
    costs = CostMatrix.zero_one(labels, options.abstain_cost)
    out: dict[str, Any] = {
        "abstain": abstain,
        "sets": sets,
        "cost": cost_report(q_test, y_test, costs),
        "bands": by_band(q_test, y_test, n_bins=options.n_bins),
    }
    if slice_keys is not None:
        slices = by_slice(q_test, y_test, slice_keys, options.n_boot, options.seed, options.n_bins)
        out["slices"] = {
            name: {**entry, "ci": {m: list(v) for m, v in entry["ci"].items()}}  # type: ignore[attr-defined]
            for name, entry in slices.items()
        }
    return json_ready(out)  # type: ignore[no-any-return]


def _selective(q: NDArray[np.float64], y: NDArray[np.int64]) -> dict[str, Any]:
    """AURC and the accuracy of the most confident share of the test items."""
    from verbcal.decide import accuracy_at_coverage, aurc

    return {
        "aurc": aurc(q, y),
        "accuracy_at_coverage": {f"{c:g}": accuracy_at_coverage(q, y, c) for c in COVERAGES},
    }


@dataclass
class Choice:
    """What the calibration part chose: auto, the best alternative, the methods to report."""

    auto: AutoCalibrator
    cv: dict[str, float]
    """Cross-validated NLL on the calibration part by method (auto's candidates, and the
    alternatives when ``best`` was asked for)."""
    best_alternative: str | None
    recommended: str
    methods: list[str]


def analyse(
    predictions: Predictions,
    out: Path,
    options: RunOptions,
    run_info: dict[str, Any],
) -> dict[str, Any]:
    """Split, fit, score and pick thresholds; write calibrators, split.json and metrics.json."""
    options.check()
    labelled = predictions.labelled()
    labels = list(predictions.labels)
    check_enough(len(labelled))
    calib_idx, test_idx = split_labelled(
        labelled, options.calib_frac, np.random.default_rng(options.seed)
    )
    split = Split(calib_idx, test_idx)
    p_cal, y_cal = labelled.probs[calib_idx], labelled.y[calib_idx]
    y_test = labelled.y[test_idx]
    notes = _split_notes(y_cal, labels, options)
    choice = choose(p_cal, y_cal, labels, options)
    (out / "calibrators").mkdir(parents=True, exist_ok=True)
    choice.auto.save(out / "calibrators" / "auto.json")
    scores = {
        s.method: s
        for s in evaluate_split(
            labelled.probs,
            labelled.y,
            split,
            choice.methods,
            labels=labels,
            n_bins=options.n_bins,
            prefitted={choice.recommended: choice.auto.calibrator_},
            n_boot=options.n_boot,
            seed=options.seed,
        )
    }
    results: dict[str, MethodResult] = {}
    for method, score in scores.items():
        score.calibrator.save(out / "calibrators" / f"{method}.json")
        results[method] = _method_result(score, choice)
    notes += _fit_notes(results, choice, labelled.probs[test_idx], y_test, len(y_cal), options)
    shutil.copyfile(out / "calibrators" / f"{choice.recommended}.json", out / "recommended.json")
    slice_keys = [field_values(labelled, options.by)[i] for i in test_idx] if options.by else None
    for method, score in scores.items():
        q_cal, q_test = score.calibrator.predict_proba(p_cal), score.q_test
        results[method].thresholds = _thresholds(
            q_cal, y_cal, q_test, y_test, labels, options.precision, options.confidence
        )
        results[method].selective = _selective(q_test, y_test)
        results[method].decisions = _decisions(
            q_cal, y_cal, q_test, y_test, labels, options, slice_keys
        )
    write_json(out / "split.json", _split_record(predictions, labelled, split, options))
    write_parts(labelled, calib_idx, test_idx, out)
    metrics = _run_metrics(predictions, labelled, split, options, run_info, choice, results, notes)
    written = metrics.to_dict()
    write_json(out / "metrics.json", written)
    return written


def choose(
    p_cal: NDArray[np.float64],
    y_cal: NDArray[np.int64],
    labels: Sequence[str],
    options: RunOptions,
) -> Choice:
    """auto fitted on the calibration part; with ``best`` in the methods, the alternative
    with the lowest cross-validated NLL on auto's folds; the methods to fit and report."""
    auto = AutoCalibrator(  # with words among the candidates when the replies are verbal
        candidates=list(candidates_for(reading_options().source)),
        folds=options.cv_folds,
        seed=options.seed,
    )
    auto.fit(p_cal, y_cal, labels=labels)
    cv = {row["method"]: _nan(row["cv_nll"]) for row in auto.cv_}
    best_alternative = None
    if "best" in options.methods:
        table = auto.cross_validate(p_cal, y_cal, candidates=ALTERNATIVES, labels=labels)
        cv |= {row["method"]: _nan(row["cv_nll"]) for row in table}
        scored = [(cv[m], m) for m in ALTERNATIVES if not math.isnan(cv.get(m, math.nan))]
        if not scored:
            raise RunError("no alternative calibrator could be fitted on the calibration part")
        best_alternative = min(scored)[1]
    recommended = "auto" if auto.chosen_ == "stack" else auto.chosen_
    methods: list[str] = list(
        dict.fromkeys(
            [(best_alternative or "") if m == "best" else m for m in options.methods]
            + [recommended]
        )
    )
    return Choice(auto, cv, best_alternative, recommended, methods)


def _split_notes(y_cal: NDArray[np.int64], labels: Sequence[str], options: RunOptions) -> list[str]:
    """Labels missing from the calibration part, and labels with fewer items than folds."""
    notes: list[str] = []
    missing = [labels[k] for k in range(len(labels)) if not np.any(y_cal == k)]
    if missing:
        notes.append(f"no calibration item has the gold label {', '.join(missing)}")
    per_label = np.bincount(y_cal, minlength=len(labels))
    smallest = int(per_label[per_label > 0].min())
    asked = max(2, min(options.cv_folds, len(y_cal) // 2))
    if smallest < asked:
        notes.append(f"a label has only {smallest} calibration items, fewer than the {asked} folds")
    return notes


def _method_result(score: MethodScore, choice: Choice) -> MethodResult:
    """A method's entry of metrics.json (thresholds and decisions are added later)."""
    method, calibrator = score.method, score.calibrator
    assert score.ci is not None, "the run asks for bootstrap intervals"
    return MethodResult(
        role=_role(method, choice.best_alternative, choice.recommended),
        calibrator=f"calibrators/{method}.json",
        params=calibrator.state,
        floor={
            "value": calibrator.floor_,
            "mode": calibrator.floor_mode_name,
            "fitted": calibrator.floor_is_fitted,
            "used": calibrator.uses_floor,
            "describe": calibrator.describe_floor(),
        },
        fit=calibrator.fit_info,
        warnings=calibrator.warnings,
        cv_nll=choice.cv.get(method, math.nan),
        test=score.metrics,
        ci={m: list(score.ci[m]) for m in METRICS},
    )


def _fit_notes(
    results: dict[str, MethodResult],
    choice: Choice,
    p_test: NDArray[np.float64],
    y_test: NDArray[np.int64],
    n_calibration: int,
    options: RunOptions,
) -> list[str]:
    """Fit warnings, and a note when the recommendation is worse than no calibration on test."""
    notes = [
        f"{method}: " + "; ".join(result.warnings)
        for method, result in results.items()
        if result.warnings and method != "identity"
    ]
    raw = results["identity"].test if "identity" in results else None
    if raw is None:
        raw = summary(uncalibrated(p_test), y_test, n_bins=options.n_bins)
    recommended = choice.recommended
    worse = [m for m in ("nll", "ece") if results[recommended].test[m] > raw[m]]
    if worse:
        notes.append(
            f"the recommended {recommended} does worse than the uncalibrated distribution on "
            f"the test part ({', '.join(worse)}); it was chosen on the {n_calibration} "
            f"calibration items only, and a test part of {len(y_test)} items is noisy"
        )
    return notes


def _split_record(
    predictions: Predictions, labelled: Predictions, split: Split, options: RunOptions
) -> dict[str, Any]:
    """split.json: the ids of each part, and why records went to neither."""
    usable_rows = set(predictions.rows.tolist())
    return {
        "seed": options.seed,
        "calib_frac": options.calib_frac,
        "stratified_by": "gold label",
        "calibration": [labelled.ids[i] for i in split.calib],
        "test": [labelled.ids[i] for i in split.test],
        "left_out": {
            "no_distribution": [
                str(r.get("id", i))
                for i, r in enumerate(predictions.records)
                if i not in usable_rows
            ],
            "no_gold_label": [
                predictions.ids[i] for i in range(len(predictions)) if predictions.y[i] < 0
            ],
        },
    }


def _run_metrics(
    predictions: Predictions,
    labelled: Predictions,
    split: Split,
    options: RunOptions,
    run_info: dict[str, Any],
    choice: Choice,
    results: dict[str, MethodResult],
    notes: list[str],
) -> RunMetrics:
    """metrics.json: the run's facts, conventions, choices and per-method results."""
    labels = list(predictions.labels)
    y_cal, y_test = labelled.y[split.calib], labelled.y[split.test]
    auto = choice.auto
    return RunMetrics(
        format=FORMAT,
        version=VERSION,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        verbcal=__version__,
        python=platform.python_version(),
        run=run_info,
        labels=labels,
        n_records=len(predictions.records),
        n_usable=len(predictions),
        n_labelled=len(labelled),
        n_calibration=len(split.calib),
        n_test=len(split.test),
        status_counts=status_counts(predictions),
        label_counts={
            "calibration": dict(
                zip(labels, np.bincount(y_cal, minlength=len(labels)).tolist(), strict=True)
            ),
            "test": dict(
                zip(labels, np.bincount(y_test, minlength=len(labels)).tolist(), strict=True)
            ),
        },
        options={**asdict(options), "methods": list(options.methods)},
        conventions={
            "ece": f"top-label, {options.n_bins} equal-width bins",
            "ci": f"{options.n_boot} percentile bootstrap resamples of the test items, 95%",
            "cv": (
                f"{auto.cv_[0]['folds']}-fold stratified cross-validated NLL on the calibration "
                f"part, {auto.cv_[0]['repeats']} shufflings; recommended = auto "
                f"(rule {auto.rule}): {auto.describe()}"
            ),
            "thresholds": (
                f"per class, a threshold whose true precision is at least {options.precision} "
                f"with confidence {options.confidence}, the choice included (Learn-then-Test, "
                "Bonferroni over data-independent ranks, exact binomial tests), chosen on the "
                "calibration part and checked on the test part"
            ),
            "decisions": (
                f"abstain band: per class, accept and reject thresholds each with precision "
                f">= {options.precision} at confidence {options.confidence} (Learn-then-Test), "
                f"chosen on the calibration part; sets: split conformal (LAC, APS) at alpha "
                f"{options.alpha} calibrated on the calibration part; cost: Bayes actions, a "
                f"wrong answer costs 1, abstaining {options.abstain_cost}; bands: confidence "
                f"edges {CONFIDENCE_BANDS[0]} and {CONFIDENCE_BANDS[1]}; all scored on the "
                "test part"
            ),
        },
        cv_nll=choice.cv,
        best_alternative=choice.best_alternative,
        recommended=choice.recommended,
        auto={
            "cv": auto.cv_,
            "reason": auto.reason_,
            "chosen": auto.chosen_,
            "built": auto.describe(),
        },
        baseline="identity: the verbalized distribution normalised to sum 1, nothing fitted",
        methods=results,
        notes=notes + list(predictions.notes),
    )


def split_labelled(
    labelled: Predictions, calib_frac: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The calibration/test split of a run: stratified by gold label, every label on both sides."""
    check_split(labelled.y, calib_frac, labelled.labels)
    return stratified_split(labelled.y, calib_frac, rng)


def write_parts(
    labelled: Predictions, calib_idx: NDArray[np.int64], test_idx: NDArray[np.int64], out: Path
) -> dict[str, Path]:
    """``calibration.jsonl`` and ``test.jsonl``: the records of each part, as read."""
    paths = {}
    for name, index in (("calibration", calib_idx), ("test", test_idx)):
        paths[name] = out / f"{name}.jsonl"
        write_jsonl(paths[name], (labelled.records[labelled.rows[i]] for i in index))
    return paths


def split_file(
    data: str | Path,
    out: str | Path,
    calib_frac: float = 0.5,
    seed: int = 0,
    *,
    labels: Sequence[str] | None = None,
    overwrite: bool = False,
) -> tuple[Predictions, dict[str, Path], NDArray[np.int64], NDArray[np.int64]]:
    """Write ``out/calibration.jsonl`` and ``out/test.jsonl`` exactly as :func:`run` with the
    same seed and share would split ``data`` (only records with a distribution and a gold
    label go to either part)."""
    target = Path(out)
    targets = [target / "calibration.jsonl", target / "test.jsonl"]
    if target.exists() and not target.is_dir():
        raise RunError(f"{target} is a file: --out names a directory to write the two parts to")
    if not overwrite and any(p.exists() for p in targets):
        raise RunError(f"{target} already holds a split; pass --overwrite or another --out")
    predictions = datasets.load(data, labels)
    labelled = predictions.labelled()
    if len(labelled) == 0:
        predictions.require_gold("splitting")
    calib_idx, test_idx = split_labelled(labelled, calib_frac, np.random.default_rng(seed))
    target.mkdir(parents=True, exist_ok=True)
    return predictions, write_parts(labelled, calib_idx, test_idx, target), calib_idx, test_idx


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _role(method: str, best_alternative: str | None, recommended: str) -> str:
    if method in ("identity", specs.UNCALIBRATED):
        return "uncalibrated"
    if method == recommended and method != "temperature":
        return "recommended (auto: built by cross-validated NLL on the calibration part)"
    if method == "resoftmax":
        return "re-softmax (the error the paper warns about)"
    if method == "temperature":
        return "invert softmax + temperature (the paper's method)"
    if method == best_alternative:
        return "best alternative (by cross-validated NLL on the calibration part)"
    return "alternative"


# ---------------------------------------------------------------- entry points


def check_enough(
    n_labelled: int, what: str = "have both a usable distribution and a gold label"
) -> None:
    """Refuse a run on fewer than :data:`MIN_ITEMS` items (before anything is written)."""
    if n_labelled < MIN_ITEMS:
        raise RunError(f"only {n_labelled} items {what}; a run needs at least {MIN_ITEMS}")


def prepare_out(out: str | Path, overwrite: bool = False) -> Path:
    """Create the run directory; refuse to mix with an earlier run unless asked."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunError(f"{path} is a file: --out names the run directory to write")
    if (path / "metrics.json").exists() and not overwrite:
        raise RunError(
            f"{path} already holds a run (metrics.json); pass --overwrite or another --out"
        )
    if overwrite and (path / "calibrators").is_dir():
        shutil.rmtree(path / "calibrators")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_from_predictions(
    predictions: str | Path,
    out: str | Path,
    options: RunOptions | None = None,
    *,
    labels: Sequence[str] | None = None,
    run_info: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> RunResult:
    """A run from an existing predictions file (or ``recorded:<name>``): no LLM calls."""
    opts = options or RunOptions()
    opts.check()
    preds = datasets.load(predictions, labels)
    labelled = preds.labelled()
    check_enough(len(labelled))  # checked before anything is written
    check_split(labelled.y, opts.calib_frac, preds.labels)
    target = prepare_out(out, overwrite)
    dest = target / "predictions.jsonl"
    if datasets.resolve(predictions).resolve() != dest.resolve():
        write_jsonl(dest, preds.records)
    info = {"source": str(predictions), "mode": "predictions", **(run_info or {})}
    return _finish(preds, target, opts, info)


def run(
    task: str | Path,
    items: str | Path,
    out: str | Path,
    elicit_options: Any = None,
    options: RunOptions | None = None,
    *,
    console: Any = None,
    progress: bool = True,
    overwrite: bool = False,
) -> RunResult:
    """Elicit predictions for ``items`` under ``task``, then analyse them like :func:`run_from_predictions`.

    The elicitation store defaults to ``<out>/store.sqlite``, so re-running the same
    command resumes where an interrupted run stopped.
    """
    from dataclasses import replace

    from verbcal.elicit import ElicitOptions, elicit
    from verbcal.task import load_task, read_items

    opts = options or RunOptions()
    opts.check()
    spec = load_task(task)
    eopts = elicit_options or ElicitOptions()
    rows = read_items(items, spec)[: eopts.max_items]  # checked before anything is written
    limit = f" (--max-items {eopts.max_items})" if eopts.max_items else ""
    check_enough(
        sum(1 for row in rows if row.get("label") is not None),
        f"of {items}{limit} have a gold label",
    )
    target = prepare_out(out, overwrite)
    if eopts.store is None:
        eopts = replace(eopts, store=target / "store.sqlite")
    started = time.monotonic()
    result = elicit(
        spec, rows, target / "predictions.jsonl", eopts, console=console, progress=progress
    )
    stats = result.stats
    info = {
        "mode": "elicit",
        "task": {
            "name": spec.name,
            "instruction": spec.instruction,
            "labels": list(spec.labels),
            "file": str(task),
        },
        "items": str(items),
        "backend": result.backend,
        "model": result.model,
        "base_url": eopts.base_url,
        "samples": eopts.samples,
        "temperature": eopts.sample_temperature,
        "requests": {
            "planned": result.n_requests_planned,
            "from_store": result.n_from_store,
            "sent": stats.requests,
            "retries": stats.retries,
        },
        "tokens": {"input": stats.input_tokens, "output": stats.output_tokens},
        "cost_usd": result.cost,
        "elicit_seconds": round(time.monotonic() - started, 3),
        "issue_counts": dict(result.issue_counts.most_common(10)),
        "notes": list(result.notes),
    }
    preds = datasets.load(target / "predictions.jsonl", spec.labels)
    return replace(_finish(preds, target, opts, info), elicitation=result)


def _finish(preds: Predictions, target: Path, opts: RunOptions, info: dict[str, Any]) -> RunResult:
    info.setdefault("provenance", provenance.summarize(preds.records))
    try:
        metrics = analyse(preds, target, opts, info)
    except PredictionsError as exc:
        raise RunError(str(exc)) from exc
    report_path = None
    if opts.report:
        from verbcal.report import write_report

        report_path = write_report(target)
    return RunResult(target, metrics, report_path, list(metrics["notes"]))


__all__ = [
    "ALTERNATIVES",
    "DEFAULT_METHODS",
    "RunError",
    "RunOptions",
    "RunResult",
    "analyse",
    "parse_methods",
    "run",
    "run_from_predictions",
    "split_file",
]
