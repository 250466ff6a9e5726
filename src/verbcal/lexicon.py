"""Confidence stated in words: a lexicon of probability phrases and the parser of verbal replies.

A verbal reply is a short phrase such as ``"very likely"``, ``"I'd say probably not"`` or
``非常確定`` about one label (``about``) of a binary task. :func:`parse_verbal` maps it to
P(about) through a :class:`Lexicon` (default: ``verbcal/data/lexicon.yaml``, English words
of estimative probability and hedges, Chinese in simplified and traditional script, each
value with its source). It never guesses: a phrase it cannot map is ``failed`` with the issue
``unknown_expression:<phrase>``.

What it accepts (the issue codes it adds to a ``repaired`` reply):

* case, Unicode width, quotes, trailing punctuation and extra spaces (no issue);
* a lead-in such as "I'd say", "I think it is", "Answer:", "confidence:" (``lead_in``);
* a verdict beside the phrase, e.g. ``"acceptable, very likely"`` or ``"yes - probably"``:
  the verdict is dropped (``verdict:<word>``); a verdict naming the *other* label of a binary
  task flips the reading (``"unacceptable, almost certain"`` about ``acceptable`` gives
  1 - p(almost certain)) and adds ``verdict_flips:<label>``;
* ``"not <phrase>"`` / ``不<phrase>`` / ``"<phrase> not"`` where the whole is not listed:
  1 - p(phrase) (``negated``);
* a phrase the lexicon composes from its parts (``composed``), where the whole is not
  listed: a *modifier* before a level or a listed phrase at least :data:`MIN_LEAN` from
  even odds scales its log-odds,
  ``p = σ(m · logit p(phrase))`` (``"moderately likely"``, ``"very probable"``,
  ``"quite unlikely"``); a *level* alone or before a chance noun (``"low"``,
  ``"a high likelihood"``, ``"very good odds"``); ``"not <intensifier> <phrase>"``, a
  weaker denial than ``"not <phrase>"``: ``σ(-logit p(phrase) / m)`` (``"not very likely"``);
* a listed phrase followed by a restatement of the question (``"unlikely to contain a
  hallucination"``, ``"very likely that the translation is acceptable"``): the clause after
  ``to``/``that``/``it``... is dropped (``restated``) unless it negates (then ``failed``);
  naming the other label of a binary task flips the reading (``verdict_flips:<label>``);
* a number where words were asked for (``"about 80%"``, ``"0.8"``, ``"80 percent"``):
  read as the probability (``number``);
* ``"probably no"``: a ``no`` verdict after a phrase above even odds is what the phrase
  is about, so the reading flips (``verdict_flips:no``); ``"no, very unlikely"`` does not.

Only numpy-free standard library and PyYAML: importable from core modules.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

Status = Literal["ok", "repaired", "failed"]

_LEAD_INS = (
    "i would say",
    "i'd say",
    "id say",
    "i think it is",
    "i think it's",
    "i think",
    "i believe it is",
    "i believe",
    "i'm",
    "i am",
    "it is",
    "it's",
    "this is",
    "that is",
    "answer",
    "final answer",
    "confidence",
    "likelihood",
    "my answer",
    "my confidence",
    "我认为",
    "我認為",
    "我觉得",
    "我覺得",
    "答案",
)
_LEAD_INS_SORTED = sorted(_LEAD_INS, key=len, reverse=True)
_VERDICT_WORDS = ("yes", "no")
_STRIP = "\"'`*_.!?:;,()[]{}<>«»“”‘’「」『』。，！？：；、（）【】 \t\r\n"
_SPLIT = re.compile(r"\s*(?:[,;:/()\[\]|—–]|\s-\s|，|；|：|（|）)\s*")


class LexiconError(ValueError):
    """A lexicon file that cannot be used: names the file, the phrase and what to do."""


@dataclass(frozen=True)
class Entry:
    """One phrase of the lexicon: its probability and where the value comes from."""

    phrase: str
    p: float
    source: str
    note: str = ""


@dataclass(frozen=True)
class Lexicon:
    """Phrases (keyed by their normalised form) and the sources cited for their values."""

    entries: Mapping[str, Entry]
    sources: Mapping[str, str] = field(default_factory=dict)
    path: str = "<memory>"
    modifiers: Mapping[str, Entry] = field(default_factory=dict)
    """Modifier word -> its log-odds multiplier (``Entry.p`` holds the multiplier)."""
    levels: Mapping[str, Entry] = field(default_factory=dict)
    """Level word ("low", "high" ...) -> probability, alone or before a chance noun."""

    def get(self, phrase: str) -> Entry | None:
        """The entry of ``phrase`` (matched after :func:`normalise`), or None."""
        return self.entries.get(normalise(phrase))

    def value(self, phrase: str) -> float | None:
        """The lexicon probability of ``phrase`` (or of its negation read as 1 - p), or None."""
        reading = _lookup(self, normalise(phrase))
        return None if reading is None else reading[0]

    def phrases(self) -> list[str]:
        """Every listed phrase, from the most to the least probable."""
        return [e.phrase for e in sorted(self.entries.values(), key=lambda e: -e.p)]

    def extended(self, other: Lexicon) -> Lexicon:
        """This lexicon with ``other``'s phrases added (``other`` wins where both list one)."""
        return Lexicon(
            {**self.entries, **other.entries},
            {**self.sources, **other.sources},
            other.path,
            {**self.modifiers, **other.modifiers},
            {**self.levels, **other.levels},
        )


