"""The two batch APIs behind one small interface, through the official SDKs.

``openai``: the request lines go up as a JSONL file (Files API, ``purpose="batch"``), then
``batches.create`` with ``metadata={"verbcal_token": token}``; results are the output and
error files. ``anthropic``: ``messages.batches.create(requests=[...])`` (no metadata);
results stream from ``results_url``. Both join results on ``custom_id``, never by order.

Request bodies come from the live backends (:func:`~verbcal.elicit.openai_backend.chat_body`,
:func:`~verbcal.elicit.other_backends.message_params`) and replies go through the same
readers, so a batch reply and a live reply with the same text parse the same.
Creating calls are sent once (``max_retries=0``): an unanswered create is looked up with
:meth:`find`, never blindly repeated.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from verbcal.elicit.backends import BackendError, Reply, Request, credentials_hint, status_error

T = TypeVar("T")
FIND_WINDOW = 3600.0
"""How far back (seconds before an intent was recorded) :meth:`find` looks."""
CLOCK_SLACK = 300.0
"""Tolerated difference between this machine's clock and the provider's."""


@dataclass(frozen=True)
class BatchInfo:
    """A batch as the provider reports it."""

    provider_id: str
    status: str
    ended: bool
    """Processing is over: results (possibly partial) can be read."""
    counts: dict[str, int] = field(default_factory=dict)
    failure: str | None = None
    """Why the provider refused the whole batch (validation), if it did."""
    output_file_id: str | None = None
    error_file_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One result line, joined on ``custom_id``: a reply or an error."""

    custom_id: str
    reply: Reply | None = None
    error: str | None = None


class Provider(Protocol):
    """What the batch runner needs from a batch API."""

    name: str
    model: str

    def line(self, custom_id: str, request: Request, mode: str) -> dict[str, Any]: ...

    async def upload(self, token: str, lines: list[bytes]) -> str | None: ...

    async def create(self, token: str, lines: list[bytes], file_id: str | None) -> BatchInfo: ...

    async def find(self, token: str, created: float, n: int, claimed: set[str]) -> str | None: ...

    async def retrieve(self, provider_id: str) -> BatchInfo: ...

    def results(self, info: BatchInfo, mode: str) -> AsyncIterator[Outcome]: ...

    async def cancel(self, provider_id: str) -> BatchInfo: ...

    async def aclose(self) -> None: ...


def request_mode(backend: str, structured: bool) -> str:
    """How the requests ask for the distribution: ``json_schema``, ``tool`` or ``plain``."""
    if not structured:
        return "plain"
    return "tool" if backend == "anthropic" else "json_schema"


def make_provider(backend: str, model: str, base_url: str | None, timeout: float) -> Provider:
    """The batch API of ``backend`` (``openai`` or ``anthropic``)."""
    if backend == "openai":
        return OpenAIBatches(model, base_url, timeout)
    if backend == "anthropic":
        return AnthropicBatches(model, base_url, timeout)
    raise BackendError(
        f"--batch needs --backend openai or anthropic, not {backend}", retryable=False
    )


def line_for(
    backend: str, model: str, custom_id: str, request: Request, mode: str
) -> dict[str, Any]:
    """One request line of ``backend``'s batch format (also for dry runs, without a client)."""
    if backend == "openai":
        from verbcal.elicit.openai_backend import chat_body

        body = chat_body(model, request, mode)
        return {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body,
        }
    from verbcal.elicit.other_backends import message_params

    return {"custom_id": custom_id, "params": message_params(model, request, mode == "tool")}


class _Errors:
    """Map SDK exceptions to :class:`BackendError` (fatal on 401/403/404, as live calls)."""

    def __init__(self, sdk: Any, backend: str, where: str) -> None:
        self.sdk, self.backend, self.where = sdk, backend, where

    async def call(self, what: str, pending: Awaitable[T]) -> T:
        sdk = self.sdk
        try:
            return await pending
        except sdk.APITimeoutError as exc:
            raise BackendError(
                f"timeout waiting for {self.where} ({what})", retryable=True
            ) from exc
        except sdk.APIConnectionError as exc:
            message = f"connection to {self.where} failed ({what}): {exc}"
            raise BackendError(message, retryable=True) from exc
        except sdk.APIStatusError as exc:
            headers = dict(exc.response.headers) if exc.response is not None else None
            raise status_error(
                exc.status_code,
                f"{what}: {exc.message}",
                self.where,
                headers,
                credentials=credentials_hint(self.backend),
            ) from exc


