"""Data shipped with verbcal: real verbalized distributions recorded from a frontier-class LLM.

``recorded:<name>`` works wherever a predictions file is expected. Provenance and
licences are in ``verbcal/data/recorded/README.md`` (printed by :func:`recorded_readme`).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from verbcal.predictions import Predictions, PredictionsError, read_predictions

RECORDED: dict[str, str] = {
    "tweets": "tweet sentiment (negative, neutral, positive), 201 items, texts MIT",
    "drug-reviews": "drug review sentiment (negative, neutral, positive), 190 items, CC BY 4.0",
    "bbc-news": "BBC news topic (5 labels), 150 items, research use",
}
"""Bundled recorded sets: name → task, size and licence of the texts."""

PREFIX = "recorded:"


def recorded_path(name: str) -> Path:
    """Path of a bundled recorded predictions file."""
    if name not in RECORDED:
        raise PredictionsError(
            PREFIX + name, None, None, "no such bundled set", f"Choose one of {', '.join(RECORDED)}"
        )
    return Path(str(resources.files("verbcal") / "data" / "recorded" / f"{name}.jsonl"))


def recorded_readme() -> str:
    """Provenance and licences of the recorded sets."""
    return (resources.files("verbcal") / "data" / "recorded" / "README.md").read_text("utf-8")


def resolve(spec: str | Path) -> Path:
    """A path for ``spec``: ``recorded:<name>`` for bundled data, else the path itself."""
    text = str(spec)
    return recorded_path(text[len(PREFIX) :]) if text.startswith(PREFIX) else Path(text)


def load(spec: str | Path, labels: Sequence[str] | None = None) -> Predictions:
    """Read predictions from a file or ``recorded:<name>`` (kept as the source's name)."""
    predictions = read_predictions(resolve(spec), labels)
    predictions.source = str(spec)
    return predictions
