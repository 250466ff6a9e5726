"""The row cache of ``verbcal serve``: bit-identical to uncached predict_proba, bounded, per load."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")

from pydantic_core import to_json

from serve_helpers import fit_file
from verbcal import datasets
from verbcal.calibration import METHODS, make_calibrator
from verbcal.serve import ServeConfig, create_app
from verbcal.serve.cache import RowCache, as_matrix
from verbcal.serve.calibrate import calibrate_json, calibrate_rows, calibrated, checked_rows
from verbcal.serve.registry import Registry

SETS = ("tweets", "drug-reviews", "bbc-news")


def fitted(method: str, name: str) -> tuple[Any, np.ndarray]:
    data = datasets.load(f"recorded:{name}")
    labelled = data.labelled()
    calibrator = make_calibrator(method)
    calibrator.fit(labelled.probs, labelled.y, labels=labelled.labels)
    return calibrator, np.asarray(data.probs, dtype=np.float64)


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_cached_rows_are_bit_identical_to_predict_proba(method: str, name: str) -> None:
    calibrator, probs = fitted(method, name)
    rng = np.random.default_rng(7)
    cache = RowCache(calibrator.labels_, size=64)  # smaller than the distinct rows: evictions too
    for n in (1, 3, 100, 100, 250, 1, 100):
        batch = probs[rng.integers(0, len(probs), n)]
        expected = calibrator.predict_proba(batch)
        rows = cache.calibrate(batch.tolist(), calibrator.predict_proba)
        got = as_matrix(rows)
        assert got.tobytes() == expected.tobytes()
        assert [r.top for r in rows] == expected.argmax(axis=1).tolist()
        assert [r.confidence for r in rows] == expected.max(axis=1).tolist()
    assert cache.stats.hits > 0 and cache.stats.misses > 0
    assert len(cache) <= 64


def test_cache_is_bounded_lru_and_off_at_zero() -> None:
    calls: list[int] = []

    def predict(matrix: np.ndarray) -> np.ndarray:
        calls.append(len(matrix))
        return matrix / matrix.sum(axis=1, keepdims=True)

    cache = RowCache(("a", "b"), size=2)
    cache.calibrate([[1.0, 1.0], [1.0, 3.0], [1.0, 1.0]], predict)  # one call, two distinct rows
    assert calls == [2] and len(cache) == 2
    cache.calibrate([[1.0, 1.0]], predict)  # hit: [1, 1] is now the most recent
    cache.calibrate([[2.0, 1.0]], predict)  # evicts [1, 3], the least recently used
    assert calls == [2, 1] and len(cache) == 2
    cache.calibrate([[1.0, 1.0]], predict)
    assert calls == [2, 1]
    cache.calibrate([[1.0, 3.0]], predict)
    assert calls == [2, 1, 1]
    assert (cache.stats.hits, cache.stats.misses) == (2, 5)  # a repeat within a batch: a miss

    off = RowCache(("a", "b"), size=0)
    off.calibrate([[1.0, 1.0]], predict)
    off.calibrate([[1.0, 1.0]], predict)
    assert len(off) == 0 and off.stats.hits == 0


def test_texts_are_read_once_and_answered_as_their_rows() -> None:
    """A JSON text seen before is answered without reading it; new texts are read once per
    request and share the row cache with equal rows written differently; bounded, off at 0."""
    reads: list[list[bytes]] = []
    calls: list[int] = []

    def read(texts: list[bytes]) -> np.ndarray:
        reads.append(list(texts))
        return np.array([[json.loads(t)["a"], json.loads(t)["b"]] for t in texts], dtype=float)

    def predict(matrix: np.ndarray) -> np.ndarray:
        calls.append(len(matrix))
        return matrix / matrix.sum(axis=1, keepdims=True)

    one, same, other = b'{"a": 1, "b": 3}', b'{"b":3.0,"a":1.0}', b'{"a": 2, "b": 2}'
    cache = RowCache(("a", "b"), size=2)
    first = cache.calibrate_texts([one, one, other], read, predict)
    assert reads == [[one, one, other]] and calls == [2]
    assert [r.probs for r in first] == [(0.25, 0.75), (0.25, 0.75), (0.5, 0.5)]
    assert cache.calibrate_texts([other, one], read, predict) == [first[2], first[0]]
    assert len(reads) == 1  # both texts known: nothing read, nothing computed
    assert cache.calibrate_texts([same], read, predict) == [first[0]]
    assert reads[-1] == [same] and calls == [2]  # a new text of a known row: read, not computed
    assert list(cache._texts) == [other, same]  # the oldest text left first
    assert (cache.stats.hits, cache.stats.misses) == (3, 3)

    off = RowCache(("a", "b"), size=0)
    off.calibrate_texts([one], read, predict)
    off.calibrate_texts([one], read, predict)
    assert reads[-2:] == [[one], [one]] and len(off._texts) == 0 and off.stats.hits == 0


def test_row_reader_reads_rows_in_label_order_and_refuses_what_the_models_refuse() -> None:
    import msgspec

    from verbcal.serve.wire import row_reader

    read = row_reader(("sci/tech", "a b", "x"))
    rows = read([b'{"x": 1, "a b": 0.25, "sci/tech": 5e-324}', b'{"sci/tech":0,"a b":0,"x":2}'])
    assert rows.tolist() == [[5e-324, 0.25, 1.0], [0.0, 0.0, 2.0]] and rows.dtype == np.float64
    assert read([]).shape == (0, 3)
    for bad in (
        b'{"x": 1, "a b": 0.25}',  # a label missing
        b'{"x": 1, "a b": 0.25, "sci/tech": 0, "y": 0}',  # an unknown label
        b'{"x": -1, "a b": 0.25, "sci/tech": 0}',
        b'{"x": 1e999, "a b": 0.25, "sci/tech": 0}',
        b'{"x": true, "a b": 0.25, "sci/tech": 0}',
        b'{"x": "1", "a b": 0.25, "sci/tech": 0}',
        b"[1, 0.25, 0]",
        b'{"x": 1, "a b": 0, "sci/tech": 0}, {"x": 1, "a b": 0, "sci/tech": 0}',
    ):
        with pytest.raises(msgspec.DecodeError):
            read([bad])


def test_rows_render_as_to_json_writes_them() -> None:
    """Rows rendered in one pass are byte for byte ``to_json`` of each row's members."""
    from verbcal.serve.cache import Row, row_template

    labels = ("100%", 'say "hi"', "ünï ✓", "%b", "a,b")
    rng = np.random.default_rng(3)
    q = rng.dirichlet(np.full(len(labels), 0.3), size=50)
    q[0] = [5e-324, 1e-300, 0.1 + 0.2, 0.5, 0.2 - 5e-324]
    q[1] = [0.0, 0.0, 1.0, 0.0, 0.0]
    rows = Row.render(q, row_template(labels), [to_json(label) for label in labels])
    for row, values in zip(rows, q.tolist(), strict=True):
        top = int(np.argmax(values))
        member = {"probs": dict(zip(labels, values, strict=True)), "label": labels[top]}
        assert row.json == to_json({**member, "confidence": values[top]})[1:-1]
        assert (row.probs, row.top, row.confidence) == (tuple(values), top, values[top])
    assert Row.render(q[:0], row_template(labels), []) == []


