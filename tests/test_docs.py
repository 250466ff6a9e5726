"""The documentation: every documented command runs as written, the site's nav and CLI page.

Shell commands in ```console blocks (lines starting with ``$ verbcal``) of README.md and
docs/*.md are executed in order, one fresh directory per file, through the real CLI. A file
the reader brings (``my-predictions.jsonl``) is stood in for by a copy of bundled data.
Commands that need an API key or a server are written in ```bash blocks and not run here.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from verbcal import datasets
from verbcal.cli import app
from verbcal.cli.reference import markdown

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
CONSOLE = re.compile(r"^```console\n(.*?)^```", re.MULTILINE | re.DOTALL)


def documented_commands(path: Path) -> list[str]:
    """The ``$ verbcal ...`` lines of every console block, continuation lines joined."""
    commands: list[str] = []
    for block in CONSOLE.findall(path.read_text(encoding="utf-8")):
        pending = ""
        for line in block.splitlines():
            if pending:
                pending += " " + line.strip()
            elif line.startswith("$ "):
                pending = line[2:].strip()
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
                continue
            if pending:
                commands.append(pending)
                pending = ""
    return commands


WITH_COMMANDS = [p for p in DOCUMENTS if documented_commands(p)]


def test_the_readme_and_the_site_document_commands() -> None:
    names = {p.name for p in WITH_COMMANDS}
    assert {"README.md", "quickstart.md", "own-outputs.md", "from-api-key.md"} <= names


def test_the_readme_opens_with_commands_that_work_from_a_clone() -> None:
    """The first code block: make demo, make test, an editable install (the Makefile has the
    targets); the index install comes after it, for when verbcal is published."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"^```\w*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert first is not None
    lines = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert lines[:3] == ["make demo", "make test", 'pip install -e ".[elicit,report]"']
    targets = re.findall(r"^(\w+):", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert {"demo", "test"} <= set(targets)
    assert text.index('pip install "verbcal[') > first.end()


@pytest.mark.slow
@pytest.mark.parametrize("path", WITH_COMMANDS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_run_as_written(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(datasets.resolve("recorded:tweets"), tmp_path / "my-predictions.jsonl")
    runner = CliRunner()
    for command in documented_commands(path):
        words = shlex.split(command)
        assert words[0] == "verbcal", f"{path.name}: only verbcal commands run here: {command}"
        result = runner.invoke(app, words[1:])
        assert result.exit_code == 0, f"{path.name}: `{command}` failed:\n{result.output}"


def load_hooks() -> Any:
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "tools/mkdocs_hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_optional_nav_pages_are_listed_only_when_they_exist(tmp_path: Path) -> None:
    prune = load_hooks()._prune
    (tmp_path / "index.md").write_text("# x")
    (tmp_path / "serving.md").write_text("# x")
    nav = [
        {"Home": "index.md"},
        {"Recipes": [{"Serving": "serving.md"}, {"Scale": "scale.md"}]},
        {"Only optional": [{"Elicit": "elicit.md"}]},
        {"Required": "missing.md"},
    ]
    kept = prune(nav, tmp_path, {"serving.md", "scale.md", "elicit.md"})
    assert kept == [
        {"Home": "index.md"},
        {"Recipes": [{"Serving": "serving.md"}]},
        {"Required": "missing.md"},  # not optional: left for mkdocs --strict to reject
    ]


def test_every_nav_page_exists_or_is_optional() -> None:
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python", "#"))
    optional = set(config["extra"]["optional_pages"])
    generated = {"cli.md"}

    def pages(nav: list[Any]) -> list[str]:
        found: list[str] = []
        for entry in nav:
            (target,) = entry.values()
            found += pages(target) if isinstance(target, list) else [target]
        return found

    for page in pages(config["nav"]):
        assert page in optional | generated or (ROOT / "docs" / page).is_file(), page


def test_the_cli_reference_covers_every_command_and_option() -> None:
    text = markdown()
    for command in app.registered_commands:
        assert f"`verbcal {command.name or command.callback.__name__}`" in text  # type: ignore[union-attr]
    assert "`verbcal datasets export`" in text
    for option in ("--calib-frac", "--overwrite", "--llm-temperature", "--data"):
        assert f"`{option}" in text or f", {option}" in text
    assert "--predictions" not in text  # the hidden alias stays hidden
