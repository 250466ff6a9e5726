"""Command help is reflowed: the terminal wraps it, not the docstring's line length."""

from __future__ import annotations

import re

import typer

from verbcal.cli import app
from verbcal.cli.helptext import reflow, reflow_help


def test_reflow_joins_paragraph_lines_and_keeps_paragraphs_lists_and_indents() -> None:
    doc = """First line
    goes on.

    A paragraph wrapped
    at the source's width:
    - one item
      indented more
    - another item
    1. numbered

    Last."""
    assert reflow(doc) == (
        "First line goes on.\n\n"
        "A paragraph wrapped at the source's width:\n- one item\n  indented more\n"
        "- another item\n1. numbered\n\nLast."
    )


def _commands(typer_app: typer.Typer) -> list[typer.models.CommandInfo]:
    out = list(typer_app.registered_commands)
    for group in typer_app.registered_groups:
        assert group.typer_instance is not None
        out += _commands(group.typer_instance)
    return out


def test_every_command_of_the_cli_has_reflowed_help() -> None:
    commands = _commands(app)
    assert len(commands) >= 19
    for command in commands:
        assert command.help, f"{command.callback} has no help"
        for paragraph in command.help.split("\n\n"):
            for line in paragraph.splitlines()[1:]:
                assert re.match(r"(\s+\S|[-*•] |\d+[.)] )", line), (command.name, line)


def test_help_given_explicitly_is_left_alone() -> None:
    sub = typer.Typer()

    @sub.command(help="kept\nas written")
    def given() -> None:
        """Not used."""

    @sub.command()
    def documented() -> None:
        """Wrapped
        docstring."""

    reflow_help(sub)
    helps = [c.help for c in sub.registered_commands]
    assert helps == ["kept\nas written", "Wrapped docstring."]
