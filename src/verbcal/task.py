"""Classification tasks (YAML) and the items to classify (JSONL, CSV or Parquet).

A task file::

    name: sentiment
    instruction: Classify the sentiment of the movie review.
    labels:                      # a list of names, or name: one-line description lines,
                                 # or a list of {name: ..., description: ...} records
      negative: The reviewer dislikes the film.
      positive: The reviewer likes the film.
    id_field: id                 # optional, default "id"
    text_field: text             # optional, default "text"
    label_field: label           # optional: the gold label, if the items have one
    template: |                  # optional prompt override; {text} is required
      {instruction}
      {labels}
      Text: {text}
      Answer with one JSON object with the keys {label_names}.

Template placeholders: ``{text}``, ``{instruction}``, ``{labels}`` (one ``- name:
description`` line per label), ``{label_names}`` (``"a", "b"``) and ``{name}``. Any other
brace is left as written, so a template may show JSON.

Items with several fields (an LLM judge reading a source and its translation)::

    fields: [source, translation]  # every item must have each, as text; checked before any request
    template: |                    # may use {source}, {translation} (then {text} is not needed)
      Source: {source}
      Translation: {translation}
      ...

Confidence in words (binary tasks): ``reply: verbal`` and ``about: LABEL`` ask for a short
phrase saying how likely ``LABEL`` is (``{about}`` in a template); the reply is read through
the lexicon (:mod:`verbcal.lexicon`) into P(about), and the output record keeps the phrase
(``verbal``) and ``about`` beside ``probs``. Built-in tasks (:data:`BUILTIN_TASKS`) are named
instead of a path: ``--task translation-quality``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from verbcal.predictions import PredictionsError, is_parquet, read_parquet_table

PLACEHOLDERS = ("text", "instruction", "labels", "label_names", "name", "about")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KNOWN_KEYS = (
    *("name", "instruction", "labels", "id_field", "text_field", "label_field", "template"),
    *("fields", "reply", "about"),
)
REPLIES = ("probs", "verbal")
BUILTIN_TASKS = {
    "translation-quality": "is a zh→en translation acceptable? numeric reply (recorded prompt)",
    "translation-quality-verbal": "the same, confidence in words about 'acceptable'",
    "hallucination": "does an assistant response hallucinate? numeric reply (recorded prompt)",
    "hallucination-verbal": "the same, confidence in words about 'hallucinated'",
}
"""Tasks shipped in ``verbcal/data/tasks/``, usable by name: the prompts of the bundled judge sets."""


class TaskError(ValueError):
    """A task or items file that cannot be used: says where, what is wrong and what to do."""

    def __init__(
        self, path: str | Path, field: str | None, problem: str, fix: str, line: int | None = None
    ):
        self.path, self.field, self.problem, self.fix, self.line = (
            str(path),
            field,
            problem,
            fix,
            line,
        )
        where = str(path) + (f", line {line}" if line is not None else "")
        where += f", field {field!r}" if field else ""
        super().__init__(f"{where}: {problem}. {fix}")


class ItemsError(TaskError):
    """An items file (JSONL or CSV) that cannot be used."""


@dataclass(frozen=True)
class Task:
    """What to classify, into which labels, and how to read items and ask a model."""

    name: str
    labels: tuple[str, ...]
    descriptions: dict[str, str]
    instruction: str
    id_field: str = "id"
    text_field: str = "text"
    label_field: str | None = None
    template: str | None = None
    fields: tuple[str, ...] = ()
    """Item fields the template uses besides (or instead of) the text; checked on every item."""
    reply: str = "probs"
    """``probs`` (a JSON distribution) or ``verbal`` (a phrase about ``about``)."""
    about: str | None = None

    def render_prompt(self, text: str, item: dict[str, Any] | None = None) -> str:
        """The prompt for one item: the template if given, else the default (no example numbers).

        ``item`` supplies the task's ``fields`` (``{source}``, ``{translation}``, ...)."""
        values = {
            "text": text,
            "instruction": self.instruction,
            "labels": self._label_lines(),
            "label_names": ", ".join(json.dumps(label) for label in self.labels),
            "name": self.name,
            "about": self.about or "",
        }
        for name in self.fields:
            values[name] = str((item or {}).get(name, ""))
        default = _VERBAL_TEMPLATE if self.reply == "verbal" else _DEFAULT_TEMPLATE
        template = self.template if self.template is not None else default
        if self.template is None and self.fields:
            block = "\n\n".join(f'{name}:\n"""\n{{{name}}}\n"""' for name in self.fields)
            template = template.replace('Text:\n"""\n{text}\n"""', block)
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)

    def json_schema(self) -> dict[str, Any]:
        """JSON schema of a reply: one number in [0, 1] per label, all required, nothing else."""
        number = {"type": "number", "minimum": 0, "maximum": 1}
        return {
            "type": "object",
            "properties": {label: dict(number) for label in self.labels},
            "required": list(self.labels),
            "additionalProperties": False,
        }

    def _label_lines(self) -> str:
        lines = []
        for label in self.labels:
            desc = self.descriptions.get(label)
            lines.append(f"- {label}: {desc}" if desc else f"- {label}")
        return "\n".join(lines)


