"""``POST /v1/decisions``: the OpenAI Decisions API's wire, answered by a calibrated classifier.

A server started with a classify backend (``--task``/``--backend``) answers, for its classify
model, the questions a decision model answers, with the calibrated probabilities of
``/v1/classify`` for the request's ``input``:

* ``choice`` over (a subset of) the model's labels: the calibrated probabilities of those
  labels, renormalised over the subset (the probability of each given that the answer is
  one of them);
* ``predicate`` on a binary model: the calibrated probability of its ``about`` label (the
  task's ``about`` if it names one, else the label the question is ``name``-d after).

The question's ``instructions`` are accepted but do not change what is asked: the served
task's own instruction is. ``usage`` counts are 0 (the upstream LLM's tokens are on
``/metrics``). What it cannot answer (a ``score`` question, choices that are not labels,
images, assistant or tool messages) is a 422 naming the question or input part; an
unreadable body a 400. An item the LLM could not answer is a ``refusal`` per question.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from verbcal.serve.calibrate import InputError, field_error
from verbcal.serve.registry import Served
from verbcal.serve.schemas import JSONBytes

if TYPE_CHECKING:
    from verbcal.serve.app import Service
    from verbcal.serve.classify import Classifier

MAX_QUESTIONS = 400
"""As the Decisions API: 1 to 400 questions per request."""
USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 0},
    "output_tokens": 0,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 0,
}


def _fail(field: str, message: str, status: int = 422, code: str = "invalid_input") -> InputError:
    return InputError([field_error(None, field, message)], status=status, code=code)


def _body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _fail("body", f"malformed JSON: {exc}", 400, "malformed_json") from exc
    if not isinstance(body, dict):
        raise _fail("body", "the body must be a JSON object", 400, "malformed_json")
    return body


def _part_text(part: Any, where: str) -> str:
    """The text of one content part; anything but text is refused."""
    if isinstance(part, str):
        return part
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "input_text" and isinstance(part.get("text"), str):
        return str(part["text"])
    if kind == "input_image":
        raise _fail(where, "images are not supported: the served classifier reads text")
    raise _fail(where, f"unsupported content part {kind!r}: send input_text parts or a string")


def input_text(value: Any) -> str:
    """The text to classify: a string, or the text of ``user`` messages joined by blank lines."""
    if isinstance(value, str):
        if not value.strip():
            raise _fail("input", "the input is empty: send the text to classify")
        return value
    if not isinstance(value, list) or not value:
        raise _fail("input", "input must be a string or a non-empty list of user messages")
    texts: list[str] = []
    for i, message in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(message, Mapping) or message.get("role") != "user":
            raise _fail(
                where, "only user messages can be classified (no system, assistant or tool items)"
            )
        content = message.get("content")
        parts = content if isinstance(content, list) else [content]
        for j, part in enumerate(parts):
            texts.append(
                _part_text(
                    part, f"{where}.content" + (f"[{j}]" if isinstance(content, list) else "")
                )
            )
    return "\n\n".join(texts)


def _check_instructions(question: Mapping[str, Any], where: str) -> None:
    value = question.get("instructions")
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _fail(
            f"{where}.instructions", "instructions are required: a string or a list of parts"
        )
    for j, part in enumerate(value):
        _part_text(part, f"{where}.instructions[{j}]")


def _choices(question: Mapping[str, Any], where: str, labels: Sequence[str]) -> list[str]:
    choices = question.get("choices")
    if not isinstance(choices, list) or len(choices) < 2:
        raise _fail(f"{where}.choices", "a choice question needs at least 2 choices")
    values: list[str] = []
    for j, choice in enumerate(choices):
        value = choice.get("value") if isinstance(choice, Mapping) else None
        if not isinstance(value, str) or value not in labels:
            raise _fail(
                f"{where}.choices[{j}].value",
                f"{value!r} is not a label of this model: choose among {list(labels)}",
            )
        if value in values:
            raise _fail(f"{where}.choices[{j}].value", f"{value!r} is given twice")
        values.append(value)
    return values


def _about(
    question: Mapping[str, Any], where: str, labels: Sequence[str], task_about: str | None
) -> str:
    if len(labels) != 2:
        raise _fail(
            f"{where}.type",
            f"a predicate question needs a binary model; this one has labels {list(labels)}:"
            " ask a choice question",
        )
    about = task_about if task_about in labels else question.get("name")
    if about not in labels:
        raise _fail(
            f"{where}.name",
            f"name the predicate question after the label it asks about, one of {list(labels)}",
        )
    return str(about)


def plan(
    body: Mapping[str, Any], labels: Sequence[str], task_about: str | None
) -> list[dict[str, Any]]:
    """Each question checked: its type, name and the labels it asks about (or a 422)."""
    questions = body.get("questions")
    if not isinstance(questions, list) or not 1 <= len(questions) <= MAX_QUESTIONS:
        raise _fail("questions", f"send 1 to {MAX_QUESTIONS} questions in a list")
    planned = []
    for i, question in enumerate(questions):
        where = f"questions[{i}]"
        if not isinstance(question, Mapping):
            raise _fail(where, "each question must be an object")
        kind, name = question.get("type"), question.get("name")
        if kind == "score":
            raise _fail(
                f"{where}.type",
                "score questions are not supported: a calibrated classifier has no ordered"
                " levels; ask a choice question over its labels",
            )
        if kind not in ("choice", "predicate"):
            raise _fail(f"{where}.type", f"unknown question type {kind!r}: use choice or predicate")
        if name is not None and not isinstance(name, str):
            raise _fail(f"{where}.name", "name must be a string")
        _check_instructions(question, where)
        if kind == "choice":
            planned.append(
                {"type": "choice", "name": name, "values": _choices(question, where, labels)}
            )
        else:
            planned.append(
                {
                    "type": "predicate",
                    "name": name,
                    "about": _about(question, where, labels, task_about),
                }
            )
    return planned


def answer(question: Mapping[str, Any], probs: Mapping[str, float] | None) -> dict[str, Any]:
    """One answer in the Decisions API's shape; a refusal when there is no distribution."""
    name = question["name"]
    if probs is None:
        return {"type": "refusal", "name": name}
    if question["type"] == "predicate":
        return {"type": "predicate", "name": name, "probability": float(probs[question["about"]])}
    values = question["values"]
    total = sum(probs[v] for v in values)
    share = {v: (probs[v] / total if total > 0 else 1 / len(values)) for v in values}
    best = max(values, key=lambda v: share[v])
    return {
        "type": "choice",
        "name": name,
        "choice": best,
        "confidence": share[best],
        "probabilities": [{"value": v, "probability": share[v]} for v in values],
    }


