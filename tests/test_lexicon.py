"""The lexicon of probability words and the parser of verbal replies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from verbcal import datasets
from verbcal.lexicon import (
    LexiconError,
    default_lexicon,
    default_path,
    load_lexicon,
    normalise,
    parse_verbal,
)

LABELS = ("acceptable", "unacceptable")


def test_every_bundled_verbal_reply_parses() -> None:
    """All 240 recorded phrases map to a probability: 0 failed."""
    failed, total = [], 0
    for name in datasets.JUDGES:
        for line in datasets.recorded_path(name).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            total += 1
            reply = parse_verbal(record["verbal"], about=record["about"])
            if reply.status == "failed":
                failed.append(record["verbal"])
    assert total == 240
    assert failed == []


def test_every_value_cites_a_source_and_the_order_is_sensible() -> None:
    lexicon = default_lexicon()
    data = yaml.safe_load(default_path().read_text(encoding="utf-8"))
    assert {"kent", "ipcc", "survey", "zh"} <= set(data["sources"])
    for entry in lexicon.entries.values():
        assert entry.source in lexicon.sources
        assert 0 <= entry.p <= 1
    value = lexicon.value
    assert value("almost certain") > value("very likely") > value("probably")  # type: ignore[operator]
    assert value("probably") > value("about even") > value("probably not")  # type: ignore[operator]
    assert value("probably not") > value("very unlikely") > value("almost impossible")  # type: ignore[operator]


@pytest.mark.parametrize(
    ("simplified", "traditional"),
    [
        ("非常确定", "非常確定"),
        ("有点不确定", "有點不確定"),
        ("不确定", "不確定"),
        ("几乎不可能", "幾乎不可能"),
    ],
)
def test_chinese_in_both_scripts(simplified: str, traditional: str) -> None:
    a, b = parse_verbal(simplified), parse_verbal(traditional)
    assert a.status == b.status == "ok"
    assert a.p == b.p


def test_chinese_phrases_listed_in_the_issue() -> None:
    for phrase in ("很可能", "可能", "大概", "不太可能", "幾乎不可能", "非常確定", "有點不確定"):
        assert parse_verbal(phrase).status == "ok", phrase
    assert parse_verbal("很可能").p > parse_verbal("可能").p > parse_verbal("不太可能").p  # type: ignore[operator]


@pytest.mark.parametrize(
    ("reply", "p", "issue"),
    [
        ("Very likely.", 0.90, None),
        ('"almost certain"', 0.93, None),
        ("  ALMOST IMPOSSIBLE ", 0.02, None),
        ("非常确定。", 0.90, None),
        ("I'd say very likely", 0.90, "lead_in"),
        ("I think it's probably not", 0.25, "lead_in"),
        ("Acceptable, very likely", 0.90, "verdict:acceptable"),
        ("very likely acceptable", 0.90, "verdict:acceptable"),
        ("Yes - probably", 0.70, "verdict:yes"),
        ("not likely", 0.30, "negated"),
        ("Not Likely!", 0.30, "negated"),
    ],
)
def test_what_models_write(reply: str, p: float, issue: str | None) -> None:
    parsed = parse_verbal(reply, about="acceptable", labels=LABELS)
    assert parsed.p == pytest.approx(p)
    assert parsed.status == ("ok" if issue is None else "repaired")
    if issue:
        assert issue in parsed.issues


def test_a_verdict_for_the_other_label_flips_the_reading() -> None:
    parsed = parse_verbal("Unacceptable — almost certain", about="acceptable", labels=LABELS)
    assert parsed.p == pytest.approx(1 - 0.93)
    assert "verdict_flips:unacceptable" in parsed.issues
    assert parsed.probs(LABELS, "acceptable") == pytest.approx(
        {"acceptable": 0.07, "unacceptable": 0.93}
    )


@pytest.mark.parametrize("reply", ["wibble", "not very likely", "0.8", "likely-ish maybe so"])
def test_unknown_phrases_fail_and_are_never_guessed(reply: str) -> None:
    parsed = parse_verbal(reply)
    assert parsed.status == "failed" and parsed.p is None
    assert parsed.issues == [f"unknown_expression:{normalise(reply)}"]


def test_empty_and_non_text_replies() -> None:
    assert parse_verbal("").issues == ["empty_reply"]
    assert parse_verbal(None).issues == ["not_text:NoneType"]


def test_a_user_lexicon_extends_or_replaces(tmp_path: Path) -> None:
    extend = tmp_path / "extend.yaml"
    extend.write_text("phrases:\n  pretty likely: 0.8\n  very likely: {p: 0.85}\n", "utf-8")
    lexicon = load_lexicon(extend)
    assert parse_verbal("Pretty likely", lexicon).p == 0.8
    assert parse_verbal("very likely", lexicon).p == 0.85  # the user's value wins
    assert parse_verbal("probably", lexicon).p == 0.70  # bundled phrases kept
    replace = tmp_path / "replace.yaml"
    replace.write_text("mode: replace\nphrases:\n  pretty likely: 0.8\n", "utf-8")
    only = load_lexicon(replace)
    assert parse_verbal("pretty likely", only).p == 0.8
    assert parse_verbal("probably", only).issues == ["unknown_expression:probably"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("phrases:\n  likely: 1.5\n", "p must be a probability"),
        ("phrases:\n  likely: 0.7\n  Likely!: 0.6\n", "same as 'likely'"),
        ("nothing: here\n", "'phrases'"),
        ("mode: merge\nphrases:\n  likely: 0.7\n", "mode"),
        ("sources: {a: b}\nphrases:\n  likely: {p: 0.7, source: c}\n", "source 'c'"),
    ],
)
def test_bad_lexicons_say_what_is_wrong(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(LexiconError, match=needle):
        load_lexicon(path)
