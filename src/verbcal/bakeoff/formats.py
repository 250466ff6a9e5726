"""Reply formats of a bakeoff arm: the prompt, the JSON schema and the parser of each.

* ``numeric`` — the paper's format: a probability per label. Prompt and schema are the
  task's own (:meth:`verbcal.task.Task.render_prompt`, :meth:`~verbcal.task.Task.json_schema`),
  so the requests, and their store keys, are those of ``verbcal elicit``; parsed by
  :func:`verbcal.parse.parse_reply`.
* ``top-label`` — Tian et al.'s format: one answer and one stated confidence c in [0, 1]
  (a percentage is read as such). **Spreading, stated:** the answer gets c, every other
  label gets (1 - c) / (K - 1). A confidence below 1/K therefore makes the answer *less*
  likely than each other label: the reply is taken as written.
* ``verbal`` — a short phrase saying how likely the ``about`` label is. A
  :data:`VerbalParser` (the lexicon) maps it to P(about); the other labels share
  1 - P(about) evenly (for two labels: the other label gets it all). A phrase the parser
  cannot map is ``failed`` with the issue ``unknown_expression:<phrase>``, never a guess.
  With structured output (the arm's ``structured: true``, the default) the request carries
  :func:`verbal_schema`: ``{"likelihood": PHRASE}`` where PHRASE is one of the lexicon's
  English phrases (an ``enum``), so a server with constrained decoding (llama.cpp, OpenAI
  strict JSON schema) can only answer a phrase the lexicon maps. ``structured: false``
  asks for the bare phrase in free text. Either reply is read by :func:`parse_verbal`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from verbcal import lexicon
from verbcal.bakeoff.config import BakeoffError
from verbcal.task import prompt_template

VerbalParser = Callable[[str], float | None]
"""Maps a phrase (as the model wrote it) to the probability of the label it speaks of, or
None when it cannot. The lexicon of verbcal's judge work provides one."""


class LexiconParser:
    """The bundled lexicon as a :data:`VerbalParser`; it also sees ``about`` and the labels,
    so a verdict naming the other label flips the reading (see ``verbcal.lexicon``)."""

    def __call__(
        self, phrase: str, about: str | None = None, labels: Sequence[str] = ()
    ) -> float | None:
        reply = lexicon.parse_verbal(phrase, None, about, tuple(labels))
        return None if reply.p is None else float(reply.p)


def default_verbal_parser() -> VerbalParser:
    """The bundled lexicon's parser."""
    return LexiconParser()


@dataclass(frozen=True)
class Parsed:
    """One reply read in a format: status ``ok``/``repaired``/``failed``, probs, issues."""

    status: str
    probs: dict[str, float] | None
    issues: tuple[str, ...] = ()


TOP_LABEL_TEMPLATE = prompt_template("""Answer with the most likely label and your confidence that it is correct. Reply with \
exactly one JSON object and nothing else: {"answer": one of {label_names}, written \
exactly as shown, "confidence": a number between 0 and 1}.""")

VERBAL_TEMPLATE = prompt_template("""How likely is it that the correct label is "{about}"? Reply with only a short phrase that \
says in words how likely you think it is (for example: "almost certain", "very likely", \
"probably", "about even", "probably not", "very unlikely", "almost impossible"). Do not \
give a number.""")


VERBAL_JSON_TEMPLATE = prompt_template("""How likely is it that the correct label is "{about}"? Say it in words, not as a number. \
Reply with exactly one JSON object and nothing else: {"likelihood": a short phrase such as \
"almost certain", "very likely", "probably", "about even", "probably not", "very unlikely" \
or "almost impossible"}.""")

VERBAL_FIELD = "likelihood"
"""The key of the phrase in a structured verbal reply (:func:`verbal_schema`)."""


def verbal_phrases() -> list[str]:
    """The phrases a structured verbal reply may use: the bundled lexicon's English phrases,
    from the most to the least probable (every one maps to a probability)."""
    return [phrase for phrase in lexicon.default_lexicon().phrases() if phrase.isascii()]


def verbal_schema(phrases: Sequence[str]) -> dict[str, Any]:
    """JSON schema of a structured verbal reply: ``{"likelihood": one of phrases}``."""
    if not phrases:
        raise BakeoffError("a structured verbal reply needs at least one phrase to choose from")
    return {
        "type": "object",
        "properties": {VERBAL_FIELD: {"type": "string", "enum": list(phrases)}},
        "required": [VERBAL_FIELD],
        "additionalProperties": False,
    }