async def decide(service: Service, body: Mapping[str, Any]) -> dict[str, Any]:
    """The Decision for a request: classify its input once, answer every question from it."""
    classifier: Classifier | None = service.classifier
    if classifier is None:
        raise _fail(
            "model",
            "this server has no classify backend: start verbcal serve with --task and --backend"
            " to answer /v1/decisions",
            400,
            "no_classify_backend",
        )
    served: Served = service.classify_model(service.registry.models)
    if body.get("model") != served.name:
        raise _fail(
            "model",
            f"model {body.get('model')!r} has no classify backend; /v1/decisions answers for"
            f" {served.name!r}",
            code="unknown_model",
        )
    text = input_text(body.get("input"))
    questions = plan(body, served.labels, getattr(classifier.task, "about", None))
    before = classifier.llm_requests
    out, statuses = await classifier.classify(served, [{"id": "0", "text": text}], None, None)
    metrics = service.metrics
    metrics.llm_requests.inc(classifier.llm_requests - before)
    for status, count in statuses.items():
        metrics.classify_status.labels(status).inc(count)
    record = out[0]
    if record["probs"] is None and record["status"] == "error":
        from verbcal.serve.classify import UpstreamError

        raise UpstreamError("; ".join(record["issues"]) or "the LLM request failed")
    if record["probs"] is not None:
        metrics.count_items(served.name, 1)
    answers = [answer(q, record["probs"]) for q in questions]
    return {"answers": answers, "model": served.name, "usage": dict(USAGE)}


def add_routes(app: FastAPI, service: Service) -> None:
    """Register ``POST /v1/decisions``."""

    @app.post(
        "/v1/decisions",
        tags=["v1"],
        responses={
            400: {"description": "Unreadable body, or no classify backend."},
            422: {"description": "A question or input part it cannot answer, named."},
            502: {"description": "The LLM backend failed."},
        },
    )
    async def decisions(request: Request) -> Response:
        """Answer Decisions API questions (choice, predicate) with calibrated probabilities."""
        return JSONBytes(await decide(service, _body(await request.body())))
