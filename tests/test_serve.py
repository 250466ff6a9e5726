"""verbcal serve against a real uvicorn server and an HTTP client: results, auth, limits, errors."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

import httpx
from typer.testing import CliRunner

from serve_helpers import ServerThread, fit_file
from verbcal import datasets
from verbcal.cli import app as cli
from verbcal.serve import ServeConfig, ServeConfigError, create_app
from verbcal.serve.config import check_exposure, parse_rate

pytestmark = pytest.mark.server
KEY = "vk-test-0123456789abcdef"
OTHER_KEY = "vk-other-fedcba9876543210"
TWEET = {"negative": 0.1, "neutral": 0.2, "positive": 0.7}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("serve")
    return {
        "tweets": fit_file(tmp / "ts.json"),
        "tweets_vector": fit_file(tmp / "vs.json", "vector"),
        "drugs": fit_file(tmp / "drugs.json", data="recorded:drug-reviews"),
    }


@pytest.fixture(scope="module")
def server(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    digest = hashlib.sha256(OTHER_KEY.encode()).hexdigest()
    keys.write_text(f"# comment\n{KEY}\nsha256:{digest}\n")
    config = ServeConfig(
        calibrators={name: str(path) for name, path in files.items()},
        api_keys_file=str(keys),
        rate_limit=None,
        max_items=1000,
        max_body_bytes=200_000,
    )
    with ServerThread(create_app(config)) as running:
        yield running.url


def post(url: str, body: Any, key: str | None = KEY, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(kw.pop("headers", {}))
    return httpx.post(url, json=body, headers=headers, timeout=30, **kw)


def test_calibrate_equals_verbcal_apply(
    server: str, files: dict[str, Path], tmp_path: Path
) -> None:
    predictions = datasets.load("recorded:tweets")
    records = [{"id": r["id"], "probs": r["probs"]} for r in predictions.records]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = CliRunner().invoke(
        cli,
        [
            "apply",
            "--calibrator",
            str(files["tweets"]),
            "--data",
            str(tmp_path / "in.jsonl"),
            "--out",
            str(tmp_path / "out.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    expected = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    response = post(server + "/v1/calibrate", {"model": "tweets", "items": records})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tweets" and body["method"] == "temperature"
    assert len(body["items"]) == len(expected) == 201
    worst = 0.0
    for got, want in zip(body["items"], expected, strict=True):
        assert got["id"] == want["id"]
        assert list(got["probs"]) == ["negative", "neutral", "positive"]
        worst = max(worst, max(abs(got["probs"][k] - want["probs"][k]) for k in want["probs"]))
        top = max(want["probs"], key=want["probs"].__getitem__)
        assert got["label"] == top and got["confidence"] == got["probs"][top]
    assert worst <= 1e-12
    # labels in another order and unnormalised rows give the same answer
    shuffled = {"positive": 7.0, "negative": 1.0, "neutral": 2.0}
    again = post(server + "/v1/calibrate", {"model": "tweets", "items": [{"probs": shuffled}]})
    first = post(server + "/v1/calibrate", {"model": "tweets", "items": [{"probs": TWEET}]})
    assert again.json()["items"][0]["probs"] == pytest.approx(
        first.json()["items"][0]["probs"], abs=1e-15
    )


def test_decisions_threshold_and_prediction_set(server: str) -> None:
    body = {
        "model": "tweets",
        "items": [
            {"probs": TWEET},
            {"probs": {"negative": 0.96, "neutral": 0.02, "positive": 0.02}},
        ],
        "accept_threshold": 0.75,
        "set_mass": 0.8,
    }
    items = post(server + "/v1/calibrate", body).json()["items"]
    for item in items:
        q = item["probs"]
        assert item["decision"] == ("accept" if item["confidence"] >= 0.75 else "abstain")
        ranked = sorted(q, key=q.__getitem__, reverse=True)
        size = next(n for n in range(1, 4) if sum(q[k] for k in ranked[:n]) >= 0.8)
        assert item["prediction_set"] == ranked[:size]
    assert [i["decision"] for i in items] == ["abstain", "accept"]
    plain = post(server + "/v1/calibrate", {"model": "tweets", "items": [{"probs": TWEET}]}).json()
    assert "decision" not in plain["items"][0] and "prediction_set" not in plain["items"][0]


def test_accept_threshold_is_applied_by_the_one_tie_rule(server: str) -> None:
    """A threshold that differs from a confidence by float noise only accepts it, as
    ``verbcal threshold --test`` and ``decide.apply_threshold`` do (a bare >= would not)."""
    url = server + "/v1/calibrate"
    confidence = post(url, {"model": "tweets", "items": [{"probs": TWEET}]}).json()["items"][0][
        "confidence"
    ]
    noisy = confidence + 4 * np.spacing(confidence)
    assert not confidence >= noisy
    body = {"model": "tweets", "items": [{"probs": TWEET}], "accept_threshold": noisy}
    assert post(url, body).json()["items"][0]["decision"] == "accept"
    body["accept_threshold"] = confidence + 1e-6
    assert post(url, body).json()["items"][0]["decision"] == "abstain"


def test_api_keys_bearer_header_sha256_and_health(server: str) -> None:
    url = server + "/v1/calibrate"
    body = {"model": "tweets", "items": [{"probs": TWEET}]}
    missing = post(url, body, key=None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = post(url, body, key="vk-wrong-key-000000")
    assert wrong.status_code == 401 and "invalid_token" in wrong.headers["www-authenticate"]
    assert "vk-wrong-key-000000" not in wrong.text
    assert post(url, body).status_code == 200
    assert post(url, body, key=OTHER_KEY).status_code == 200  # listed as sha256:<hex>
    assert post(url, body, key=None, headers={"X-API-Key": KEY}).status_code == 200
    for path in ("/metrics", "/v1/models", "/openapi.json", "/v2/models/tweets"):
        assert httpx.get(server + path).status_code == 401, path
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.get(server + path).status_code == 200, path


BAD_INPUT = [
    # (items, status, loc that the body must name)
    (
        [{"probs": {"negative": -0.1, "neutral": 0.2, "positive": 0.7}}],
        422,
        "items[0].probs.negative",
    ),
    (
        [{"probs": TWEET}, {"probs": {"negative": 0.5, "positive": 0.5}}],
        422,
        "items[1].probs.neutral",
    ),
    ([{"probs": TWEET}, {"probs": {**TWEET, "angry": 0.1}}], 422, "items[1].probs.angry"),
    ([{"probs": {"negative": 0, "neutral": 0, "positive": 0}}], 422, "items[0].probs"),
    ([{"probs": {**TWEET, "positive": "high"}}], 422, "items[0].probs.positive"),
    ([{"probs": {**TWEET, "positive": True}}], 422, "items[0].probs.positive"),
    ([{"id": "x"}], 422, "items[0].probs"),
    ([{"probs": TWEET, "colour": "red"}], 422, "items[0].colour"),
    ([], 422, "items"),
]


@pytest.mark.parametrize(("items", "status", "loc"), BAD_INPUT)
def test_bad_input_names_item_and_field(server: str, items: Any, status: int, loc: str) -> None:
    response = post(server + "/v1/calibrate", {"model": "tweets", "items": items})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert loc in [e["loc"] for e in error["errors"]], error
    assert loc in error["message"] or len(error["errors"]) > 1
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_non_finite_unknown_model_and_malformed_json(server: str) -> None:
    url = server + "/v1/calibrate"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    nan = '{"model": "tweets", "items": [{"probs": {"negative": NaN, "neutral": 0.2, "positive": 0.7}}]}'
    response = httpx.post(url, content=nan, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["errors"][0]["loc"] == "items[0].probs.negative"
    assert response.json()["error"]["errors"][0]["item"] == 0
    broken = httpx.post(url, content='{"items": [', headers=headers)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "malformed_json"
    form = httpx.post(
        url, content="a=b", headers={**headers, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 400 and "Content-Type: application/json" in form.text
    unknown = post(url, {"model": "nope", "items": [{"probs": TWEET}]})
    assert unknown.status_code == 422 and unknown.json()["error"]["errors"][0]["loc"] == "model"
    several = post(url, {"items": [{"probs": TWEET}]})
    assert several.status_code == 422 and "several models" in several.text


def test_limits_body_items(server: str) -> None:
    url = server + "/v1/calibrate"
    many = {"model": "tweets", "items": [{"probs": TWEET}] * 1001}
    too_many = post(url, many)
    assert too_many.status_code == 422
    assert "limit of 1000" in too_many.json()["error"]["message"]
    big = {"model": "tweets", "items": [{"id": "x" * 250, "probs": TWEET}] * 900}
    assert post(url, big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds on the stream too
        yield b'{"model": "tweets", "items": ['
        for _ in range(4000):
            yield b'{"probs": {"negative": 0.1, "neutral": 0.2, "positive": 0.7}},'
        yield b'{"probs": {"negative": 0.1, "neutral": 0.2, "positive": 0.7}}]}'

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    streamed = httpx.post(url, content=chunks(), headers=headers)
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413, streamed.text


def test_rate_limit_per_key(files: dict[str, Path]) -> None:
    config = ServeConfig(
        calibrators={"tweets": str(files["tweets"])},
        rate_limit="3/minute",
        extra_keys=(KEY, OTHER_KEY),
    )
    with ServerThread(create_app(config)) as running:
        url = running.url + "/v1/calibrate"
        body = {"items": [{"probs": TWEET}]}
        codes = [post(url, body).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = post(url, body)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert post(url, body, key=OTHER_KEY).status_code == 200  # a bucket per key
        assert httpx.get(running.url + "/v2/health/ready").status_code == 200


def test_request_ids_json_logs_and_metrics(server: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="verbcal.serve"):
        given = post(
            server + "/v1/calibrate",
            {"model": "tweets", "items": [{"probs": TWEET}]},
            headers={"X-Request-ID": "req-42"},
        )
        fresh = post(server + "/v1/calibrate", {"model": "tweets", "items": [{"probs": TWEET}]})
        post(server + "/v1/calibrate", {"model": "tweets", "items": []}, key="vk-not-a-real-key-1")
    assert given.headers["x-request-id"] == "req-42"
    assert len(fresh.headers["x-request-id"]) == 32
    lines = [r for r in caplog.records if r.getMessage() == "request"]
    ids = [getattr(r, "request_id", None) for r in lines]
    assert "req-42" in ids and fresh.headers["x-request-id"] in ids
    from verbcal.serve.observe import JsonFormatter

    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    parsed = [json.loads(line) for line in logged.splitlines()]
    assert {"request_id", "status", "route", "duration_ms"} <= set(parsed[0])
    metrics = httpx.get(server + "/metrics", headers={"X-API-Key": KEY})
    assert metrics.status_code == 200
    text = metrics.text
    assert 'verbcal_http_requests_total{method="POST",route="/v1/calibrate",status="200"}' in text
    assert 'status="401"' in text
    assert "verbcal_http_request_duration_seconds_bucket" in text
    assert 'verbcal_items_calibrated_total{model="tweets"}' in text
    for secret in (KEY, OTHER_KEY, "vk-not-a-real-key-1"):
        assert secret not in logged and secret not in text


def test_request_lines_are_written_directly_only_to_a_plain_json_handler() -> None:
    """The request line skips ``logging`` only where a lone JsonHandler would write it anyway,
    and then reads as the line ``logging`` and the JSON formatter write."""
    import io

    from verbcal.serve.observe import JsonHandler, RequestLog

    factory = logging.getLogRecordFactory()

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        """Record factories may add private attributes (Ray's does): not logged."""
        record = factory(*args, **kwargs)
        record._stamp = 1  # type: ignore[attr-defined]
        return record

    fields = {"request_id": "r1", "status": 200, "route": "/v1/calibrate", "duration_ms": 0.5}
    lines = {}
    logger = logging.getLogger("verbcal.serve.test-lines")
    for way in ("direct", "logging"):
        logger.handlers, logger.propagate = [], False
        logger.setLevel(logging.INFO)
        stream = io.StringIO()
        logger.addHandler(JsonHandler(stream))
        log = RequestLog(logger)
        if way == "logging":
            logger.addFilter(lambda record: True)  # any filter: lines go through logging
        assert (log._direct() is None) == (way == "logging")
        logging.setLogRecordFactory(tagged)
        try:
            log(fields)
            logger.setLevel(logging.WARNING)
            log(fields)  # below the level: nothing written either way
        finally:
            logging.setLogRecordFactory(factory)
        [line] = stream.getvalue().splitlines()
        lines[way] = json.loads(line)
    assert lines["direct"].pop("time")[:4] == lines["logging"].pop("time")[:4]
    expected = {"level": "info", "logger": logger.name, "message": "request", **fields}
    assert lines["direct"] == lines["logging"] == expected
    closed = io.StringIO()
    closed.close()
    logger.handlers = [JsonHandler(closed)]
    logger.filters.clear()
    logger.setLevel(logging.INFO)
    failing = RequestLog(logger)
    assert failing._direct() is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logging, "raiseExceptions", False)
        failing(fields)  # a write that fails does not fail the request
    logger = logging.getLogger("verbcal.serve.test-other")
    logger.handlers, logger.propagate = [JsonHandler(io.StringIO())], True
    assert RequestLog(logger)._direct() is None  # lines also reach the root logger's handlers
    logger.handlers, logger.propagate = [logging.StreamHandler(io.StringIO())], False
    assert RequestLog(logger)._direct() is None


