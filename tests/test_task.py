"""Tests for verbcal.task: loading task YAML, prompts, JSON schema and reading items."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from verbcal.parse import parse_reply
from verbcal.task import ItemsError, Task, TaskError, load_task, read_items

TASK_YAML = """\
name: sentiment
instruction: Classify the sentiment of the movie review.
labels:
  negative: The reviewer dislikes the film.
  neutral: Neither liking nor disliking.
  positive: The reviewer likes the film.
label_field: gold
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def task(tmp_path: Path) -> Task:
    return load_task(_write(tmp_path, "task.yaml", TASK_YAML))


def test_load_task_mapping_labels(task: Task) -> None:
    assert task.name == "sentiment"
    assert task.labels == ("negative", "neutral", "positive")
    assert task.descriptions["neutral"] == "Neither liking nor disliking."
    assert task.instruction == "Classify the sentiment of the movie review."
    assert (task.id_field, task.text_field, task.label_field) == ("id", "text", "gold")
    assert task.template is None


@pytest.mark.parametrize(
    "labels_yaml",
    [
        "labels: ['no', 'yes']",
        "labels:\n  - 'no'\n  - 'yes'",
        "labels:\n  - 'no': Not about sport.\n  - 'yes'",
        "labels:\n  - name: 'no'\n    description: Not about sport.\n  - name: 'yes'",
        "labels:\n  'no': Not about sport.\n  'yes':",
    ],
)
def test_label_list_forms(tmp_path: Path, labels_yaml: str) -> None:
    text = f"name: t\ninstruction: Is it about sport?\n{labels_yaml}\n"
    loaded = load_task(_write(tmp_path, "t.yaml", text))
    assert loaded.labels == ("no", "yes")
    assert loaded.label_field is None
    if "Not about" in labels_yaml:
        assert loaded.descriptions == {"no": "Not about sport."}


def test_label_called_name_uses_mapping_form(tmp_path: Path) -> None:
    text = "name: t\ninstruction: x\nlabels:\n  name: A person's name.\n  place:\n"
    assert load_task(_write(tmp_path, "t.yaml", text)).labels == ("name", "place")


def test_integer_labels_become_text(tmp_path: Path) -> None:
    loaded = load_task(_write(tmp_path, "t.yaml", "name: t\ninstruction: x\nlabels: [0, 1]\n"))
    assert loaded.labels == ("0", "1")


BAD_TASKS = [
    ("name: t\nlabels: [a, b]\n", "instruction", "non-empty string"),
    ("instruction: x\nlabels: [a, b]\n", "name", "missing"),
    ("name: t\ninstruction: x\n", "labels", "list or a mapping"),
    ("name: t\ninstruction: x\nlabels: [a]\n", "labels", "at least 2"),
    ("name: t\ninstruction: x\nlabels: [a, A]\n", "labels", "differ only"),
    ("name: t\ninstruction: x\nlabels: [very good, very_good]\n", "labels", "differ only"),
    ("name: t\ninstruction: x\nlabels: [a, ' b']\n", "labels", "spaces around"),
    ("name: t\ninstruction: x\nlabels: [a, [b]]\n", "labels", "cannot read"),
    ("name: t\ninstruction: x\nlabels: [a, 1.5]\n", "labels", "not a name"),
    ("name: t\ninstruction: x\nlables: [a, b]\n", "lables", "unknown key"),
    ("name: t\ninstruction: x\nlabels: [a, b]\ntemplate: 'no text here'\n", "template", "{text}"),
    ("name: t\ninstruction: x\nlabels: [a, b]\ntemplate: '{text} {foo}'\n", "template", "{foo}"),
    ("name: t\ninstruction: x\nlabels: [a, b]\ntext_field: 3\n", "text_field", "string"),
    ("name: t\ninstruction: x\nlabels: {a: [1], b: ok}\n", "labels", "one line"),
    ("name: t\ninstruction: x\nlabels: [no, yes]\n", "labels", "YAML boolean"),
]


