"""`verbcal demo`: the main job end to end on bundled data and the embedded model, no key needed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from verbcal.cli.app import app, console, err_console
from verbcal.cli.calibrate import friendly_errors
from verbcal.cli.run import print_run_summary
from verbcal.datasets import RECORDED
from verbcal.run_metrics import RunMetrics


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Directory for the demo's runs.")] = Path("runs/demo"),
    dataset: Annotated[str, typer.Option(help="Text dataset for the embedded model.")] = "tweets",
    items: Annotated[int, typer.Option(min=10, help="Items the embedded model classifies.")] = 60,
    local: Annotated[
        bool, typer.Option(help="Run the embedded model (--no-local: recorded replies only).")
    ] = True,
) -> None:
    """Elicit, calibrate, evaluate and report end to end, offline and without an API key.

    Part 1 asks the embedded SmolLM2-135M model (llama.cpp, CPU) for distributions on a
    bundled sample, then calibrates and reports. Part 2 does the same analysis on the
    bundled replies of a frontier-class LLM (no calls), where calibration has real signal.
    A second run reuses the replies already in the store.

    Example: verbcal demo --items 40 --out runs/demo
    """
    started = time.monotonic()
    reports: list[tuple[str, Path | None, dict[str, Any]]] = []
    with friendly_errors():
        if local:
            reports.append(_local_part(out, dataset, items))
        for name in RECORDED:
            reports.append(_recorded_part(out, name))
    _closing(reports, time.monotonic() - started)


def _local_part(out: Path, dataset: str, n_items: int) -> tuple[str, Path | None, dict[str, Any]]:
    from verbcal import datasets, pipeline
    from verbcal.elicit import ElicitOptions

    console.rule(f"1. The embedded model: SmolLM2-135M-Instruct on {n_items} {dataset} items")
    target = out / f"local-{dataset}"
    items_path = out / f"{dataset}-items.jsonl"
    datasets.export_items(dataset, items_path, n=n_items, seed=0)
    task = datasets.text_dataset(dataset).task_path()
    err_console.print("starting the embedded llama.cpp server (loads in a few seconds) ...")
    result = pipeline.run(
        task,
        items_path,
        target,
        # one request at a time: llama.cpp's arithmetic depends on which requests share a
        # batch, so only then do the replies (and this part's numbers) repeat run after run;
        # on a small machine it is no slower
        ElicitOptions(backend="local", concurrency=1, max_tokens=96),
        console=err_console,
        overwrite=True,
    )
    print_run_summary(result)
    _honest_note(target)
    return (f"embedded SmolLM2-135M on {dataset}", result.report, result.metrics)


def _honest_note(target: Path) -> None:
    """What a 135M model's verbalized probabilities are worth, measured on this run."""
    records = [json.loads(line) for line in (target / "predictions.jsonl").open()]
    usable = [r for r in records if r.get("probs")]
    distinct = {tuple(sorted(r["probs"].items())) for r in usable}
    gold = [r.get("label") for r in usable if r.get("label")]
    majority = max((gold.count(g) for g in set(gold)), default=0) / max(len(gold), 1)
    console.print(
        f"[bold]What this shows:[/] {len(usable)} of {len(records)} replies gave a usable "
        f"distribution, with only {len(distinct)} distinct distributions among them; always "
        f"answering the most common label would score accuracy {majority:.2f}. A 135M model's "
        "verbalized probabilities carry little signal: calibration can at best make them honest "
        "(close to the base rates), not informative, and with so few calibration items a "
        "flexible calibrator can overfit (compare the test NLL above). Part 2 shows a capable LLM.",
        highlight=False,
    )


def _recorded_part(out: Path, name: str) -> tuple[str, Path | None, dict[str, Any]]:
    from verbcal import pipeline

    console.rule(f"2. Recorded replies of a frontier-class LLM: recorded:{name} (no calls)")
    result = pipeline.run_from_predictions(
        f"recorded:{name}", out / f"recorded-{name}", overwrite=True
    )
    print_run_summary(result)
    return (f"frontier LLM, recorded:{name}", result.report, result.metrics)


def _closing(reports: list[tuple[str, Path | None, dict[str, Any]]], seconds: float) -> None:
    table = Table(
        title=f"verbcal demo finished in {seconds:.0f} s: test-set results, raw → recommended",
        caption="raw = the verbalized distribution normalised (identity, nothing fitted); "
        "recommended = built by auto from cross-validated NLL on the calibration part "
        "(a stack: candidates weighted by out-of-fold log score). The test part is never "
        "used to choose.",
    )
    for column in ("run", "recommended", "ECE raw → rec.", "NLL raw → rec.", "report"):
        table.add_column(column)
    worse: list[str] = []
    for title, report, written in reports:
        metrics = RunMetrics.from_dict(written)
        best = metrics.recommended
        before, after = metrics.methods["identity"].test, metrics.methods[best].test
        flags = [m for m in ("ece", "nll") if after[m] > before[m]]
        if flags:
            worse.append(
                f"{title}: {best} is worse than raw on the test part ({', '.join(flags)}) with "
                f"{metrics.n_calibration} calibration / {metrics.n_test} test items"
            )
        built = metrics.auto.get("built", best)
        table.add_row(
            title,
            escape(best if built == best else f"{best}: {built}"),
            f"{before['ece']:.3f} → {after['ece']:.3f}" + (" (worse)" if "ece" in flags else ""),
            f"{before['nll']:.3f} → {after['nll']:.3f}" + (" (worse)" if "nll" in flags else ""),
            str(report) if report else "-",
        )
    console.print(table)
    for line in worse:
        console.print(f"[bold yellow]note:[/] {escape(line)}", highlight=False)
    if worse:
        console.print(
            "Why: the recommendation is made on the calibration part only, and a small test "
            "part is noisy (a few items move ECE by several points; see the bootstrap "
            "intervals in each run's table); it is shown, not hidden.",
            highlight=False,
        )
    console.print("Open a report in a browser; `verbcal --help` lists what else verbcal does.")
