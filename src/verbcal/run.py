"""``verbcal run``: elicit → parse → split → calibrate → evaluate → thresholds → report.

A run directory holds::

    predictions.jsonl        every record (from the LLM, or copied from --predictions)
    split.json               which ids went to calibration and which to test (and why some to neither)
    calibrators/<method>.json  each calibrator, fitted on the calibration part only
    metrics.json             test metrics with bootstrap CIs, cross-validated NLL on the
                             calibration part, thresholds, selective prediction, run facts
    report.html              the self-contained report (``verbcal report`` rebuilds it)

Honesty rules: every choice (calibrator parameters, floors, the best alternative method,
the recommended method, the thresholds) is made on the calibration part; the test part
is only ever scored.
"""

from __future__ import annotations

import json
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

from verbcal import __version__, datasets
from verbcal.calibration import (
    METHODS,
    AutoCalibrator,
    make_calibrator,
    uncalibrated,
)
from verbcal.calibration import parse_methods as parse_calibrators
from verbcal.compare import stratified_split
from verbcal.metrics import DEFAULT_BINS, METRICS, bootstrap_ci, summary
from verbcal.predictions import Predictions, PredictionsError, write_jsonl

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
    precision: float = 0.9
    confidence: float = 0.95
    n_boot: int = 1000
    n_bins: int = DEFAULT_BINS
    cv_folds: int = 5
    report: bool = True

    def check(self) -> None:
        unknown = [m for m in self.methods if m != "best" and m not in METHODS]
        if unknown or not self.methods:
            raise RunError(
                f"unknown method(s) {unknown or list(self.methods)}; "
                f"choose from best, {', '.join(METHODS)}"
            )
        if not 0 < self.calib_frac < 1:
            raise RunError(f"--calib-frac must lie in (0, 1), got {self.calib_frac}")
        if not (0 < self.precision < 1 and 0 < self.confidence < 1):
            raise RunError("--precision and --confidence must lie in (0, 1)")
        if self.cv_folds < 2:
            raise RunError("cv_folds must be at least 2")


@dataclass
class RunResult:
    """Where the run went and its headline numbers."""

    out: Path
    metrics: dict[str, Any]
    report: Path | None
    notes: list[str] = field(default_factory=list)

    @property
    def recommended(self) -> str:
        return str(self.metrics["recommended"])


def parse_methods(spec: str) -> tuple[str, ...]:
    """``default``, or what :func:`verbcal.calibrate.parse_methods` takes (``best`` allowed)."""
    text = spec.strip()
    if text in ("", "default"):
        return DEFAULT_METHODS
    return tuple(dict.fromkeys(parse_calibrators(text, also=("best",))))


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
    from verbcal.decide import threshold_for

    out: dict[str, dict[str, Any]] = {}
    for k, label in enumerate(labels):
        result = threshold_for(q_calib, y_calib, k, precision=precision, confidence=confidence)
        entry: dict[str, Any] = {"calibration": _jsonable(result.to_dict())}
        if result.reachable and result.threshold is not None:
            chosen = q_test[:, k] >= result.threshold
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


