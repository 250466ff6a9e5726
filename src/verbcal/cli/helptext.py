"""Command help read from docstrings, reflowed so the terminal wraps it, not the source.

Typer's ``rich`` markup mode keeps every line break of a docstring, so a docstring wrapped
at the source's line length shows as ragged lines in an 80-column terminal.
:func:`reflow` joins the lines of each paragraph and keeps the breaks that mean something:
blank lines between paragraphs, list items (``-``, ``*``, ``•``, ``1.``) and indented lines.
:func:`reflow_help` applies it to every command of an app (and its sub-apps) that takes its
help from a docstring.
"""

from __future__ import annotations

import inspect
import re

import typer

_KEEP = re.compile(r"^(\s+\S|[-*•] |\d+[.)] )")
"""A line that starts a new line of its own: indented, or a list item."""


def reflow(doc: str) -> str:
    """``doc`` with the lines of each paragraph joined (see the module docstring)."""
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(doc)):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not _KEEP.match(line):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def reflow_help(app: typer.Typer) -> None:
    """Give every docstring-documented command of ``app`` and its sub-apps reflowed help."""
    for command in app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = reflow(command.callback.__doc__)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)


__all__ = ["reflow", "reflow_help"]
