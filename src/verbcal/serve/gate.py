"""The ASGI middleware in front of every route: request IDs, body limit, keys, rate limit, logs, metrics.

Written as plain ASGI (no per-request ``BaseHTTPMiddleware`` task) because it runs on every call.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Container
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verbcal.serve.auth import HEALTH_PATHS, KeyRing, RateLimiter, presented_key
from verbcal.serve.observe import Metrics

_READ = {b"authorization", b"x-api-key", b"content-length", b"x-request-id"}
"""The only headers the gate looks at."""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


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
    ) -> None:
        self.app, self.keys, self.limiter = app, keys, limiter
        self.max_body = max_body_bytes
        self.metrics, self.logger, self.known_paths = metrics, logger, known_paths

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
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
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
        try:
            refusal, client = self._check(scope["path"], headers, scope)
            if refusal is not None:
                await self._refuse(scope["path"], request_id, *refusal, send=send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        finally:
            self._record(scope, status, started, request_id, client)

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
        self, scope: Scope, status: int, started: float, request_id: str, client: str
    ) -> None:
        seconds = time.perf_counter() - started
        route = scope.get("route")
        path = scope["path"]
        name = getattr(route, "path", None) or (path if path in self.known_paths() else "<other>")
        self.metrics.requests.labels(name, scope["method"], str(status)).inc()
        self.metrics.latency.labels(name).observe(seconds)
        if self.logger.isEnabledFor(logging.INFO):  # one line per request: skip the caller lookup
            fields = {
                "request_id": request_id,
                "method": scope["method"],
                "path": path,
                "route": name,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": client,
            }
            record = self.logger.makeRecord(
                self.logger.name, logging.INFO, __file__, 0, "request", (), None, extra=fields
            )
            self.logger.handle(record)