def test_openapi_documents_models_and_security(server: str) -> None:
    schema = httpx.get(server + "/openapi.json", headers={"X-API-Key": KEY}).json()
    paths = schema["paths"]
    for path in ("/v1/calibrate", "/v1/admin/reload", "/metrics", "/v2/models/{name}/infer"):
        assert path in paths
    assert "/v1/classify" not in paths  # no task configured
    assert paths["/v2/health/ready"]["get"]["security"] == []
    assert "examples" in schema["components"]["schemas"]["CalibrateRequest"]


def test_exposure_rules_and_config_errors(files: dict[str, Path], tmp_path: Path) -> None:
    check_exposure("127.0.0.1", 0, no_auth=False)
    check_exposure("::1", 0, no_auth=False)
    check_exposure("0.0.0.0", 1, no_auth=False)
    check_exposure("0.0.0.0", 0, no_auth=True)
    with pytest.raises(ServeConfigError, match="--no-auth"):
        check_exposure("0.0.0.0", 0, no_auth=False)
    assert parse_rate("600/minute") == (600.0, 60.0)
    with pytest.raises(ServeConfigError, match="N/minute"):
        parse_rate("lots")
    runner = CliRunner(env={"VERBCAL_API_KEYS": ""})
    result = runner.invoke(
        cli, ["serve", "--calibrator", f"t={files['tweets']}", "--host", "0.0.0.0"]
    )
    assert result.exit_code == 2 and "refusing to listen on 0.0.0.0" in result.output
    (tmp_path / "bad.json").write_text("{}")
    result = runner.invoke(cli, ["serve", "--calibrator", f"t={tmp_path / 'bad.json'}"])
    assert result.exit_code == 2 and "not a verbcal calibrator" in result.output
    (tmp_path / "keys").write_text("sha256:abc\n")
    result = runner.invoke(
        cli,
        [
            "serve",
            "--calibrator",
            f"t={files['tweets']}",
            "--api-keys-file",
            str(tmp_path / "keys"),
        ],
    )
    assert result.exit_code == 2 and "line 1" in result.output


