"""Command help is reflowed: the terminal wraps it, not the docstring's line length."""

from __future__ import annotations

import re

import pytest
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


def _helps(command: typer.models.CommandInfo) -> list[str]:
    """The command's help and its options' help texts, as written."""
    import inspect

    texts = [command.help or ""]
    assert command.callback is not None
    for parameter in inspect.signature(command.callback).parameters.values():
        for meta in getattr(parameter.annotation, "__metadata__", ()):
            texts.append(getattr(meta, "help", None) or "")
        texts.append(getattr(parameter.default, "help", None) or "")
    return texts


def test_brackets_in_help_are_shown_not_taken_for_rich_markup() -> None:
    """`verbcal[datasets]` or `temperature[prior=none]` in a help text must reach the screen
    (rich markup mode reads an unescaped ``[word]`` as a style and drops it)."""
    from typer.testing import CliRunner

    runner = CliRunner()
    groups = {g.typer_instance: g.name for g in app.registered_groups}
    checked = 0
    for command in _commands(app):
        name = command.name or (command.callback.__name__ if command.callback else "")
        path = [name.replace("_", "-")]
        for sub, group in groups.items():
            if sub is not None and command in sub.registered_commands:
                path = [str(group), *path]
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400"}).output
        flat = " ".join(shown.replace("│", " ").split())
        for text in _helps(command):
            for bracket in re.findall(r"\\?\[[^\]\s]*\]", text):
                literal = bracket.lstrip("\\")
                if literal.startswith(("[bold", "[/", "[dim", "[red", "[green", "[italic")):
                    continue
                assert literal in flat, (path, literal)
                checked += 1
    assert checked > 0


def test_literal_brackets_escapes_all_but_styles_and_is_idempotent() -> None:
    from verbcal.cli.helptext import literal_brackets

    text = "pip install 'verbcal[datasets]'; auto[rule=1se]; [bold]kept[/] and [dim]kept[/dim]"
    once = literal_brackets(text)
    assert once == (
        "pip install 'verbcal\\[datasets]'; auto\\[rule=1se]; [bold]kept[/] and [dim]kept[/dim]"
    )
    assert literal_brackets(once) == once


def test_an_error_keeps_the_brackets_of_an_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from rich.console import Console

    cli_app = importlib.import_module("verbcal.cli.app")  # the module, not the Typer app
    monkeypatch.setattr(cli_app, "err_console", Console(stderr=True, width=200))
    cli_app.print_error("the openai package is missing; run: pip install 'verbcal[elicit]'")
    assert "pip install 'verbcal[elicit]'" in capsys.readouterr().err


def test_tables_show_method_specs_with_their_brackets() -> None:
    """compare's table names each variant as written: ``temperature[prior=none]`` is not
    ``temperature`` (rich would read ``[prior=none]`` as a style and drop it)."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(
        app,
        ["compare", "--data", "recorded:tweets", "--repeats", "2", "--methods",
         "temperature,temperature[prior=none],matrix[prior=1]"],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "temperature[prior=none]" in result.output
    assert "matrix[prior=1]" in result.output
