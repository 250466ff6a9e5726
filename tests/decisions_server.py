"""A scripted decision-model server for the tests (aiohttp on 127.0.0.1).

Speaks ``POST /v1/decisions`` (requests checked against the ``openai`` SDK's
``DecisionCreateParams``, answers validated as its ``Decision`` before they are sent) and
``POST /v1/systemone`` (TypeSafe System One: ``state``, named questions, answers by name).

The item text scripts each request: ``lean:<label>`` puts ``lean`` (default 0.9) on that
label and spreads the rest evenly; ``@refuse`` answers with a refusal (System One: no answer);
``@401`` is refused every time; ``@429`` (first attempt: 429 with ``Retry-After``);
``@500`` (first attempt: 500); ``@always500``; ``@short`` answers probabilities that sum to
0.8 (to be renormalised).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from aiohttp import web
from openai.types.decision import Decision
from openai.types.decision_create_params import DecisionCreateParams
from pydantic import TypeAdapter

from loopback import LoopbackServer

_PARAMS = TypeAdapter(DecisionCreateParams)
_LEAN = re.compile(r"lean:(\S+)")


class DecisionServer(LoopbackServer):
    """Count attempts per item text; keep the bodies."""

    url_path = "/v1"

    def __init__(self, lean: float = 0.9, retry_after: float = 0.05, api_key: str | None = None):
        super().__init__()
        self.lean, self.retry_after, self.api_key = lean, retry_after, api_key
        self.counts: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/decisions", self._decisions)
        app.router.add_post("/v1/systemone", self._systemone)

    # ------------------------------------------------------------------ scripting

    def _fault(self, request: web.Request, text: str) -> web.Response | None:
        self.counts[text] += 1
        attempt = self.counts[text]
        auth = request.headers.get("Authorization", "")
        if "@401" in text or (self.api_key is not None and auth != f"Bearer {self.api_key}"):
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        if "@429" in text and attempt == 1:
            headers = {"Retry-After": str(self.retry_after)}
            return _error(429, "Rate limit reached.", "rate_limit_exceeded", headers)
        if ("@500" in text and attempt == 1) or "@always500" in text:
            return _error(500, "The server had an error.", "server_error")
        return None

    def _scores(self, text: str, labels: list[str]) -> dict[str, float]:
        found = _LEAN.search(text)
        lean = found.group(1) if found else None
        if lean not in labels:
            return {label: 1 / len(labels) for label in labels}
        rest = (1 - self.lean) / (len(labels) - 1)
        scores = {label: self.lean if label == lean else rest for label in labels}
        if "@short" in text:
            scores = {label: 0.8 * p for label, p in scores.items()}
        return scores

    # ------------------------------------------------------------------ the wires

    async def _decisions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        try:
            params = _PARAMS.validate_python(body)
        except Exception as exc:  # the request is not in the SDK's shape
            return _error(400, f"invalid request: {exc}", "invalid_request_error")
        text = str(params["input"])
        fault = self._fault(request, text)
        if fault is not None:
            return fault
        answers = [self._decision_answer(q, text) for q in body["questions"]]
        tokens = len(text) // 4 + 10
        answer = {
            "answers": answers,
            "model": body["model"],
            "usage": {
                "input_tokens": tokens,
                "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 0},
                "output_tokens": 1,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": tokens + 1,
            },
        }
        Decision.model_validate(answer)  # what we send parses as the SDK's own type
        return web.json_response(answer)

    def _decision_answer(self, question: dict[str, Any], text: str) -> dict[str, Any]:
        name = question.get("name")
        if "@refuse" in text:
            return {"type": "refusal", "name": name}
        if question["type"] == "predicate":
            p = self._scores(text, ["true", "false"])["true"]
            return {"type": "predicate", "name": name, "probability": p}
        values = [c["value"] for c in question["choices"]]
        scores = self._scores(text, values)
        best = max(values, key=lambda v: scores[v])
        probabilities = [{"value": v, "probability": scores[v]} for v in values]
        return {
            "type": "choice",
            "name": name,
            "choice": best,
            "confidence": scores[best],
            "probabilities": probabilities,
        }

    async def _systemone(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        text = str(body["state"])
        fault = self._fault(request, text)
        if fault is not None:
            return fault
        answers: dict[str, Any] = {}
        for name, question in body["questions"].items():
            if "@refuse" in text:
                continue  # System One leaves out a question it could not answer
            if question["type"] == "noul":
                answers[name] = {
                    "type": "noul",
                    "noul": self._scores(text, ["true", "false"])["true"],
                }
                continue
            options = list(question["criteria"])
            scores = self._scores(text, options)
            best = max(options, key=lambda v: scores[v])
            answers[name] = {
                "type": "choice",
                "choice": best,
                "confidence": scores[best],
                "probabilities": scores,
            }
        usage = {"input_tokens": len(text) // 4 + 10, "output_tokens": 0}
        return web.json_response({"model": "jev-1.14.0", "answers": answers, "usage": usage})


def _error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": code, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)
