"""A scripted batch-API server for the ``--batch`` tests (aiohttp, loopback only).

Extends :class:`elicit_fakeserver.FakeServer` (whose live chat, messages and converse
endpoints stay, answering the same replies) with OpenAI's Files + Batches API and
Anthropic's Message Batches, as the official SDKs call them. Every batch created is
counted per ``custom_id`` (``submissions``), so the tests can assert that nothing is
submitted twice. Result lines always come back shuffled.

Markers in a prompt script its line: ``@berr`` (errored in its first batch), ``@bexp``
(expired in its first batch: the batch ends ``expired``), ``@balways`` (errored in every
batch). Server switches: ``steps`` (retrieves before a batch ends), ``hold_create``
(seconds to sit on a create after recording it), ``hold_results`` (seconds to stall download
number ``hold_at``: OpenAI before the file, Anthropic half way through the lines), ``fail_validation`` (OpenAI batches end ``failed``),
``reject_create`` (creates answer 400), ``lost_creates`` (that many creates are recorded,
then answered 500).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import random
import time
from collections import Counter
from typing import Any

from aiohttp import web

from elicit_fakeserver import FakeServer, _labels_in


class BatchServer(FakeServer):
    """The live fake server plus both batch APIs; replies vary by prompt."""

    def __init__(
        self,
        *,
        steps: int = 1,
        hold_create: float = 0.0,
        hold_results: float = 0.0,
        fail_validation: bool = False,
        reject_create: bool = False,
        hold_at: int = 1,
        lost_creates: int = 0,
        page_size: int = 2,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.steps, self.hold_create, self.hold_results = steps, hold_create, hold_results
        self.fail_validation, self.reject_create = fail_validation, reject_create
        self.page_size, self.hold_at = page_size, hold_at
        self.lost_creates = lost_creates
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lines: dict[str, list[dict[str, Any]]] = {}
        self.submissions: Counter[str] = Counter()
        self.creates = 0
        self.results_served = 0
        self._polls: Counter[str] = Counter()
        self._rng = random.Random(0)

    client_max_size = 64 * 1024 * 1024

    def routes(self, app: web.Application) -> None:
        super().routes(app)  # the live endpoints
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._oa_create)
        app.router.add_get("/v1/batches", self._oa_list)
        app.router.add_get("/v1/batches/{id}", self._oa_get)
        app.router.add_post("/v1/batches/{id}/cancel", self._oa_cancel)
        app.router.add_post("/v1/messages/batches", self._an_create)
        app.router.add_get("/v1/messages/batches", self._an_list)
        app.router.add_get("/v1/messages/batches/{id}", self._an_get)
        app.router.add_post("/v1/messages/batches/{id}/cancel", self._an_cancel)
        app.router.add_get("/v1/messages/batches/{id}/results", self._an_results)

    @staticmethod
    def reply_text(prompt: str, labels: tuple[str, ...], seed: int | None) -> str:
        """A distribution that differs from prompt to prompt (same for live and batch)."""
        if "@pct" in prompt:
            return FakeServer.reply_text(prompt, labels, seed)
        first = 0.05 + 0.9 * (int(hashlib.sha256(prompt.encode()).hexdigest()[:6], 16) / 0xFFFFFF)
        first = round(first, 3)
        rest = round((1 - first) / max(1, len(labels) - 1), 4)
        return json.dumps({label: first if i == 0 else rest for i, label in enumerate(labels)})

    def _denied(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        sent = request.headers.get("x-api-key") or request.headers.get("Authorization", "")
        if sent.removeprefix("Bearer ") == self.api_key:
            return None
        return web.json_response(
            {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}},
            status=401,
        )

    # -- what one line answers -----------------------------------------------------------
    def _fate(self, custom_id: str, prompt: str) -> str:
        """``ok``, ``errored`` or ``expired`` for this submission of the line."""
        first = self.submissions[custom_id] == 1
        if "@balways" in prompt or ("@berr" in prompt and first):
            return "errored"
        if "@bexp" in prompt and first:
            return "expired"
        return "ok"

    def _chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat completion the live endpoint answers to ``body``."""
        prompt = body["messages"][-1]["content"]
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
        labels = tuple(schema["properties"]) if schema else _labels_in(prompt)
        text = self.reply_text(prompt, labels, body.get("seed"))
        return {
            "id": "chatcmpl-b",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text},
                 "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
        }  # fmt: skip

    def _message(self, params: dict[str, Any]) -> dict[str, Any]:
        """The message the live endpoint answers to ``params``."""
        prompt = params["messages"][-1]["content"]
        tools = params.get("tools")
        if tools:
            labels = tuple(tools[0]["input_schema"]["properties"])
            data = json.loads(self.reply_text(prompt.replace("@pct", ""), labels, None))
            content = [
                {"type": "tool_use", "id": "toolu_1", "name": tools[0]["name"], "input": data}
            ]
        else:
            text = self.reply_text(prompt, _labels_in(prompt), None)
            content = [{"type": "text", "text": text}]
        return {
            "id": "msg_b", "type": "message", "role": "assistant", "model": params["model"],
            "content": content, "stop_reason": "tool_use" if tools else "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": 20, "output_tokens": 10},
        }  # fmt: skip

    def _record(self, batch_id: str, lines: list[dict[str, Any]], prompt_of: Any) -> None:
        self.creates += 1
        for line in lines:
            self.submissions[line["custom_id"]] += 1
            line["_fate"] = self._fate(line["custom_id"], prompt_of(line))
        self.lines[batch_id] = lines

    def _lost(self) -> web.Response | None:
        """A 500 to a create already recorded (``lost_creates`` times): the answer is lost."""
        if self.lost_creates <= 0:
            return None
        self.lost_creates -= 1
        return web.json_response({"error": {"message": "upstream timeout"}}, status=500)

    async def _hold(self, switch: str) -> None:
        """Sit still while ``switch`` (seconds) lasts; setting it to 0 lets go at once."""
        started = time.monotonic()
        while time.monotonic() - started < getattr(self, switch):
            await asyncio.sleep(0.02)

    def _advance(self, batch_id: str) -> bool:
        """One more poll; True once the batch has run."""
        self._polls[batch_id] += 1
        return self._polls[batch_id] > self.steps

    # -- OpenAI ----------------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        form = await request.post()
        upload = form["file"]
        data = upload.file.read()  # type: ignore[union-attr]
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        return web.json_response(
            {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
             "filename": upload.filename, "purpose": form["purpose"], "status": "processed"}  # type: ignore[union-attr]
        )  # fmt: skip

    async def _content(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        data = self.files[request.match_info["id"]]
        self.results_served += 1
        if self.hold_results and self.results_served == self.hold_at:
            await self._hold("hold_results")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _oa_create(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        if self.reject_create:
            return web.json_response({"error": {"message": "invalid batch"}}, status=400)
        lines = [json.loads(x) for x in self.files[body["input_file_id"]].splitlines() if x]
        batch_id = f"batch_{len(self.batches) + 1}"
        self._record(batch_id, lines, lambda line: line["body"]["messages"][-1]["content"])
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"], "completion_window": "24h",
            "status": "validating", "created_at": int(time.time()),
            "metadata": body.get("metadata"), "output_file_id": None, "error_file_id": None,
            "errors": None, "model": "fake",
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
        }  # fmt: skip
        if self.hold_create:
            await self._hold("hold_create")  # recorded, not yet answered: kill here
        if (lost := self._lost()) is not None:
            return lost
        return web.json_response(self.batches[batch_id])

    async def _oa_get(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        batch = self.batches[request.match_info["id"]]
        if batch["status"] in ("validating", "in_progress", "cancelling"):
            if self._advance(batch["id"]):
                self._oa_finish(batch)
            elif batch["status"] == "validating":
                batch["status"] = "in_progress"
        return web.json_response(batch)

    def _oa_finish(self, batch: dict[str, Any]) -> None:
        if self.fail_validation:
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [
                {"code": "invalid_request", "message": "model not available for batch", "line": 1}
            ]}  # fmt: skip
            return
        cancelled = batch["status"] == "cancelling"
        out, err = [], []
        lines = self.lines[batch["id"]]
        for n, line in enumerate(lines):
            fate = line["_fate"]
            if cancelled and n >= len(lines) // 2:
                fate = "cancelled"
            entry: dict[str, Any] = {"id": f"batch_req_{n}", "custom_id": line["custom_id"]}
            if fate == "ok":
                entry.update(response={"status_code": 200, "request_id": f"req_{n}",
                                       "body": self._chat_body(line["body"])}, error=None)  # fmt: skip
                out.append(entry)
            elif fate == "errored":
                entry.update(response={"status_code": 500, "request_id": f"req_{n}",
                                       "body": {"error": {"message": "server error"}}}, error=None)  # fmt: skip
                err.append(entry)
            else:
                code = "batch_expired" if fate == "expired" else "batch_cancelled"
                entry.update(response=None, error={"code": code, "message": f"not run: {code}"})
                err.append(entry)
        self._rng.shuffle(out)
        self._rng.shuffle(err)
        for name, part in (("output", out), ("errors", err)):
            if part:
                file_id = f"file-{batch['id']}-{name}"
                self.files[file_id] = "".join(json.dumps(x) + "\n" for x in part).encode()
                batch[f"{'output' if name == 'output' else 'error'}_file_id"] = file_id
        expired = any(line["_fate"] == "expired" for line in lines)
        batch["status"] = "cancelled" if cancelled else "expired" if expired else "completed"
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}

    async def _oa_list(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        ordered = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        ordered.sort(key=lambda b: b["created_at"], reverse=True)
        after = request.query.get("after")
        if after:
            ordered = ordered[[b["id"] for b in ordered].index(after) + 1 :]
        page = ordered[: self.page_size]
        return web.json_response(
            {"object": "list", "data": page, "has_more": len(ordered) > len(page),
             "first_id": page[0]["id"] if page else None,
             "last_id": page[-1]["id"] if page else None}
        )  # fmt: skip

    async def _oa_cancel(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        batch = self.batches[request.match_info["id"]]
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "cancelling"
        return web.json_response(batch)

    # -- Anthropic -------------------------------------------------------------------------
    @staticmethod
    def _iso(stamp: float) -> str:
        return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat()

    async def _an_create(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        if self.reject_create:
            return web.json_response(
                {"type": "error", "error": {"type": "invalid_request_error",
                                            "message": "requests.0.params.model: invalid"}},
                status=400,
            )  # fmt: skip
        batch_id = f"msgbatch_{len(self.batches) + 1:04d}"
        self._record(batch_id, body["requests"], lambda r: r["params"]["messages"][-1]["content"])
        now = time.time()
        self.batches[batch_id] = {
            "id": batch_id, "type": "message_batch", "processing_status": "in_progress",
            "request_counts": {"processing": len(body["requests"]), "succeeded": 0,
                               "errored": 0, "canceled": 0, "expired": 0},
            "created_at": self._iso(now), "expires_at": self._iso(now + 86400),
            "ended_at": None, "archived_at": None, "cancel_initiated_at": None,
            "results_url": None, "_made": now,
        }  # fmt: skip
        if self.hold_create:
            await self._hold("hold_create")
        if (lost := self._lost()) is not None:
            return lost
        return web.json_response(self._public(self.batches[batch_id]))

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    async def _an_get(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        batch = self.batches[request.match_info["id"]]
        if batch["processing_status"] != "ended" and self._advance(batch["id"]):
            cancelled = batch["processing_status"] == "canceling"
            counts = Counter()
            lines = self.lines[batch["id"]]
            for n, line in enumerate(lines):
                if cancelled and n >= len(lines) // 2:
                    line["_fate"] = "canceled"
                counts[{"ok": "succeeded"}.get(line["_fate"], line["_fate"])] += 1
            batch["request_counts"] = {k: counts.get(k, 0) for k in
                                       ("processing", "succeeded", "errored", "canceled", "expired")}  # fmt: skip
            batch["processing_status"] = "ended"
            batch["ended_at"] = self._iso(time.time())
            batch["results_url"] = f"{self.url}/v1/messages/batches/{batch['id']}/results"
        return web.json_response(self._public(batch))

    async def _an_list(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        ordered = sorted(self.batches.values(), key=lambda b: b["_made"], reverse=True)
        after = request.query.get("after_id")
        if after:
            ordered = ordered[[b["id"] for b in ordered].index(after) + 1 :]
        page = ordered[: self.page_size]
        return web.json_response(
            {"data": [self._public(b) for b in page], "has_more": len(ordered) > len(page),
             "first_id": page[0]["id"] if page else None,
             "last_id": page[-1]["id"] if page else None}
        )  # fmt: skip

    async def _an_cancel(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        batch = self.batches[request.match_info["id"]]
        if batch["processing_status"] == "in_progress":
            batch["processing_status"] = "canceling"
            batch["cancel_initiated_at"] = self._iso(time.time())
        return web.json_response(self._public(batch))

    async def _an_results(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        batch_id = request.match_info["id"]
        self.results_served += 1
        lines = list(self.lines[batch_id])
        self._rng.shuffle(lines)
        response = web.StreamResponse(headers={"Content-Type": "application/binary"})
        await response.prepare(request)
        for n, line in enumerate(lines):
            fate = line["_fate"]
            if fate == "ok":
                result: dict[str, Any] = {"type": "succeeded",
                                          "message": self._message(line["params"])}  # fmt: skip
            elif fate == "errored":
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "api_error", "message": "Internal server error"}}}  # fmt: skip
            else:
                result = {"type": fate}
            out = {"custom_id": line["custom_id"], "result": result}
            await response.write((json.dumps(out) + "\n").encode())
            if self.hold_results and self.results_served == self.hold_at and n == len(lines) // 2:
                await self._hold("hold_results")  # half sent: kill here
        await response.write_eof()
        return response
