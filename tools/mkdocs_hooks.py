"""MkDocs hooks of verbcal's documentation site (see ``hooks:`` in mkdocs.yml).

* ``cli.md`` is generated from the Typer app at build time (:mod:`verbcal.cli.reference`),
  so the command-line reference cannot go stale.
* Nav entries listed under ``extra.optional_pages`` are dropped while their file does not
  exist (pages that other branches add); every other missing page still fails the build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files


def _prune(nav: list[Any], docs_dir: Path, optional: set[str]) -> list[Any]:
    kept: list[Any] = []
    for entry in nav:
        if isinstance(entry, dict):
            ((title, target),) = entry.items()
            if isinstance(target, list):
                children = _prune(target, docs_dir, optional)
                if children:
                    kept.append({title: children})
                continue
            if target in optional and not (docs_dir / target).is_file():
                continue
        kept.append(entry)
    return kept


def on_config(config: Any) -> Any:
    optional = set(config.extra.get("optional_pages", []))
    config.nav = _prune(config.nav, Path(config.docs_dir), optional)
    return config


def on_files(files: Files, config: Any) -> Files:
    from verbcal.cli.reference import markdown

    files.append(File.generated(config, "cli.md", content=markdown()))
    return files