@pytest.mark.parametrize(("text", "field", "message"), BAD_TASKS)
def test_bad_task_names_field(tmp_path: Path, text: str, field: str, message: str) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(TaskError) as info:
        load_task(path)
    assert info.value.field == field
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_bad_yaml_gives_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.yaml", "name: t\ninstruction: x\nlabels: [a, b\n")
    with pytest.raises(TaskError, match="not valid YAML") as info:
        load_task(path)
    assert info.value.line is not None


def test_missing_and_non_mapping_task(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="file not found"):
        load_task(tmp_path / "nope.yaml")
    with pytest.raises(TaskError, match="not a YAML mapping"):
        load_task(_write(tmp_path, "list.yaml", "- a\n- b\n"))
    assert issubclass(TaskError, ValueError)


def test_default_prompt(task: Task) -> None:
    prompt = task.render_prompt("A slow, lovely film.")
    assert "A slow, lovely film." in prompt
    assert task.instruction in prompt
    for label in task.labels:
        assert f'"{label}"' in prompt
        assert f"- {label}: {task.descriptions[label]}" in prompt
    assert "sum to 1" in prompt
    assert "JSON object" in prompt
    assert not re.search(r"\d", prompt.replace("sum to 1", "").replace("between 0 and 1", ""))


def test_prompt_shows_no_example_numbers(tmp_path: Path) -> None:
    loaded = load_task(_write(tmp_path, "t.yaml", "name: t\ninstruction: Topic?\nlabels: [a, b]\n"))
    prompt = loaded.render_prompt("text")
    numbers = re.findall(r"\d+(?:\.\d+)?", prompt)
    assert sorted(numbers) == ["0", "1", "1"]  # "sum to 1", "between 0 and 1": no examples


def test_text_with_placeholders_is_not_expanded(task: Task) -> None:
    prompt = task.render_prompt("see {labels} and {instruction} and {x}")
    assert "see {labels} and {instruction} and {x}" in prompt


def test_custom_template(tmp_path: Path) -> None:
    text = (
        "name: t\ninstruction: Topic?\nlabels: [a, b]\n"
        'template: \'{name}|{instruction}|{label_names}|{text}|{"a": "keep braces"}\'\n'
    )
    loaded = load_task(_write(tmp_path, "t.yaml", text))
    assert loaded.render_prompt("T") == 't|Topic?|"a", "b"|T|{"a": "keep braces"}'


def test_json_schema(task: Task) -> None:
    schema = task.json_schema()
    assert schema == {
        "type": "object",
        "properties": {
            label: {"type": "number", "minimum": 0, "maximum": 1} for label in task.labels
        },
        "required": ["negative", "neutral", "positive"],
        "additionalProperties": False,
    }
    json.dumps(schema)


def test_reply_following_the_schema_parses_ok(task: Task) -> None:
    reply = json.dumps(dict(zip(task.labels, [0.2, 0.3, 0.5], strict=True)))
    assert parse_reply(reply, task.labels).status == "ok"


# --- items -----------------------------------------------------------------------------


def test_read_jsonl(tmp_path: Path, task: Task) -> None:
    lines = [
        {"id": "a", "text": "great", "gold": "positive", "extra": 1},
        {"id": 7, "text": "meh"},
        {"id": "c", "text": "", "gold": None},
    ]
    body = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    items = read_items(_write(tmp_path, "items.jsonl", body), task)
    assert items == [
        {"id": "a", "text": "great", "label": "positive"},
        {"id": "7", "text": "meh", "label": None},
        {"id": "c", "text": "", "label": None},
    ]


def test_read_csv(tmp_path: Path, task: Task) -> None:
    body = 'id,text,gold\n1,"Loved it, truly",positive\n2,"line one\nline two",\n'
    items = read_items(_write(tmp_path, "items.csv", "\ufeff" + body), task)
    assert items == [
        {"id": "1", "text": "Loved it, truly", "label": "positive"},
        {"id": "2", "text": "line one\nline two", "label": None},
    ]


def test_gold_ignored_without_label_field(tmp_path: Path) -> None:
    plain = load_task(_write(tmp_path, "t.yaml", "name: t\ninstruction: x\nlabels: [a, b]\n"))
    path = _write(tmp_path, "i.jsonl", '{"id": "1", "text": "x", "label": "zzz"}\n')
    assert read_items(path, plain) == [{"id": "1", "text": "x", "label": None}]


def test_custom_fields(tmp_path: Path) -> None:
    text = "name: t\ninstruction: x\nlabels: [a, b]\nid_field: key\ntext_field: body\n"
    custom = load_task(_write(tmp_path, "t.yaml", text))
    path = _write(tmp_path, "i.csv", "key,body\nk1,hello\n")
    assert read_items(path, custom) == [{"id": "k1", "text": "hello", "label": None}]


BAD_ITEMS = [
    ("i.jsonl", '{"id": "1", "text": "x"}\n{"id": "1", "text": "y"}\n', 2, "id", "duplicate id"),
    ("i.jsonl", '{"id": "1", "text": "x"}\n{"text": "y"}\n', 2, "id", "id missing"),
    ("i.jsonl", '{"id": "1"}\n', 1, "text", "text missing"),
    ("i.jsonl", '{"id": "1", "text": 5}\n', 1, "text", "must be a string"),
    ("i.jsonl", '{"id": 1.5, "text": "x"}\n', 1, "id", "text or an integer"),
    ("i.jsonl", '{"id": "1", "text": "x"}\n{"id": "2", "text": \n', 2, None, "not valid JSON"),
    ("i.jsonl", "[1, 2]\n", 1, None, "not a JSON object"),
    ("i.jsonl", '{"id": "1", "text": "x", "gold": "great"}\n', 1, "gold", "not one of the task"),
    ("i.csv", "id,text\n1,a\n1,b\n", 3, "id", "duplicate id"),
    ("i.csv", "id,body\n1,a\n", 2, "text", "text missing"),
    ("i.csv", "id,text\n1,a,extra\n", 2, None, "more cells"),
    ("i.csv", "id,text,gold\n1,a,Positive\n", 2, "gold", "not one of the task"),
]


@pytest.mark.parametrize(("name", "body", "line", "field", "message"), BAD_ITEMS)
def test_bad_items_name_file_line_field(
    tmp_path: Path, task: Task, name: str, body: str, line: int, field: str | None, message: str
) -> None:
    path = _write(tmp_path, name, body)
    with pytest.raises(ItemsError) as info:
        read_items(path, task)
    assert info.value.line == line
    assert info.value.field == field
    assert message in str(info.value)
    assert f"{path}, line {line}" in str(info.value)


def test_items_file_problems(tmp_path: Path, task: Task) -> None:
    with pytest.raises(ItemsError, match="file not found"):
        read_items(tmp_path / "missing.jsonl", task)
    with pytest.raises(ItemsError, match="unknown file type"):
        read_items(_write(tmp_path, "i.txt", "x"), task)
    with pytest.raises(ItemsError, match="no items"):
        read_items(_write(tmp_path, "i.jsonl", "\n\n"), task)
    bad_utf8 = tmp_path / "b.jsonl"
    bad_utf8.write_bytes(b'{"id": "1", "text": "\xff"}\n')
    with pytest.raises(ItemsError, match="UTF-8"):
        read_items(bad_utf8, task)
    assert issubclass(ItemsError, TaskError)


# ---------------------------------------------------------------- several fields, words


def test_builtin_judge_tasks_carry_the_recorded_prompts() -> None:
    from verbcal import datasets
    from verbcal.task import BUILTIN_TASKS

    readme = datasets.judges_readme()
    assert set(BUILTIN_TASKS) == {
        "translation-quality",
        "translation-quality-verbal",
        "hallucination",
        "hallucination-verbal",
    }
    task = load_task("translation-quality")
    assert task.fields == ("source", "translation") and task.reply == "probs"
    items = read_items(datasets.recorded_path("mt-quality"), task)
    assert len(items) == 120 and items[0]["label"] == "unacceptable"
    prompt = task.render_prompt(items[0]["text"], items[0])
    # the README's numeric prompt, with this item's fields filled in
    quoted = readme.split("```\n")[1].rstrip("\n")
    expected = quoted.replace("{source}", items[0]["source"]).replace(
        "{translation}", items[0]["translation"]
    )
    assert prompt == expected
    verbal = load_task("translation-quality-verbal")
    assert (verbal.reply, verbal.about) == ("verbal", "acceptable")
    assert "How likely is it that the translation is acceptable?" in verbal.render_prompt(
        "", items[0]
    )
    halu = load_task("hallucination-verbal")
    assert (halu.reply, halu.about, halu.fields) == (
        "verbal",
        "hallucinated",
        ("query", "response"),
    )
    assert len(read_items(datasets.recorded_path("halueval"), halu)) == 120


def test_a_missing_field_names_item_line_and_field(tmp_path: Path) -> None:
    task_path = tmp_path / "judge.yaml"
    task_path.write_text(
        "name: judge\ninstruction: Judge it.\nlabels: [good, bad]\nfields: [source, output]\n"
        "template: 'S: {source} O: {output}'\n",
        encoding="utf-8",
    )
    task = load_task(task_path)
    items = tmp_path / "items.jsonl"
    items.write_text(
        '{"id": "a", "source": "x", "output": "y"}\n{"id": "b", "source": "x"}\n', encoding="utf-8"
    )
    with pytest.raises(ItemsError, match=r"line 2, field 'output': item 'b': output missing"):
        read_items(items, task)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("template: 'S: {source} O: {other}'\nfields: [source]\n", "declare the item field"),
        ("fields: [text]\n", "reserved"),
        ("fields: source\n", "list of item field names"),
        ("reply: verbal\n", "about"),
        ("reply: verbal\nabout: maybe\n", "about"),
        ("reply: words\n", "probs or verbal"),
        ("about: good\n", "only used with reply: verbal"),
    ],
)
def test_bad_judge_task_keys(tmp_path: Path, extra: str, needle: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: judge\ninstruction: Judge it.\nlabels: [good, bad]\n" + extra, encoding="utf-8"
    )
    with pytest.raises(TaskError, match=needle):
        load_task(path)


def test_single_text_tasks_are_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: s\ninstruction: Classify.\nlabels: [a, b]\n", encoding="utf-8")
    task = load_task(path)
    assert task.fields == () and task.reply == "probs"
    assert 'Text:\n"""\nhello\n"""' in task.render_prompt("hello")