def test_keys_are_exact_bytes() -> None:
    """-0.0 and 0.0, or values one ulp apart, are different rows."""
    cache = RowCache(("a", "b"), size=10)
    seen: list[list[float]] = []

    def predict(matrix: np.ndarray) -> np.ndarray:
        seen.extend(matrix.tolist())
        return matrix / matrix.sum(axis=1, keepdims=True)

    x = 0.3
    cache.calibrate([[0.0, 1.0], [-0.0, 1.0], [x, 0.7], [np.nextafter(x, 1.0), 0.7]], predict)
    assert len(seen) == 4


def test_reload_starts_an_empty_cache_and_keeps_the_tally(tmp_path: Path) -> None:
    path = fit_file(tmp_path / "ts.json")
    registry = Registry({"tweets": str(path)}, cache_rows=100)
    old = registry.models["tweets"]
    old.cache.calibrate([[0.1, 0.2, 0.7]], old.calibrator.predict_proba)
    old.cache.calibrate([[0.1, 0.2, 0.7]], old.calibrator.predict_proba)
    assert len(old.cache) == 1

    asyncio.run(registry.reload())
    new = registry.models["tweets"]
    assert new is not old and new.cache is not old.cache and len(new.cache) == 0
    assert len(old.cache) == 1  # requests in flight keep the old calibrator and its rows
    assert new.cache.stats is old.cache.stats and new.cache.stats.hits == 1


