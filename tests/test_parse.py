"""Tests for verbcal.parse: a corpus of realistic replies, unit checks and hypothesis properties."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verbcal.parse import ParsedReply, parse_reply

CORPUS = Path(__file__).parent / "data" / "replies.jsonl"
SENTIMENT = ("negative", "neutral", "positive")


def _corpus() -> list[dict[str, Any]]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


CASES = _corpus()


def test_corpus_is_large_and_varied() -> None:
    assert len(CASES) >= 60
    assert len({case["name"] for case in CASES}) == len(CASES)
    statuses = {case["status"] for case in CASES}
    assert statuses == {"ok", "repaired", "failed"}


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_corpus_reply(case: dict[str, Any]) -> None:
    result = parse_reply(case["reply"], case["labels"])
    assert result.status == case["status"], result.issues
    missing = set(case["issues"]) - set(result.issues)
    assert not missing, f"expected issues {sorted(missing)} not in {result.issues}"
    if case["status"] == "ok":
        assert result.issues == []
    if case["probs"] is None:
        assert result.probs is None
        return
    assert result.probs is not None
    assert list(result.probs) == list(case["labels"])
    for label, expected in case["probs"].items():
        assert result.probs[label] == pytest.approx(expected, abs=1e-9), label


def test_to_dict_is_json_ready() -> None:
    result = parse_reply('```json\n{"no": 0.25, "yes": 0.75}\n```', ["no", "yes"])
    assert result.to_dict() == {
        "status": "repaired",
        "probs": {"no": 0.25, "yes": 0.75},
        "issues": ["fenced"],
    }
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    failed = parse_reply("no idea", ["no", "yes"]).to_dict()
    assert failed == {"status": "failed", "probs": None, "issues": ["no_json_found"]}


def test_labels_come_only_from_the_task() -> None:
    reply = '{"negative": 0.2, "positive": 0.3, "sarcastic": 0.5}'
    result = parse_reply(reply, ["negative", "positive"])
    assert result.probs == {"negative": 0.4, "positive": 0.6}
    assert "extra_key:sarcastic" in result.issues


def test_status_ok_exactly_when_no_issues() -> None:
    for case in CASES:
        result = parse_reply(case["reply"], case["labels"])
        assert (result.status == "ok") == (result.probs is not None and not result.issues)


def test_no_labels_fails() -> None:
    assert parse_reply('{"a": 1}', []) == ParsedReply("failed", None, ["no_labels"])


def test_non_string_input_does_not_raise() -> None:
    result = parse_reply(None, ["no", "yes"])  # type: ignore[arg-type]
    assert result.status == "failed"
    assert result.probs is None


def test_extra_keys_are_capped() -> None:
    keys = {f"k{i}": i for i in range(25)}
    result = parse_reply(json.dumps({"no": 0.5, "yes": 0.5, **keys}), ["no", "yes"])
    assert result.status == "repaired"
    assert sum(issue.startswith("extra_key:") for issue in result.issues) == 10
    assert "extra_keys_more:15" in result.issues


@pytest.mark.parametrize(
    "reply",
    ["[" * 5000 + "]" * 5000, "{" * 20000, "[{" * 5000, '"' * 10000 + "{", ":" * 50000],
    ids=["brackets", "open_braces", "open_arrays", "quotes", "colons"],
)
def test_pathological_input_fails_quietly(reply: str) -> None:
    result = parse_reply(reply, ["no", "yes"])
    assert result.status == "failed"
    assert not any(issue.startswith("internal_error") for issue in result.issues)


# --- properties ------------------------------------------------------------------------

LABEL = (
    st.text(
        alphabet=st.characters(categories=("L", "N"), include_characters=" _-/"),
        min_size=1,
        max_size=12,
    )
    .map(str.strip)
    .filter(bool)
)
LABELS = st.lists(LABEL, min_size=2, max_size=6, unique=True)


def _valid(result: ParsedReply, labels: list[str]) -> None:
    assert result.status in ("ok", "repaired", "failed")
    assert isinstance(result.issues, list)
    assert all(isinstance(issue, str) and issue for issue in result.issues)
    if result.status == "failed":
        assert result.probs is None
        assert result.issues
        return
    assert result.probs is not None
    assert list(result.probs) == list(dict.fromkeys(labels))
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in result.probs.values())
    assert math.fsum(result.probs.values()) == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=300), labels=LABELS)
def test_never_raises_on_any_text(text: str, labels: list[str]) -> None:
    _valid(parse_reply(text, labels), labels)


JSONISH = st.text(alphabet="{}[]\":,.0123456789%-eE \n'`abnoyesNaInfity", max_size=120)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(text=JSONISH)
def test_never_raises_on_json_like_text(text: str) -> None:
    _valid(parse_reply(text, ["no", "yes"]), ["no", "yes"])


@settings(max_examples=200)
@given(
    labels=LABELS,
    data=st.data(),
    prefix=st.sampled_from(["", "Answer: ", "```json\n", "<think>hmm</think>\n"]),
)
def test_any_json_value_never_raises(labels: list[str], data: st.DataObject, prefix: str) -> None:
    leaf = st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8)
    keys = st.sampled_from(labels) | st.text(max_size=8)
    value = st.recursive(
        leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4)
    )
    reply = prefix + json.dumps(data.draw(value))
    _valid(parse_reply(reply, labels), labels)


@settings(max_examples=300)
@given(labels=LABELS, data=st.data())
def test_valid_distribution_round_trips(labels: list[str], data: st.DataObject) -> None:
    weights = data.draw(
        st.lists(
            st.floats(min_value=0.0, max_value=1.0, allow_subnormal=False),
            min_size=len(labels),
            max_size=len(labels),
        ).filter(lambda ws: math.fsum(ws) > 1e-6)
    )
    total = math.fsum(weights)
    dist = {label: w / total for label, w in zip(labels, weights, strict=True)}
    order = data.draw(st.permutations(labels))
    reply = json.dumps({label: dist[label] for label in order})
    result = parse_reply(reply, labels)
    assert result.status == "ok", result.issues
    assert result.issues == []
    assert result.probs is not None
    assert list(result.probs) == labels
    reread_total = math.fsum(dist.values())
    assert result.probs == {label: dist[label] / reread_total for label in labels}


@settings(max_examples=200)
@given(labels=LABELS, data=st.data())
def test_percentages_match_fractions(labels: list[str], data: st.DataObject) -> None:
    n = len(labels)
    cuts = sorted(data.draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    counts = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    pct = {label: f"{c}%" for label, c in zip(labels, counts, strict=True)}
    result = parse_reply(json.dumps(pct), labels)
    assert result.status == "repaired"
    assert "percentages" in result.issues
    assert result.probs is not None
    for label, count in zip(labels, counts, strict=True):
        assert result.probs[label] == pytest.approx(count / 100, abs=1e-12)
