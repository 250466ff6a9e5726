"""Where a predictions file's probabilities came from: verbalized numbers or a decision model.

``verbcal elicit`` writes a ``provenance`` field on every record (``kind`` ``verbalized`` or
``decision``, ``backend``, ``model``, and for decision models the ``question`` asked).
:func:`summarize` counts the distinct sources of a file; :func:`describe` says it in words,
for ``run``, ``evaluate`` and the report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any


def summarize(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The distinct ``provenance`` values with the number of records of each, most first.

    Records without the field are counted under ``{"kind": "unrecorded"}``.
    """
    counts: Counter[str] = Counter()
    for record in records:
        source = record.get("provenance")
        if not isinstance(source, Mapping):
            source = {"kind": "unrecorded"}
        counts[json.dumps(dict(source), sort_keys=True)] += 1
    return [{**json.loads(key), "records": n} for key, n in counts.most_common()]


def describe_one(source: Mapping[str, Any]) -> str:
    """One source in words."""
    kind = source.get("kind")
    who = f"{source.get('backend')} / {source.get('model')}"
    if kind == "decision":
        question = source.get("question", "?")
        about = f" about {source['about']!r}" if source.get("about") else ""
        return (
            f"decision model {who}: probabilities read from its answers to a {question}"
            f" question{about} (no reply text parsed)"
        )
    if kind == "verbalized":
        return f"verbalized by {who}: numbers the model wrote, parsed from its replies"
    return "not recorded (the predictions carry no provenance field)"


def describe(summary: list[dict[str, Any]] | None) -> str:
    """The sources of a file in words; several are listed with their record counts."""
    if not summary:
        return describe_one({})
    if len(summary) == 1:
        return describe_one(summary[0])
    return "; ".join(f"{describe_one(s)} ({s['records']} records)" for s in summary)


def short(summary: list[dict[str, Any]] | None) -> str:
    """A few words for a title: ``decision model``, ``mixed sources`` or ``verbalized``.

    A file without provenance counts as verbalized: that is what a predictions file holds
    unless ``elicit`` recorded a decision model as its source.
    """
    kinds = {s.get("kind") for s in summary or []} - {"unrecorded"}
    if kinds == {"decision"}:
        return "decision model"
    return "mixed sources" if len(kinds) > 1 else "verbalized"
