"""Turn an LLM's reply text into a probability distribution over a task's labels.

:func:`parse_reply` is pure and never raises. It finds the answer in the reply (a JSON
object alone, inside prose or ``` fences, broken JSON that ``json-repair`` mends, labels
wrapped in an outer key, a list of ``{"label": ..., "probability": ...}`` records, or
``label: number`` lines), reads the numbers (fractions, percentages, numbers as strings)
and normalises them over the task's labels. Only the task decides the label set: keys in
a reply that are not task labels are ignored and reported, never added.

Status rules (and the issue codes each rule adds):

* ``ok``: the reply is one clean JSON object whose keys are exactly the task labels and
  whose values are fractions summing to 1 within :data:`OK_SUM_TOLERANCE` (0.01, so
  rounding such as three labels at 0.33 is not a repair). ``issues`` is empty, and
  ``ok`` is returned exactly when it is.
* ``repaired``: a usable distribution after fixes, each listed in ``issues``: ``fenced``,
  ``prose_around_json``, ``json_repaired``, ``truncated``, ``multiple_json:N`` (the last
  object holding a task label is used), ``duplicate_key:K``, ``nested:PATH``,
  ``label_records``, ``key_value_text`` (``label: 0.8`` or ``P(label) = 0.8`` in plain text),
  ``json_in_string`` (the whole reply is a JSON string holding the object), ``case_drift:K``, ``whitespace_drift:K``,
  ``label_drift:K``, ``duplicate_label:L``, ``extra_key:K``, ``missing_label:L`` (counted
  as 0), ``null_value:L`` (counted as 0), ``string_number:L``, ``percentages`` (every value
  has a ``%`` sign, or values above 1 summing to between 90 and 110),
  ``mixed_units:percent`` / ``mixed_units:fractions`` (some values have a ``%`` sign and
  some do not: the reply has one unit, the one under which its values sum to 1 within
  :data:`MIXED_SUM_TOLERANCE`), ``renormalised:sum=S``.
* ``failed``: no usable distribution; ``probs`` is None and ``issues`` says why:
  ``empty_reply``, ``no_labels``, ``no_json_found``, ``not_an_object`` (valid JSON but a
  bare number, string or list), ``refusal``, ``label_only`` (the reply names one label and
  gives no numbers, or a JSON object such as ``{"answer": L, "confidence": 0.9}``: no
  distribution is invented), ``no_task_label`` (JSON without any task label; its keys follow
  as ``extra_key``), ``bad_value:L`` (not a number), ``non_finite:L``,
  ``negative:L``, ``all_zero``, ``overflow:sum`` (finite values too large to add up),
  ``ambiguous_units`` (values with and without ``%`` that sum to 1 under neither unit,
  or under both with different results), ``internal_error:E`` (a bug: never expected).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import json_repair

Status = Literal["ok", "repaired", "failed"]

OK_SUM_TOLERANCE = 0.01
"""Sums within this of 1 are rounding: normalised silently, status stays ``ok``."""

PERCENT_SUM_RANGE = (90.0, 110.0)
"""Values above 1 whose sum falls in this range are read as percentages."""

MIXED_SUM_TOLERANCE = 0.05
"""A reply mixing ``80%`` with ``0.15`` is read in the unit under which it sums to 1 within this."""

MAX_DEPTH = 64
"""JSON spans nested deeper than this are not read (they are never answers, and cost time)."""

MAX_KEY_ISSUES = 10
"""At most this many ``extra_key`` issues are listed; the rest are counted."""

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_STRING = re.compile(rf"({_NUMBER})\s*(%|percent)?", re.IGNORECASE)
_ARRAY_OF_OBJECTS = re.compile(r"\[\s*\{")
_FENCE = re.compile(r"```[A-Za-z0-9_-]*")
_REFUSAL = re.compile(
    r"\b(?:I\s*(?:can['’]?t|cannot|can\s+not|won['’]?t|will\s+not|am\s+(?:not\s+able|unable)|"
    r"['’]m\s+(?:sorry|unable|not\s+able)|apologi[sz]e)|as\s+an\s+ai\b|sorry,?\s+(?:but\s+)?I\b|"
    r"unable\s+to\s+(?:provide|assign|determine|classify))",
    re.IGNORECASE,
)
_ANSWER_PREFIX = re.compile(
    r"(?:(?:final\s+)?(?:answer|label|prediction|classification|category|sentiment)\s*[:=-]\s*)?",
    re.IGNORECASE,
)
_WRAPPING = "\"'`*_.!:;,()[]{}<> \t\r\n"


@dataclass(frozen=True)
class ParsedReply:
    """What a reply says: a status, the distribution (or None) and what was fixed or wrong."""

    status: Status
    probs: dict[str, float] | None
    issues: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy: ``{"status", "probs", "issues"}``."""
        probs = None if self.probs is None else dict(self.probs)
        return {"status": self.status, "probs": probs, "issues": list(self.issues)}