def test_rendered_answer_equals_the_dict_answer(tmp_path: Path) -> None:
    registry = Registry({"tweets": str(fit_file(tmp_path / "ts.json"))}, cache_rows=100)
    served = registry.models["tweets"]
    data = datasets.load("recorded:tweets")
    rows = [dict(zip(data.labels, map(float, r), strict=True)) for r in data.probs[:40]]
    ids: list[str | None] = [f"id-{i}" for i in range(len(rows))]
    ids[:4] = [None, 'quote " and \\ back', "ünïcödé ✓", "tab\there"]
    with_comma = [*ids[:-1], "a, b"]
    for _ in range(2):  # misses, then hits
        for some_ids in (ids, with_comma):
            rendered = calibrate_json(
                served, some_ids, calibrated(served, checked_rows(served, rows))
            )
            items = calibrate_rows(served, rows, some_ids)
            as_dict = {"model": served.name, "method": served.method, "items": items}
            assert rendered == to_json(as_dict)
        assert json.loads(rendered)["items"][1]["id"] == 'quote " and \\ back'


def test_http_answers_and_metrics_with_the_cache(tmp_path: Path) -> None:
    """Same answers with the cache on and off; /metrics shows hits and misses."""
    import httpx

    path = fit_file(tmp_path / "ts.json")
    key = "k-cache-test"
    answers = []
    for rows in (65_536, 0):
        config = ServeConfig(
            calibrators={"tweets": str(path)}, rate_limit=None, cache_rows=rows, extra_keys=(key,)
        )
        app = create_app(config)

        async def calls(app: Any = app) -> tuple[list[bytes], str]:
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://t", headers=headers
            ) as client:
                row = {"negative": 0.1, "neutral": 0.2, "positive": 0.7}
                body = {"items": [{"id": "a", "probs": row}, {"id": "b", "probs": row}]}
                out = []
                for _ in range(3):
                    response = await client.post("/v1/calibrate", json=body)
                    assert response.status_code == 200
                    assert response.headers["x-request-id"]
                    out.append(response.content)
                metrics = (await client.get("/metrics")).text
            return out, metrics

        out, metrics = asyncio.run(calls())
        answers.append(out)
        if rows:
            assert 'verbcal_cache_hits_total{model="tweets"} 4.0' in metrics
            assert 'verbcal_cache_misses_total{model="tweets"} 2.0' in metrics
            assert 'verbcal_cache_rows{model="tweets"} 1.0' in metrics
            assert 'verbcal_items_calibrated_total{model="tweets"} 6.0' in metrics
            assert 'route="/v1/calibrate",status="200"} 3.0' in metrics
    assert answers[0] == answers[1]


def test_fast_path_reads_a_body_in_chunks_and_falls_back_on_errors(tmp_path: Path) -> None:
    """The gate's /v1/calibrate fast path joins chunks; bad bodies get the framework's errors."""
    app = create_app(
        ServeConfig(calibrators={"tweets": str(fit_file(tmp_path / "ts.json"))}, no_auth=True)
    )
    row = {"negative": 0.1, "neutral": 0.2, "positive": 0.7}
    good = json.dumps({"items": [{"id": "x", "probs": row}]}).encode()
    bad = json.dumps({"items": [{"id": "x", "probs": {**row, "positive": -1}}]}).encode()

    async def call(chunks: list[bytes]) -> tuple[int, bytes, dict[bytes, bytes]]:
        messages = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/calibrate",
            "raw_path": b"/v1/calibrate",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
        }
        await app(scope, receive, send)
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return sent[0]["status"], body, dict(sent[0]["headers"])

    status, whole, headers = asyncio.run(call([good]))
    assert status == 200 and headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(whole)).encode() and b"x-request-id" in headers
    assert asyncio.run(call([good[:7], good[7:30], good[30:]]))[:2] == (200, whole)
    status, error, _ = asyncio.run(call([bad[:10], bad[10:]]))
    assert status == 422
    located = json.loads(error)
    assert located["error"]["errors"][0]["loc"] == "items[0].probs.positive"
    assert located["request_id"]