PROMPT_HEADER = """{instruction}

Labels:
{labels}

Text:
\"\"\"
{text}
\"\"\""""
"""What every built-in prompt starts with: the instruction, the labels and the text."""


def prompt_template(question: str) -> str:
    """A prompt template: :data:`PROMPT_HEADER`, a blank line, then ``question`` (what to
    answer and in which form)."""
    return f"{PROMPT_HEADER}\n\n{question}"


_DEFAULT_TEMPLATE = prompt_template("""For every label, give the probability that it is the correct label for the text. \
The probabilities must sum to 1. Reply with exactly one JSON object and nothing else: \
its keys are the label names {label_names}, each written exactly as shown, and each value \
is a number between 0 and 1.""")


_VERBAL_TEMPLATE = prompt_template("""How likely is it that the correct label is {about}? Reply with only a short phrase that says \
in words how likely you think it is (for example: "almost certain", "very likely", \
"probably", "about even", "probably not", "very unlikely", "almost impossible"), in your \
own words. Do not give a number.""")


# --- loading a task --------------------------------------------------------------------


def builtin_task_path(name: str) -> Path:
    """The bundled YAML of a built-in task (see :data:`BUILTIN_TASKS`)."""
    return Path(str(resources.files("verbcal") / "data" / "tasks" / f"{name}.yaml"))


def load_task(path: str | Path) -> Task:
    """Read and validate a task YAML file, or a built-in task by name (:data:`BUILTIN_TASKS`);
    raise :class:`TaskError` saying what to fix."""
    if str(path) in BUILTIN_TASKS and not Path(path).exists():
        path = builtin_task_path(str(path))
    data = _read_yaml(Path(path))
    unknown = sorted(str(k) for k in data if k not in _KNOWN_KEYS)
    if unknown:
        raise TaskError(
            path, unknown[0], "unknown key", f"Use only these keys: {', '.join(_KNOWN_KEYS)}"
        )
    labels, descriptions = _labels(path, data.get("labels"))
    label_field = data.get("label_field")
    fields = _fields(path, data.get("fields"))
    reply, about = _reply(path, data, labels)
    return Task(
        name=_text(path, data, "name", required=True),
        labels=labels,
        descriptions=descriptions,
        instruction=_text(path, data, "instruction", required=True),
        id_field=_text(path, data, "id_field") or "id",
        text_field=_text(path, data, "text_field") or "text",
        label_field=None if label_field is None else _text(path, data, "label_field"),
        template=_template(path, data.get("template"), fields),
        fields=fields,
        reply=reply,
        about=about,
    )