@dataclass
class _Candidate:
    """One JSON value found in the reply, with the issues met while reading it."""

    value: Any
    issues: list[str]


def parse_reply(text: str, labels: Sequence[str]) -> ParsedReply:
    """Parse ``text`` into a distribution over ``labels`` (see the module doc). Never raises."""
    try:
        return _parse(text, tuple(str(label) for label in labels))
    except Exception as exc:  # last resort: a parser must not take down a run
        return _failed([f"internal_error:{type(exc).__name__}"])


def _failed(issues: list[str]) -> ParsedReply:
    return ParsedReply("failed", None, issues)


def _parse(text: str, labels: tuple[str, ...]) -> ParsedReply:
    if not labels:
        return _failed(["no_labels"])
    if not isinstance(text, str):
        return _failed([f"not_text:{type(text).__name__}"])
    stripped = text.strip()
    if not stripped:
        return _failed(["empty_reply"])
    candidates = _candidates(stripped)
    found = [(c, hit) for c in candidates if (hit := _locate(c.value, labels)) is not None]
    if found:
        cand, (mapping, where) = found[-1]
        issues = list(cand.issues) + where
        if len(found) > 1:
            issues.append(f"multiple_json:{len(found)}")
        return _distribution(mapping, labels, issues)
    pairs = _key_values(stripped, labels)
    if pairs:
        return _distribution(pairs, labels, ["key_value_text"])
    return _failed(_why_nothing(stripped, labels, candidates))


# --- finding JSON in the reply ---------------------------------------------------------


def _candidates(text: str) -> list[_Candidate]:
    """Every JSON object (or array of objects) in ``text``, in order, with how it was read."""
    whole = _loads_strict(text)
    if whole is not None and isinstance(whole[0], dict | list):
        return [_Candidate(whole[0], whole[1])]
    if whole is not None and isinstance(whole[0], str):  # JSON encoded twice
        inner = _loads_strict(whole[0].strip())
        if inner is not None and isinstance(inner[0], dict | list):
            return [_Candidate(inner[0], ["json_in_string", *inner[1]])]
    spans = list(_spans(text))
    outside = _outside(text, spans)
    fenced = "```" in text
    context: list[str] = []
    if fenced:
        context.append("fenced")
    if outside.strip():
        context.append("prose_around_json")
    found = []
    for start, end, closed in spans:
        read = _load_span(text[start:end])
        if read is None:
            continue
        value, issues = read
        found.append(_Candidate(value, context + issues + ([] if closed else ["truncated"])))
    return found


def _outside(text: str, spans: list[tuple[int, int, bool]]) -> str:
    """The text outside the JSON spans, with fence markers removed."""
    parts, pos = [], 0
    for start, end, _ in spans:
        parts.append(text[pos:start])
        pos = end
    parts.append(text[pos:])
    return _FENCE.sub("", "".join(parts))


def _spans(text: str) -> Iterator[tuple[int, int, bool]]:
    """Top-level ``{...}`` (and ``[{...}]``) spans: (start, end, closed), strings respected.

    Spans nested deeper than :data:`MAX_DEPTH` are skipped: no answer looks like that.
    """
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "{" or (ch == "[" and _ARRAY_OF_OBJECTS.match(text, i)):
            end, closed, depth = _match(text, i)
            if depth <= MAX_DEPTH:
                yield i, end, closed
            i = end
        else:
            i += 1