def _outcome(service: Any, raw: bytes) -> bytes | None:
    """The validating path's answer (the FastAPI route's), or None where it refuses the body."""
    from pydantic import ValidationError

    from verbcal.serve.calibrate import InputError
    from verbcal.serve.schemas import CalibrateRequest

    try:
        return bytes(asyncio.run(service.calibrate(CalibrateRequest.model_validate_json(raw))))
    except (ValidationError, InputError):
        return None


ROW = {"negative": 0.1, "neutral": 0.2, "positive": 0.7}
BODIES: list[Any] = [
    {"items": [{"id": "a", "probs": ROW}]},
    {"model": "tweets", "items": [{"probs": ROW}, {"id": None, "probs": ROW}]},
    {"items": [{"id": 'q " \\ , ✓', "probs": {"positive": 1, "negative": 0, "neutral": 0}}]},
    {"items": [{"probs": {**ROW, "neutral": 5e-324}}, {"probs": {**ROW, "negative": -0.0}}]},
    {"items": [{"probs": ROW}], "accept_threshold": 0.5, "set_mass": 0.9},
    {"items": [{"probs": ROW}] * 3, "accept_threshold": None},
    {"items": [{"probs": {**ROW, "neutral": True}}]},
    {"items": [{"probs": {**ROW, "neutral": "0.2"}}]},
    {"items": [{"probs": {**ROW, "neutral": None}}]},
    {"items": [{"probs": {**ROW, "neutral": -0.2}}]},
    {"items": [{"probs": {**ROW, "neutral": 10**400}}]},
    {"items": [{"probs": {"negative": 0.1, "positive": 0.9}}]},
    {"items": [{"probs": {**ROW, "other": 0.1}}]},
    {"items": [{"probs": {"negative": 0.1, "neutral": 0.2, "other": 0.7}}]},
    {"items": [{"probs": {"negative": 0, "neutral": 0.0, "positive": 0}}]},
    {"items": [{"probs": ROW}, {"probs": {"negative": 1e308, "neutral": 1e308, "positive": 0}}]},
    {"items": [{"probs": ROW, "extra": 1}]},
    {"items": [{"probs": ROW}], "extra": 1},
    {"items": [{"id": 3, "probs": ROW}]},
    {"items": [{"id": "x" * 257, "probs": ROW}]},
    {"items": [{"id": "x" * 256, "probs": ROW}]},
    {"items": [{"id": "✓" * 256, "probs": ROW}]},
    {"items": [{"id": "✓" * 257, "probs": ROW}]},
    {"items": [{"id": "x"}]},
    {"items": [{"probs": [0.1, 0.2, 0.7]}]},
    {"items": [["probs", ROW]]},
    {"items": ["probs"]},
    {"items": [None]},
    {"items": []},
    {"items": {"probs": ROW}},
    {"model": "", "items": [{"probs": ROW}]},
    {"model": "nope", "items": [{"probs": ROW}]},
    {"model": 1, "items": [{"probs": ROW}]},
    {"items": [{"probs": ROW}], "accept_threshold": 1.5},
    {"items": [{"probs": ROW}], "set_mass": True},
    {"items": [{"probs": ROW}] * 1001},
    [{"probs": ROW}],
    None,
]
RAW_BODIES = [json.dumps(body).encode() for body in BODIES] + [
    b'{"items": [{"probs": {"negative": NaN, "neutral": 0.2, "positive": 0.7}}]}',
    b'{"items": [{"probs": {"negative": 1e999, "neutral": 0.2, "positive": 0.7}}]}',
    b'{"items": [{"probs": {"negative": 0.1, "negative": 0.3, "neutral": 0.2, "positive": 0.7}}]}',
    b'{"items": [{"probs": {"negative": 0.1, "neutral": 0.2, "positive": 0.7}}]',
    b"\xff",
    b"",
    # the same row in other texts: other key order, spacing, an escaped key
    b'{"items":[{"probs":{"positive":0.7,"neutral":0.2,"negative":0.1}},'
    b'{"id":"z","probs":{ "negative" : 0.1 ,"neutral":2e-1,"positive":0.70}}]}',
    b'{"items": [{"probs": {"negativ\\u0065": 0.1, "neutral": 0.2, "positive": 0.7}}]}',
]


