"""CLI commands of the calibration core: evaluate, fit, apply, compare."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from verbcal import datasets, engines, provenance
from verbcal.calibration import (
    METHODS,
    AutoCalibrator,
    Calibrator,
    CalibratorError,
    WordsCalibration,
    make_calibrator,
    uncalibrated,
)
from verbcal.calibration.base import fit_provenance
from verbcal.calibration.specs import (
    UNCALIBRATED,
    check_options,
    convert_option,
    parse_spec,
    parse_specs,
)
from verbcal.cli import options as opt
from verbcal.cli.app import app, console, err_console, print_error
from verbcal.compare import compare as run_compare
from verbcal.compare import fit_warnings, summarise
from verbcal.jsonio import print_json
from verbcal.metrics import DEFAULT_BINS, METRICS, bootstrap_ci, by_band, by_slice, summary
from verbcal.predictions import (
    Predictions,
    PredictionsError,
    check_output,
    field_values,
    is_parquet,
    reading_options,
    with_probs,
    write_records,
)

DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        "-d",
        help="Predictions JSONL/CSV/Parquet (file, directory or glob), or recorded:<name>.",
    ),
]
LabelsOption = Annotated[
    str | None,
    typer.Option(help="Comma-separated label order (default: the first record's order)."),
]
FloorOption = Annotated[
    str | None,
    typer.Option(
        help="Floor for zeros before log: a number in (0, 1), or 'fit' (the default); merged "
        "into a spec's brackets, refused if the spec sets floor itself."
    ),
]
FloorModeOption = Annotated[
    str | None, typer.Option(help="clip (default): max(p, floor); mix: (1 - a) p + a / K.")
]
MleOption = Annotated[
    bool,
    typer.Option(
        "--mle",
        help="temperature: the paper's exact maximum-likelihood T (default: MAP with a weak "
        "prior log T ~ Normal(0, 1), which stays finite on separable data).",
    ),
]
BinsOption = opt.Bins
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]

METRIC_NOTES = (
    "ECE/MCE: top-label, {bins} equal-width bins, right-closed (a value on an edge goes to the "
    "lower bin, 0 to the first, 1 to the last). NLL: q clipped at 1e-12. Brier: sum over "
    "classes. AUROC: positive = 2nd label (K = 2), else macro one-vs-rest. Macro-F1 over all labels."
)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn input and usage errors into one red line and exit status 2."""
    try:
        yield
    except (PredictionsError, CalibratorError, ValueError, OSError, ImportError) as exc:
        # soft_wrap: the message stays one line however long the path, for logs and grep
        # escape: paths and labels with [brackets] are text, not rich markup
        print_error(str(exc), soft_wrap=True)
        raise typer.Exit(2) from exc


def load_calibrator(path: Path) -> Calibrator:
    """A fitted calibrator, its fit warnings said out loud (every command that loads one)."""
    fitted = Calibrator.load(path)
    warn(fitted.warnings, f"{path} was fitted with a warning")
    return fitted


def source_model(predictions: Predictions) -> str | None:
    """The LLM the predictions came from, when their records name exactly one."""
    records = [predictions.records[r] for r in predictions.rows]
    models = {s.get("model") for s in provenance.summarize(records)} - {None}
    return str(next(iter(models))) if len(models) == 1 else None


def warn(warnings: list[str], what: str) -> None:
    """Print each warning as one yellow line on stderr."""
    for text in warnings:
        err_console.print(
            f"[bold yellow]warning:[/] {escape(what)}: {escape(text)}",
            highlight=False,
            soft_wrap=True,
        )


def read_for(data: str, fitted: Calibrator) -> Predictions:
    """Predictions in the calibrator's label order; a clear error if the label sets differ.

    A record that carries ``verbalized_probs`` (written by ``apply``) is read from those,
    the LLM's own numbers: calibrating is never applied twice."""
    try:
        return datasets.load(data, fitted.labels, verbalized=True)
    except PredictionsError as exc:
        if not (exc.field or "").startswith(("probs", "label")):
            raise
        try:
            own = datasets.load(data).labels
        except PredictionsError:
            raise exc from None
        if set(own) == set(fitted.labels or ()):
            raise
        raise PredictionsError(
            data,
            None,
            None,
            f"the calibrator was fitted on the labels {list(fitted.labels or ())}, but this "
            f"file has the labels {list(own)}",
            "Use a calibrator fitted on data with the same labels (verbcal fit --data ...), "
            "or fix the file",
        ) from exc


