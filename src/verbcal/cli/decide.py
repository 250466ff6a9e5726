"""CLI commands for decisions: ``threshold`` (and its abstain band), ``selective``, ``sets``, ``decide-cost``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from numpy.typing import NDArray
from rich.table import Table

from verbcal import datasets
from verbcal.calibration import Calibrator
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
    AbstainBand,
    SelectiveResult,
    ThresholdResult,
    abstain_band,
    accuracy_at_coverage,
    apply_threshold,
    aurc,
    clopper_pearson_lower,
    pr_curve,
    risk_coverage,
    selective_threshold,
    threshold_for,
)
from verbcal.decide.cost import CostMatrix, cost_report
from verbcal.decide.sets import SCORES, coverage_by_class, fit_sets, set_summary
from verbcal.jsonio import print_json
from verbcal.predictions import Predictions, write_jsonl

CalibratorOption = Annotated[
    Path | None,
    typer.Option(help="A calibrator from `verbcal fit`, applied before deciding (recommended)."),
]
ConfidenceOption = opt.Confidence
COVERAGE_LEVELS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
BOUND_MEANING = (
    "The lower bound: if these labelled items are representative of new ones, the true {what} "
    "is at least this value with {conf:g} confidence. It is exact for a threshold fixed in "
    "advance; picking the threshold among {n} operating points makes it approximate: for the "
    "chosen threshold it can hold less often than {conf:g} (not measured here)."
)
LTT_MEANING = (
    "The guarantee: if these labelled items are representative of new ones, the rule's true "
    "precision is at least {target:g} with {conf:g} confidence, the choice of threshold "
    "included (Learn-then-Test: {k} data-independent ranks, each tested at confidence "
    "{each:.4g}; lower bounds are shown at that confidence)."
)
ProcedureOption = Annotated[
    str,
    typer.Option(
        help="For --precision: ltt-ranks (guarantee covers the choice) or pointwise (old scan)."
    ),
]


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
    procedure: ProcedureOption = "ltt-ranks",
    abstain: Annotated[
        bool,
        typer.Option(
            "--abstain",
            help="Two thresholds: accept CLASS above the upper, reject it below the lower "
            "(each side at the --precision target), abstain in between.",
        ),
    ] = False,
    test: Annotated[
        str | None,
        typer.Option(help="Labelled test predictions: report what the thresholds give there."),
    ] = None,
    labels: LabelsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find the probability threshold for a class that meets a precision (or recall) target.

    An item counts as predicted CLASS when its probability of CLASS is >= the threshold.
    With --precision (procedure ltt-ranks), a threshold whose true precision is at least the
    target with --confidence, the choice of threshold included (Learn-then-Test over
    data-independent ranks, see docs/decisions.md); with --recall, the largest threshold
    whose one-sided Clopper-Pearson lower bound on recall reaches it. If no threshold does,
    it says so (JSON "reachable": false, exit status 0) and what would help. --abstain adds
    a lower threshold below which the answer is "not CLASS", each side with the precision
    guarantee, and reports the abstention rate (also on --test).

    Example: verbcal threshold --data recorded:tweets --calibrator ts.json --class positive --precision 0.9
    """
    with friendly_errors():
        if precision is not None and recall is not None:
            raise ValueError("give --precision or --recall, not both")
        if abstain and recall is not None:
            raise ValueError("--abstain takes a --precision target, not --recall")
        if procedure not in ("ltt-ranks", "pointwise"):
            raise ValueError(f"--procedure must be ltt-ranks or pointwise, got {procedure!r}")
        if abstain and procedure != "ltt-ranks":
            raise ValueError("--abstain uses the ltt-ranks procedure; drop --procedure")
        predictions, q, what = _load(data, calibrator, labels, "choosing a threshold")
        cls = _class_index(predictions, class_name)
        if precision is None and recall is None:
            precision = opt.DEFAULT_PRECISION
        order = ",".join(predictions.labels)
        tested = _load(test, calibrator, order, "testing a threshold") if test else None
        if abstain:
            assert precision is not None
            band = abstain_band(q, predictions.y, cls, precision=precision, confidence=confidence)
            _report_band(predictions, q, what, band, tested, as_json)
            return
        result = threshold_for(
            q,
            predictions.y,
            cls,
            precision=precision,
            recall=recall,
            confidence=confidence,
            procedure=procedure,  # type: ignore[arg-type]
        )
        curve = pr_curve(q, predictions.y, cls)
    label = predictions.labels[cls]
    on_test = _on_test(tested, cls, result.threshold) if tested else None
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
        if on_test is not None:
            out["test"] = on_test
        print_json(out)
        return
    _show_threshold(predictions, q, what, label, result, curve)
    if on_test is not None:
        console.print(f"on the test data: {_describe_test(on_test)}", highlight=False, markup=False)


