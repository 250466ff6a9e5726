"""Reply formats: top-label replies spread as stated, verbal phrases through a parser hook."""

from __future__ import annotations

import pytest

from verbcal.bakeoff.config import BakeoffError
from verbcal.bakeoff.formats import (
    default_verbal_parser,
    parse_top_label,
    parse_verbal,
    spread,
    top_label_schema,
    verbal_phrases,
    verbal_schema,
)

LABELS = ("positive", "negative", "neutral")


def test_top_label_gives_the_answer_its_confidence_and_spreads_the_rest_evenly() -> None:
    parsed = parse_top_label('{"answer": "negative", "confidence": 0.7}', LABELS)
    assert parsed.status == "ok" and not parsed.issues
    assert parsed.probs == pytest.approx({"positive": 0.15, "negative": 0.7, "neutral": 0.15})
    low = parse_top_label('{"answer": "neutral", "confidence": 0.2}', LABELS)
    assert low.probs == pytest.approx({"positive": 0.4, "negative": 0.4, "neutral": 0.2})


@pytest.mark.parametrize(
    ("text", "issue"),
    [
        ('Sure! {"answer": "positive", "confidence": 0.9} Hope that helps.', "prose_around_json"),
        ('{"answer": "Positive", "confidence": 0.9}', "case_drift:positive"),
        ('{"answer": "positive", "confidence": "90%"}', "percentages"),
        ('{"answer": "positive", "confidence": 90}', "percentages"),
        ("answer: positive\nconfidence: 0.9", "key_value_text"),
        ('{"label": "positive", "confidence": 0.9}', None),
    ],
)
def test_top_label_repairs_what_models_write(text: str, issue: str | None) -> None:
    parsed = parse_top_label(text, LABELS)
    assert parsed.probs is not None
    assert parsed.probs["positive"] == pytest.approx(0.9)
    assert (issue in parsed.issues) if issue else parsed.status == "ok"


@pytest.mark.parametrize(
    ("text", "issue"),
    [
        ("", "empty_reply"),
        ('{"answer": "positive"}', "no_answer_and_confidence"),
        ('{"answer": "mixed", "confidence": 0.9}', "unknown_label:mixed"),
        ('{"answer": "positive", "confidence": 1.7e3}', "bad_confidence:1700.0"),
        ('{"answer": "positive", "confidence": "high"}', "bad_confidence:high"),
    ],
)
def test_top_label_fails_without_guessing(text: str, issue: str) -> None:
    parsed = parse_top_label(text, LABELS)
    assert parsed.status == "failed" and parsed.probs is None
    assert parsed.issues == (issue,)


def test_top_label_schema_names_the_labels() -> None:
    schema = top_label_schema(LABELS)
    assert schema["properties"]["answer"]["enum"] == list(LABELS)
    assert schema["required"] == ["answer", "confidence"]


def test_verbal_goes_through_the_parser_and_never_guesses() -> None:
    words = {"very likely": 0.85}
    parsed = parse_verbal(" very likely ", ("acceptable", "unacceptable"), "acceptable", words.get)
    assert parsed.probs == pytest.approx({"acceptable": 0.85, "unacceptable": 0.15})
    unknown = parse_verbal("kinda", ("acceptable", "unacceptable"), "acceptable", words.get)
    assert unknown.status == "failed" and unknown.issues == ("unknown_expression:kinda",)
    assert parse_verbal("  ", LABELS, "neutral", words.get).issues == ("empty_reply",)
    with pytest.raises(BakeoffError, match="outside"):
        parse_verbal("x", LABELS, "neutral", lambda _: 1.5)
    assert spread(LABELS, "neutral", 0.5) == {"positive": 0.25, "negative": 0.25, "neutral": 0.5}


def test_verbal_schema_offers_only_phrases_the_lexicon_maps() -> None:
    phrases = verbal_phrases()
    schema = verbal_schema(phrases)
    assert schema["required"] == ["likelihood"] and schema["additionalProperties"] is False
    enum = schema["properties"]["likelihood"]["enum"]
    assert {"very likely", "about even", "very unlikely"} <= set(enum)
    assert all(phrase.isascii() for phrase in enum)  # English phrases, not the Chinese ones
    parser = default_verbal_parser()
    readings = [parse_verbal(f'{{"likelihood": "{p}"}}', LABELS, "neutral", parser) for p in enum]
    assert all(r.status == "ok" and r.probs is not None for r in readings)
    # most to least probable, as the lexicon lists them
    neutral = [r.probs["neutral"] for r in readings if r.probs is not None]
    assert neutral == sorted(neutral, reverse=True)
    with pytest.raises(BakeoffError, match="at least one phrase"):
        verbal_schema([])


@pytest.mark.parametrize(
    ("text", "status", "issues"),
    [
        ('{"likelihood": "very likely"}', "ok", ()),
        ('{"Likelihood": " very likely "}', "ok", ()),
        ('Here: {"likelihood": "very likely"}.', "repaired", ("prose_around_json",)),
        ("very likely", "ok", ()),  # free text (structured: false)
        ('{"likelihood": "kinda"}', "failed", ("unknown_expression:kinda",)),
        ('{"confidence": 0.9}', "failed", ("no_phrase",)),
    ],
)
def test_verbal_reads_the_phrase_of_a_structured_reply(
    text: str, status: str, issues: tuple[str, ...]
) -> None:
    words = {"very likely": 0.85}
    parsed = parse_verbal(text, ("acceptable", "unacceptable"), "acceptable", words.get)
    assert parsed.status == status and parsed.issues == issues
    if status != "failed":
        assert parsed.probs == pytest.approx({"acceptable": 0.85, "unacceptable": 0.15})
