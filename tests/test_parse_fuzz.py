"""A seeded fuzz of the parser: 12,000 generated replies, every one a status, never a crash.

The generator mixes the shapes replies take in the wild with hostile ones: JSON fragments
(valid, truncated, mutated), prose with numbers, unicode, percent and fraction mixes,
extreme numbers (1e308, 10**400, NaN, subnormals), huge replies and deep nesting. The seed
is fixed, so a failure reproduces; the failing reply is shown in the assertion message.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable

import pytest

from verbcal.parse import parse_reply

SEED = 20261129
N_REPLIES = 12_000
LABELS = ("positive", "negative", "neutral")
NUMBERS = (
    "0", "1", "0.5", "0.33", "1e308", "-1e308", "1e-320", "10" * 200, "NaN", "Infinity",
    "-Infinity", "-0.0", "1e400", "99.9", "80%", "0.15", "\"75%\"", "\"0.2\"", "null", "true",
    "\"1e999\"", "\"nan\"", "5e-324", "1.7976931348623157e308", "-5", "\"12 percent\"",
)  # fmt: skip
WORDS = (
    "I think", "the answer is", "probability", "Positive", "NEGATIVE", "neutral", "sure",
    "I'm sorry, I cannot", "```json", "```", "Label:", "→", "≈", "٣", "½", "é", "😀", "\u200b",
    "\x00", "\\", "{", "}", "[", "]", ":", ",", "%", "P(positive) =", "\n",
)  # fmt: skip


def _number(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(NUMBERS)
    return repr(rng.choice([rng.random(), rng.uniform(0, 100), rng.expovariate(0.01)]))


def _key(rng: random.Random) -> str:
    choice = rng.choice([*LABELS, "Positive", " neutral ", "answer", "", "p", "😀", "neg"])
    return json.dumps(choice, ensure_ascii=rng.random() < 0.5)


def _object(rng: random.Random) -> str:
    pairs = [f"{_key(rng)}: {_number(rng)}" for _ in range(rng.randint(0, 5))]
    return "{" + ", ".join(pairs) + "}"


def _fragment(rng: random.Random) -> str:
    text = _object(rng)
    cut = rng.randint(0, len(text))
    return rng.choice([text, text[:cut], text[cut:], text.replace(",", "", 1)])


def _prose(rng: random.Random) -> str:
    parts = [rng.choice(WORDS) if rng.random() < 0.7 else _number(rng) for _ in range(30)]
    return " ".join(parts[: rng.randint(1, 30)])


def _unicode(rng: random.Random) -> str:
    return "".join(chr(rng.randint(1, 0x2FFFF)) for _ in range(rng.randint(1, 200)))


def _mixed_units(rng: random.Random) -> str:
    values = [f'"{rng.randint(0, 100)}%"', repr(round(rng.random(), 2)), str(rng.randint(0, 100))]
    return "{" + ", ".join(f'"{label}": {rng.choice(values)}' for label in LABELS) + "}"


def _clean(rng: random.Random) -> str:
    weights = [rng.random() for _ in LABELS]
    total = sum(weights) or 1.0
    return json.dumps({label: w / total for label, w in zip(LABELS, weights, strict=True)})


def _nested(rng: random.Random) -> str:
    depth = rng.choice([10, 100, 1000, 20_000])
    inner = _object(rng)
    if rng.random() < 0.5:
        return '{"a": ' * depth + inner + "}" * depth
    return "[" * depth + inner + "]" * rng.randint(0, depth)


def _huge(rng: random.Random) -> str:
    unit = rng.choice([_object(rng), _prose(rng), "x" * 1000, '{"positive": 0.5, '])
    return unit * rng.randint(50, 400)


GENERATORS: dict[str, tuple[Callable[[random.Random], str], int]] = {
    "clean": (_clean, 5),
    "json_fragment": (_fragment, 40),
    "prose": (_prose, 20),
    "unicode": (_unicode, 10),
    "mixed_units": (_mixed_units, 15),
    "nested": (_nested, 5),
    "huge": (_huge, 2),
    "prose_with_json": (lambda rng: _prose(rng) + " " + _fragment(rng) + " " + _prose(rng), 8),
}


def generate(seed: int, n: int) -> list[tuple[str, str]]:
    """``n`` (kind, reply) pairs drawn with weights from :data:`GENERATORS`."""
    rng = random.Random(seed)
    kinds = list(GENERATORS)
    weights = [GENERATORS[k][1] for k in kinds]
    out = []
    for kind in rng.choices(kinds, weights, k=n):
        out.append((kind, GENERATORS[kind][0](rng)))
    return out


@pytest.mark.slow
def test_fuzzed_replies_always_end_in_a_valid_status() -> None:
    replies = generate(SEED, N_REPLIES)
    statuses: Counter[str] = Counter()
    for kind, reply in replies:
        result = parse_reply(reply, LABELS)
        shown = f"{kind}: {reply[:200]!r} -> {result}"
        assert result.status in ("ok", "repaired", "failed"), shown
        assert not any(i.startswith("internal_error") for i in result.issues), shown
        assert (result.probs is None) == (result.status == "failed"), shown
        assert (result.status == "ok") == (not result.issues), shown
        if result.probs is not None:
            assert list(result.probs) == list(LABELS), shown
            assert all(math.isfinite(p) and p >= 0 for p in result.probs.values()), shown
            assert math.fsum(result.probs.values()) == pytest.approx(1.0, abs=1e-9), shown
        statuses[result.status] += 1
    assert len(replies) >= 10_000
    # the generator reaches every status, so the test exercises every path it claims to
    assert set(statuses) == {"ok", "repaired", "failed"}, statuses
    assert set(GENERATORS) == {kind for kind, _ in replies}


def test_fuzz_generator_is_seeded() -> None:
    assert generate(SEED, 50) == generate(SEED, 50)
    assert generate(SEED, 50) != generate(SEED + 1, 50)


@pytest.mark.parametrize(
    ("reply", "issue"),
    [
        ('{"positive": 1e308, "negative": 1e308, "neutral": 0}', "overflow:sum"),
        ('{"positive": 1e400, "negative": 0.5, "neutral": 0.5}', "non_finite:positive"),
        ('{"positive": ' + "9" * 400 + ', "negative": 0, "neutral": 0}', "non_finite:positive"),
        ('{"positive": NaN, "negative": 0.5, "neutral": 0.5}', "non_finite:positive"),
        ('{"positive": "1e999", "negative": 0.5, "neutral": 0.5}', "non_finite:positive"),
    ],
)
def test_overflowing_values_are_a_named_rejection(reply: str, issue: str) -> None:
    result = parse_reply(reply, LABELS)
    assert result.status == "failed" and result.probs is None
    assert issue in result.issues


def test_mixed_percent_and_fractions_read_as_fractions() -> None:
    result = parse_reply('{"positive": "80%", "negative": 0.15, "neutral": 0.05}', LABELS)
    assert result.status == "repaired"
    assert "mixed_units:fractions" in result.issues
    assert result.probs == pytest.approx({"positive": 0.8, "negative": 0.15, "neutral": 0.05})


def test_mixed_percent_and_bare_percent_numbers_read_as_percent() -> None:
    result = parse_reply('{"positive": "70%", "negative": 20, "neutral": 10}', LABELS)
    assert result.status == "repaired" and "mixed_units:percent" in result.issues
    assert result.probs == pytest.approx({"positive": 0.7, "negative": 0.2, "neutral": 0.1})


def test_mixed_units_in_plain_text() -> None:
    result = parse_reply("positive: 60%\nnegative: 0.3\nneutral: 0.1", LABELS)
    assert result.status == "repaired" and "mixed_units:fractions" in result.issues
    assert result.probs == pytest.approx({"positive": 0.6, "negative": 0.3, "neutral": 0.1})


@pytest.mark.parametrize(
    "reply",
    [
        '{"positive": "30%", "negative": 0.2, "neutral": 0.1}',  # sums to 1 under neither unit
        '{"positive": "50%", "negative": 0.7, "neutral": 3}',  # 0.537 as percent, 4.2 as fractions
    ],
)
def test_mixed_units_that_fit_no_reading_are_rejected(reply: str) -> None:
    result = parse_reply(reply, LABELS)
    assert result.status == "failed" and "ambiguous_units" in result.issues


def test_mixed_units_never_take_a_fraction_as_a_percent() -> None:
    # the old reading: 0.15 as 0.15 %, which made positive 0.9975
    result = parse_reply('{"positive": "80%", "negative": 0.15, "neutral": 0.05}', LABELS)
    assert result.probs is not None and result.probs["positive"] < 0.81