class OpenAIBatches:
    """OpenAI's Files + Batches API (or an OpenAI-compatible server with those endpoints)."""

    name = "openai"

    def __init__(self, model: str, base_url: str | None, timeout: float) -> None:
        from verbcal.elicit.openai_backend import _import_openai

        openai = _import_openai()
        key = os.environ.get("OPENAI_API_KEY") or ("not-needed" if base_url else None)
        if key is None:
            raise BackendError(
                "no OpenAI API key: set OPENAI_API_KEY, or pass --base-url for a server"
                " that needs none",
                retryable=False,
            )
        self.model = model
        self._client = openai.AsyncOpenAI(
            api_key=key, base_url=base_url, timeout=timeout, max_retries=2
        )
        self._once = self._client.with_options(max_retries=0)
        self._errors = _Errors(openai, "openai", base_url or "api.openai.com")

    def line(self, custom_id: str, request: Request, mode: str) -> dict[str, Any]:
        return line_for("openai", self.model, custom_id, request, mode)

    async def upload(self, token: str, lines: list[bytes]) -> str | None:
        """Upload the request lines as ``verbcal-<token>.jsonl``; the file id."""
        upload = (f"verbcal-{token}.jsonl", b"".join(lines), "application/jsonl")
        made = await self._errors.call(
            "upload", self._once.files.create(file=upload, purpose="batch")
        )
        return str(made.id)

    async def create(self, token: str, lines: list[bytes], file_id: str | None) -> BatchInfo:
        assert file_id is not None
        batch = await self._errors.call(
            "create batch",
            self._once.batches.create(
                input_file_id=file_id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"verbcal_token": token},
            ),
        )
        return self._info(batch)

    async def find(self, token: str, created: float, n: int, claimed: set[str]) -> str | None:
        """The batch whose metadata carries ``token``, if the provider has one."""

        async def scan() -> str | None:
            async for batch in self._client.batches.list(limit=100):
                if (batch.metadata or {}).get("verbcal_token") == token:
                    return str(batch.id)
                if batch.created_at < created - FIND_WINDOW:
                    return None
            return None

        return await self._errors.call("list batches", scan())

    async def retrieve(self, provider_id: str) -> BatchInfo:
        return self._info(
            await self._errors.call("retrieve batch", self._client.batches.retrieve(provider_id))
        )

    async def cancel(self, provider_id: str) -> BatchInfo:
        return self._info(
            await self._errors.call("cancel batch", self._client.batches.cancel(provider_id))
        )

    async def results(self, info: BatchInfo, mode: str) -> AsyncIterator[Outcome]:
        """Lines of the output file, then of the error file."""
        from verbcal.elicit.openai_backend import chat_reply

        for file_id in (info.output_file_id, info.error_file_id):
            if not file_id:
                continue
            content = await self._errors.call(
                "download results", self._client.files.content(file_id)
            )
            for raw in content.content.splitlines():
                if raw.strip():
                    yield _openai_outcome(json.loads(raw), mode, chat_reply)

    @staticmethod
    def _info(batch: Any) -> BatchInfo:
        counts = batch.request_counts
        failure = None
        if batch.status == "failed":
            errors = (batch.errors.data if batch.errors else None) or []
            failure = (
                "; ".join(
                    f"line {e.line}: {e.code}: {e.message}" if e.line else f"{e.code}: {e.message}"
                    for e in errors
                )
                or "the batch failed validation"
            )
        return BatchInfo(
            provider_id=str(batch.id),
            status=str(batch.status),
            ended=batch.status in ("completed", "failed", "expired", "cancelled"),
            counts={} if counts is None else counts.model_dump(),
            failure=failure,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _openai_outcome(line: dict[str, Any], mode: str, chat_reply: Any) -> Outcome:
    """One output or error file line: a 200 body is a reply, anything else an error."""
    custom_id = str(line.get("custom_id"))
    response = line.get("response") or {}
    body = response.get("body") or {}
    if response.get("status_code") == 200 and isinstance(body, dict):
        return Outcome(custom_id, reply=chat_reply(body, mode))
    error = line.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
    status = response.get("status_code")
    where = f"HTTP {status}: " if status else ""
    message = error.get("message") if isinstance(error, dict) else str(error)
    code = error.get("code") if isinstance(error, dict) else None
    return Outcome(custom_id, error=f"batch line {where}{code or 'error'}: {message}")


class AnthropicBatches:
    """Anthropic's Message Batches API."""

    name = "anthropic"

    def __init__(self, model: str, base_url: str | None, timeout: float) -> None:
        try:
            import anthropic
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(
                "the anthropic package is missing; run: pip install 'verbcal[elicit]'",
                retryable=False,
            ) from exc
        self.model = model
        try:
            self._client = anthropic.AsyncAnthropic(
                base_url=base_url, timeout=timeout, max_retries=2
            )
        except anthropic.AnthropicError as exc:
            raise BackendError(
                "no Anthropic API key: set ANTHROPIC_API_KEY in the environment", retryable=False
            ) from exc
        self._once = self._client.with_options(max_retries=0)
        self._errors = _Errors(anthropic, "anthropic", base_url or "api.anthropic.com")

    def line(self, custom_id: str, request: Request, mode: str) -> dict[str, Any]:
        return line_for("anthropic", self.model, custom_id, request, mode)

    async def upload(self, token: str, lines: list[bytes]) -> str | None:
        return None  # the requests travel in the create call

    async def create(self, token: str, lines: list[bytes], file_id: str | None) -> BatchInfo:
        requests = [json.loads(raw) for raw in lines]
        batch = await self._errors.call(
            "create batch", self._once.messages.batches.create(requests=requests)
        )
        return self._info(batch)

    async def find(self, token: str, created: float, n: int, claimed: set[str]) -> str | None:
        """The oldest unclaimed batch of ``n`` requests created since the intent.

        Message Batches carry no metadata: a batch created after the intent was recorded,
        holding exactly ``n`` requests and claimed by no other record, is taken as this one.
        Its results are joined on ``custom_id`` (the request keys), so a wrong guess stores
        nothing foreign: the items it lacks are submitted again.
        """

        async def scan() -> str | None:
            found: list[tuple[float, str]] = []
            async for batch in self._client.messages.batches.list(limit=100):
                made = batch.created_at.timestamp()
                if made < created - FIND_WINDOW:
                    break
                total = sum(batch.request_counts.model_dump().values())
                fresh = made >= created - CLOCK_SLACK
                if fresh and total == n and batch.id not in claimed:
                    found.append((made, str(batch.id)))
            return min(found)[1] if found else None

        return await self._errors.call("list batches", scan())

    async def retrieve(self, provider_id: str) -> BatchInfo:
        batch = await self._errors.call(
            "retrieve batch", self._client.messages.batches.retrieve(provider_id)
        )
        return self._info(batch)

    async def cancel(self, provider_id: str) -> BatchInfo:
        batch = await self._errors.call(
            "cancel batch", self._client.messages.batches.cancel(provider_id)
        )
        return self._info(batch)

    async def results(self, info: BatchInfo, mode: str) -> AsyncIterator[Outcome]:
        """The result lines: succeeded ones through the live reader, the rest as errors."""
        from verbcal.elicit.other_backends import message_reply

        stream = await self._errors.call(
            "download results", self._client.messages.batches.results(info.provider_id)
        )
        async for line in stream:
            result = line.result
            if result.type == "succeeded":
                yield Outcome(line.custom_id, reply=message_reply(result.message))
            elif result.type == "errored":
                error = result.error.error
                kind, message = getattr(error, "type", "error"), getattr(error, "message", "")
                yield Outcome(line.custom_id, error=f"batch line {kind}: {message}")
            else:
                yield Outcome(line.custom_id, error=f"batch line {result.type}")

    @staticmethod
    def _info(batch: Any) -> BatchInfo:
        return BatchInfo(
            provider_id=str(batch.id),
            status=str(batch.processing_status),
            ended=batch.processing_status == "ended",
            counts=batch.request_counts.model_dump(),
        )

    async def aclose(self) -> None:
        await self._client.close()