def test_calibrators_of_different_tasks_side_by_side(server: str) -> None:
    models = httpx.get(server + "/v1/models", headers={"X-API-Key": KEY}).json()
    assert {m["name"] for m in models["models"]} == {"tweets", "tweets_vector", "drugs"}
    labels = next(m["labels"] for m in models["models"] if m["name"] == "drugs")
    row = dict(zip(labels, np.linspace(1, 2, len(labels)).tolist(), strict=True))
    response = post(server + "/v1/calibrate", {"model": "drugs", "items": [{"probs": row}]})
    assert response.status_code == 200 and list(response.json()["items"][0]["probs"]) == labels


def test_docs_page_loads_every_asset_from_the_service(files: dict[str, Path]) -> None:
    """Swagger UI works offline: the page names no external URL and its assets are served."""
    pytest.importorskip("swagger_ui_bundle")

    config = ServeConfig(calibrators={"tweets": str(files["tweets"])}, rate_limit=None)
    with ServerThread(create_app(config)) as running:  # loopback, no keys: /docs is open
        page = httpx.get(running.url + "/docs")
        assert page.status_code == 200 and "swagger-ui" in page.text
        assert not re.search(r"(https?:)?//[a-z]", page.text), "an external URL in /docs"
        assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
        assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
        for asset in assets:
            got = httpx.get(running.url + asset)
            assert got.status_code == 200 and len(got.content) > 500, asset
        assert httpx.get(running.url + "/redoc").status_code == 404  # ReDoc needs a CDN
        assert httpx.get(running.url + "/openapi.json").status_code == 200


