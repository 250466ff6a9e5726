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
from verbcal.cli.app import app, console, print_error
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
    p_rule: str = "min-p",
    item_field: str | None = None,
) -> dict[str, Any]:
    """Everything ``monitor.json`` holds: inputs, reference facts, policy, one row per window."""
    from verbcal.monitor import (
        P_SIGNALS,
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
    policy = AlarmPolicy(alpha=alpha, horizon=horizon or max(20, len(windows)), rule=p_rule)
    rows = monitor(ref, q, windows, stream.y, policy, groups=_items(stream, item_field))
    return {
        "calibrator": str(calibrator_path),
        "data": data,
        "windows_by": by,
        "item_field": item_field,
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
            "p_rule": policy.rule_used,
            "p_signals": list(P_SIGNALS),
            "p_share": policy.p_share,
            "bonferroni_per_test": policy.bonferroni,
            "p_rule_reason": policy.cutoff.reason if policy.cutoff else "",
            "p_simulations": policy.cutoff.sims if policy.cutoff else 0,
            "p_simulation_seconds": policy.cutoff.seconds if policy.cutoff else 0.0,
            "cusum_share": policy.alpha - policy.p_share,
            "cusum_k": policy.k,
            "cusum_threshold": policy.threshold,
        },
        "windows": rows,
    }


