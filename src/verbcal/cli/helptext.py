"""Command help as people read it: reflowed docstrings, brackets shown as written.

Typer's ``rich`` markup mode keeps every line break of a docstring, so a docstring wrapped
at the source's line length shows as ragged lines in an 80-column terminal.
:func:`reflow` joins the lines of each paragraph and keeps the breaks that mean something:
blank lines between paragraphs, list items (``-``, ``*``, ``•``, ``1.``) and indented lines.
The same mode reads ``[word]`` as a style and drops it, so ``verbcal[datasets]`` or
``auto[rule=1se]`` would lose their brackets: :func:`literal_brackets` escapes every bracket
that is not a rich style. :func:`reflow_help` applies both to every command of an app (and
its sub-apps) and to their options' help.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import typer
from rich.errors import StyleSyntaxError
from rich.style import Style

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


def literal_brackets(text: str) -> str:
    """``text`` with every ``[...]`` that is not a rich style (``[bold]``, ``[/]``) escaped,
    so it shows as written. Idempotent."""

    def escape(match: re.Match[str]) -> str:
        inner = match.group(1)
        return (
            match.group(0) if inner.startswith("/") or _is_style(inner) else "\\" + match.group(0)
        )

    return re.sub(r"(?<!\\)\[([^\[\]]*)\]", escape, text)


def _is_style(text: str) -> bool:
    try:
        Style.parse(text)
    except StyleSyntaxError:
        return False
    return bool(text.strip())


def reflow_help(app: typer.Typer) -> None:
    """Give every command of ``app`` and its sub-apps reflowed help from its docstring (where
    no ``help`` is given) and literal brackets in its and its options' help."""
    if isinstance(app.info.help, str):
        app.info.help = literal_brackets(app.info.help)
    for command in app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = reflow(command.callback.__doc__)
        if isinstance(command.help, str):
            command.help = literal_brackets(command.help)
        for option in _option_infos(command):
            if isinstance(option.help, str):
                option.help = literal_brackets(option.help)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)


def _option_infos(command: typer.models.CommandInfo) -> list[Any]:
    """The Typer parameter infos of a command (from ``Annotated`` metadata or defaults)."""
    if command.callback is None:
        return []
    out = []
    for parameter in inspect.signature(command.callback).parameters.values():
        found = [*getattr(parameter.annotation, "__metadata__", ()), parameter.default]
        out += [m for m in found if isinstance(m, typer.models.ParameterInfo)]
    return out


__all__ = ["literal_brackets", "reflow", "reflow_help"]