def test_fast_path_accepts_exactly_what_the_models_accept(tmp_path: Path) -> None:
    """The gate's fast path answers byte for byte as the validating route, or hands over."""
    app = create_app(
        ServeConfig(calibrators={"tweets": str(fit_file(tmp_path / "ts.json"))}, no_auth=True)
    )
    service = app.state.service
    accepted = 0
    for raw in RAW_BODIES:
        expected = _outcome(service, raw)
        assert asyncio.run(service.fast_calibrate(raw)) == expected, raw[:200]
        accepted += expected is not None
    assert accepted == 11


def test_rows_the_calibrator_refuses_are_input_errors(tmp_path: Path) -> None:
    """A row whose sum overflows (the calibrator refuses it) is a 422 naming the item, not a 500."""
    import httpx

    app = create_app(
        ServeConfig(calibrators={"tweets": str(fit_file(tmp_path / "ts.json"))}, no_auth=True)
    )
    huge = {"negative": 1e308, "neutral": 1e308, "positive": 0.0}

    async def post() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"items": [{"probs": ROW}, {"probs": huge}]}
            infer = {"inputs": [{"name": "probs", "shape": [1, 3], "datatype": "FP64"}]}
            infer["inputs"][0]["data"] = list(huge.values())
            return [
                await client.post("/v1/calibrate", json=body),
                await client.post("/v2/models/tweets/infer", json=infer),
            ]

    calibrate, infer = asyncio.run(post())
    assert calibrate.status_code == 422, calibrate.text
    [error] = calibrate.json()["error"]["errors"]
    assert (error["loc"], error["item"]) == ("items[1].probs", 1)
    assert "too large" in error["message"]
    assert infer.status_code == 400 and "inputs[0].data[0]" in infer.text, infer.text


def test_fast_path_agrees_on_random_bodies(tmp_path: Path) -> None:
    """Random JSON bodies near the contract: the fast path never accepts what the models
    refuse and answers byte for byte as they do (floats round-trip through both parsers)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    app = create_app(
        ServeConfig(calibrators={"tweets": str(fit_file(tmp_path / "ts.json"))}, no_auth=True)
    )
    service = app.state.service
    good = st.floats(min_value=0, allow_nan=False, allow_infinity=False) | st.integers(0, 9)
    value = st.one_of(
        good,
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(-2, 10**20),
        st.booleans(),
        st.none(),
        st.text(max_size=3),
    )
    labels = ("negative", "neutral", "positive")
    valid = st.fixed_dictionaries(dict.fromkeys(labels, good))
    probs = st.one_of(
        st.fixed_dictionaries(dict.fromkeys(labels, value)),
        st.dictionaries(st.sampled_from([*labels, "other"]), value, min_size=2, max_size=4),
    )
    item = st.one_of(
        st.fixed_dictionaries({"probs": valid}, optional={"id": st.none() | st.text(max_size=5)}),
        st.fixed_dictionaries({"probs": probs}, optional={"id": st.integers() | st.text()}),
        st.fixed_dictionaries({"probs": valid, "x": value}),
    )
    body = st.fixed_dictionaries(
        {"items": st.lists(item, min_size=0, max_size=3)},
        optional={"model": st.sampled_from(["tweets", "", "nope"]), "set_mass": value},
    )
    accepted = []

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(body)
    def check(b: dict[str, Any]) -> None:
        raw = json.dumps(b).encode()
        expected = _outcome(service, raw)
        assert asyncio.run(service.fast_calibrate(raw)) == expected
        accepted.append(expected is not None)

    check()
    assert sum(accepted) >= 30  # the valid bodies were tried, not only the refused ones
