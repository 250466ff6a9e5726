"""CLI commands for decisions: ``verbcal threshold`` and ``verbcal selective``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from numpy.typing import NDArray
from rich.table import Table

from verbcal.cli import options as opt
from verbcal.cli.app import app, console, err_console
from verbcal.cli.calibrate import (
    DataOption,
    JsonOption,
    LabelsOption,
    friendly_errors,
    load_calibrator,
    load_labelled,
)
from verbcal.decide import (
    SelectiveResult,
    ThresholdResult,
    accuracy_at_coverage,
    aurc,
    clopper_pearson_lower,
    pr_curve,
    risk_coverage,
    selective_threshold,
    threshold_for,
)
from verbcal.predictions import Predictions

CalibratorOption = Annotated[
    Path | None,
    typer.Option(help="A calibrator from `verbcal fit`, applied before deciding (recommended)."),
]
ConfidenceOption = opt.Confidence
COVERAGE_LEVELS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
BOUND_MEANING = (
    "The lower bound: if these labelled items are representative of new ones, the true {what} "
    "is at least this value with {conf:g} confidence. It is exact for a threshold fixed in "
    "advance; picking the threshold among {n} operating points makes it approximate (in "
    "simulation it held in about {conf:.0%} of repeats, far more often than the point estimate)."
)


def _load(
    data: str, calibrator: Path | None, labels: str | None, action: str
) -> tuple[Predictions, NDArray[np.float64], str]:
    """Labelled predictions, their (calibrated) probabilities, and a description of which."""
    fitted = load_calibrator(calibrator) if calibrator else None
    predictions = load_labelled(data, labels, action, fitted)
    if fitted is None:
        err_console.print(
            "no --calibrator: deciding on the verbalized probabilities as they are", style="dim"
        )
        return predictions, predictions.probs, "verbalized (uncalibrated)"
    return predictions, fitted.predict_proba(predictions.probs), f"{fitted.method} calibrator"


def _class_index(predictions: Predictions, name: str) -> int:
    if name in predictions.labels:
        return predictions.labels.index(name)
    folded = [label for label in predictions.labels if label.lower() == name.lower()]
    if len(folded) == 1:
        return predictions.labels.index(folded[0])
    raise ValueError(
        f"unknown class {name!r}: the labels of {predictions.source} are "
        f"{', '.join(predictions.labels)}; pass one of them to --class"
    )


def _f(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


@app.command()
def threshold(
    data: DataOption,
    class_name: Annotated[
        str, typer.Option("--class", "-c", help="The class to threshold (a label name).")
    ],
    calibrator: CalibratorOption = None,
    precision: Annotated[
        float | None,
        typer.Option(
            callback=opt.open_unit,
            help=f"Target precision (default {opt.DEFAULT_PRECISION} when neither target is given).",
        ),
    ] = None,
    recall: Annotated[
        float | None, typer.Option(callback=opt.open_unit, help="Target recall instead.")
    ] = None,
    confidence: ConfidenceOption = 0.95,
    labels: LabelsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find the probability threshold for a class that meets a precision (or recall) target.

    An item counts as predicted CLASS when its probability of CLASS is >= the threshold.
    With --precision, the smallest threshold whose one-sided Clopper-Pearson lower bound on
    precision (at --confidence) reaches the target on the labelled data; with --recall, the
    largest threshold whose lower bound on recall reaches it. If no threshold does, it says
    so (JSON "reachable": false, exit status 0) and what would help.

    Example: verbcal threshold --data recorded:tweets --calibrator ts.json --class positive --precision 0.9
    """
    with friendly_errors():
        if precision is not None and recall is not None:
            raise ValueError("give --precision or --recall, not both")
        predictions, q, what = _load(data, calibrator, labels, "choosing a threshold")
        cls = _class_index(predictions, class_name)
        if precision is None and recall is None:
            precision = opt.DEFAULT_PRECISION
        result = threshold_for(
            q, predictions.y, cls, precision=precision, recall=recall, confidence=confidence
        )
        curve = pr_curve(q, predictions.y, cls)
    label = predictions.labels[cls]
    if as_json:
        out: dict[str, Any] = {
            "threshold": result.threshold,
            "precision": result.precision,
            "precision_lower_bound": result.precision_lower_bound,
            "recall": result.recall,
            "support": result.support,
            "reachable": result.reachable,
        }
        # one name per key: the class is given by name ("class"), not also by index ("cls")
        out.update({k: v for k, v in result.to_dict().items() if k not in out and k != "cls"})
        out.update({"class": label, "n": len(predictions), "probabilities": what})
        print(json.dumps(out))
        return
    _show_threshold(predictions, q, what, label, result, curve)


