"""``POST /v1/decisions`` on a real uvicorn server, with the official ``openai`` SDK as the client.

The classify backend upstream is the scripted decision server (``decisions_server``): a
decision model's probabilities, calibrated by verbcal, served again as a decision model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")
pytest.importorskip("aiohttp")

import httpx
import openai
from openai.types.decision import AnswerAnswerResourceChoice, Decision

from decisions_server import DecisionServer
from serve_helpers import ServerThread
from verbcal.calibration import Calibrator, make_calibrator
from verbcal.serve import ClassifyConfig, ServeConfig, create_app

pytestmark = pytest.mark.server
KEY = "vk-decisions-0123456789abcdef"
LABELS = ("positive", "negative")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The upstream decision server and verbcal serve in front of it, both on loopback."""
    tmp = tmp_path_factory.mktemp("decisions")
    task = tmp / "task.yaml"
    task.write_text(
        "name: sentiment\ninstruction: Classify the review.\nlabels: [positive, negative]\n"
    )
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(
        [0.3, 0.3], size=400
    )  # overconfident: gold follows a flatter distribution
    y = (rng.random(400) > 0.5 + 0.5 * (probs[:, 0] - 0.5)).astype(int)
    make_calibrator("temperature").fit(probs, y, labels=LABELS).save(tmp / "cal.json")
    with DecisionServer(lean=0.9) as upstream:
        classify = ClassifyConfig(
            task=str(task), backend="openai-decisions", base_url=upstream.url, timeout=5, retries=1
        )
        config = ServeConfig(
            calibrators={"sentiment": str(tmp / "cal.json")}, classify=classify, extra_keys=(KEY,)
        )
        with ServerThread(create_app(config)) as api:
            yield api, upstream, Calibrator.load(tmp / "cal.json")


def client(api: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=api.url + "/v1", api_key=KEY, max_retries=0)


def test_sdk_round_trip_choice_and_predicate(served: Any) -> None:
    api, upstream, calibrator = served
    decision = client(api).decisions.create(
        model="sentiment",
        input="A fine film. lean:positive",
        questions=[
            {
                "type": "choice",
                "name": "sentiment",
                "instructions": "Which?",
                "choices": [{"value": "negative"}, {"value": "positive"}],
            },
            {"type": "predicate", "name": "positive", "instructions": "Is it positive?"},
        ],
    )
    assert isinstance(decision, Decision) and decision.model == "sentiment"
    choice, predicate = decision.answers
    assert isinstance(choice, AnswerAnswerResourceChoice)
    expected = calibrator.predict_proba(np.array([[0.9, 0.1]]))[0]
    assert expected[0] < 0.9  # the calibrator really changed the upstream probability
    assert choice.choice == "positive" and choice.confidence == pytest.approx(expected[0])
    assert [p.value for p in choice.probabilities] == ["negative", "positive"]
    assert choice.probabilities[1].probability == pytest.approx(expected[0])
    assert predicate.type == "predicate" and predicate.probability == pytest.approx(expected[0])
    assert (
        upstream.counts["A fine film. lean:positive"] == 1
    )  # one upstream call for both questions


def test_upstream_refusal_is_a_refusal_answer(served: Any) -> None:
    api, _, _ = served
    decision = client(api).decisions.create(
        model="sentiment",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "x @refuse"}]}],
        questions=[
            {
                "type": "choice",
                "name": "s",
                "instructions": "?",
                "choices": [{"value": "positive"}, {"value": "negative"}],
            }
        ],
    )
    assert decision.answers[0].type == "refusal" and decision.answers[0].name == "s"


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        (
            {"questions": [{"type": "score", "instructions": "?", "levels": [{"label": "a"}]}]},
            422,
            "questions[0].type",
            "score questions are not supported",
        ),
        (
            {
                "questions": [
                    {
                        "type": "choice",
                        "instructions": "?",
                        "choices": [{"value": "positive"}, {"value": "meh"}],
                    }
                ]
            },
            422,
            "questions[0].choices[1].value",
            "not a label",
        ),
        (
            {
                "questions": [
                    {
                        "type": "choice",
                        "instructions": "?",
                        "choices": [{"value": "positive"}, {"value": True}],
                    }
                ]
            },
            422,
            "questions[0].choices[1].value",
            "not a label",
        ),
        (
            {"questions": [{"type": "predicate", "name": "maybe", "instructions": "?"}]},
            422,
            "questions[0].name",
            "name the predicate",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}
                ]
            },
            422,
            "input[0].content[0]",
            "images are not supported",
        ),
        (
            {"input": [{"role": "assistant", "content": "hi"}]},
            422,
            "input[0]",
            "only user messages",
        ),
        ({"model": "other"}, 422, "model", "has no classify backend"),
        ({"questions": []}, 422, "questions", "1 to 400"),
    ],
)
def test_what_it_cannot_answer_is_a_4xx_naming_the_question(
    served: Any, body: dict[str, Any], status: int, field: str, words: str
) -> None:
    api, _, _ = served
    full = {
        "model": "sentiment",
        "input": "text lean:positive",
        "questions": [
            {
                "type": "choice",
                "instructions": "?",
                "choices": [{"value": "positive"}, {"value": "negative"}],
            }
        ],
        **body,
    }
    response = httpx.post(
        api.url + "/v1/decisions", json=full, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["errors"][0]["field"] == field and words in error["message"]


def test_sdk_sees_the_error_and_a_malformed_body_is_400(served: Any) -> None:
    api, _, _ = served
    with pytest.raises(openai.UnprocessableEntityError, match="score questions are not supported"):
        client(api).decisions.create(
            model="sentiment",
            input="t",
            questions=[
                {
                    "type": "score",
                    "instructions": "?",
                    "levels": [{"label": "low"}, {"label": "high"}],
                }
            ],
        )
    response = httpx.post(
        api.url + "/v1/decisions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_json"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=api.url + "/v1", api_key="wrong", max_retries=0).decisions.create(
            model="sentiment",
            input="t",
            questions=[{"type": "predicate", "name": "positive", "instructions": "?"}],
        )


def test_upstream_failure_is_502(served: Any) -> None:
    api, _, _ = served
    with pytest.raises(openai.APIStatusError) as failed:
        client(api).decisions.create(
            model="sentiment",
            input="y @always500",
            questions=[{"type": "predicate", "name": "positive", "instructions": "?"}],
        )
    assert failed.value.status_code == 502


def test_without_a_classify_backend_it_is_400(tmp_path: Path) -> None:
    make_calibrator("temperature").fit(
        np.array([[0.8, 0.2], [0.3, 0.7]] * 10), np.array([0, 1] * 10), labels=LABELS
    ).save(tmp_path / "c.json")
    with (
        ServerThread(
            create_app(ServeConfig(calibrators={"m": str(tmp_path / "c.json")}, no_auth=True))
        ) as api,
        pytest.raises(openai.BadRequestError, match="no classify backend"),
    ):
        openai.OpenAI(base_url=api.url + "/v1", api_key="x", max_retries=0).decisions.create(
            model="m",
            input="t",
            questions=[{"type": "predicate", "name": "positive", "instructions": "?"}],
        )