def normalise(text: str) -> str:
    """The matching form of a phrase: NFKC, case-folded, quotes/punctuation trimmed, spaces single."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = text.replace("’", "'").replace("‘", "'")
    text = " ".join(text.split())
    return text.strip(_STRIP)


CHANCE_NOUNS = ("chance", "chances", "likelihood", "probability", "odds", "possibility")
"""Nouns a level may stand before: "a high likelihood", "low odds"."""
_NUMBER = re.compile(
    r"^(?:about|around|roughly|approximately|approx\.?|~|maybe|probably)?\s*"
    r"(\d+(?:\.\d+)?|\.\d+)\s*(%|percent|per cent)?"
    r"(?:\s+(?:likely|likelihood|chance|chances|probability|probable|sure|confident|confidence))?$"
)
_NEGATIONS = frozenset({"not", "no", "never", "nor", "cannot", "isn't", "aren't", "doesn't"})
_RESTATE = ("to", "that", "it", "it's", "this", "the", "there", "for")


def _lookup(lexicon: Lexicon, key: str) -> tuple[float, str, list[str]] | None:
    """(probability, phrase, issues) of a normalised key: listed, composed, then negated."""
    entry = lexicon.entries.get(key)
    if entry is not None:
        return entry.p, entry.phrase, []
    composed = _compose(lexicon, key)
    if composed is not None:
        return composed[0], key, [composed[1]]
    if key.endswith(" not"):  # "very likely not", "certainly not": the phrase, denied
        inner = lexicon.entries.get(key[: -len(" not")])
        if inner is not None:
            return _complement(inner.p), key, ["negated"]
    for prefix in ("not ", "不"):
        rest = key[len(prefix) :].strip() if key.startswith(prefix) else ""
        if not rest:
            continue
        weakened = _weak_denial(lexicon, rest)  # "not very likely" is no 1 - p(very likely)
        if weakened is not None:
            return weakened, key, ["negated", "composed"]
        if rest.startswith(("very ", "so ", "too ", "很", "太")):
            return None
        inner = lexicon.entries.get(rest)
        if inner is not None:
            return _complement(inner.p), key, ["negated"]
    return None


def _compose(lexicon: Lexicon, key: str) -> tuple[float, str] | None:
    """(P, issue code) of a phrase the lexicon composes or a number (see the module doc)."""
    level = _level(lexicon, key)
    if level is not None:
        return level, "composed"
    number = _NUMBER.match(key)
    if number is not None:
        value = float(number.group(1))
        value = value / 100 if number.group(2) or value > 1 else value
        return (value, "number") if 0 <= value <= 1 else None
    for modifier, m in _modifiers(lexicon):
        rest = key[len(modifier) + 1 :] if key.startswith(modifier + " ") else ""
        base = _base(lexicon, rest) if rest else None
        if base is not None:
            return _scaled(base, m), "composed"
    return None


def _weak_denial(lexicon: Lexicon, rest: str) -> float | None:
    """``not <intensifier> <phrase>``: σ(-logit p(phrase) / m), for multipliers m > 1."""
    for modifier, m in _modifiers(lexicon):
        if m > 1 and rest.startswith(modifier + " "):
            base = _base(lexicon, rest[len(modifier) + 1 :])
            if base is not None:
                return _scaled(_complement(base), 1.0 / m)
    if rest.startswith("too ") and "very" in lexicon.modifiers:  # "not too likely"
        base = _base(lexicon, rest[4:])
        if base is not None:
            return _scaled(_complement(base), 1.0 / lexicon.modifiers["very"].p)
    return None


MIN_LEAN = 0.15
"""A modifier scales a listed phrase only if it is this far from even odds: near 0.5 the
side of the scale a phrase claims is not its value's side ("possibly" is 0.4, yet "very
possibly" claims more, not less), so such a composition fails rather than misreads."""


