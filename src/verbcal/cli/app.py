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
MIN_WIDTH = 150
"""Tables are wide: output that is not a terminal (pipes, CI logs) gets at least this width."""
console = Console()
err_console = Console(stderr=True)
for _console in (console, err_console):
    if not _console.is_terminal:
        _console.width = max(_console.width, MIN_WIDTH)


def _version(value: bool) -> None:
    if value:
        from verbcal import __version__

        console.print(f"verbcal {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Calibrate the probabilities an LLM verbalizes, and measure how far to trust them."""
