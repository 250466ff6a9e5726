"""The Typer application that every CLI module registers its commands on."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

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


def print_error(message: str, soft_wrap: bool = False) -> None:
    """``error: <message>`` on stderr. The message is text, never rich markup: paths, labels
    and ``verbcal[extra]`` keep their brackets."""
    err_console.print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=soft_wrap
    )


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