def _base(lexicon: Lexicon, key: str) -> float | None:
    """P of a listed phrase clear of even odds (:data:`MIN_LEAN`) or of a level: what a
    modifier may stand before."""
    entry = lexicon.entries.get(key)
    if entry is None:
        return _level(lexicon, key)
    return entry.p if abs(entry.p - 0.5) >= MIN_LEAN else None


def _level(lexicon: Lexicon, key: str) -> float | None:
    """P of ``<level>``, ``<level> <noun>`` or ``a <level> <noun>`` (nouns: :data:`CHANCE_NOUNS`)."""
    words = key.split()
    if words[:1] in (["a"], ["an"]):
        words = words[1:]
    if len(words) >= 2 and words[-1] in CHANCE_NOUNS:
        words = words[:-1]
    entry = lexicon.levels.get(" ".join(words))
    return entry.p if entry is not None else None


def _modifiers(lexicon: Lexicon) -> list[tuple[str, float]]:
    """(modifier, multiplier), longest first ("a little" before "a")."""
    return sorted(((k, e.p) for k, e in lexicon.modifiers.items()), key=lambda kv: -len(kv[0]))


def _scaled(p: float, m: float) -> float:
    """σ(m · logit p), rounded to 12 decimals; 0 and 1 stay where they are."""
    if p <= 0.0 or p >= 1.0:
        return p
    return round(1.0 / (1.0 + math.exp(-m * math.log(p / (1.0 - p)))), 12)


def _restated(
    lexicon: Lexicon, key: str, labels: Mapping[str, str], about: str | None
) -> tuple[float, str, list[str]] | None:
    """A listed or composed phrase followed by a restatement of the question, e.g.
    ``"unlikely to contain a hallucination"``; None when the clause negates, or names both
    labels."""
    words = key.split()
    for cut in range(len(words) - 1, 0, -1):
        clause = words[cut:]
        if clause[0] not in _RESTATE:
            continue
        head = " ".join(words[:cut])
        found = _lookup(lexicon, head)
        if found is None:
            continue
        tokens = set(re.findall(r"[\w']+", " ".join(clause)))
        if tokens & _NEGATIONS or any(t.endswith("n't") for t in tokens):
            return None
        named = {label for word, label in labels.items() if word in tokens}
        p, phrase, issues = found
        issues = [*issues, "restated"]
        if about is not None and len(labels) == 2 and named:
            if len(named) > 1:
                return None
            other = next(iter(named))
            if other != about:
                return _complement(p), phrase, [*issues, f"verdict_flips:{other}"]
        return p, phrase, issues
    return None


