"""``--source``, ``--about`` and ``--lexicon`` on every command that reads predictions.

One place adds the three options to those commands (:func:`add_reading_options`, called
once when the CLI is assembled) and turns them into the :class:`~verbcal.predictions.ReadOptions`
in force while the command runs, so every predictions file it reads (``--data``,
``--calib``, ``recorded:...``) is read the same way. The commands themselves are unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from verbcal.predictions import SOURCES, ReadOptions, reading

READING_COMMANDS = frozenset(
    {
        "fit",
        "apply",
        "evaluate",
        "compare",
        "threshold",
        "selective",
        "sets",
        "decide_cost",
        "route",
        "run_command",
        "study",
    }
)
"""Command functions that read predictions (by function name)."""

Source = Annotated[
    str,
    typer.Option(
        "--source",
        help="Which reply to read where a record has both: probs (the numbers, default) or "
        "verbal (the phrase in 'verbal', read through the lexicon as P(about)).",
    ),
]
About = Annotated[
    str | None,
    typer.Option(
        "--about",
        help="With --source verbal: the label the phrases speak of, for records that do not "
        "say ('about' field; the bundled judge sets say).",
    ),
]
LexiconPath = Annotated[
    Path | None,
    typer.Option(
        "--lexicon",
        help="With --source verbal: a lexicon YAML that extends the bundled one (or replaces "
        "it with mode: replace).",
    ),
]
_EXTRA = {"source": (Source, "probs"), "about": (About, None), "lexicon": (LexiconPath, None)}


def with_reading_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with ``--source/--about/--lexicon`` added; they are in force while it runs."""
    signature = inspect.signature(func, eval_str=True)
    if any(name in signature.parameters for name in _EXTRA):
        return func
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
        for name, (a, d) in _EXTRA.items()
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        source = kwargs.pop("source", "probs")
        about = kwargs.pop("about", None)
        lexicon = kwargs.pop("lexicon", None)
        if source not in SOURCES:
            raise typer.BadParameter(
                f"must be one of {', '.join(SOURCES)}, got {source!r}", param_hint="'--source'"
            )
        options = ReadOptions(source, about, None if lexicon is None else str(lexicon))
        with reading(options):
            return func(*args, **kwargs)

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *extra]
    )
    wrapper.__annotations__ = {
        **{p.name: p.annotation for p in signature.parameters.values()},
        **{name: a for name, (a, _) in _EXTRA.items()},
        "return": signature.return_annotation,
    }
    del wrapper.__wrapped__  # typer must see the new signature, not the original
    return wrapper


def add_reading_options(app: typer.Typer) -> None:
    """Give every predictions-reading command of ``app`` the reading options (once)."""
    for info in app.registered_commands:
        callback = info.callback
        if callback is not None and callback.__name__ in READING_COMMANDS:
            info.callback = with_reading_options(callback)
