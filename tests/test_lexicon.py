"""The lexicon of probability words and the parser of verbal replies."""

from __future__ import annotations

import json
import math
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


@pytest.mark.parametrize(
    "reply",
    [
        "wibble",
        "very wibble",
        "likely-ish maybe so",
        "likely that it is not acceptable",  # a restatement that negates: no reading
        "very",
        "150%",
        "very possibly",  # "possibly" (0.4) is too near even odds to be scaled: no misreading
    ],
)
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


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.mark.parametrize(
    ("reply", "p", "issues"),
    [
        ("moderately likely", 1 / (1 + math.exp(-0.43 * _logit(0.70))), ["composed"]),
        ("Very probable.", 1 / (1 + math.exp(-1.7 * _logit(0.75))), ["composed"]),
        ("quite unlikely", 1 / (1 + math.exp(-1.3 * _logit(0.20))), ["composed"]),
        ("a high likelihood", 0.80, ["composed"]),
        ("low odds", 0.20, ["composed"]),
        ("very low", 1 / (1 + math.exp(-1.7 * _logit(0.20))), ["composed"]),
        ("not very likely", 1 / (1 + math.exp(_logit(0.70) / 1.7)), ["negated", "composed"]),
        ("not too likely", 1 / (1 + math.exp(_logit(0.70) / 1.7)), ["negated", "composed"]),
        ("about 80%", 0.80, ["number"]),
        ("0.8", 0.80, ["number"]),
        ("75 percent likely", 0.75, ["number"]),
        ("more likely than not", 0.60, []),
        ("toss-up", 0.50, []),
        ("not sure", 0.50, []),
        ("very likely not", 0.10, ["negated"]),
        ("certainly not", 0.005, ["negated"]),
    ],
)
def test_phrases_composed_from_modifiers_levels_and_numbers(
    reply: str, p: float, issues: list[str]
) -> None:
    parsed = parse_verbal(reply)
    assert parsed.p == pytest.approx(p, abs=1e-9)
    assert parsed.issues == issues
    assert parsed.status == ("repaired" if issues else "ok")


def test_composition_never_changes_a_listed_phrase() -> None:
    lexicon = default_lexicon()
    for key, entry in lexicon.entries.items():
        assert parse_verbal(entry.phrase, lexicon).p == entry.p, key


def test_a_weaker_denial_stays_on_the_no_side_but_nearer_even_odds() -> None:
    """ "not very likely" < 0.5 but above "not likely"; the order of the intensity kept."""
    values = [parse_verbal(r).p for r in ("not likely", "not very likely", "likely")]
    assert values[0] < values[1] < 0.5 < values[2]  # type: ignore[operator]
    modifiers = ["somewhat", "fairly", "quite", "very", "highly", "extremely"]
    ups = [parse_verbal(f"{m} probable").p for m in modifiers]
    downs = [parse_verbal(f"{m} improbable").p for m in modifiers]
    assert ups == sorted(ups) and downs == sorted(downs, reverse=True)


def test_fitted_multipliers_match_the_listed_pairs_they_summarise() -> None:
    """A modifier marked ``fitted`` holds the geometric mean of logit ratios of the pairs
    the lexicon lists ("very likely" / "likely", ...; bases at even odds have no ratio),
    to the rounding written."""
    lexicon = default_lexicon()
    fitted = {k: e.p for k, e in lexicon.modifiers.items() if e.source == "fitted"}
    assert {"very", "highly", "somewhat", "fairly"} <= set(fitted)
    for modifier, m in fitted.items():
        ratios = [
            _logit(entry.p) / _logit(lexicon.entries[key[len(modifier) + 1 :]].p)
            for key, entry in lexicon.entries.items()
            if key.startswith(modifier + " ")
            and key[len(modifier) + 1 :] in lexicon.entries
            and lexicon.entries[key[len(modifier) + 1 :]].p != 0.5  # even odds: no ratio
        ]
        assert ratios, modifier
        mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        assert m == pytest.approx(mean, abs=0.02), modifier


def test_a_restated_question_is_dropped_and_a_named_other_label_flips() -> None:
    plain = parse_verbal("Unlikely to contain a hallucination", about="hallucinated")
    assert (plain.p, plain.issues) == (0.20, ["restated"])
    flipped = parse_verbal(
        "likely that the translation is unacceptable", about="acceptable", labels=LABELS
    )
    assert flipped.p == pytest.approx(0.30)
    assert flipped.issues == ["restated", "verdict_flips:unacceptable"]


def test_a_no_after_a_phrase_above_even_odds_is_what_the_phrase_is_about() -> None:
    assert parse_verbal("probably no").p == pytest.approx(0.30)
    assert "verdict_flips:no" in parse_verbal("probably no").issues
    assert parse_verbal("no, very unlikely").p == pytest.approx(0.10)  # consistent: kept
    assert parse_verbal("yes, probably").p == pytest.approx(0.70)


def test_a_user_lexicon_adds_modifiers_and_levels_and_bad_ones_are_named(
    tmp_path: Path,
) -> None:
    own = tmp_path / "own.yaml"
    own.write_text("phrases: {}\nmodifiers:\n  super: {m: 3}\nlevels:\n  huge: {p: 0.9}\n", "utf-8")
    lexicon = load_lexicon(own)
    assert parse_verbal("super likely", lexicon).p == pytest.approx(
        1 / (1 + math.exp(-3 * _logit(0.70)))
    )
    assert parse_verbal("a huge chance", lexicon).p == pytest.approx(0.9)
    bad = tmp_path / "bad.yaml"
    bad.write_text("phrases: {}\nlevels:\n  certain: {p: 1.5}\n", "utf-8")
    with pytest.raises(LexiconError, match=r"levels 'certain': p must be a number in \(0, 1\)"):
        load_lexicon(bad)