@dataclass(frozen=True)
class VerbalReply:
    """A parsed verbal reply: status, P(about) (None when failed), the phrase and the issues."""

    status: Status
    p: float | None
    phrase: str | None
    issues: list[str] = field(default_factory=list)

    def probs(self, labels: Sequence[str], about: str) -> dict[str, float] | None:
        """The binary distribution the phrase states: P(about) = p, the other label 1 - p."""
        if self.p is None:
            return None
        if len(labels) != 2 or about not in labels:
            raise ValueError(f"a verbal reply needs two labels including {about!r}, got {labels}")
        return {label: (self.p if label == about else _complement(self.p)) for label in labels}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy: ``{"status", "p", "phrase", "issues"}``."""
        return {"status": self.status, "p": self.p, "phrase": self.phrase, "issues": self.issues}


def parse_verbal(
    text: Any,
    lexicon: Lexicon | None = None,
    about: str | None = None,
    labels: Sequence[str] = (),
) -> VerbalReply:
    """Map a verbal reply to P(about) through ``lexicon`` (see the module doc). Never raises.

    ``labels`` (with ``about``) lets a verdict naming a label be recognised and dropped,
    or, when it names the other label of a binary task, flip the reading.
    """
    lexicon = lexicon if lexicon is not None else default_lexicon()
    if not isinstance(text, str):
        return VerbalReply("failed", None, None, [f"not_text:{type(text).__name__}"])
    key = normalise(text)
    if not key:
        return VerbalReply("failed", None, None, ["empty_reply"])
    found = _lookup(lexicon, key)
    if found is not None:
        p, phrase, negated = found
        return VerbalReply("repaired" if negated else "ok", p, phrase, negated)
    issues: list[str] = []
    stripped = _drop_lead_in(key)
    if stripped != key:
        issues.append("lead_in")
    label_words = {normalise(label): label for label in labels}
    verdicts = {**label_words, **{word: word for word in _VERDICT_WORDS}}
    flip = False
    segments = [s for s in (normalise(part) for part in _SPLIT.split(stripped)) if s]
    candidates = [stripped]
    for segment in segments:
        segment = _drop_lead_in(segment)
        if segment not in verdicts:
            candidates.append(segment)
    # "very likely acceptable" / "acceptable very likely": a verdict word at either end
    for word in verdicts:
        for form in (stripped, *segments):
            if form.endswith(" " + word):
                candidates.append(_drop_lead_in(form[: -len(word) - 1].strip(_STRIP)))
            if form.startswith(word + " "):
                candidates.append(_drop_lead_in(form[len(word) + 1 :].strip(_STRIP)))
    seen_verdicts = [
        word
        for word in verdicts
        if any(s == word for s in segments)
        or stripped.endswith(" " + word)
        or stripped.startswith(word + " ")
    ]
    for candidate in candidates:
        hit = _lookup(lexicon, candidate)
        if hit is None:
            continue
        p, phrase, more = hit
        issues += more
        for word in seen_verdicts:
            issues.append(f"verdict:{word}")
            label = verdicts[word]
            if about is not None and len(labels) == 2 and label in labels and label != about:
                flip = True
                issues.append(f"verdict_flips:{label}")
            elif word == "no" and label not in labels and p > 0.5:  # "probably no"
                flip = True
                issues.append("verdict_flips:no")
        if flip:
            p = _complement(p)
        return VerbalReply("repaired", p, phrase, issues or ["trimmed"])
    restated = _restated(lexicon, stripped, label_words, about) if stripped else None
    if restated is not None:
        p, phrase, more = restated
        return VerbalReply("repaired", p, phrase, issues + more)
    return VerbalReply("failed", None, None, [f"unknown_expression:{stripped or key}"])


def _complement(p: float) -> float:
    """1 - p, rounded to 12 decimals so 1 - 0.9 reads 0.1 (lexicon values are short decimals)."""
    return round(1.0 - p, 12)


def _drop_lead_in(text: str) -> str:
    changed = True
    while changed:
        changed = False
        for lead in _LEAD_INS_SORTED:
            if text.startswith(lead) and text != lead:
                rest = text[len(lead) :]
                if lead.isascii() and rest[:1] not in (" ", ":", ",", "-", ""):
                    continue
                text = rest.strip(_STRIP + "-")
                changed = True
                break
    return text


# --- loading -------------------------------------------------------------------------


def default_path() -> Path:
    """Where the bundled lexicon lies."""
    return Path(str(resources.files("verbcal") / "data" / "lexicon.yaml"))


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The bundled lexicon (read once)."""
    return read_lexicon(default_path())