def _fields(path: str | Path, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise TaskError(path, "fields", "must be a list of item field names", "e.g. fields: [a, b]")
    names: list[str] = []
    for name in raw:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise TaskError(
                path, "fields", f"{name!r} is not a field name", "Use letters, digits and _"
            )
        if name in PLACEHOLDERS or name in ("id", "label"):
            raise TaskError(
                path, "fields", f"{name!r} is reserved", "Rename the item field (or use text_field)"
            )
        names.append(name)
    return tuple(dict.fromkeys(names))


def _reply(
    path: str | Path, data: dict[str, Any], labels: tuple[str, ...]
) -> tuple[str, str | None]:
    reply = data.get("reply", "probs")
    if reply not in REPLIES:
        raise TaskError(path, "reply", f"must be probs or verbal, got {reply!r}", "Fix it")
    about = data.get("about")
    if reply == "probs":
        if about is not None:
            raise TaskError(path, "about", "is only used with reply: verbal", "Remove it")
        return reply, None
    if len(labels) != 2:
        raise TaskError(
            path, "reply", "confidence in words needs a binary task (two labels)", "Use probs"
        )
    if about not in labels:
        raise TaskError(
            path,
            "about",
            f"must name the label the phrase speaks of, one of {list(labels)} (got {about!r})",
            "Set about: <label>",
        )
    return reply, str(about)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskError(path, None, "file not found", "Check the --task path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(path, None, f"cannot read the file ({exc})", "Save it as UTF-8") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        raise TaskError(path, None, f"not valid YAML ({exc})", "Fix the syntax", line) from None
    if not isinstance(data, dict):
        raise TaskError(
            path, None, "the file is not a YAML mapping", "Write key: value lines (name, labels, …)"
        )
    return data


def _text(path: str | Path, data: dict[str, Any], key: str, required: bool = False) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        got = "missing" if value is None else f"got {value!r}"
        raise TaskError(path, key, f"must be a non-empty string ({got})", f"Set {key}: <text>")
    return value.strip()


def _labels(path: str | Path, raw: Any) -> tuple[tuple[str, ...], dict[str, str]]:
    """Labels as names with optional descriptions, from a list or a mapping."""
    fix = "Write labels as a list of names, or as name: description lines"
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = [_label_entry(path, entry, fix) for entry in raw]
    else:
        got = "missing" if raw is None else f"got {type(raw).__name__}"
        raise TaskError(path, "labels", f"must be a list or a mapping ({got})", fix)
    names = tuple(_label_name(path, name) for name, _ in pairs)
    descriptions = {
        name: _description(path, name, desc) for name, (_, desc) in zip(names, pairs, strict=True)
    }
    _check_distinct(path, names)
    return names, {k: v for k, v in descriptions.items() if v}


def _label_entry(path: str | Path, entry: Any, fix: str) -> tuple[Any, Any]:
    if isinstance(entry, dict) and "name" in entry and set(entry) <= {"name", "description"}:
        return entry["name"], entry.get("description")
    if isinstance(entry, dict) and len(entry) == 1:
        return next(iter(entry.items()))
    if not isinstance(entry, dict | list):
        return entry, None
    raise TaskError(path, "labels", f"cannot read the entry {entry!r}", fix)


def _label_name(path: str | Path, name: Any) -> str:
    if isinstance(name, bool):
        raise TaskError(
            path,
            "labels",
            f"label {name!r} was read as a YAML boolean",
            "Quote it, e.g. 'yes' or 'no' (YAML reads bare yes/no/true/false/on/off as booleans)",
        )
    if not isinstance(name, str | int):
        raise TaskError(path, "labels", f"label {name!r} is not a name", "Use short text names")
    text = str(name)
    if not text.strip() or text != text.strip():
        raise TaskError(
            path, "labels", f"label {text!r} is empty or has spaces around it", "Trim the name"
        )
    return text


def _description(path: str | Path, name: str, desc: Any) -> str:
    if desc is None:
        return ""
    if not isinstance(desc, str) or "\n" in desc.strip():
        raise TaskError(
            path, "labels", f"the description of {name!r} must be one line of text", "Shorten it"
        )
    return desc.strip()


def _check_distinct(path: str | Path, names: tuple[str, ...]) -> None:
    if len(names) < 2:
        raise TaskError(path, "labels", f"needs at least 2 labels, got {len(names)}", "Add labels")
    seen: dict[str, str] = {}
    for name in names:
        key = re.sub(r"[\s_-]+", " ", name.casefold())
        if key in seen:
            raise TaskError(
                path,
                "labels",
                f"labels {seen[key]!r} and {name!r} differ only in case, spaces or _/-",
                "Replies cannot tell them apart; rename one",
            )
        seen[key] = name


def _template(path: str | Path, raw: Any, fields: tuple[str, ...] = ()) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise TaskError(path, "template", "must be non-empty text", "Remove it or write a prompt")
    used = set(_PLACEHOLDER.findall(raw))
    allowed = (*PLACEHOLDERS, *fields)
    unknown = sorted(used - set(allowed))
    if unknown:
        raise TaskError(
            path,
            "template",
            f"unknown placeholder {{{unknown[0]}}}",
            f"Use only {', '.join('{' + p + '}' for p in allowed)}, or declare the item field "
            f"in fields: [{unknown[0]}]",
        )
    if not fields and "text" not in used:
        raise TaskError(path, "template", "does not contain {text}", "Add {text} where it goes")
    if fields and not (used & {"text", *fields}):
        raise TaskError(
            path, "template", "uses none of the item's fields", "Add {field} where each goes"
        )
    return raw


# --- reading items ---------------------------------------------------------------------


def read_items(path: str | Path, task: Task) -> list[dict[str, Any]]:
    """Items as ``{"id", "text", "label"}`` dicts (label None without gold), in file order.

    ``.jsonl``/``.ndjson`` files hold one JSON object a line; ``.csv`` files have a header;
    Parquet (a file, a directory or a glob) holds one item a row (its "line" is the row, from 1).
    Raises :class:`ItemsError` naming the file, line and field for missing or bad fields,
    duplicate ids and unreadable lines.
    """
    parquet = is_parquet(path)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv") and not parquet:
        raise ItemsError(
            path,
            None,
            f"unknown file type {suffix or '(none)'!r}",
            "Use .jsonl, .csv or .parquet",
        )
    try:
        if parquet:
            rows = list(_parquet_rows(path))
        else:
            rows = list(_csv_rows(path) if suffix == ".csv" else _jsonl_rows(path))
    except FileNotFoundError:
        raise ItemsError(path, None, "file not found", "Check the --input path") from None
    except UnicodeDecodeError as exc:
        raise ItemsError(path, None, f"not UTF-8 text ({exc.reason})", "Save it as UTF-8") from None
    items = [_item(path, line, row, task) for line, row in rows]
    if not items:
        raise ItemsError(path, None, "no items", "Add at least one item")
    _check_unique(path, items, [line for line, _ in rows], task.id_field)
    return items


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig") as fh:  # a leading BOM is accepted, as in CSV
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ItemsError(
                    path,
                    None,
                    f"not valid JSON ({exc.msg})",
                    "Write one JSON object a line",
                    number,
                ) from None
            if not isinstance(row, dict):
                raise ItemsError(
                    path, None, "not a JSON object", "Write one JSON object a line", number
                )
            yield number, row


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        table = read_parquet_table(path)
    except PredictionsError as exc:
        raise ItemsError(path, None, exc.problem, exc.fix) from None
    yield from enumerate(table.to_pylist(), start=1)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            for row in reader:
                if None in row:
                    raise ItemsError(
                        path, None, "more cells than header columns", "Quote cells", reader.line_num
                    )
                yield reader.line_num, row
        except csv.Error as exc:
            raise ItemsError(
                path, None, f"bad CSV ({exc})", "Fix the quoting", reader.line_num
            ) from None


def _item(path: Path, line: int, row: dict[str, Any], task: Task) -> dict[str, Any]:
    item_id = row.get(task.id_field)
    if isinstance(item_id, bool) or not isinstance(item_id, str | int) or str(item_id) == "":
        problem = (
            "missing" if item_id in (None, "") else f"must be text or an integer, got {item_id!r}"
        )
        fix = f"Give every item an id, or set id_field in the task (now {task.id_field!r})"
        raise ItemsError(path, task.id_field, f"id {problem}", fix, line)
    if task.fields:
        values: dict[str, str] = {}
        for name in task.fields:
            value = row.get(name)
            if not isinstance(value, str) or not value.strip():
                problem = (
                    "missing"
                    if value in (None, "")
                    else f"must be a string, got {type(value).__name__}"
                )
                fix = f"Give every item the field {name!r} (the task's fields: {list(task.fields)})"
                raise ItemsError(path, name, f"item {str(item_id)!r}: {name} {problem}", fix, line)
            values[name] = str(value)
        joined = "\n\n".join(f"{name}: {value}" for name, value in values.items())
        gold = _gold(path, line, row, task)
        return {"id": str(item_id), "text": joined, "label": gold, **values}
    text = row.get(task.text_field)
    if not isinstance(text, str):
        problem = "missing" if text is None else f"must be a string, got {type(text).__name__}"
        fix = f"Give every item its text, or set text_field in the task (now {task.text_field!r})"
        raise ItemsError(path, task.text_field, f"text {problem}", fix, line)
    return {"id": str(item_id), "text": text, "label": _gold(path, line, row, task)}


def _gold(path: Path, line: int, row: dict[str, Any], task: Task) -> str | None:
    if task.label_field is None:
        return None
    gold = row.get(task.label_field)
    if gold is None or gold == "":
        return None
    if isinstance(gold, bool) or str(gold) not in task.labels:
        raise ItemsError(
            path,
            task.label_field,
            f"gold label {gold!r} is not one of the task labels {list(task.labels)}",
            "Map the gold labels to the task's label names",
            line,
        )
    return str(gold)


def _check_unique(path: Path, items: list[dict[str, Any]], lines: list[int], field: str) -> None:
    first: dict[str, int] = {}
    for item, line in zip(items, lines, strict=True):
        if item["id"] in first:
            raise ItemsError(
                path,
                field,
                f"duplicate id {item['id']!r} (first on line {first[item['id']]})",
                "Make every id unique",
                line,
            )
        first[item["id"]] = line
