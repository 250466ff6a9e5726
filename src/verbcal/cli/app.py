"""The Typer application that every CLI module registers its commands on."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="verbcal",
    help="Calibrate the probabilities an LLM verbalizes, and measure how far to trust them.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)