def _items(stream: Any, item_field: str | None) -> list[Any] | None:
    """The item each row is about, from ``item_field`` (a record without it is an item of
    its own); None without the option: every row its own item."""
    if item_field is None:
        return None
    values = field_values(stream, item_field)
    return [f"row {i}" if v is None else f"item {json.dumps(v)}" for i, v in enumerate(values)]


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
    p_rule: Annotated[
        str,
        typer.Option(
            help="How the p-value signals share their alpha over the signals and windows: "
            "min-p (one cutoff simulated from the reference) or bonferroni."
        ),
    ] = "min-p",
    item_field: Annotated[
        str | None,
        typer.Option(
            help="Record field naming the item a row is about: rows with the same value are "
            "one item seen again, and estimates and tests count distinct items (default: "
            "every row its own item)."
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print monitor.json to stdout only.")
    ] = False,
) -> None:
    """Estimate accuracy without labels (CBPE, ATC, BBSE), test for shift and raise alarms, per window.

    Writes DIR/monitor.json (one row per window under "windows") and DIR/report.html.
    Exit status 0 whether or not an alarm fired; alarms are in the table and the files.

    Alarms hold --alpha per stream of --horizon windows and each alarm names what fired.
    The three CUSUMs hold alpha/12 each (simulated thresholds); the nine p-value signals
    hold the rest as one family, firing below one common cutoff: with --p-rule min-p
    (default) the cutoff that stationary streams simulated from the reference go below
    with that probability (Westfall-Young min-p; a reference under 30 rows falls back to
    Bonferroni), with bonferroni alpha / (12 x horizon). monitor.json states the rule and
    the cutoff (policy.p_rule, policy.per_test; each row's p_cutoff). The signals: tests against the reference (confidence_shift, label_mix_shift,
    accuracy_drop, labelled_accuracy_drop), CUSUMs against the stream's first 5 windows
    (accuracy_change, confidence_change, label_mix_change), and tests of each window against
    all earlier windows pooled since the start or that signal's last alarm, and of the
    last two windows pooled against the rest (confidence_vs_past, label_mix_vs_past,
    reply_vs_past: each recurring reply on its own, the rest by predicted label x
    confidence, accuracy_vs_past, and label_shift_vs_past: the accuracy BBSE's label-shift
    weights imply). The *_vs_past tests count rows as independent
    draws: deduplicate retries of one item first.

    Example: verbcal monitor --calibrator ts.json --reference ref.jsonl --data live.jsonl --out mon/
    """
    from verbcal.monitor import P_RULES, MonitorError
    from verbcal.monitor_report import render

    if window is not None and time_field is not None:
        print_error("give --window or --time-field/--every, not both")
        raise typer.Exit(2)
    if p_rule not in P_RULES:
        print_error(f"--p-rule {p_rule}: {' or '.join(P_RULES)}")
        raise typer.Exit(2)
    with friendly_errors():
        try:
            result = monitor_result(
                calibrator,
                reference,
                data,
                window,
                time_field,
                every,
                alpha,
                horizon,
                p_rule,
                item_field,
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
    policy = result["policy"]
    console.print(
        f"p-value signals fire at p < {policy['per_test']:.2g} ({policy['p_rule']}: "
        f"{policy['p_rule_reason']}; Bonferroni's {policy['bonferroni_per_test']:.2g})",
        highlight=False,
    )
    console.print(
        f"wrote {out / 'monitor.json'} and {out / 'report.html'}", highlight=False, markup=False
    )


LOG_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def read_feedback_log(path: Path, model: str | None, labels: tuple[str, ...]) -> tuple[Any, Any]:
    """Labelled rows of a ``verbcal serve --log-predictions`` log: (raw probs, gold indices)."""
    import sqlite3

    if not path.exists():
        raise ValueError(f"{path}: no such prediction log")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        models = [m for (m,) in db.execute("SELECT DISTINCT model FROM predictions")]
        if model is None:
            if len(models) != 1:
                raise ValueError(f"{path} logs the models {models}: name one with --model")
            model = models[0]
        if model not in models:
            raise ValueError(f"{path}: no prediction of model {model!r}; it logs {models}")
        rows = db.execute(
            "SELECT id, raw, label FROM predictions WHERE model = ? AND label IS NOT NULL"
            " ORDER BY seq",
            (model,),
        ).fetchall()
    index = {label: k for k, label in enumerate(labels)}
    probs, gold = [], []
    for item, raw, label in rows:
        values = json.loads(raw)
        if len(values) != len(labels) or label not in index:
            raise ValueError(
                f"{path}, id {item!r}: logged with other labels than the calibrator's {list(labels)}"
            )
        probs.append(values)
        gold.append(index[label])
    return np.array(probs, dtype=np.float64).reshape(-1, len(labels)), np.array(
        gold, dtype=np.int64
    )


@app.command("recalibrate")
def recalibrate_command(
    calibrator: Annotated[Path, typer.Option(help="The calibrator in service.")],
    feedback: Annotated[
        str,
        typer.Option(
            help="Labelled feedback: a predictions file, or the SQLite log of "
            "`verbcal serve --log-predictions` (rows with feedback labels)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Where to write the new calibrator (may be the served file: reload swaps it in)."
        ),
    ],
    model: Annotated[str | None, typer.Option(help="Model name in a log with several.")] = None,
    holdout: Annotated[
        float,
        typer.Option(callback=opt.open_unit, help="Share of the feedback held out for the test."),
    ] = 0.3,
    alpha: Annotated[
        float, typer.Option(callback=opt.open_unit, help="Level of the one-sided paired test.")
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the fit / held-out split.")] = 0,
) -> None:
    """Refit on labelled feedback; write the new calibrator only if it beats the old one.

    The feedback is split (stratified, seeded) into a fitting and a held-out part; the
    refit (same method and options) must have a lower held-out log loss, by a one-sided
    paired t-test at --alpha. Otherwise nothing is written and the reason is printed
    (exit status 0). The new file records its provenance and the file it replaced.

    Example: verbcal recalibrate --calibrator ts.json --feedback predictions.sqlite --out ts.json
    """
    import hashlib

    from verbcal.calibration.base import fit_provenance
    from verbcal.cli.calibrate import source_model
    from verbcal.monitor.recalibrate import guarded_refit, split

    with friendly_errors():
        old = load_calibrator(calibrator)
        labels = tuple(old.labels or ())
        origin = None
        if Path(feedback).suffix.lower() in LOG_SUFFIXES:
            probs, y = read_feedback_log(Path(feedback), model, labels)
        else:
            data = read_for(feedback, old).labelled()
            probs, y = data.probs, data.y
            origin = source_model(data)
        decision = guarded_refit(old, probs, y, labels, holdout, alpha, seed)
        if decision.better:
            fit_idx, _ = split(y, holdout, seed)
            previous = old.provenance
            decision.new.provenance_ = fit_provenance(
                probs[fit_idx],
                y[fit_idx],
                labels,
                source=feedback,
                model=origin or previous.get("model"),
                task_sha256=previous.get("task_sha256"),
                replaces={
                    "path": str(calibrator),
                    "sha256": hashlib.sha256(calibrator.read_bytes()).hexdigest(),
                    "created_at": previous.get("created_at"),
                },
                comparison=decision.summary(),
            )
            with atomic_output(out) as handle:
                handle.write(json.dumps(decision.new.to_dict(), indent=2) + "\n")
    if decision.better:
        console.print(f"wrote {out}: {decision.reason}", highlight=False, markup=False)
    else:
        console.print(
            f"kept {calibrator}, nothing written: {decision.reason}", highlight=False, markup=False
        )
