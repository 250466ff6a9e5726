"""The ASGI middleware in front of every route: request IDs, body limit, keys, rate limit, logs, metrics.

Written as plain ASGI (no per-request ``BaseHTTPMiddleware`` task) because it runs on every call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Container
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verbcal.serve.auth import HEALTH_PATHS, KeyRing, RateLimiter, presented_key
from verbcal.serve.observe import Metrics, RequestLog

_READ = {b"authorization", b"x-api-key", b"content-length", b"x-request-id"}
"""The only headers the gate looks at."""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_JSON = (b"content-type", b"application/json")

FastRoute = Callable[[bytes], Awaitable[bytes | None]]
"""A route served without the framework on its happy path: the body in, the JSON answer out,
or None when anything is off (the request then goes through FastAPI, which gives the
standard error). Only for routes with no side effect before they can fail."""


def error_content(
    path: str,
    status: int,
    code: str,
    message: str,
    request_id: str,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The error body: ``{"error": "..."}`` on the v2 protocol routes, else the detailed form."""
    if path.startswith("/v2"):
        return {"error": message}
    info = {"status": status, "code": code, "message": message, "errors": errors or []}
    return {"error": info, "request_id": request_id}


class Gate:
    """Checks and records every HTTP request before and after the application sees it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyRing | None,
        limiter: RateLimiter | None,
        max_body_bytes: int,
        metrics: Metrics,
        logger: logging.Logger,
        known_paths: Callable[[], Container[str]],
        fast_routes: dict[str, FastRoute] | None = None,
    ) -> None:
        self.app, self.keys, self.limiter = app, keys, limiter
        self.max_body = max_body_bytes
        self.metrics, self.request_log = metrics, RequestLog(logger)
        self._known_paths = known_paths
        self._known: Container[str] | None = None
        self.fast_routes = fast_routes or {}

    def known_paths(self) -> Container[str]:
        """The app's route paths (the routes are all added before it serves: read once)."""
        if self._known is None:
            self._known = self._known_paths()
        return self._known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope["headers"]
            if k.lower() in _READ
        }
        given = headers.get("x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        rid_header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        client = "-"
        route = None
        try:
            refusal, client = self._check(scope["path"], headers, scope)
            if refusal is not None:
                await self._refuse(scope["path"], request_id, *refusal, send=send_with_id)
                return
            fast = self.fast_routes.get(scope["path"]) if scope["method"] == "POST" else None
            if fast is not None:
                answer, receive = await self._try_fast(fast, receive)
                if answer is not None:
                    route = scope["path"]
                    status = 200
                    length = (b"content-length", str(len(answer)).encode())
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [length, _JSON, rid_header],
                        }
                    )
                    await send({"type": "http.response.body", "body": answer})
                    return
            await self.app(scope, self._limited(receive), send_with_id)
        finally:
            self._record(scope, status, started, request_id, client, route)

    async def _try_fast(self, fast: FastRoute, receive: Receive) -> tuple[bytes | None, Receive]:
        """The fast route's answer, or None and a ``receive`` that replays what was read."""
        messages = [await receive()]
        chunks: list[bytes] = []
        size = 0
        while messages[-1]["type"] == "http.request":
            chunk = messages[-1].get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.max_body:
                break
            if not messages[-1].get("more_body", False):  # the whole body is in
                answer = await fast(b"".join(chunks))  # one chunk: no copy
                if answer is not None:
                    return answer, receive
                break
            messages.append(await receive())
        return None, self._replay(messages, receive)

    @staticmethod
    def _replay(messages: list[Message], receive: Receive) -> Receive:
        """``receive`` that gives ``messages`` again, then what ``receive`` gives."""
        replay = iter(messages)

        async def replayed() -> Message:
            for message in replay:
                return message
            return await receive()

        return replayed

    def _check(
        self, path: str, headers: dict[str, str], scope: Scope
    ) -> tuple[tuple[int, str, str, dict[str, str]] | None, str]:
        """(status, code, message, headers) to refuse with, or None; and the client's name."""
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return (413, "body_too_large", self._too_large(), {}), "-"
        if path in HEALTH_PATHS:
            return None, "-"
        client = scope["client"][0] if scope.get("client") else "-"
        if self.keys is not None:
            key = presented_key(headers)
            fingerprint = self.keys.identify(key)
            if fingerprint is None:
                problem = "missing API key" if key is None else "invalid API key"
                challenge = 'Bearer realm="verbcal"' + (
                    "" if key is None else ', error="invalid_token"'
                )
                message = f"{problem}: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
                return (401, "unauthorized", message, {"www-authenticate": challenge}), client
            client = f"key:{fingerprint}"
        if self.limiter is not None:
            wait = self.limiter.check(client)
            if wait > 0:
                retry = RateLimiter.retry_after(wait)
                message = f"rate limit exceeded: retry after {retry} s"
                return (429, "rate_limited", message, {"retry-after": retry}), client
        return None, client

    def _too_large(self) -> str:
        return f"request body larger than the limit of {self.max_body} bytes (--max-body-bytes)"

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that stops a body (chunked or lying about its length) past the limit."""
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise HTTPException(413, self._too_large())
            return message

        return wrapped

    async def _refuse(
        self,
        path: str,
        request_id: str,
        status: int,
        code: str,
        message: str,
        extra: dict[str, str],
        *,
        send: Send,
    ) -> None:
        body = json.dumps(error_content(path, status, code, message, request_id)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        headers += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _record(
        self,
        scope: Scope,
        status: int,
        started: float,
        request_id: str,
        client: str,
        name: str | None = None,
    ) -> None:
        seconds = time.perf_counter() - started
        path = scope["path"]
        if name is None:
            route = scope.get("route")
            name = getattr(route, "path", None) or (
                path if path in self.known_paths() else "<other>"
            )
        self.metrics.count_request(name, scope["method"], status, seconds)
        self.request_log(
            {
                "request_id": request_id,
                "method": scope["method"],
                "path": path,
                "route": name,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": client,
            }
        )
