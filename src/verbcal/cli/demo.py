"""`verbcal demo`: the main job end to end on bundled data, no key needed."""

from __future__ import annotations

from typing import Annotated

import typer

from verbcal.cli.app import app, console
from verbcal.cli.calibrate import compare
from verbcal.datasets import RECORDED


@app.command()
def demo(
    repeats: Annotated[int, typer.Option(help="Random stratified splits per dataset.")] = 20,
) -> None:
    """Compare calibrators on the bundled replies of a frontier-class LLM (no calls, no key).

    Example: verbcal demo --repeats 50
    """
    for name, description in RECORDED.items():
        console.rule(f"recorded:{name} — {description}")
        compare(data=f"recorded:{name}", repeats=repeats)