def _match(text: str, start: int) -> tuple[int, bool, int]:
    """End of the bracketed value opening at ``start``, whether it closed, its deepest level."""
    depth, deepest, in_string, escaped = 0, 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1, True, deepest
    return len(text), False, deepest


def _load_span(raw: str) -> tuple[Any, list[str]] | None:
    """Read one span: strict JSON first, then ``json-repair``; None if not an object/array."""
    strict = _loads_strict(raw)
    if strict is not None:
        value, issues = strict
    else:
        try:
            value, issues = json_repair.loads(raw), ["json_repaired"]
        except Exception:  # json-repair gives up on some inputs: then this span is not JSON
            return None
    kind = dict if raw.startswith("{") else list
    if isinstance(value, kind) and value:
        return value, issues
    return None


def _loads_strict(raw: str) -> tuple[Any, list[str]] | None:
    """``json.loads`` noting duplicate keys; None when the text is not valid JSON."""
    dupes: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                dupes.append(f"duplicate_key:{_short(key)}")
            out[key] = value
        return out

    try:
        value = json.loads(raw, object_pairs_hook=pairs_hook)
    except (ValueError, RecursionError):
        return None
    return value, dupes


# --- finding the labels inside a JSON value --------------------------------------------


def _norm(key: str) -> str:
    """Key comparison form: case-folded, separators collapsed to one space."""
    return re.sub(r"[\s_-]+", " ", key.strip().casefold()).strip()


def _short(key: object) -> str:
    return str(key).strip().replace("\n", " ")[:40]


_Mapping = dict[str, tuple[str, Any]]  # label -> (key as written, value)


def _match_keys(obj: dict[Any, Any], labels: tuple[str, ...]) -> tuple[_Mapping, list[str]]:
    """Map an object's keys onto task labels: exact first, then drifted; issues as found."""
    by_norm: dict[str, str] = {}
    for label in labels:
        by_norm.setdefault(_norm(label), label)
    mapping: _Mapping = {}
    issues: list[str] = []
    keys = [str(k) for k in obj]
    for key, value in zip(keys, obj.values(), strict=True):
        if key in labels:
            mapping[key] = (key, value)
    extra: list[str] = []
    for key, value in zip(keys, obj.values(), strict=True):
        if key in labels:
            continue
        target = by_norm.get(_norm(key))
        if target is None:
            extra.append(key)
        elif target in mapping:
            issues.append(f"duplicate_label:{target}")
        else:
            mapping[target] = (key, value)
            issues.append(f"{_drift_kind(key, target)}:{_short(key)}")
    return mapping, issues + _extra_issues(extra)


def _drift_kind(key: str, label: str) -> str:
    if key.strip() == label:
        return "whitespace_drift"
    if key.strip().casefold() == label.casefold():
        return "case_drift"
    return "label_drift"


def _extra_issues(keys: list[str]) -> list[str]:
    issues = [f"extra_key:{_short(k)}" for k in keys[:MAX_KEY_ISSUES]]
    if len(keys) > MAX_KEY_ISSUES:
        issues.append(f"extra_keys_more:{len(keys) - MAX_KEY_ISSUES}")
    return issues


def _records(items: list[Any], labels: tuple[str, ...]) -> dict[str, Any] | None:
    """A list of ``{"label": L, "probability": p}`` records as ``{L: p}``; None otherwise."""
    by_norm = {_norm(label): label for label in reversed(labels)}
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        names = [v for v in item.values() if isinstance(v, str) and _norm(v) in by_norm]
        numbers = [v for v in item.values() if _is_numberish(v) and v not in names]
        if len(names) != 1 or not numbers:
            return None
        out[by_norm[_norm(names[0])]] = numbers[0]
    return out or None