def _on_test(
    tested: tuple[Predictions, NDArray[np.float64], str], cls: int, threshold: float | None
) -> dict[str, Any]:
    """Precision and recall of ``P(cls) >= threshold`` (:func:`apply_threshold`, the one rule)
    on labelled test data."""
    predictions, q, _ = tested
    positive = predictions.y == cls
    if threshold is None:
        chosen = np.zeros(len(q), dtype=bool)
    else:
        chosen = apply_threshold(q[:, cls], threshold)
    hits = int(np.sum(chosen & positive))
    return {
        "n": len(predictions),
        "predicted": int(chosen.sum()),
        "precision": hits / int(chosen.sum()) if chosen.any() else None,
        "recall": hits / int(positive.sum()) if positive.any() else None,
    }


def _describe_test(on_test: dict[str, Any]) -> str:
    return (
        f"{on_test['predicted']} of {on_test['n']} items predicted, precision "
        f"{_f(on_test['precision'])}, recall {_f(on_test['recall'])}"
    )


def _report_band(
    predictions: Predictions,
    q: NDArray[np.float64],
    what: str,
    band: AbstainBand,
    tested: tuple[Predictions, NDArray[np.float64], str] | None,
    as_json: bool,
) -> None:
    label = predictions.labels[band.cls]
    calib = band.evaluate(q, predictions.y)
    on_test = band.evaluate(tested[1], tested[0].y) if tested else None
    if as_json:
        out: dict[str, Any] = {
            "upper": band.upper,
            "lower": band.lower,
            "abstain_rate": band.abstain_rate,
        }
        out.update(band.to_dict())
        out.update({"class": label, "n": len(predictions), "probabilities": what})
        out["calibration"] = calib
        if on_test is not None:
            out["test"] = on_test
        print_json(out)
        return
    console.print(
        f"[bold]{predictions.source}[/], {what}: class [bold]{label}[/], {len(predictions)} "
        "labelled items",
        highlight=False,
    )
    console.print(band.note, highlight=False)
    table = Table(title=f"accept {label} / reject {label} / abstain")
    for column in ("data", "items", "accepted", "precision", "rejected", "precision", "abstained"):
        table.add_column(column, justify="right")
    for name, row in (("calibration", calib), ("test", on_test)):
        if row is None:
            continue
        table.add_row(
            name,
            str(row["n"]),
            str(row["accepted"]),
            _f(row["accept_precision"]),
            str(row["rejected"]),
            _f(row["reject_precision"]),
            f"{row['abstain_rate']:.1%}",
        )
    console.print(table)


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
        rule = (
            f"P({label}) > {result.above:.6g}"
            if result.above is not None
            else f"P({label}) >= {result.threshold:.6g}"
        )
        console.print(
            f"[bold green]threshold {result.threshold:.6g}[/] for {target}: predict "
            f"[bold]{label}[/] when {rule}",
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
        curve.true_positives[lo:hi], curve.n_predicted[lo:hi], result.test_confidence
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
    if result.procedure == "ltt-ranks":
        meaning = LTT_MEANING.format(
            target=result.target,
            conf=result.confidence,
            k=result.n_tests,
            each=result.test_confidence,
        )
    else:
        what_bound = "precision" if result.metric == "precision" else "recall"
        meaning = BOUND_MEANING.format(
            what=what_bound, conf=result.confidence, n=result.n_operating_points
        )
    console.print(meaning, style="dim", highlight=False)


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
        print_json(out)
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


@app.command()
def sets(
    calib: Annotated[
        str,
        typer.Option(help="Labelled predictions to calibrate the sets on (or recorded:<name>)."),
    ],
    data: DataOption,
    alpha: Annotated[
        float, typer.Option(help="Miscoverage: sets hold the gold label with prob. >= 1 - alpha.")
    ] = 0.1,
    score: Annotated[str, typer.Option(help="Conformity score: lac or aps.")] = "lac",
    calibrator: CalibratorOption = None,
    by_class: Annotated[
        bool, typer.Option("--by-class", help="Mondrian: coverage >= 1 - alpha within each label.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write each item with its set (JSONL: id, set, label).")
    ] = None,
    labels: LabelsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Conformal prediction sets: for each item, the labels that hold the gold one with
    probability at least 1 - alpha (split conformal, calibrated on --calib).

    LAC keeps label k when 1 - P(k) is at most the calibrated quantile; APS when P(k) plus the
    probabilities of the labels above it is. Prints coverage (when --data has gold labels),
    mean set size, singleton and empty rates; see docs/decisions.md for the guarantee.

    Example: verbcal sets --calib calib.jsonl --data test.jsonl --calibrator ts.json --alpha 0.1
    """
    with friendly_errors():
        if score not in SCORES:
            raise ValueError(f"--score must be one of {', '.join(SCORES)}, got {score!r}")
        cal_predictions, q_cal, what = _load(calib, calibrator, labels, "calibrating sets")
        test_predictions, q_test = _load_any(data, calibrator, cal_predictions.labels)
        fitted = fit_sets(q_cal, cal_predictions.y, alpha=alpha, score=score, by_class=by_class)  # type: ignore[arg-type]
        membership = fitted.predict(q_test)
        gold = test_predictions.y if test_predictions.has_gold else None
        summary = set_summary(membership, gold)
        if out is not None:
            write_jsonl(out, _set_records(test_predictions, membership))
    names = test_predictions.labels
    per_class = (
        dict(zip(names, coverage_by_class(membership, gold).tolist(), strict=True))
        if gold is not None
        else None
    )
    result: dict[str, Any] = {**summary, "alpha": fitted.alpha, **fitted.to_dict()}
    result.update(
        {
            "coverage_by_class": per_class,
            "probabilities": what,
            "n_calib_items": len(cal_predictions),
        }
    )
    if as_json:
        print_json(result)
        return
    _show_sets(result, test_predictions, names, out)


def _load_any(
    data: str, calibrator: Path | None, order: tuple[str, ...]
) -> tuple[Predictions, NDArray[np.float64]]:
    """Predictions with or without gold labels, (calibrated) in the label order ``order``."""
    predictions = datasets.load(data, list(order))
    err_console.print(predictions.describe(), highlight=False, markup=False)
    fitted = Calibrator.load(calibrator) if calibrator else None
    q = fitted.predict_proba(predictions.probs) if fitted else predictions.probs
    return predictions, q


def _set_records(predictions: Predictions, membership: NDArray[np.bool_]) -> list[dict[str, Any]]:
    names = predictions.labels
    return [
        {
            "id": item_id,
            "set": [names[k] for k in np.flatnonzero(row)],
            "label": names[gold] if gold >= 0 else None,
        }
        for item_id, row, gold in zip(predictions.ids, membership, predictions.y, strict=True)
    ]


def _show_sets(
    result: dict[str, Any], predictions: Predictions, names: tuple[str, ...], out: Path | None
) -> None:
    scope = "within each label (Mondrian)" if result["by_class"] else "over all items"
    console.print(
        f"[bold]{predictions.source}[/], {result['probabilities']}: {result['score'].upper()} sets "
        f"for 1 - alpha = {1 - result['alpha']:g} coverage {scope}, calibrated on "
        f"{result['n_calib_items']} items",
        highlight=False,
    )
    table = Table(title="prediction sets")
    for column in ("items", "coverage", "mean size", "singletons", "empty"):
        table.add_column(column, justify="right")
    table.add_row(
        str(result["n"]),
        _f(result["coverage"]),
        _f(result["mean_size"], 3),
        f"{result['singleton_rate']:.1%}",
        f"{result['empty_rate']:.1%}",
    )
    console.print(table)
    if result["coverage_by_class"]:
        parts = [f"{k} {_f(v, 3)}" for k, v in result["coverage_by_class"].items()]
        console.print("coverage by gold label: " + ", ".join(parts), highlight=False)
    if any(q is None for q in result["quantiles"]):
        console.print(
            "too few calibration items for this alpha (needs (n + 1)(1 - alpha) <= n): every "
            "label is kept; lower the coverage or label more items",
            style="yellow",
            highlight=False,
        )
    if out is not None:
        console.print(f"sets written to {out}", highlight=False, markup=False)
    level = f"{1 - result['alpha']:g}"
    guarantee = (
        "The guarantee holds per label (Mondrian, class-conditional): over new items like "
        "these whose gold label is y, the set holds y with probability at least "
        f"{level}, for every label y"
        if result["by_class"]
        else "The guarantee is marginal: over new items like these, the set holds the gold "
        f"label with probability at least {level} (on average over labels, not for each one:"
        " --by-class gives it per label)"
    )
    console.print(
        f"{guarantee}; it does not need calibrated probabilities (calibration makes sets smaller).",
        style="dim",
        highlight=False,
    )


@app.command("decide-cost")
def decide_cost(
    data: DataOption,
    calibrator: CalibratorOption = None,
    cost_fp: Annotated[
        float | None, typer.Option(help="Cost of predicting --class when it is wrong.")
    ] = None,
    cost_fn: Annotated[float | None, typer.Option(help="Cost of missing --class.")] = None,
    class_name: Annotated[
        str | None, typer.Option("--class", "-c", help="The class of --cost-fp/--cost-fn.")
    ] = None,
    costs: Annotated[
        Path | None,
        typer.Option(help='A cost matrix JSON: {"action": {"label": cost, ...}, ...}.'),
    ] = None,
    labels: LabelsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Decide by cost: the action of least expected cost per item, raw vs calibrated.

    Give --cost-fp, --cost-fn and --class (accept the class or not), or --costs with any
    actions (labels, "abstain", "ask a human" ...). Reports the expected cost (what the
    probabilities promise) and the realised cost (with the gold labels) per item, on the
    verbalized probabilities and, with --calibrator, on the calibrated ones.

    Example: verbcal decide-cost --data test.jsonl --calibrator ts.json --class negative --cost-fp 5 --cost-fn 1
    """
    with friendly_errors():
        fitted = Calibrator.load(calibrator) if calibrator else None
        order = ",".join(fitted.labels) if fitted and fitted.labels else labels
        predictions = load_labelled(data, order, "decide-cost")
        matrix = _cost_matrix(predictions, costs, cost_fp, cost_fn, class_name)
        reports = {"verbalized": cost_report(predictions.probs, predictions.y, matrix)}
        if fitted is not None:
            q = fitted.predict_proba(predictions.probs)
            reports[f"{fitted.method} calibrator"] = cost_report(q, predictions.y, matrix)
    if as_json:
        print_json({"n": len(predictions), "actions": list(matrix.actions), "policies": reports})
        return
    table = Table(title=f"Bayes actions on {predictions.source} ({len(predictions)} items)")
    for column in (
        "probabilities",
        "expected cost / item",
        "realised cost / item",
        "total",
        "actions",
    ):
        table.add_column(column, justify="right")
    for name, report in reports.items():
        table.add_row(
            name,
            _f(report["expected_cost"]),
            _f(report["realised_cost"]),
            f"{report['total_realised_cost']:.6g}",
            ", ".join(f"{a} {c}" for a, c in report["actions"].items()),
        )
    console.print(table)
    console.print(
        "expected = what the probabilities promise; realised = what it costs with the gold "
        "labels. Where they differ, the probabilities are not calibrated for this decision.",
        style="dim",
        highlight=False,
    )


def _cost_matrix(
    predictions: Predictions,
    costs: Path | None,
    cost_fp: float | None,
    cost_fn: float | None,
    class_name: str | None,
) -> CostMatrix:
    pair = (cost_fp, cost_fn, class_name)
    if costs is not None:
        if any(v is not None for v in pair):
            raise ValueError("give --costs or --cost-fp/--cost-fn/--class, not both")
        try:
            mapping = json.loads(costs.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{costs}: not valid JSON ({exc}); see --help for the format") from exc
        if not isinstance(mapping, dict):
            raise ValueError(f"{costs}: the cost matrix must be a JSON object of actions")
        return CostMatrix.from_mapping(mapping, predictions.labels)
    if cost_fp is None or cost_fn is None or class_name is None:
        raise ValueError("give --costs FILE, or all of --cost-fp, --cost-fn and --class")
    cls = _class_index(predictions, class_name)
    return CostMatrix.false_positive_negative(predictions.labels, cls, cost_fp, cost_fn)
