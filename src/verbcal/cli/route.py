"""``verbcal route``: accept, reject or send to review, for an LLM judge (see :mod:`verbcal.decide.route`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from verbcal.cli import options as opt
from verbcal.cli.app import app, console
from verbcal.cli.calibrate import JsonOption, friendly_errors, load_calibrator, load_labelled
from verbcal.decide.route import Routing, cost_route, naive_route, review_curve
from verbcal.decide.route import route as route_on

ROUTING_KEYS = (
    "accept_threshold",
    "reject_threshold",
    "review_rate",
    "accept_precision",
    "reject_precision",
    "reachable",
)


@app.command()
def route(
    calib: Annotated[
        str, typer.Option(help="Labelled predictions the thresholds are chosen on (C).")
    ],
    data: Annotated[
        str, typer.Option(help="Labelled predictions the rule is applied to and scored on (T).")
    ],
    positive: Annotated[str, typer.Option(help="The label accepted automatically.")],
    precision: Annotated[
        float,
        typer.Option(
            callback=opt.open_unit, help="Target precision of each side (accept and reject)."
        ),
    ] = 0.9,
    calibrator: Annotated[
        Path | None,
        typer.Option(help="A calibrator from `verbcal fit` (fitted on other data than T)."),
    ] = None,
    confidence: opt.Confidence = 0.95,
    cost_review: Annotated[
        float | None, typer.Option(min=0.0, help="Cost of one human review.")
    ] = None,
    cost_error: Annotated[
        float | None,
        typer.Option(callback=opt.positive, help="Cost of one error that passes unreviewed."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Route a judge's items: accept, reject, or send to a person, with a precision guarantee.

    Thresholds come from the abstain band chosen on --calib (Learn-then-Test on each side:
    precision >= --precision with --confidence) and are applied unchanged to --data; beside
    them, the naive rule that takes the judge at its word (accept when it states
    P(positive) >= target, reject when <= 1 - target), with its realised precision on --data.
    With --cost-review and --cost-error, the cost-optimal routing on (calibrated)
    probabilities too.

    Example: verbcal route --calib c.jsonl --data t.jsonl --positive acceptable --precision 0.9 --calibrator ts.json
    """
    with friendly_errors():
        if (cost_review is None) != (cost_error is None):
            raise ValueError("give both --cost-review and --cost-error, or neither")
        fitted = load_calibrator(calibrator) if calibrator else None
        c = load_labelled(calib, None, "choosing routing thresholds", fitted)
        t = load_labelled(data, ",".join(c.labels), "scoring a routing rule", fitted)
        if positive not in c.labels:
            raise ValueError(
                f"unknown label {positive!r}: the labels are {', '.join(c.labels)}; "
                "pass one of them to --positive"
            )
        cls = c.labels.index(positive)
        qc = fitted.predict_proba(c.probs) if fitted else c.probs
        qt = fitted.predict_proba(t.probs) if fitted else t.probs
        costs = None if cost_review is None or cost_error is None else (cost_review, cost_error)
        guaranteed = route_on(qc, c.y, qt, t.y, cls, precision, confidence, costs)
        naive = naive_route(t.probs, t.y, cls, precision, costs)
        cost = cost_route(qt, t.y, cls, *costs) if costs else None
        curve = review_curve(qt, t.y, cls)
    out: dict[str, Any] = {
        **{key: getattr(guaranteed, key) for key in ROUTING_KEYS},
        **guaranteed.to_dict(),
        "positive": positive,
        "precision": precision,
        "confidence": confidence,
        "probabilities": f"{fitted.method} calibrator" if fitted else "as stated (uncalibrated)",
        "naive": naive.to_dict(),
        "curve": curve,
    }
    if cost is not None:
        out["cost_optimal"] = cost.to_dict()
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(
        title=f"routing on {data} (positive = {positive}, target precision {precision:g})"
    )
    for column in ("rule", "accept if P >=", "reject if P <=", "review", "accept prec.",
                   "reject prec.", "errors unreviewed"):  # fmt: skip
        table.add_column(column, justify="left" if column == "rule" else "right")
    for name, r in (("guaranteed (LTT on --calib)", guaranteed), ("naive (at its word)", naive),
                    *((("cost-optimal", cost),) if cost else ())):  # fmt: skip
        table.add_row(name, *_cells(r))
    console.print(table)
    console.print(guaranteed.note, highlight=False, markup=False)
    if cost is not None and cost.expected_cost is not None:
        console.print(
            f"expected cost per item: guaranteed {guaranteed.expected_cost:.4g}, naive "
            f"{naive.expected_cost:.4g}, cost-optimal {cost.expected_cost:.4g}",
            highlight=False,
        )


def _cells(r: Routing) -> list[str]:
    def f(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    return [
        f(r.accept_threshold),
        f(r.reject_threshold),
        f"{r.review_rate:.1%}",
        f(r.accept_precision),
        f(r.reject_precision),
        f"{r.unreviewed_errors} ({r.unreviewed_error_rate:.1%})",
    ]
