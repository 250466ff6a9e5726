"""bakeoff.yaml validation: every error names the file, the field and what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic")

from verbcal.bakeoff import BakeoffConfig, BakeoffError

RECORDED = {"recorded": "judge.jsonl", "source": "probs"}


def config(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "labels": ["yes", "no"],
        "arms": [{"name": "a", **RECORDED}, {"name": "b", **RECORDED}],
    }
    data.update(changes)
    return data


def error(data: Any) -> str:
    with pytest.raises(BakeoffError) as info:
        BakeoffConfig.from_dict(data, source="bk.yaml")
    return str(info.value)


def test_a_valid_recorded_config_resolves_paths_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "bk.yaml"
    path.write_text(
        "labels: [yes_, no_]\narms:\n"
        "  - {name: a, recorded: j.jsonl, source: probs}\n"
        "  - {name: b, recorded: recorded:halueval, source: verbal, about: no_}\n"
    )
    loaded = BakeoffConfig.load(path)
    assert loaded.labels == ("yes_", "no_")
    assert loaded.positive == "yes_"  # default: the first label
    assert loaded.decision.metric == "recall" and loaded.decision.precision == 0.9
    assert loaded.doc.method == "auto"
    assert loaded.path("j.jsonl") == str(tmp_path / "j.jsonl")
    assert loaded.path("recorded:halueval") == "recorded:halueval"
    assert [arm.format for arm in loaded.arms] == ["numeric", "verbal"]
    assert loaded.about(loaded.arms[1]) == "no_"


@pytest.mark.parametrize(
    ("arm", "expected"),
    [
        ({"name": "x", "backend": "openai", "samples": 0}, "arms[1].samples"),
        ({"name": "x", "backend": "openai", "reply": "words"}, "arms[1].reply"),
        ({"name": "x"}, "give 'backend'"),
        ({"name": "x", "backend": "nope"}, "unknown backend 'nope'"),
        ({"name": "x", "recorded": "f.jsonl"}, "needs 'source: probs' or 'source: verbal'"),
        ({"name": "x", "recorded": "f.jsonl", "source": "probs", "model": "m"}, "takes no 'model'"),
        ({"name": "x", "backend": "openai", "price_per_1m_input": 1}, "give both price_per_1m"),
        ({"name": "x", "backend": "openai", "prompt": "no text"}, "does not contain {text}"),
        ({"name": "x", "backend": "openai", "colour": "red"}, "unknown key"),
        ({"name": "bad name", "backend": "openai"}, "arms[1].name"),
        ({"name": "x", "backend": "openai", "llm_temperature": 3}, "llm_temperature"),
    ],
)
def test_arm_errors_name_the_field(arm: dict[str, Any], expected: str) -> None:
    data = config(arms=[{"name": "a", **RECORDED}, arm], task="t.yaml", items="i.jsonl")
    message = error(data)
    assert message.startswith("bk.yaml, field ")
    assert expected in message


def test_document_level_errors() -> None:
    assert "arms" in error(config(arms=[{"name": "a", **RECORDED}]))  # fewer than 2
    assert "two arms are named 'a'" in error(
        config(arms=[{"name": "a", **RECORDED}, {"name": "a", **RECORDED}])
    )
    live = [{"name": "a", **RECORDED}, {"name": "b", "backend": "openai"}]
    assert "needs 'task'" in error(config(arms=live))
    assert "give 'labels'" in error(
        {"arms": [{"name": "a", **RECORDED}, {"name": "b", **RECORDED}]}
    )
    assert "not a label" in error(config(decision={"positive": "maybe"}))
    assert "decision.precision" in error(config(decision={"precision": 1.5}))
    assert "decision.metric" in error(config(decision={"metric": "f1"}))
    assert "unknown method" in error(config(method="magic"))
    assert "not a YAML mapping" in error(["arms"])
    verbal = {"name": "v", "recorded": "f.jsonl", "source": "verbal"}
    three = config(labels=["a", "b", "c"], arms=[{"name": "a", **RECORDED}, verbal])
    assert "arms[1].about" in error(three)


def test_load_reports_yaml_syntax_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bk.yaml"
    path.write_text("labels: [a, b]\narms: [\n  - {name: x\n")
    with pytest.raises(BakeoffError, match=r"bk.yaml, line \d+: not valid YAML"):
        BakeoffConfig.load(path)
    with pytest.raises(BakeoffError, match="file not found"):
        BakeoffConfig.load(tmp_path / "missing.yaml")


def test_labels_must_match_the_task(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("name: t\ninstruction: Judge.\nlabels: [good, bad]\n")
    path = tmp_path / "bk.yaml"
    path.write_text(
        "task: t.yaml\nitems: i.jsonl\nlabels: [bad, good]\narms:\n"
        "  - {name: a, backend: openai}\n  - {name: b, backend: openai}\n"
    )
    with pytest.raises(BakeoffError, match="differ from the task's"):
        BakeoffConfig.load(path)
