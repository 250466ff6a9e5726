"""Small pieces of elicit: store keys, retry timing, redaction, prices, logprob matching."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from verbcal.elicit.backends import parse_retry_after, status_error
from verbcal.elicit.engine import EngineConfig, RateLimiter, backoff_delay
from verbcal.elicit.openai_backend import label_logprobs
from verbcal.elicit.pricing import estimate_cost, load_prices, lookup
from verbcal.elicit.records import ItemPlan, build_record, softmax_logprobs
from verbcal.elicit.redact import redact
from verbcal.elicit.store import Row, Store, request_key


def test_request_key_depends_on_every_input() -> None:
    base = request_key("openai", "m", "p", {"temperature": 0}, 0)
    assert base == request_key("openai", "m", "p", {"temperature": 0}, 0)
    others = [
        request_key("anthropic", "m", "p", {"temperature": 0}, 0),
        request_key("openai", "m2", "p", {"temperature": 0}, 0),
        request_key("openai", "m", "p2", {"temperature": 0}, 0),
        request_key("openai", "m", "p", {"temperature": 1}, 0),
        request_key("openai", "m", "p", {"temperature": 0}, 1),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_store_round_trip_and_wal(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        store.put("openai", "m", Row("k1", "a", 0, "reply", raw="{}", input_tokens=3))
        store.put("openai", "m", Row("k2", "b", 0, "error", error="HTTP 500"))
        store.put("openai", "m", Row("k2", "b", 0, "reply", raw="{}"))  # a retry replaces it
        rows = store.get_many(["k1", "k2", "k3"])
        mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal" and set(rows) == {"k1", "k2"}
    assert rows["k1"].input_tokens == 3 and rows["k2"].status == "reply"


def test_retry_after_header_forms() -> None:
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({}) is None


def test_backoff_is_exponential_jittered_and_honours_retry_after() -> None:
    config = EngineConfig(backoff_base=1.0, backoff_max=8.0)
    assert all(0 <= backoff_delay(1, None, config) <= 1 for _ in range(50))
    assert all(0 <= backoff_delay(10, None, config) <= 8 for _ in range(50))
    assert all(backoff_delay(1, 5.0, config) >= 5.0 for _ in range(50))


def test_status_errors_say_what_to_fix() -> None:
    assert status_error(429, "x", "h", {"Retry-After": "3"}).retry_after == 3.0
    assert status_error(503, "x", "h", None).retryable
    for code, words in [(401, "MY_KEY"), (403, "permission"), (404, "--model"), (400, "--model")]:
        error = status_error(code, "x", "h", None, credentials="MY_KEY")
        assert not error.retryable and words in str(error)
        assert error.fatal == (code in (401, 403, 404))
    assert not status_error(429, "x", "h", None).fatal


def test_redact_removes_env_secrets_and_key_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdefgh12345")
    text = "Incorrect API key provided: sk-proj-abc123******xyz; token tok-abcdefgh12345 AKIAABCDEFGHIJKLMNOP"
    cleaned = redact(text)
    assert "sk-proj" not in cleaned and "tok-abcdefgh" not in cleaned and "AKIA" not in cleaned


def test_prices_lookup_override_and_local(tmp_path: Path) -> None:
    table = load_prices(None)
    assert lookup("gpt-4o-mini-2024-07-18", table) == table["gpt-4o-mini"]
    assert lookup("anthropic.claude-3-haiku-20240307-v1:0", table) == table["claude-3-haiku"]
    assert estimate_cost("openai", "gpt-4o-mini", 1_000_000, 0, table) == pytest.approx(0.15)
    assert estimate_cost("openai", "mystery", 10, 10, table) is None
    assert estimate_cost("local", "smollm2", 10, 10, table) == 0.0
    (tmp_path / "p.json").write_text('{"mystery": {"input": 1, "output": 2}}')
    custom = load_prices(tmp_path / "p.json")
    assert estimate_cost("openai", "mystery", 1_000_000, 1_000_000, custom) == pytest.approx(3)
    (tmp_path / "bad.json").write_text('{"x": 1}')
    with pytest.raises(ValueError, match="USD per million"):
        load_prices(tmp_path / "bad.json")


def test_label_logprobs_match_first_tokens() -> None:
    top = [("pos", -0.1), (" Neg", -2.0), ("The", -3.0), ("positive", -0.5)]
    scores = label_logprobs(top, ("positive", "negative", "neutral"))
    assert scores == {"positive": -0.1, "negative": -2.0}
    probs = softmax_logprobs(scores, ("positive", "negative", "neutral"))
    assert probs is not None and probs["neutral"] == 0 and sum(probs.values()) == pytest.approx(1)
    assert softmax_logprobs({}, ("a",)) is None


def test_missing_row_is_reported_not_dropped() -> None:
    plan = ItemPlan({"id": "x", "text": "t", "label": None}, ("k",))
    record = build_record(plan, {}, ("a", "b"))
    assert record["status"] == "error" and "re-run" in record["issues"][0]
    assert "label" not in record


class VirtualClock:
    """Time that passes only when the code under test sleeps: no wall clock in the asserts."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limiter_paces() -> None:
    clock = VirtualClock()

    async def go() -> None:
        limiter = RateLimiter(per_minute=600, clock=clock, sleep=clock.sleep)  # 10/s, bucket 10
        for _ in range(15):
            await limiter.acquire()

    asyncio.run(go())
    assert clock.now == pytest.approx(0.5)  # 10 from the full bucket, then 5 at 0.1 s each


def test_token_limiter_charges_actual_usage() -> None:
    clock = VirtualClock()

    async def go() -> None:
        limiter = RateLimiter(per_minute=6000, clock=clock, sleep=clock.sleep)  # 100 tokens/s
        await limiter.acquire(80)
        limiter.settle(60)  # the reply used 140 tokens, not 80: the bucket is now -40
        await limiter.acquire(50)  # needs 50: waits 0.9 s for the refill

    asyncio.run(go())
    assert clock.now == pytest.approx(0.9)
