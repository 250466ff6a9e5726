"""``verbcal monitor``: label-free accuracy estimates, shift tests and alarms per window."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from verbcal.cli import options as opt
from verbcal.cli.app import app, console, err_console
from verbcal.cli.calibrate import friendly_errors, load_calibrator, read_for
from verbcal.predictions import atomic_output, field_values


def monitor_result(
    calibrator_path: Path,
    reference: str,
    data: str,
    window: int | None,
    time_field: str | None,
    every: str | None,
    alpha: float,
    horizon: int | None,
) -> dict[str, Any]:
    """Everything ``monitor.json`` holds: inputs, reference facts, policy, one row per window."""
    from verbcal.monitor import (
        SIGNALS,
        AlarmPolicy,
        MonitorError,
        Reference,
        count_windows,
        monitor,
        parse_every,
        parse_time,
        time_windows,
    )
    from verbcal.monitor.stream import _hist

    fitted = load_calibrator(calibrator_path)
    ref_data = read_for(reference, fitted)
    if not np.any(ref_data.y >= 0):
        raise MonitorError(f"{reference}: the reference needs gold labels ('label' field)")
    ref_data = ref_data.labelled()
    ref = Reference.build(fitted.predict_proba(ref_data.probs), ref_data.y, tuple(ref_data.labels))
    stream = read_for(data, fitted)
    q = fitted.predict_proba(stream.probs)
    if time_field is not None:
        if every is None:
            raise MonitorError("--time-field needs --every (e.g. --every 1d)")
        seconds = parse_every(every)
        values = field_values(stream, time_field)
        times = [
            parse_time(v, f"{data}, record {stream.ids[i]!r}, field {time_field!r}")
            for i, v in enumerate(values)
        ]
        windows = time_windows(times, seconds)
        by = f"{time_field} every {every}"
    else:
        if every is not None:
            raise MonitorError("--every needs --time-field (the record field holding the time)")
        size = window or 500
        windows = count_windows(len(q), size)
        by = f"{size} items"
    if not windows:
        raise MonitorError(f"{data}: no rows to monitor")
    policy = AlarmPolicy(alpha=alpha, horizon=horizon or max(20, len(windows)))
    rows = monitor(ref, q, windows, stream.y, policy)
    return {
        "calibrator": str(calibrator_path),
        "data": data,
        "windows_by": by,
        "reference": {
            "source": reference,
            "n": ref.n,
            "accuracy": ref.accuracy,
            "mean_confidence": float(ref.conf.mean()),
            "atc_threshold": ref.atc_threshold,
            "atc_tie_fraction": ref.atc_tie_fraction,
            "confidence_hist": _hist(ref.conf),
            "labels": list(ref.labels),
        },
        "policy": {
            "alpha": policy.alpha,
            "horizon": policy.horizon,
            "baseline": policy.baseline,
            "signals": list(SIGNALS),
            "per_test": policy.per_test,
            "cusum_k": policy.k,
            "cusum_threshold": policy.threshold,
        },
        "windows": rows,
    }


def _f(value: Any, digits: int = 3) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


@app.command("monitor")
def monitor_command(
    calibrator: Annotated[Path, typer.Option(help="Calibrator file from `verbcal fit`.")],
    reference: Annotated[
        str,
        typer.Option(
            help="Labelled predictions the calibrator is trusted on (held out from its fit if "
            "you can), or recorded:<name>."
        ),
    ],
    data: Annotated[
        str, typer.Option("--data", "-d", help="The stream: predictions file (labels optional).")
    ],
    out: Annotated[Path, typer.Option(help="Directory for monitor.json and report.html.")],
    window: Annotated[
        int | None, typer.Option(min=1, help="Items per window (default 500).")
    ] = None,
    time_field: Annotated[
        str | None,
        typer.Option(help="Record field with the time (ISO 8601 or epoch seconds)."),
    ] = None,
    every: Annotated[
        str | None, typer.Option(help="Time window length with --time-field: 30m, 6h, 1d, 1w.")
    ] = None,
    alpha: Annotated[
        float,
        typer.Option(
            callback=opt.open_unit, help="False-alarm rate per stream of --horizon windows."
        ),
    ] = 0.05,
    horizon: Annotated[
        int | None,
        typer.Option(min=1, help="Windows the false-alarm rate covers (default max(20, windows))."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print monitor.json to stdout only.")
    ] = False,
) -> None:
    """Estimate accuracy without labels (CBPE, ATC, BBSE), test for shift and raise alarms, per window.

    Writes DIR/monitor.json (one row per window under "windows") and DIR/report.html.
    Exit status 0 whether or not an alarm fired; alarms are in the table and the files.

    Example: verbcal monitor --calibrator ts.json --reference ref.jsonl --data live.jsonl --out mon/
    """
    from verbcal.monitor import MonitorError
    from verbcal.monitor_report import render

    if window is not None and time_field is not None:
        err_console.print("[bold red]error:[/] give --window or --time-field/--every, not both")
        raise typer.Exit(2)
    with friendly_errors():
        try:
            result = monitor_result(
                calibrator, reference, data, window, time_field, every, alpha, horizon
            )
        except MonitorError as exc:
            raise ValueError(str(exc)) from exc
        out.mkdir(parents=True, exist_ok=True)
        with atomic_output(out / "monitor.json") as handle:
            handle.write(json.dumps(result, indent=2) + "\n")
        with atomic_output(out / "report.html") as handle:
            handle.write(render(result))
    rows = result["windows"]
    if json_out:
        print(json.dumps(result))
        return
    table = Table(title=f"verbcal monitor: {escape(data)} ({escape(result['windows_by'])})")
    for name in (
        "window",
        "n",
        "est. acc [95% CI]",
        "CBPE",
        "ATC",
        "BBSE",
        "realised",
        "ECE",
        "shift p",
        "alarm",
    ):
        table.add_column(name, justify="left" if name in ("window", "alarm") else "right")
    for r in rows:
        table.add_row(
            escape(str(r["window"])),
            str(r["n"]),
            f"{_f(r['est_accuracy'])} [{_f(r['est_accuracy_low'])}, {_f(r['est_accuracy_high'])}]",
            _f(r["est_accuracy_cbpe"]),
            _f(r["est_accuracy_atc"]),
            _f(r["est_accuracy_bbse"]),
            _f(r.get("accuracy")),
            _f(r.get("ece")),
            _f(r["shift_p"], 4),
            f"[bold red]{escape(r['signal'])}[/]" if r["alarm"] else "",
        )
    console.print(table)
    ref = result["reference"]
    alarms = sum(r["alarm"] for r in rows)
    console.print(
        f"reference: {ref['n']} items, accuracy {ref['accuracy']:.3f}; "
        f"{alarms} of {len(rows)} windows alarmed (alpha {alpha} per {result['policy']['horizon']} windows)",
        highlight=False,
    )
    console.print(f"wrote {out / 'monitor.json'} and {out / 'report.html'}", highlight=False)
