"""The command-line reference as Markdown, generated from the Typer app (for the docs site).

Typer's own generator (``typer verbcal.cli utils docs``) does the work, so the page
always matches ``verbcal COMMAND --help``; the docs site calls :func:`markdown` when it
is built.
"""

from __future__ import annotations

import typer
from typer.cli import get_docs_for_click
from typer.core import MARKUP_MODE_KEY

INTRO = (
    "Generated from the command-line app when this site is built, so it always matches "
    "`verbcal COMMAND --help`. Every numeric option is checked before a command runs, "
    "so an impossible value stops with exit status 2 and writes nothing."
)


def markdown() -> str:
    """Every command and option of ``verbcal`` as one Markdown page."""
    from verbcal.cli import app

    command = typer.main.get_command(app)
    context = typer.Context(command, obj={MARKUP_MODE_KEY: app.rich_markup_mode})
    text = get_docs_for_click(
        obj=command, ctx=context, name="verbcal", title="Command-line reference"
    )
    head, _, rest = text.partition("\n\n")
    return f"{head}\n\n{INTRO}\n\n{rest.strip()}\n"
