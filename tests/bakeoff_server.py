"""A scripted OpenAI-compatible chat server for the bakeoff tests (aiohttp, loopback only).

Each item's text carries its id (``item-17``); the server knows the gold labels and answers
per model: ``oracle-*`` models put 0.9 on the gold label for 90% of the items (the others:
0.7 on the wrong label, a confident mistake), ``coin-*`` models answer a seeded coin flip,
unrelated to gold.
It answers in the format the request asks for: a distribution (the numeric schema), an
answer and a confidence (the top-label schema), or a phrase, "very likely" / "very unlikely"
about the label quoted in the prompt: ``{"likelihood": PHRASE}`` under the verbal schema (the
phrase must be in its enum), the bare phrase without a schema. Usage: ``prompt_tokens`` = characters
of the prompt // 4, ``completion_tokens`` = 12; :attr:`usage` keeps every reply's usage per
model, so a test can price them independently.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections import Counter, defaultdict
from typing import Any

from aiohttp import web

from loopback import LoopbackServer

COMPLETION_TOKENS = 12


class ScriptedServer(LoopbackServer):
    """The scripted chat server on 127.0.0.1 (see the module)."""

    url_path = "/v1"

    def __init__(self, gold: dict[str, str], labels: tuple[str, ...]) -> None:
        super().__init__()
        self.gold, self.labels = gold, labels
        self.requests: Counter[str] = Counter()
        self.usage: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    def believed(self, model: str, item: str, seed: int | None = None) -> tuple[str, float]:
        """The label the model favours for an item and the probability it gives it (coin
        models vary with the request's seed, so their samples differ)."""
        gold = self.gold[item]
        other = next(label for label in self.labels if label != gold)
        roll = zlib.crc32(f"{model}:{item}:{seed}".encode()) % 100
        if model.startswith("oracle"):
            roll = zlib.crc32(item.encode()) % 100  # every oracle model answers alike
            return (gold, 0.9) if roll < 90 else (other, 0.7)
        return (self.labels[roll % 2], 0.5 + (roll % 5) / 10)

    def reply(
        self, model: str, prompt: str, schema: dict[str, Any] | None, seed: int | None = None
    ) -> str:
        item = re.search(r"item-\d+", prompt)
        assert item is not None, prompt
        label, p = self.believed(model, item.group(0), seed)
        rest = {name: (1 - p) / (len(self.labels) - 1) for name in self.labels}
        properties = (schema or {}).get("properties", {})
        if "answer" in properties:
            return json.dumps({"answer": label, "confidence": p})
        if schema is not None and "likelihood" not in properties:
            return json.dumps({**rest, label: p})
        about = re.search(r'correct label is "([^"]+)"', prompt)
        assert about is not None, prompt
        phrase = "very likely" if label == about.group(1) else "very unlikely"
        if "likelihood" in properties:
            assert phrase in properties["likelihood"]["enum"], properties
            return json.dumps({"likelihood": phrase})
        return phrase

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body.get("model", "")
        prompt = body["messages"][-1]["content"]
        self.requests[model] += 1
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
        usage = (len(prompt) // 4, COMPLETION_TOKENS)
        self.usage[model].append(usage)
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": self.reply(model, prompt, schema, body.get("seed")),
                        },
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": usage[0],
                    "completion_tokens": usage[1],
                    "total_tokens": sum(usage),
                },
            }
        )