def _selective(q: NDArray[np.float64], y: NDArray[np.int64]) -> dict[str, Any]:
    """AURC and the accuracy of the most confident share of the test items."""
    from verbcal.decide import accuracy_at_coverage, aurc

    return {
        "aurc": aurc(q, y),
        "accuracy_at_coverage": {f"{c:g}": accuracy_at_coverage(q, y, c) for c in COVERAGES},
    }


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
    if len(labelled) < MIN_ITEMS:
        raise RunError(
            f"only {len(labelled)} items have both a usable distribution and a gold label; "
            f"a run needs at least {MIN_ITEMS}"
        )
    rng = np.random.default_rng(options.seed)
    calib_idx, test_idx = stratified_split(labelled.y, options.calib_frac, rng)
    p_cal, y_cal = labelled.probs[calib_idx], labelled.y[calib_idx]
    p_test, y_test = labelled.probs[test_idx], labelled.y[test_idx]
    notes: list[str] = []
    missing = [labels[k] for k in range(len(labels)) if not np.any(y_cal == k)]
    if missing:
        notes.append(f"no calibration item has the gold label {', '.join(missing)}")

    # auto: cross-validated NLL on the calibration part picks the recommendation and "best".
    per_label = np.bincount(y_cal, minlength=len(labels))
    smallest = int(per_label[per_label > 0].min())
    k_folds = max(2, min(options.cv_folds, len(y_cal) // 2))
    if smallest < k_folds:
        notes.append(
            f"a label has only {smallest} calibration items, fewer than the {k_folds} folds"
        )
    auto = AutoCalibrator(folds=options.cv_folds, seed=options.seed)
    auto.fit(p_cal, y_cal, labels=labels)
    cv = {row["method"]: _nan(row["cv_nll"]) for row in auto.cv_}
    best_alternative = None
    if "best" in options.methods:
        others = AutoCalibrator(candidates=ALTERNATIVES, folds=options.cv_folds, seed=options.seed)
        others.fit(p_cal, y_cal, labels=labels)
        cv |= {row["method"]: _nan(row["cv_nll"]) for row in others.cv_}
        scored = [(cv[m], m) for m in ALTERNATIVES if not math.isnan(cv.get(m, math.nan))]
        if not scored:
            raise RunError("no alternative calibrator could be fitted on the calibration part")
        best_alternative = min(scored)[1]
    recommended = auto.chosen_
    methods: list[str] = list(
        dict.fromkeys(
            [(best_alternative or "") if m == "best" else m for m in options.methods]
            + [recommended]
        )
    )
    (out / "calibrators").mkdir(parents=True, exist_ok=True)
    auto.save(out / "calibrators" / "auto.json")

    # Fit on the whole calibration part, score on test.
    results: dict[str, dict[str, Any]] = {}
    q_cal_by: dict[str, NDArray[np.float64]] = {}
    q_test_by: dict[str, NDArray[np.float64]] = {}
    for method in methods:
        if method == recommended:
            calibrator = auto.calibrator_
        else:
            calibrator = make_calibrator(method).fit(p_cal, y_cal, labels=labels)
        path = out / "calibrators" / f"{method}.json"
        calibrator.save(path)
        q_cal_by[method] = calibrator.predict_proba(p_cal)
        q_test_by[method] = q = calibrator.predict_proba(p_test)
        scores = summary(q, y_test, n_bins=options.n_bins)
        ci = bootstrap_ci(
            q, y_test, n_boot=options.n_boot, seed=options.seed, n_bins=options.n_bins
        )
        results[method] = {
            "role": _role(method, best_alternative, recommended),
            "calibrator": f"calibrators/{method}.json",
            "params": calibrator.params,
            "floor": {
                "value": calibrator.floor_,
                "mode": calibrator.floor_mode_name,
                "fitted": calibrator.floor_is_fitted,
                "used": calibrator.uses_floor,
                "describe": calibrator.describe_floor(),
            },
            "fit": calibrator.fit_info,
            "warnings": calibrator.warnings,
            "cv_nll": cv.get(method, math.nan),
            "test": scores,
            "ci": {m: list(ci[m]) for m in METRICS},
        }
    for method in methods:
        if results[method]["warnings"] and method != "identity":
            notes.append(f"{method}: " + "; ".join(results[method]["warnings"]))
    raw = results["identity"]["test"] if "identity" in results else None
    if raw is None:
        raw = summary(uncalibrated(p_test), y_test, n_bins=options.n_bins)
    worse = [m for m in ("nll", "ece") if results[recommended]["test"][m] > raw[m]]
    if worse:
        notes.append(
            f"the recommended {recommended} does worse than the uncalibrated distribution on "
            f"the test part ({', '.join(worse)}); it was chosen on the {len(y_cal)} "
            f"calibration items only, and a test part of {len(y_test)} items is noisy"
        )

    for method in methods:
        results[method]["thresholds"] = _thresholds(
            q_cal_by[method],
            y_cal,
            q_test_by[method],
            y_test,
            labels,
            options.precision,
            options.confidence,
        )
        results[method]["selective"] = _selective(q_test_by[method], y_test)

    usable_rows = set(predictions.rows.tolist())
    split = {
        "seed": options.seed,
        "calib_frac": options.calib_frac,
        "stratified_by": "gold label",
        "calibration": [labelled.ids[i] for i in calib_idx],
        "test": [labelled.ids[i] for i in test_idx],
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
    _write_json(out / "split.json", split)
    metrics = {
        "format": "verbcal-run",
        "version": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "verbcal": __version__,
        "python": platform.python_version(),
        "run": run_info,
        "labels": labels,
        "n_records": len(predictions.records),
        "n_usable": len(predictions),
        "n_labelled": len(labelled),
        "n_calibration": len(calib_idx),
        "n_test": len(test_idx),
        "status_counts": status_counts(predictions),
        "label_counts": {
            "calibration": dict(
                zip(labels, np.bincount(y_cal, minlength=len(labels)).tolist(), strict=True)
            ),
            "test": dict(
                zip(labels, np.bincount(y_test, minlength=len(labels)).tolist(), strict=True)
            ),
        },
        "options": {**asdict(options), "methods": list(options.methods)},
        "conventions": {
            "ece": f"top-label, {options.n_bins} equal-width bins",
            "ci": f"{options.n_boot} percentile bootstrap resamples of the test items, 95%",
            "cv": (
                f"{auto.cv_[0]['folds']}-fold stratified cross-validated NLL on the calibration "
                f"part, averaged over {auto.cv_[0]['repeats']} shufflings; recommended = the "
                "simplest calibrator within one standard error of the best (auto)"
            ),
            "thresholds": (
                f"per class, smallest threshold whose one-sided Clopper-Pearson lower bound "
                f"(confidence {options.confidence}) on precision reaches {options.precision}, "
                "chosen on the calibration part and checked on the test part"
            ),
        },
        "cv_nll": cv,
        "best_alternative": best_alternative,
        "recommended": recommended,
        "auto": {"cv": auto.cv_, "reason": auto.reason_, "chosen": auto.chosen_},
        "baseline": "identity: the verbalized distribution normalised to sum 1, nothing fitted",
        "methods": results,
        "notes": notes + list(predictions.notes),
    }
    _write_json(out / "metrics.json", metrics)
    return metrics


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _role(method: str, best_alternative: str | None, recommended: str) -> str:
    if method == "identity":
        return "uncalibrated"
    if method == recommended and method != "temperature":
        return "recommended (auto: cross-validated NLL, one-standard-error rule)"
    if method == "resoftmax":
        return "re-softmax (the error the paper warns about)"
    if method == "temperature":
        return "invert softmax + temperature (the paper's method)"
    if method == best_alternative:
        return "best alternative (by cross-validated NLL on the calibration part)"
    return "alternative"


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays become Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_json(path: Path, data: Any) -> None:
    """JSON with NaN and infinities written as null (valid JSON for every reader)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(_jsonable(data)), indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- entry points


def prepare_out(out: str | Path, overwrite: bool = False) -> Path:
    """Create the run directory; refuse to mix with an earlier run unless asked."""
    path = Path(out)
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
    target = prepare_out(out, overwrite)
    preds = datasets.load(predictions, labels)
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
    from verbcal.task import load_task

    opts = options or RunOptions()
    opts.check()
    target = prepare_out(out, overwrite)
    spec = load_task(task)
    eopts = elicit_options or ElicitOptions()
    if eopts.store is None:
        eopts = replace(eopts, store=target / "store.sqlite")
    started = time.monotonic()
    result = elicit(
        spec, items, target / "predictions.jsonl", eopts, console=console, progress=progress
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
    return _finish(preds, target, opts, info)


def _finish(preds: Predictions, target: Path, opts: RunOptions, info: dict[str, Any]) -> RunResult:
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
]