def load_labelled(
    data: str, labels: str | None, action: str, fitted: Calibrator | None = None
) -> Predictions:
    """Read predictions (in ``fitted``'s label order if given), report adjustments, keep
    the rows with a gold label."""
    label_list = [s.strip() for s in labels.split(",")] if labels else None
    predictions = read_for(data, fitted) if fitted else datasets.load(data, label_list)
    err_console.print(predictions.describe(), highlight=False, markup=False)
    labelled = predictions.labelled()
    if len(labelled) == 0:
        predictions.require_gold(action)
    if len(labelled) < len(predictions):
        err_console.print(
            f"{len(predictions) - len(labelled)} rows without a gold label are left out"
        )
    return labelled


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


@app.command()
def evaluate(
    data: DataOption,
    calibrator: Annotated[
        Path | None, typer.Option(help="A calibrator from `verbcal fit` to apply first.")
    ] = None,
    bins: BinsOption = DEFAULT_BINS,
    labels: LabelsOption = None,
    boot: opt.Boot = 1000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the bootstrap.")] = 0,
    by: Annotated[
        str | None,
        typer.Option(help="Also score each slice of the items by this record field (e.g. source)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Score predictions against gold labels, with 95% bootstrap confidence intervals.

    Without --calibrator it scores the uncalibrated baseline: the verbalized distribution
    normalised to sum 1 (method ``identity``). With --calibrator, records that carry
    verbalized_probs (written by apply) are calibrated from those, never twice. Also gives
    accuracy and ECE per confidence band (low < 0.6 <= medium < 0.8 <= high) and, with
    --by FIELD, the metrics with CIs per value of that field of the records.

    Example: verbcal evaluate --data recorded:tweets --calibrator ts.json
    """
    with friendly_errors():
        fitted = load_calibrator(calibrator) if calibrator else None
        predictions = load_labelled(data, labels, "evaluate", fitted)
        q = fitted.predict_proba(predictions.probs) if fitted else uncalibrated(predictions.probs)
        scores = summary(q, predictions.y, n_bins=bins)
        ci = bootstrap_ci(q, predictions.y, n_boot=boot, seed=seed, n_bins=bins)
        bands = by_band(q, predictions.y, n_bins=bins)
        slices = (
            by_slice(q, predictions.y, field_values(predictions, by), boot, seed, bins)
            if by
            else None
        )
    sources = provenance.summarize(predictions.records)
    if as_json:
        out: dict[str, Any] = {"n": len(predictions), **scores, "bins": bins}
        out["provenance"] = sources
        out["ci"] = {m: list(v) for m, v in ci.items()}
        out["bands"] = bands
        if slices is not None:
            out["by"] = by
            out["slices"] = slices
        out["warnings"] = fitted.warnings if fitted else []
        print_json(out)
        return
    title = f"{escape(predictions.source)}: " + (
        f"{fitted.method} calibrator ({fitted.describe_floor()})"
        if fitted
        else f"{provenance.short(sources)} (uncalibrated)"
    )
    table = Table(title=title, caption=METRIC_NOTES.format(bins=bins))
    for column in ("metric", "value", "95% CI"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in METRICS:
        lo, hi = ci[metric]
        table.add_row(metric, _fmt(scores[metric]), f"[{_fmt(lo)}, {_fmt(hi)}]")
    console.print(table)
    console.print(f"n = {len(predictions)}, bootstrap: {boot} percentile resamples, seed {seed}")
    console.print(f"probabilities: {provenance.describe(sources)}", highlight=False, markup=False)
    console.print(band_table(bands))
    if slices is not None and by is not None:
        console.print(slice_table(slices, by))


def band_table(bands: list[dict[str, Any]]) -> Table:
    """Accuracy and calibration per confidence band."""
    table = Table(
        title="per confidence band (confidence = largest probability)",
        caption="gap = mean confidence - accuracy (> 0: over-confident); ECE within the band",
    )
    for column in ("band", "confidence", "items", "share", "accuracy", "mean conf.", "gap", "ECE"):
        table.add_column(column, justify="left" if column == "band" else "right")
    for b in bands:
        table.add_row(
            b["band"],
            f"[{b['lower']:g}, {b['upper']:g}{']' if b['upper'] == 1.0 else ')'}",
            str(b["n"]),
            f"{b['share']:.1%}",
            _fmt(b["accuracy"]),
            _fmt(b["mean_confidence"]),
            _fmt(b["gap"]),
            _fmt(b["ece"]),
        )
    return table


def slice_table(slices: dict[str, dict[str, Any]], field: str) -> Table:
    """Accuracy, ECE and NLL with 95% CIs per slice."""
    table = Table(title=f"per {field} (95% bootstrap CIs)")
    for column in (field, "items", "accuracy", "ECE", "NLL"):
        table.add_column(column, justify="left" if column == field else "right")
    for value, entry in slices.items():
        cells = [
            f"{_fmt(entry[m])} [{_fmt(entry['ci'][m][0])}, {_fmt(entry['ci'][m][1])}]"
            for m in ("accuracy", "ece", "nll")
        ]
        table.add_row(escape(value), str(entry["n"]), *cells)
    return table


@app.command()
def fit(
    method: Annotated[
        str,
        typer.Option(
            help=f"One of {', '.join([UNCALIBRATED, *METHODS])}, optionally with options "
            "in brackets as in the study: temperature\\[floor=1e-4,mode=mix]."
        ),
    ],
    data: DataOption,
    out: Annotated[Path, typer.Option(help="Where to write the calibrator JSON.")],
    floor: FloorOption = None,
    floor_mode: FloorModeOption = None,
    mle: MleOption = False,
    labels: LabelsOption = None,
    overwrite: opt.Overwrite = False,
) -> None:
    """Fit a calibrator on labelled predictions and save it as a small JSON file.

    --method auto builds the calibrator by cross-validated NLL on these data (a mixture of
    candidates weighted by out-of-fold log score; auto[rule=1se] picks the simplest within
    one standard error of the best) and prints the table and the reason.

    Example: verbcal fit --method temperature --data recorded:tweets --out ts.json
    """
    with friendly_errors():
        check_output(out, overwrite)
        options = spec_options(method, floor, floor_mode, mle)
        predictions = load_labelled(data, labels, "fitting")
        calibrator = make_calibrator(method, reply=predictions.reply, **options)
        calibrator.fit(predictions.probs, predictions.y, labels=predictions.labels)
        calibrator.provenance_ = fit_provenance(
            predictions.probs,
            predictions.y,
            predictions.labels,
            source=str(data),
            model=source_model(predictions),
        )
        calibrator.save(out)
    info = calibrator.fit_info
    if isinstance(calibrator, AutoCalibrator):
        show_auto(calibrator)
    console.print(
        f"[bold]{escape(method)}[/] fitted on {int(info['n'])} items; "
        f"floor: {escape(calibrator.describe_floor())}"
    )
    shown = calibrator.calibrator_ if isinstance(calibrator, AutoCalibrator) else calibrator
    if isinstance(shown, WordsCalibration) and len(shown.labels_) == 2:
        show_words(shown, predictions)
    elif not isinstance(shown, AutoCalibrator):  # a stack's weights are in the table above
        for name, value in shown.state.items():
            console.print(f"  {name} = {value}", highlight=False, markup=False)
    console.print(
        f"NLL on the fitting data: {info['nll_before']:.4f} (verbalized) → {info['nll_after']:.4f}"
    )
    warn(calibrator.warnings, f"{method} fit")
    console.print(f"saved to {out}", markup=False)


FLAGS = {"floor": "--floor", "floor_mode": "--floor-mode", "prior_sd": "--mle"}
"""The floor flags by the constructor argument each sets."""


def show_words(calibrator: WordsCalibration, predictions: Predictions) -> None:
    """What ``words`` learned per phrase: lexicon value, items, observed rate and learned value,
    as P(about) (the label the phrases speak of; the calibrator's map is of the 2nd label)."""
    abouts = {predictions.records[r].get("about") for r in predictions.rows}
    about = next(iter(abouts)) if len(abouts) == 1 else None
    about = about or reading_options().about or calibrator.labels_[1]
    flip = about == calibrator.labels_[0]
    names: dict[float, set[str]] = {}
    for row, phrase in zip(predictions.probs[:, 1].tolist(), predictions.phrases(), strict=True):
        if phrase is not None:
            names.setdefault(round(row, 9), set()).add(str(phrase).strip().lower())
    prior = calibrator.maps_[-1]["prior"]
    table = Table(title=f"words: P({about}) per phrase (prior strength {prior:g})")
    for column in ("phrase", "lexicon", "items", "observed", "learned"):
        table.add_column(column, justify="left" if column == "phrase" else "right")
    levels = calibrator.levels()
    for level in levels if flip else reversed(levels):

        def shown(x: float) -> float:
            return 1.0 - x if flip else x

        phrase = ", ".join(sorted(names.get(round(level["value"], 9), ()))) or "—"
        table.add_row(
            escape(phrase),
            f"{shown(level['value']):.3g}",
            f"{level['n']:g}",
            f"{shown(level['observed']):.2f}",
            f"{shown(level['fitted']):.3f}",
        )
    console.print(table)


def spec_options(
    spec: str, floor: str | None, floor_mode: str | None, mle: bool, strict: bool = True
) -> dict[str, Any]:
    """The CLI's floor flags as constructor options of a method spec, validated by the
    method's own constraints (same message as the Python object's).

    Unset flags (None / False) add nothing. A flag the spec already sets in brackets
    (``temperature[floor=1e-4]`` with ``--floor``) is refused; otherwise it is merged into
    the spec's options, so a flag is applied or refused, never dropped. With ``strict``
    (one method, as in ``fit``) a flag the method does not take is refused too; without it
    (``compare``) it applies to the methods that take it.
    """
    variant = parse_spec(spec)
    flags: dict[str, Any] = {}
    if floor is not None:
        flags["floor"] = convert_option("floor", floor)
    if floor_mode is not None:
        flags["floor_mode"] = convert_option("floor_mode", floor_mode)
    if mle:
        flags["prior_sd"] = None
    takes = set(METHODS[variant.method]._get_param_names())
    if variant.name == UNCALIBRATED:
        takes = set()
    options: dict[str, Any] = {}
    for name, value in flags.items():
        if name not in takes:
            if strict:
                raise CalibratorError(
                    f"{FLAGS[name]} does not apply to {spec!r} ({variant.method} takes "
                    f"{', '.join(sorted(takes)) or 'no options'}): drop the flag"
                )
            continue
        if name in variant.given:
            raise CalibratorError(
                f"{FLAGS[name]} and the spec {spec!r} both set {name}: give it once, "
                "in the brackets or as the flag"
            )
        options[name] = value
    check_options(variant.method, options)
    return options


def show_auto(calibrator: AutoCalibrator) -> None:
    """The cross-validation table ``auto`` chose from, and why."""
    table = Table(title="auto: cross-validated NLL on the fitting data (lower is better)")
    for column in ("candidate", "CV NLL", "± se", "weight"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for row in calibrator.cv_:
        nll, se = row["cv_nll"], row["se"]
        table.add_row(
            escape(row["method"]),
            "failed" if nll is None else f"{nll:.4f}",
            "" if se is None else f"{se:.4f}",
            f"{row['weight']:.2f}" if row.get("weight") else "",
        )
    console.print(table)
    console.print(f"built: {escape(calibrator.describe())}", highlight=False)
    console.print(f"why: {escape(calibrator.reason_)}", highlight=False)


@app.command()
def apply(
    calibrator: Annotated[Path, typer.Option(help="A calibrator written by `verbcal fit`.")],
    data: DataOption,
    out: Annotated[
        Path,
        typer.Option(help="Output .jsonl or .parquet (one file, input order), or a directory."),
    ],
    overwrite: opt.Overwrite = False,
    engine: Annotated[
        str, typer.Option(help="local | ray | spark (ray and spark read Parquet).")
    ] = "local",
    out_format: Annotated[
        str | None,
        typer.Option(help="parquet | jsonl: the shards' format when --out is a directory."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto | ray://HOST:10001 (default: start one).")
    ] = None,
    master: Annotated[
        str | None,
        typer.Option(help="Spark master: local[2] | spark://HOST:7077 (default local[*])."),
    ] = None,
) -> None:
    """Apply a fitted calibrator to new predictions (the original kept as verbalized_probs).

    Where a record already carries verbalized_probs (an applied file), those are the
    input: applying twice gives the same file as applying once.

    Parquet input (a file, a directory or a glob) runs batch by batch on the chosen engine
    and gains top_label and confidence columns; see docs/scale.md.

    Example: verbcal apply --calibrator ts.json --data new.jsonl --out calibrated.jsonl
    """
    with friendly_errors():
        fitted = load_calibrator(calibrator)
        if engine != "local" or is_parquet(datasets.resolve(data)):
            rows = engines.apply(
                engine, fitted, datasets.resolve(data), out, out_format, address, master, overwrite
            )
            console.print(f"wrote {rows} records to {out} (engine {engine})", markup=False)
            return
        check_output(out, overwrite)
        predictions = read_for(data, fitted)
        err_console.print(predictions.describe(), highlight=False, markup=False)
        q = fitted.predict_proba(predictions.probs)
        write_records(out, with_probs(predictions, q))
    console.print(
        f"wrote {len(predictions.records)} records to {out} ({len(q)} calibrated)", markup=False
    )


@app.command()
def compare(
    data: DataOption,
    methods: Annotated[
        str,
        typer.Option(
            help="'all' or a comma-separated list of method specs (uncalibrated, "
            "temperature\\[floor=1e-4], ...)."
        ),
    ] = "all",
    calib_frac: opt.CalibFrac = 0.5,
    repeats: Annotated[int, typer.Option(min=1, help="Random stratified splits.")] = 20,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the splits.")] = 0,
    bins: BinsOption = DEFAULT_BINS,
    floor: FloorOption = None,
    floor_mode: FloorModeOption = None,
    mle: MleOption = False,
    labels: LabelsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit every method on calibration splits and score it on the rest: mean ± sd over repeats.

    ``identity`` is the uncalibrated baseline (normalised, nothing fitted); --floor and
    --floor-mode apply to every method that uses a floor.

    Example: verbcal compare --data recorded:drug-reviews --methods identity,resoftmax,temperature
    """
    with friendly_errors():
        names = parse_specs(methods)
        options = {m: spec_options(m, floor, floor_mode, mle, strict=False) for m in names}
        given = {"floor": floor is not None, "floor_mode": floor_mode is not None, "prior_sd": mle}
        for name in [n for n, flag in given.items() if flag]:
            if not any(name in o for o in options.values()):
                raise CalibratorError(
                    f"{FLAGS[name]} applies to none of the methods {', '.join(names)}: "
                    "drop the flag or add a method that takes it"
                )
        predictions = load_labelled(data, labels, "compare")
        with Progress(
            TextColumn("compare"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=as_json,
        ) as progress:
            task = progress.add_task("splits", total=repeats)
            results = run_compare(
                predictions.probs,
                predictions.y,
                predictions.labels,
                names,
                calib=calib_frac,
                repeats=repeats,
                seed=seed,
                n_bins=bins,
                options=options,
                on_repeat=lambda _: progress.advance(task),
                reply=predictions.reply,
            )
    rows = summarise(results)
    warn(fit_warnings(results), "fit warning")
    if as_json:
        print_json(rows)
        return
    show_compare(predictions, rows, results, calib_frac, repeats, bins)


def show_compare(
    predictions: Predictions,
    rows: list[dict[str, Any]],
    results: list[Any],
    calib_frac: float,
    repeats: int,
    bins: int,
) -> None:
    """The comparison table, one row per method, best mean per metric in bold."""
    n_calib = round(calib_frac * len(predictions))
    table = Table(
        title=f"{escape(predictions.source)}: {repeats} stratified splits, "
        f"~{n_calib} calibration / {len(predictions) - n_calib} test items (mean ± sd)",
        caption=METRIC_NOTES.format(bins=bins),
    )
    table.add_column("method", no_wrap=True)
    for metric in METRICS:
        table.add_column(metric, justify="right", no_wrap=True)
    table.add_column("median T", justify="right", no_wrap=True)
    lower_is_better = {"ece", "mce", "nll", "brier"}
    best = {}
    for metric in METRICS:
        means = [r["mean"] for r in rows if r["metric"] == metric and not math.isnan(r["mean"])]
        if means:
            best[metric] = min(means) if metric in lower_is_better else max(means)
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for metric in METRICS:
            row = next(r for r in rows if r["method"] == method and r["metric"] == metric)
            text = f"{row['mean']:.3f} [dim]±{row['sd']:.3f}[/]"
            cells.append(f"[bold]{text}[/]" if row["mean"] == best.get(metric) else text)
        temps = sorted(
            r.params["temperature"]
            for r in results
            if r.method == method and "temperature" in r.params
        )
        cells.append(f"{temps[len(temps) // 2]:.3g}" if temps else "")
        table.add_row(escape(method), *cells)  # specs carry brackets: text, not markup
    console.print(table)