def read_lexicon(path: str | Path) -> Lexicon:
    """Read one lexicon YAML file as it is (see ``verbcal/data/lexicon.yaml`` for the shape)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LexiconError(f"{path}: file not found. Check the --lexicon path") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LexiconError(f"{path}: cannot read the lexicon ({exc}). Fix the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("phrases"), dict):
        raise LexiconError(
            f"{path}: a lexicon is a mapping with 'phrases': {{phrase: probability or "
            "{p: probability, source: ...}}. Add a 'phrases' mapping"
        )
    sources = data.get("sources") or {}
    if not isinstance(sources, dict):
        raise LexiconError(f"{path}, field 'sources': must be a mapping key: citation")
    entries: dict[str, Entry] = {}
    for phrase, raw in data["phrases"].items():
        entry = _entry(path, phrase, raw, sources)
        key = normalise(entry.phrase)
        if not key:
            raise LexiconError(f"{path}, phrase {phrase!r}: empty after normalising. Remove it")
        if key in entries:
            raise LexiconError(
                f"{path}, phrase {phrase!r}: same as {entries[key].phrase!r} once case and "
                "punctuation are ignored. Keep one"
            )
        entries[key] = entry
    modifiers = _section(path, data, "modifiers", sources, upper=None)
    levels = _section(path, data, "levels", sources, upper=1.0)
    return Lexicon(
        entries, {str(k): str(v) for k, v in sources.items()}, str(path), modifiers, levels
    )


def _section(
    path: Path, data: Mapping[str, Any], name: str, sources: Mapping[str, Any], upper: float | None
) -> dict[str, Entry]:
    """``modifiers`` (word: {m: multiplier > 0, source}) or ``levels`` (word: {p, source})."""
    raw = data.get(name) or {}
    if not isinstance(raw, dict):
        raise LexiconError(f"{path}, field {name!r}: must be a mapping word: {{...}}")
    out: dict[str, Entry] = {}
    key_name = "p" if upper is not None else "m"
    for word, spec in raw.items():
        where = f"{path}, {name} {word!r}"
        if not isinstance(word, str) or not normalise(word):
            raise LexiconError(f"{where}: must be non-empty text")
        value = spec.get(key_name) if isinstance(spec, dict) else spec
        source = spec.get("source", "user") if isinstance(spec, dict) else "user"
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not 0 < value < (upper or math.inf):  # type: ignore[operator]
            bound = "in (0, 1)" if upper is not None else "> 0"
            raise LexiconError(f"{where}: {key_name} must be a number {bound}, got {value!r}")
        _check_source(where, source, sources)
        out[normalise(word)] = Entry(word, float(value), str(source))  # type: ignore[arg-type]
    return out


def _entry(path: Path, phrase: Any, raw: Any, sources: Mapping[str, Any]) -> Entry:
    where = f"{path}, phrase {phrase!r}"
    if isinstance(phrase, bool) or not isinstance(phrase, str):
        raise LexiconError(f"{where}: a phrase must be text (quote yes/no/true/false in YAML)")
    if isinstance(raw, dict):
        value, source, note = raw.get("p"), raw.get("source", "user"), raw.get("en", "")
    else:
        value, source, note = raw, "user", ""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise LexiconError(f"{where}: p must be a probability in [0, 1], got {value!r}")
    _check_source(where, source, sources)
    return Entry(phrase, float(value), str(source), str(note or ""))


def _check_source(where: str, source: Any, sources: Mapping[str, Any]) -> None:
    """A value's ``source`` must be ``user`` or a key of the file's ``sources``."""
    if sources and source != "user" and source not in sources:
        raise LexiconError(
            f"{where}: source {source!r} is not among the sources {sorted(sources)}. "
            "Add it under 'sources'"
        )


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """The lexicon to use: the bundled one, extended or replaced by the file at ``path``.

    A user file says ``mode: extend`` (default: its phrases are added, winning over bundled
    ones) or ``mode: replace`` (only its phrases are used).
    """
    if path is None:
        return default_lexicon()
    own = read_lexicon(path)
    try:
        mode = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("mode", "extend")
    except (OSError, yaml.YAMLError):  # pragma: no cover - read_lexicon already read it
        mode = "extend"
    if mode not in ("extend", "replace"):
        raise LexiconError(f"{path}, field 'mode': must be extend or replace, got {mode!r}")
    return own if mode == "replace" else default_lexicon().extended(own)


__all__ = [
    "Entry",
    "Lexicon",
    "LexiconError",
    "VerbalReply",
    "default_lexicon",
    "load_lexicon",
    "normalise",
    "parse_verbal",
    "read_lexicon",
]