def _show_threshold(
    predictions: Predictions,
    q: NDArray[np.float64],
    what: str,
    label: str,
    result: ThresholdResult,
    curve: Any,
) -> None:
    n = len(predictions)
    console.print(
        f"[bold]{predictions.source}[/], {what}: class [bold]{label}[/], {n} labelled items, "
        f"{result.support} of them {label}",
        highlight=False,
    )
    console.print(
        f"P({label}) takes {curve.n_operating_points} distinct values, so there are "
        f"{curve.n_operating_points} operating points"
        + (
            " (a coarse grid: the threshold can only jump between them)"
            if curve.n_operating_points < 25
            else ""
        ),
        highlight=False,
    )
    target = f"{result.metric} >= {result.target:g} at confidence {result.confidence:g}"
    if result.reachable:
        console.print(
            f"[bold green]threshold {result.threshold:.6g}[/] for {target}: predict "
            f"[bold]{label}[/] when P({label}) >= {result.threshold:.6g}",
            highlight=False,
        )
    else:
        console.print(f"[bold yellow]no threshold reaches {target}[/]", highlight=False)
        console.print(result.note, highlight=False)
    table = Table(
        title="operating points near the choice"
        if result.reachable
        else "operating points near the best bound"
    )
    for column in ("threshold", "predicted", "correct", "precision", "lower bound", "recall"):
        table.add_column(column, justify="right")
    chosen = int(np.searchsorted(curve.n_predicted, result.n_predicted))
    lo, hi = max(0, chosen - 5), min(curve.n_operating_points, chosen + 6)
    bounds = clopper_pearson_lower(
        curve.true_positives[lo:hi], curve.n_predicted[lo:hi], result.confidence
    )
    for j, bound in zip(range(lo, hi), bounds, strict=True):
        row = [
            f"{curve.thresholds[j]:.6g}",
            str(curve.n_predicted[j]),
            str(curve.true_positives[j]),
            _f(curve.precision[j]),
            _f(float(bound)),
            _f(curve.recall[j]),
        ]
        style = "bold" if j == chosen else None
        table.add_row(*row, style=style)
    console.print(table)
    if result.reachable:
        console.print(
            f"at the threshold: precision {_f(result.precision)} (lower bound "
            f"{_f(result.precision_lower_bound)}), recall {_f(result.recall)} (lower bound "
            f"{_f(result.recall_lower_bound)}), {result.n_predicted} of {n} items predicted "
            f"{label}",
            highlight=False,
        )
    what_bound = "precision" if result.metric == "precision" else "recall"
    console.print(
        BOUND_MEANING.format(what=what_bound, conf=result.confidence, n=result.n_operating_points),
        style="dim",
        highlight=False,
    )


