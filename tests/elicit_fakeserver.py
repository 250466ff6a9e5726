"""A fault-injecting fake LLM server for the elicit tests (aiohttp, loopback only).

Speaks just enough of the OpenAI chat API, the Anthropic messages API and the Bedrock
Converse API. Markers in the prompt pick the behaviour of each request:

``@429`` (first attempt: 429 with Retry-After), ``@500x2`` (first two attempts: 500),
``@slow`` (first attempt: sleep past the client timeout), ``@drop`` (first attempt: close the
connection without a reply), ``@400`` / ``@401`` / ``@always500`` (every attempt),
``@pct`` (reply in percentages), ``@refuse`` (a refusal), ``@403`` (every attempt).

``api_key`` makes every request without that key (``Authorization: Bearer`` or
``x-api-key``) a 401; ``models`` makes every other model a 404 (on Bedrock, a 400
``ValidationException`` "The provided model identifier is invalid.", as Bedrock answers); ``reject_tools`` answers
tool definitions (Anthropic ``tools``, Bedrock ``toolConfig``) with a 400. With tools, the
Anthropic and Bedrock APIs answer with a ``tool_use`` / ``toolUse`` block.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import Counter
from typing import Any

from aiohttp import web

from loopback import LoopbackServer

LABELS = ("positive", "negative")
logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # dropped connections on purpose


class FakeServer(LoopbackServer):
    """Count every request per prompt."""

    def __init__(
        self,
        latency: float = 0.0,
        slow_seconds: float = 3.0,
        retry_after: float = 0.3,
        reject_schema: bool = False,
        api_key: str | None = None,
        models: set[str] | None = None,
        reject_tools: bool = False,
    ) -> None:
        super().__init__()
        self.latency, self.slow_seconds, self.retry_after = latency, slow_seconds, retry_after
        self.reject_schema, self.reject_tools = reject_schema, reject_tools
        self.api_key, self.models = api_key, models
        self.bodies: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.log: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/model/{model_id}/converse", self._bedrock)

    # -- behaviour ---------------------------------------------------------------------------
    async def _fault(
        self, request: web.Request, prompt: str, model: str = ""
    ) -> web.StreamResponse | None:
        self.counts[prompt] += 1
        attempt = self.counts[prompt]
        self.log.append({"prompt": prompt, "attempt": attempt, "time": time.monotonic()})
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.api_key is not None:
            sent = request.headers.get("x-api-key") or request.headers.get("Authorization", "")
            if sent.removeprefix("Bearer ") != self.api_key:
                return web.json_response(
                    {"error": {"message": "Incorrect API key provided", "type": "auth"}},
                    status=401,
                )
        if self.models is not None and model not in self.models:
            return web.json_response(
                {"error": {"message": f"The model `{model}` does not exist"}}, status=404
            )
        if "@403" in prompt:
            return web.json_response({"error": {"message": "not allowed"}}, status=403)
        if "@401" in prompt:
            return web.json_response(
                {"error": {"message": "Incorrect API key provided"}}, status=401
            )
        if "@400" in prompt:
            return web.json_response({"error": {"message": "bad request"}}, status=400)
        if "@always500" in prompt or ("@500x2" in prompt and attempt <= 2):
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if "@429" in prompt and attempt == 1:
            headers = {"Retry-After": str(self.retry_after)}
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers=headers
            )
        if "@slow" in prompt and attempt == 1:
            await asyncio.sleep(self.slow_seconds)
        if "@drop" in prompt and attempt == 1:
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("dropped on purpose")
        return None

    @staticmethod
    def reply_text(prompt: str, labels: tuple[str, ...], seed: int | None) -> str:
        """The reply the markers ask for (clean JSON by default, varied by seed)."""
        if "@refuse" in prompt:
            return "I'm sorry, but I cannot help with that request."
        first = 0.7 if seed is None else 0.5 + 0.1 * (seed % 5)
        if "@pct" in prompt:
            return f"{labels[0]}: {first * 100:.0f}%, {labels[1]}: {100 - first * 100:.0f}%"
        rest = (1 - first) / max(1, len(labels) - 1)
        return json.dumps({label: first if i == 0 else rest for i, label in enumerate(labels)})

    # -- APIs --------------------------------------------------------------------------------
    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        prompt = body["messages"][-1]["content"]
        fault = await self._fault(request, prompt, body.get("model", ""))
        if fault is not None:
            return fault
        if self.reject_schema and "response_format" in body:
            return web.json_response(
                {"error": {"message": "response_format unsupported"}}, status=400
            )
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
        labels = tuple(schema["properties"]) if schema else _labels_in(prompt)
        message = {
            "role": "assistant",
            "content": self.reply_text(prompt, labels, body.get("seed")),
        }
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
        if body.get("logprobs"):
            choice["logprobs"] = {"content": [_first_token(labels)]}
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [choice],
                "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
            }
        )

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        prompt = body["messages"][-1]["content"]
        fault = await self._fault(request, prompt, body.get("model", ""))
        if fault is not None:
            return fault
        tools = body.get("tools")
        if tools and self.reject_tools:
            return web.json_response(
                {"type": "error", "error": {"type": "invalid_request_error", "message": "tools"}},
                status=400,
            )
        if tools:
            labels = tuple(tools[0]["input_schema"]["properties"])
            data = json.loads(self.reply_text(prompt.replace("@pct", ""), labels, None))
            content = [
                {"type": "tool_use", "id": "toolu_1", "name": tools[0]["name"], "input": data}
            ]
        else:
            text = self.reply_text(prompt, _labels_in(prompt), None)
            content = [{"type": "text", "text": text}]
        return web.json_response(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": "tool_use" if tools else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 20, "output_tokens": 10},
            }
        )

    async def _bedrock(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        prompt = body["messages"][-1]["content"][0]["text"]
        model = request.match_info["model_id"]
        if self.models is not None and model not in self.models:
            self.counts[prompt] += 1
            return web.json_response(
                {"message": "The provided model identifier is invalid."},
                status=400,
                headers={"x-amzn-ErrorType": "ValidationException"},
            )
        fault = await self._fault(request, prompt)
        if fault is not None:
            kinds = {429: "ThrottlingException", 403: "AccessDeniedException"}
            if fault.status in kinds:
                return web.json_response(
                    {"message": "refused"},
                    status=fault.status,
                    headers={"x-amzn-ErrorType": kinds[fault.status]},
                )
            return fault
        tools = (body.get("toolConfig") or {}).get("tools")
        if tools and self.reject_tools:
            return web.json_response(
                {"message": "This model does not support tool use."},
                status=400,
                headers={"x-amzn-ErrorType": "ValidationException"},
            )
        if tools:
            spec = tools[0]["toolSpec"]
            labels = tuple(spec["inputSchema"]["json"]["properties"])
            data = json.loads(self.reply_text(prompt.replace("@pct", ""), labels, None))
            block: dict[str, Any] = {
                "toolUse": {"toolUseId": "t1", "name": spec["name"], "input": data}
            }
        else:
            block = {"text": self.reply_text(prompt, _labels_in(prompt), None)}
        return web.json_response(
            {
                "output": {"message": {"role": "assistant", "content": [block]}},
                "stopReason": "tool_use" if tools else "end_turn",
                "usage": {"inputTokens": 20, "outputTokens": 10, "totalTokens": 30},
                "metrics": {"latencyMs": 1},
            }
        )


def _labels_in(prompt: str) -> tuple[str, ...]:
    found = [label for label in re.findall(r"[a-z_]+", prompt) if label in LABELS]
    return tuple(dict.fromkeys(found)) or LABELS


def _first_token(labels: tuple[str, ...]) -> dict[str, Any]:
    tops = [{"token": labels[0][:3], "logprob": -0.2, "bytes": None}]
    tops += [{"token": " " + label[:3], "logprob": -1.8, "bytes": None} for label in labels[1:]]
    tops.append({"token": "The", "logprob": -4.0, "bytes": None})
    return {"token": labels[0][:3], "logprob": -0.2, "bytes": None, "top_logprobs": tops}
