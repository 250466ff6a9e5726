"""/v1/classify through the elicit engine: a scripted fake LLM server, and the real llama.cpp server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")
pytest.importorskip("aiohttp")
pytest.importorskip("httpx")

import httpx

from elicit_fakeserver import FakeServer
from serve_helpers import ServerThread
from verbcal.calibration import Calibrator, make_calibrator
from verbcal.serve import ClassifyConfig, ServeConfig, create_app
from verbcal.serve.registry import ReloadError

pytestmark = pytest.mark.server
KEY = "vk-classify-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
TASK_YAML = (
    "name: sentiment\ninstruction: Classify the sentiment of the movie review.\n"
    "labels: [positive, negative]\n"
)


@pytest.fixture(autouse=True)
def _fake_llm_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-FAKEKEY0123456789abcdefXYZ")


@pytest.fixture(scope="module")
def task_and_calibrator(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("classify")
    (tmp / "task.yaml").write_text(TASK_YAML)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([1, 1], size=300)
    y = (rng.random(300) > probs[:, 0]).astype(int)  # gold ~ the verbalized distribution
    calibrator = make_calibrator("temperature").fit(probs, y, labels=("positive", "negative"))
    calibrator.save(tmp / "cal.json")
    return tmp / "task.yaml", tmp / "cal.json"


def make_config(task: Path, cal: Path, url: str, store: Path | None = None) -> ServeConfig:
    classify = ClassifyConfig(
        task=str(task),
        backend="openai",
        model="fake-model",
        base_url=url,
        store=str(store) if store else None,
        concurrency=4,
        timeout=5,
        retries=2,
    )
    return ServeConfig(calibrators={"sentiment": str(cal)}, classify=classify, extra_keys=(KEY,))


def classify(url: str, texts: list[str], timeout: float = 60, **extra: Any) -> httpx.Response:
    items = [{"id": f"t{i}", "text": text} for i, text in enumerate(texts)]
    return httpx.post(
        url + "/v1/classify", json={"items": items, **extra}, headers=AUTH, timeout=timeout
    )


def test_classify_statuses_calibration_cache_and_metrics(
    task_and_calibrator: tuple[Path, Path], tmp_path: Path
) -> None:
    task, cal = task_and_calibrator
    fitted = Calibrator.load(cal)
    texts = ["A wonderful film.", "Dull. @pct", "@refuse this one", "Key trouble @401"]
    with (
        FakeServer() as llm,
        ServerThread(create_app(make_config(task, cal, llm.url + "/v1"))) as api,
    ):
        response = classify(api.url, texts, accept_threshold=0.6)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "sentiment" and body["method"] == "temperature"
        ok, pct, refused, failed = body["items"]
        assert [i["id"] for i in body["items"]] == ["t0", "t1", "t2", "t3"]
        assert ok["status"] == "ok" and ok["verbalized_probs"] == pytest.approx(
            {"positive": 0.7, "negative": 0.3}
        )
        expected = fitted.predict_proba([[0.7, 0.3]])[0]
        assert list(ok["probs"]) == ["positive", "negative"]
        assert np.allclose(list(ok["probs"].values()), expected, atol=1e-12, rtol=0)
        assert ok["label"] == "positive" and ok["decision"] == (
            "accept" if expected[0] >= 0.6 else "abstain"
        )
        assert pct["status"] == "repaired" and pct["probs"] is not None and pct["issues"]
        assert (
            refused["status"] == "failed" and refused["probs"] is None and refused["label"] is None
        )
        assert failed["status"] == "error" and "401" in failed["issues"][0]
        sent = sum(llm.counts.values())
        again = classify(api.url, texts[:2])  # answered from the store: nothing new is asked
        assert again.json()["items"][0]["probs"] == ok["probs"]
        assert sum(llm.counts.values()) == sent
        metrics = httpx.get(api.url + "/metrics", headers=AUTH).text
    for line in (
        'verbcal_classify_items_total{status="ok"} 2.0',
        'verbcal_classify_items_total{status="error"} 1.0',
        'verbcal_classify_items_total{status="failed"} 1.0',
        "verbcal_llm_errors_total 1.0",
        f"verbcal_llm_requests_total {float(sent)}",
    ):
        assert line in metrics, line


def test_upstream_refusal_is_502_then_retried_and_readiness_follows(
    task_and_calibrator: tuple[Path, Path],
) -> None:
    """A 401 for the whole run: 502 naming it, not-ready; the next request asks again."""
    task, cal = task_and_calibrator
    good = "sk-test-FAKEKEY0123456789abcdefXYZ"  # the key the autouse fixture sets
    with (
        FakeServer(api_key="sk-another-key") as llm,
        ServerThread(create_app(make_config(task, cal, llm.url + "/v1"))) as api,
    ):
        classifier = api.server.config.app.state.service.classifier
        classifier.probe_interval = 3600.0  # no background probe in the first half
        assert httpx.get(api.url + "/v2/health/ready").status_code == 200
        texts = ["Loved it.", "Hated it.", "Fine.", "Meh.", "Great.", "Awful."]
        for _ in range(2):  # the second request asks the LLM again (no stuck stop flag)
            sent = sum(llm.counts.values())
            refused = classify(api.url, texts)
            assert refused.status_code == 502, refused.text
            error = refused.json()["error"]
            assert error["code"] == "llm_unavailable"
            assert "401" in error["message"] and "Incorrect API key" in error["message"]
            assert sum(llm.counts.values()) > sent
            ready = httpx.get(api.url + "/v2/health/ready")
            assert ready.status_code == 503 and "401" in ready.json()["reason"]
        llm.api_key = good  # the key is accepted again: the next request is answered
        answered = classify(api.url, texts)
        assert answered.status_code == 200, answered.text
        assert [i["status"] for i in answered.json()["items"]] == ["ok"] * len(texts)
        assert httpx.get(api.url + "/v2/health/ready").status_code == 200
        # a refusal again, then recovery seen by the background probe alone
        llm.api_key = "sk-another-key"
        assert classify(api.url, ["New text."]).status_code == 502
        classifier.probe_interval = 0.0
        llm.api_key = good
        deadline = time.monotonic() + 30
        while httpx.get(api.url + "/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the probe never cleared the refusal"
            time.sleep(0.05)


def test_store_is_a_cache_across_restarts(
    task_and_calibrator: tuple[Path, Path], tmp_path: Path
) -> None:
    task, cal = task_and_calibrator
    store = tmp_path / "replies.sqlite"
    with FakeServer() as llm:
        for _ in range(2):
            config = make_config(task, cal, llm.url + "/v1", store)
            with ServerThread(create_app(config)) as api:
                assert classify(api.url, ["Loved it.", "Hated it."]).status_code == 200
        assert sum(llm.counts.values()) == 2


def test_bad_classify_input_and_label_mismatch(
    task_and_calibrator: tuple[Path, Path], tmp_path: Path
) -> None:
    task, cal = task_and_calibrator
    with (
        FakeServer() as llm,
        ServerThread(create_app(make_config(task, cal, llm.url + "/v1"))) as api,
    ):
        empty = httpx.post(
            api.url + "/v1/classify", json={"items": [{"text": "ok"}, {"text": ""}]}, headers=AUTH
        )
        assert (
            empty.status_code == 422
            and empty.json()["error"]["errors"][0]["loc"] == "items[1].text"
        )
    other = tmp_path / "other.yaml"
    other.write_text(TASK_YAML.replace("[positive, negative]", "[pos, neg]"))
    with pytest.raises(ReloadError, match="fit the calibrator on this task"):
        create_app(make_config(other, cal, "http://127.0.0.1:9/v1"))


@pytest.mark.slow
def test_classify_with_the_embedded_llama_cpp_model(task_and_calibrator: tuple[Path, Path]) -> None:
    pytest.importorskip("xllamacpp")
    from verbcal.elicit.local import LocalModelError, model_path

    try:
        model_path()
    except LocalModelError as exc:
        pytest.skip(str(exc))
    task, cal = task_and_calibrator
    classify_config = ClassifyConfig(task=str(task), backend="local", concurrency=2, max_tokens=64)
    config = ServeConfig(
        calibrators={"sentiment": str(cal)}, classify=classify_config, extra_keys=(KEY,)
    )
    with ServerThread(create_app(config)) as api:
        # a 135M model on a loaded 2-core runner: the service's own LLM timeout (120 s) decides
        response = classify(
            api.url, ["A wonderful, moving film.", "Dull and far too long."], timeout=300
        )
    assert response.status_code == 200, response.text
    for item in response.json()["items"]:
        assert item["status"] in ("ok", "repaired", "failed"), item
        if item["probs"] is not None:
            assert sum(item["probs"].values()) == pytest.approx(1)
            assert item["label"] in ("positive", "negative")
    assert any(item["probs"] is not None for item in response.json()["items"])


def test_classify_predictions_are_logged_and_take_feedback(
    task_and_calibrator: tuple[Path, Path], tmp_path: Path
) -> None:
    import dataclasses
    import json
    import sqlite3

    task, cal = task_and_calibrator
    log = tmp_path / "predictions.sqlite"
    texts = ["A wonderful film.", "Dull. @pct", "@refuse this one"]
    items = [{"id": "c0", "text": texts[0]}, {"text": texts[1]}, {"id": "c2", "text": texts[2]}]
    with FakeServer() as llm:
        config = dataclasses.replace(
            make_config(task, cal, llm.url + "/v1"), log_predictions=str(log)
        )
        with ServerThread(create_app(config)) as api:
            response = httpx.post(
                api.url + "/v1/classify", json={"items": items}, headers=AUTH, timeout=60
            )
            assert response.status_code == 200, response.text
            ok, pct, refused = response.json()["items"]
            assert ok["id"] == "c0" and pct["id"].startswith("srv-") and refused["id"] == "c2"
            feedback = httpx.post(
                api.url + "/v1/feedback",
                json={"items": [{"id": "c0", "label": "positive"}]},
                headers=AUTH,
            )
            assert feedback.status_code == 200 and feedback.json() == {"labelled": 1}
            unknown = httpx.post(
                api.url + "/v1/feedback",
                json={"items": [{"id": "c2", "label": "positive"}]},  # no reply: not logged
                headers=AUTH,
            )
            assert unknown.status_code == 404
    with sqlite3.connect(log) as db:
        rows = db.execute(
            "SELECT id, model, raw, calibrated FROM predictions ORDER BY id"
        ).fetchall()
    assert [r[0] for r in rows] == ["c0", pct["id"]]
    assert all(r[1] == "sentiment" for r in rows)
    assert json.loads(rows[0][2]) == pytest.approx([0.7, 0.3])
    assert json.loads(rows[0][3]) == pytest.approx(list(ok["probs"].values()), abs=1e-12)
    assert json.loads(rows[1][3]) == pytest.approx(list(pct["probs"].values()), abs=1e-12)