@app.command()
def selective(
    data: DataOption,
    calibrator: CalibratorOption = None,
    coverage: Annotated[
        float, typer.Option(help="Share of items to answer (the most confident), in (0, 1].")
    ] = 0.8,
    accuracy: Annotated[
        float | None,
        typer.Option(
            callback=opt.open_unit,
            help="Also find the confidence threshold for this selective accuracy.",
        ),
    ] = None,
    confidence: ConfidenceOption = 0.95,
    labels: LabelsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Selective prediction: answer the most confident items, abstain on the rest.

    Reports the accuracy of the most confident --coverage share, the area under the
    risk-coverage curve (AURC, lower is better) and, with --accuracy, the smallest
    confidence threshold (max probability) whose one-sided Clopper-Pearson lower bound on
    the accuracy of the answered items reaches the target.

    Example: verbcal selective --data recorded:tweets --calibrator ts.json --coverage 0.8 --accuracy 0.9
    """
    with friendly_errors():
        if not 0.0 < coverage <= 1.0:
            raise ValueError(f"--coverage must lie in (0, 1], got {coverage}")
        predictions, q, what = _load(data, calibrator, labels, "selective prediction")
        y = predictions.y
        curve = risk_coverage(q, y)
        area = aurc(q, y)
        at = accuracy_at_coverage(q, y, coverage)
        levels = sorted({*COVERAGE_LEVELS, coverage}, reverse=True)
        table_at = {c: accuracy_at_coverage(q, y, c) for c in levels}
        result = (
            selective_threshold(q, y, accuracy=accuracy, confidence=confidence)
            if accuracy is not None
            else None
        )
    if as_json:
        out: dict[str, Any] = {
            "n": len(predictions),
            "probabilities": what,
            "coverage": coverage,
            "accuracy_at_coverage": at,
            "accuracy": float(curve.accuracy[-1]),
            "aurc": area,
            "n_operating_points": curve.n_operating_points,
            "curve": {
                "threshold": curve.thresholds.tolist(),
                "coverage": curve.coverage.tolist(),
                "risk": curve.risk.tolist(),
            },
        }
        if result is not None:
            out["target"] = result.to_dict()
        print(json.dumps(out))
        return
    _show_selective(predictions, what, curve, area, coverage, table_at, result)


def _show_selective(
    predictions: Predictions,
    what: str,
    curve: Any,
    area: float,
    coverage: float,
    table_at: dict[float, float],
    result: SelectiveResult | None,
) -> None:
    n = len(predictions)
    console.print(
        f"[bold]{predictions.source}[/], {what}: {n} labelled items; confidence = the largest "
        f"probability, the answer = its label",
        highlight=False,
    )
    console.print(
        f"{curve.n_operating_points} distinct confidence values, so {curve.n_operating_points} "
        "operating points (tied items are answered or dropped together; a coverage between "
        "two points shares a tie out evenly)",
        highlight=False,
    )
    table = Table(title="accuracy of the most confident items")
    table.add_column("coverage", justify="right")
    table.add_column("answered", justify="right")
    table.add_column("accuracy", justify="right")
    for level, acc in table_at.items():
        style = "bold" if level == coverage else None
        table.add_row(f"{level:.0%}", str(max(1, round(level * n))), _f(acc), style=style)
    console.print(table)
    console.print(
        f"accuracy at {coverage:.0%} coverage: [bold]{_f(table_at[coverage])}[/] "
        f"(all items: {_f(float(curve.accuracy[-1]))}); AURC {_f(area)} (lower is better)",
        highlight=False,
    )
    if result is None:
        return
    if result.reachable:
        console.print(
            f"[bold green]answer when confidence >= {result.threshold:.6g}[/]: "
            f"{result.n_kept} of {n} items ({result.coverage:.1%} coverage), accuracy "
            f"{_f(result.accuracy)}, lower bound {_f(result.accuracy_lower_bound)} for target "
            f"{result.target:g}",
            highlight=False,
        )
    else:
        console.print(
            f"[bold yellow]no confidence threshold reaches accuracy {result.target:g}[/]",
            highlight=False,
        )
        console.print(result.note, highlight=False)
    console.print(
        BOUND_MEANING.format(
            what="accuracy of the answered items",
            conf=result.confidence,
            n=result.n_operating_points,
        ),
        style="dim",
        highlight=False,
    )