def top_label_schema(labels: Sequence[str]) -> dict[str, Any]:
    """JSON schema of a top-label reply: the answer (one of the labels) and a confidence."""
    return {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": list(labels)},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }


def spread(labels: Sequence[str], label: str, p: float) -> dict[str, float]:
    """``label`` gets ``p``, the other labels share ``1 - p`` evenly (the stated spreading)."""
    rest = (1.0 - p) / (len(labels) - 1)
    return {name: (p if name == label else rest) for name in labels}


_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
_PAIR = re.compile(
    r"(answer|label|confidence)\s*[:=]\s*\"?([^\",\n}]+)\"?", re.IGNORECASE | re.MULTILINE
)


def _number(value: Any) -> tuple[float | None, bool]:
    """A confidence from a number or a string; (value, was_percentage)."""
    if isinstance(value, bool):
        return None, False
    if isinstance(value, int | float):
        number = float(value)
        percent = False
    else:
        match = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*", str(value))
        if not match:
            return None, False
        number, percent = float(match.group(1)), bool(match.group(2))
    if percent or 1.0 < number <= 100.0:
        return number / 100.0, True
    return number, False


def _match_label(value: Any, labels: Sequence[str]) -> tuple[str | None, bool]:
    text = str(value).strip().strip("\"'`*. ")
    if text in labels:
        return text, False
    folded = {label.casefold(): label for label in labels}
    hit = folded.get(text.casefold())
    return hit, hit is not None


def parse_top_label(text: str, labels: Sequence[str]) -> Parsed:
    """Read ``{"answer": L, "confidence": c}`` (or ``answer: L`` / ``confidence: c`` lines)."""
    fields: dict[str, Any] = {}
    issues: list[str] = []
    stripped = text.strip()
    try:
        data = json.loads(stripped)
    except ValueError:
        data = None
        for candidate in _JSON_OBJECT.findall(stripped):
            try:
                data = json.loads(candidate)
            except ValueError:
                continue
            issues.append("prose_around_json")
            break
    if isinstance(data, dict):
        fields = {str(k).casefold(): v for k, v in data.items()}
        if "label" in fields and "answer" not in fields:
            fields["answer"] = fields["label"]
    else:
        for key, value in _PAIR.findall(stripped):
            fields.setdefault("answer" if key.casefold() == "label" else key.casefold(), value)
        if fields:
            issues.append("key_value_text")
    if not stripped:
        return Parsed("failed", None, ("empty_reply",))
    if "answer" not in fields or "confidence" not in fields:
        return Parsed("failed", None, ("no_answer_and_confidence",))
    label, drifted = _match_label(fields["answer"], labels)
    if label is None:
        return Parsed("failed", None, (f"unknown_label:{str(fields['answer'])[:40]}",))
    if drifted:
        issues.append(f"case_drift:{label}")
    confidence, percent = _number(fields["confidence"])
    if confidence is None or not 0.0 <= confidence <= 1.0:
        return Parsed("failed", None, (f"bad_confidence:{str(fields['confidence'])[:40]}",))
    if percent:
        issues.append("percentages")
    return Parsed("repaired" if issues else "ok", spread(labels, label, confidence), tuple(issues))


def verbal_phrase(text: str) -> tuple[str, tuple[str, ...]]:
    """The phrase of a verbal reply and how it was found: a structured reply's
    ``{"likelihood": PHRASE}`` (issue ``prose_around_json`` when text surrounds the object),
    else the whole text (a free-text reply). A JSON object without the key is ``no_phrase``."""
    stripped = text.strip()
    if "{" not in stripped:
        return stripped, ()
    issues: tuple[str, ...] = ()
    try:
        data = json.loads(stripped)
    except ValueError:
        data, issues = None, ("prose_around_json",)
        for candidate in _JSON_OBJECT.findall(stripped):
            try:
                data = json.loads(candidate)
            except ValueError:
                continue
            break
    if not isinstance(data, dict):
        return stripped, ()
    fields = {str(k).casefold(): v for k, v in data.items()}
    value = fields.get(VERBAL_FIELD)
    if not isinstance(value, str):
        return "", ("no_phrase",)
    return value.strip(), issues


def parse_verbal(text: str, labels: Sequence[str], about: str, parser: VerbalParser) -> Parsed:
    """A phrase → P(about) through ``parser``; the other labels share the rest evenly.

    ``text`` is the bare phrase or a structured reply ``{"likelihood": PHRASE}``
    (:func:`verbal_phrase`)."""
    phrase, issues = verbal_phrase(text)
    if not phrase:
        return Parsed("failed", None, issues or ("empty_reply",))
    p = parser(phrase, about, labels) if isinstance(parser, LexiconParser) else parser(phrase)
    if p is None:
        return Parsed("failed", None, (*issues, f"unknown_expression:{phrase[:60]}"))
    if not 0.0 <= p <= 1.0:
        raise BakeoffError(f"the verbal parser mapped {phrase!r} to {p}, outside [0, 1]")
    return Parsed("repaired" if issues else "ok", spread(labels, about, float(p)), issues)


__all__ = [
    "TOP_LABEL_TEMPLATE",
    "VERBAL_FIELD",
    "VERBAL_JSON_TEMPLATE",
    "VERBAL_TEMPLATE",
    "LexiconParser",
    "Parsed",
    "VerbalParser",
    "default_verbal_parser",
    "parse_top_label",
    "parse_verbal",
    "spread",
    "top_label_schema",
    "verbal_phrase",
    "verbal_phrases",
    "verbal_schema",
]