def _is_numberish(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and _NUMBER_STRING.fullmatch(value.strip()) is not None


def _locate(value: Any, labels: tuple[str, ...]) -> tuple[_Mapping, list[str]] | None:
    """The object level holding the most task labels (shallowest on ties), with issues."""
    best: tuple[int, int, _Mapping, list[str]] | None = None
    for depth, path, siblings, obj, extra_issue in _levels(value, labels):
        mapping, issues = _match_keys(obj, labels)
        if not mapping:
            continue
        where = ([f"nested:{path}"] if path else []) + extra_issue + issues
        where += _extra_issues(siblings)
        if best is None or len(mapping) > best[0] or (len(mapping) == best[0] and depth < best[1]):
            best = (len(mapping), depth, mapping, where)
    return None if best is None else (best[2], best[3])


_Level = tuple[int, str, list[str], dict[Any, Any], list[str]]


def _levels(value: Any, labels: tuple[str, ...]) -> Iterator[_Level]:
    """Objects reachable from ``value`` (depth <= 3): (depth, path, sibling keys, obj, issue)."""
    stack: list[tuple[Any, int, str, list[str]]] = [(value, 0, "", [])]
    while stack:
        node, depth, path, siblings = stack.pop(0)
        if isinstance(node, dict):
            yield depth, path, siblings, node, []
            children = [(str(k), v) for k, v in node.items() if isinstance(v, dict | list)]
        elif isinstance(node, list):
            records = _records(node, labels)
            if records is not None:
                yield depth, path, siblings, records, ["label_records"]
            children = [(f"[{i}]", v) for i, v in enumerate(node) if isinstance(v, dict | list)]
        else:
            continue
        if depth >= 3:
            continue
        keys = [str(k) for k in node] if isinstance(node, dict) else []
        for name, child in children:
            others = siblings + [k for k in keys if k != name]
            child_path = f"{path}.{name}" if path and not name.startswith("[") else path + name
            stack.append((child, depth + 1, child_path, others))


def _key_values(text: str, labels: tuple[str, ...]) -> _Mapping:
    """``label: number`` (or ``=``, ``-``, ``–``, ``label (number)``) pairs written in plain
    text; the last one per label wins."""
    mapping: _Mapping = {}
    for label in labels:
        words = [re.escape(w) for w in re.split(r"[\s_-]+", label.strip()) if w]
        if not words:
            continue
        name = r"[\s_-]+".join(words)
        quote = "[\"'*`]{0,3}"
        key = rf"(?<![\w-])(?:P\(\s?)?{quote}{name}{quote}\)?"
        pattern = rf"{key}[ \t]{{0,8}}(?:[:=–—(]|-(?!\d))\s{{0,8}}{quote}({_NUMBER}\s*%?)"
        hits = re.findall(pattern, text, re.IGNORECASE)
        if hits:
            mapping[label] = (label, hits[-1])
    return mapping


def _why_nothing(text: str, labels: tuple[str, ...], found: list[_Candidate]) -> list[str]:
    """Issues for a reply with no task label anywhere."""
    objects = [c.value for c in found if isinstance(c.value, dict)]
    if objects:
        names = {_norm(label) for label in labels}
        named = any(isinstance(v, str) and _norm(v) in names for v in objects[-1].values())
        keys = _extra_issues([str(k) for k in objects[-1]])
        return ["no_task_label", *keys, *(["label_only"] if named else [])]
    if _loads_strict(text) is not None:
        issues = ["not_an_object"]
    else:
        issues = ["no_task_label"] if found else ["no_json_found"]
    if _REFUSAL.search(text):
        issues.append("refusal")
    if _label_only(text, labels):
        issues.append("label_only")
    return issues


def _label_only(text: str, labels: tuple[str, ...]) -> bool:
    """Whether the reply just names a label (``"positive"``, ``Answer: **Positive**.``)."""
    core = _ANSWER_PREFIX.sub("", text.strip(_WRAPPING), count=1).strip(_WRAPPING)
    return _norm(core) in {_norm(label) for label in labels}


# --- numbers to a distribution ---------------------------------------------------------


def _number(value: Any) -> tuple[float | None, bool, bool]:
    """(number or None, written with %, written as a string) for one reply value."""
    if isinstance(value, bool) or value is None:
        return None, False, False
    if isinstance(value, int | float):
        try:
            return float(value), False, False
        except OverflowError:
            return math.inf, False, False
    if isinstance(value, str):
        m = _NUMBER_STRING.fullmatch(value.strip())
        if m:
            return float(m.group(1)), m.group(2) is not None, True
    return None, False, False


def _distribution(mapping: _Mapping, labels: tuple[str, ...], issues: list[str]) -> ParsedReply:
    """Check, rescale and normalise the matched values into a ParsedReply."""
    values: dict[str, float] = {}
    marked: set[str] = set()  # labels whose value carries a % sign
    for label in labels:
        if label not in mapping:
            issues.append(f"missing_label:{label}")
            continue
        raw = mapping[label][1]
        if raw is None:
            issues.append(f"null_value:{label}")
            continue
        number, pct, was_string = _number(raw)
        if number is None:
            return _failed([*issues, f"bad_value:{label}"])
        if was_string and "key_value_text" not in issues:
            issues.append(f"string_number:{label}")
        if pct:
            marked.add(label)
        values[label] = number
    bad = _bad_values(values)
    if bad:
        return _failed(issues + bad)
    if marked and len(marked) < len(values):
        return _mixed_units(values, marked, labels, issues)
    return _normalise(values, labels, issues, percent=bool(marked))


def _bad_values(values: dict[str, float]) -> list[str]:
    issues = [f"non_finite:{k}" for k, v in values.items() if not math.isfinite(v)]
    return issues or [f"negative:{k}" for k, v in values.items() if v < 0]


def _safe_sum(values: Iterable[float]) -> float:
    """``math.fsum``, with an overflowing sum as ``inf`` instead of an exception."""
    try:
        return math.fsum(values)
    except OverflowError:
        return math.inf


def _mixed_units(
    values: dict[str, float], marked: set[str], labels: tuple[str, ...], issues: list[str]
) -> ParsedReply:
    """Values with and without ``%``: one unit for the whole reply, or a rejection.

    Read as percentages, every value is divided by 100; read as fractions, only the
    ``%`` values are. The reading whose sum is within :data:`MIXED_SUM_TOLERANCE` of 1
    wins; if neither or both fit (and they disagree), the reply is ambiguous.
    """
    readings = {
        "percent": {k: v / 100.0 for k, v in values.items()},
        "fractions": {k: v / 100.0 if k in marked else v for k, v in values.items()},
    }
    fits = [
        unit
        for unit, vals in readings.items()
        if abs(_safe_sum(vals.values()) - 1.0) <= MIXED_SUM_TOLERANCE
    ]
    if len(fits) == 2:
        a, b = (readings[unit] for unit in fits)
        if any(abs(a[k] - b[k]) > OK_SUM_TOLERANCE for k in values):
            fits = []
    if not fits:
        return _failed([*issues, "ambiguous_units"])
    return _normalise(readings[fits[0]], labels, [*issues, f"mixed_units:{fits[0]}"], False)


def _normalise(
    values: dict[str, float], labels: tuple[str, ...], issues: list[str], percent: bool
) -> ParsedReply:
    total = _safe_sum(values.values())
    if percent or (values and max(values.values()) > 1 and _in_percent_range(total)):
        issues.append("percentages")
        values = {k: v / 100.0 for k, v in values.items()}
        total = _safe_sum(values.values())
    if not math.isfinite(total):
        return _failed([*issues, "overflow:sum"])
    if total <= 0:
        return _failed([*issues, "all_zero"])
    if abs(total - 1.0) > OK_SUM_TOLERANCE + 1e-9:
        issues.append(f"renormalised:sum={total:.4g}")
    probs = {label: values.get(label, 0.0) / total for label in labels}
    return ParsedReply("repaired" if issues else "ok", probs, issues)


def _in_percent_range(total: float) -> bool:
    return PERCENT_SUM_RANGE[0] <= total <= PERCENT_SUM_RANGE[1]