def test_serve_task_without_backend_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    """verbcal never starts a model you did not ask for: --task needs --backend."""
    (tmp_path / "task.yaml").write_text(
        "name: t\ninstruction: x\nlabels: [negative, neutral, positive]\n"
    )
    args = ["serve", "--calibrator", f"tweets={files['tweets']}", "--task"]
    result = CliRunner().invoke(cli, [*args, str(tmp_path / "task.yaml")])
    assert result.exit_code == 2 and "--task needs --backend" in result.output, result.output


def test_an_internal_error_carries_the_request_id(
    files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # a route that fails inside the app: the 500 is answered by Starlette's outermost
    # middleware, outside the gate, and must still carry X-Request-ID (once)
    app = create_app(ServeConfig(calibrators={"tweets": str(files["tweets"])}, rate_limit=None))

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("planted failure")

    with (
        ServerThread(app) as running,
        caplog.at_level(logging.ERROR, logger="verbcal.serve"),
    ):
        given = httpx.get(running.url + "/v1/boom", headers={"X-Request-ID": "req-500"}, timeout=30)
        fresh = httpx.get(running.url + "/v1/boom", timeout=30)
    assert given.status_code == fresh.status_code == 500
    assert given.headers.get_list("x-request-id") == ["req-500"]
    assert given.json()["request_id"] == "req-500"
    assert given.json()["error"]["code"] == "internal_error"
    assert len(fresh.headers["x-request-id"]) == 32
    assert fresh.json()["request_id"] == fresh.headers["x-request-id"]
    logged = [getattr(r, "request_id", None) for r in caplog.records if r.exc_info]
    assert "req-500" in logged


def test_calibrate_verbal_items(tmp_path: Path) -> None:
    """Items {"id", "verbal", "about"} are read through the lexicon, as --source verbal reads them."""
    from verbcal.calibration import Calibrator
    from verbcal.predictions import ReadOptions, reading

    with reading(ReadOptions(source="verbal")):  # fitted on the judge's words
        path = fit_file(tmp_path / "words.json", "words", data="recorded:halueval")
    with ServerThread(create_app(ServeConfig(calibrators={"halu": str(path)}))) as running:
        items = [
            {"id": "a", "verbal": "Very unlikely.", "about": "hallucinated"},
            {"id": "b", "verbal": "factual - almost certain", "about": "factual"},
            {"id": "c", "probs": {"factual": 0.3, "hallucinated": 0.7}},
        ]
        response = post(running.url + "/v1/calibrate", {"items": items}, key=None)
        assert response.status_code == 200, response.text
        got = response.json()["items"]
        unknown = post(
            running.url + "/v1/calibrate",
            {"items": [{"verbal": "wibble", "about": "factual"}]},
            key=None,
        )
        no_about = post(running.url + "/v1/calibrate", {"items": [{"verbal": "likely"}]}, key=None)
    fitted = Calibrator.load(path)
    expected = fitted.predict_proba(np.array([[0.9, 0.1], [0.93, 0.07], [0.3, 0.7]]))
    np.testing.assert_allclose(
        [[g["probs"]["factual"], g["probs"]["hallucinated"]] for g in got], expected
    )
    assert unknown.status_code == no_about.status_code == 422
    errors = unknown.json()["error"]["errors"]
    assert (errors[0]["loc"], errors[0]["message"]) == (
        "items[0].verbal",
        "unknown_expression:wibble",
    )
    assert "about" in no_about.json()["error"]["message"]
