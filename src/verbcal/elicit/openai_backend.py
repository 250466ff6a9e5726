"""The ``openai`` backend: the official SDK, for OpenAI and every OpenAI-compatible server."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from verbcal.elicit.backends import (
    BackendError,
    Reply,
    Request,
    connection_error,
    credentials_hint,
    status_error,
    structured_or_plain,
)


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendError(
            "the openai package is missing; run: pip install 'verbcal[elicit]'", retryable=False
        ) from exc
    return openai


def _fast_http_client(openai: Any, timeout: float) -> Any:
    """The SDK's aiohttp transport where available (it keeps up better at high concurrency)."""
    factory = getattr(openai, "DefaultAioHttpClient", None)
    if factory is None:
        return None
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return None
    try:
        return factory(timeout=timeout)
    except Exception:  # an SDK without this transport: use its default client
        return None


def _message_text(data: dict[str, Any]) -> str:
    choices = data.get("choices") or [{}]
    message = choices[0].get("message") or {}
    return str(message.get("content") or "")


def _usage(data: dict[str, Any]) -> tuple[int, int]:
    usage = data.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def label_logprobs(top: list[tuple[str, float]], labels: tuple[str, ...]) -> dict[str, float]:
    """Each label's log-probability from the first token's alternatives.

    A token counts for a label when, stripped and lower-cased, it is a prefix of the label;
    a label takes its best such token. Labels no listed token starts are left out.
    """
    scores: dict[str, float] = {}
    for label in labels:
        name = label.strip().lower()
        hits = [lp for tok, lp in top if tok.strip() and name.startswith(tok.strip().lower())]
        if hits:
            scores[label] = max(hits)
    return scores


def chat_body(model: str, request: Request, mode: str) -> dict[str, Any]:
    """The ``/chat/completions`` body of one request, live or in a batch line.

    ``mode`` is ``json_schema`` (structured output, when the request has a schema) or ``plain``.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": request.prompt}],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    if request.seed is not None:
        body["seed"] = request.seed
    if mode == "json_schema" and request.schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "distribution", "schema": request.schema, "strict": True},
        }
    return body


def chat_reply(data: dict[str, Any], mode: str) -> Reply:
    """The :class:`Reply` in a chat completion's JSON (a live reply or a batch result's body)."""
    return Reply(_message_text(data), *_usage(data), mode=mode)


HTTP_MODES = ("sdk", "lean")
"""How the ``openai`` backend talks HTTP: the official SDK, or a lean aiohttp path."""


class OpenAIBackend:
    """Chat completions on an OpenAI-compatible API; JSON-schema output where supported.

    ``http="sdk"`` (the default) sends through ``openai.AsyncOpenAI``; ``http="lean"``
    posts the same JSON with ``aiohttp`` and no SDK layers, for high request rates where
    the SDK's per-request CPU is the ceiling. Both map errors through
    :func:`~verbcal.elicit.backends.status_error` (same retries, Retry-After and stops).
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        timeout: float = 120.0,
        structured: bool = True,
        name: str = "openai",
        http: str = "sdk",
    ) -> None:
        if http not in HTTP_MODES:
            raise BackendError(f"--http {http!r}: choose sdk or lean", retryable=False)
        self.name, self.model, self.structured = name, model, structured
        self.notes: list[str] = []
        # the embedded server needs no key: never hand it the user's OpenAI key
        key = None if name == "local" else os.environ.get("OPENAI_API_KEY")
        if key is None and base_url is not None:
            key = "not-needed"  # local OpenAI-compatible servers ignore the key
        if key is None:
            raise BackendError(
                "no OpenAI API key: set OPENAI_API_KEY, or pass --base-url for a server"
                " that needs none",
                retryable=False,
            )
        self._where = base_url or "api.openai.com"
        credentials = credentials_hint(name)
        self._transport: _SdkTransport | _LeanTransport
        if http == "lean":
            url = (base_url or "https://api.openai.com/v1").rstrip("/") + "/chat/completions"
            self._transport = _LeanTransport(url, key, timeout, self._where, credentials)
        else:
            self._transport = _SdkTransport(base_url, key, timeout, self._where, credentials)

    async def complete(self, request: Request) -> Reply:
        """Send one chat completion; fall back to plain prompting if the schema is refused."""
        if request.logprob_labels is not None:
            return await self._logprobs(request, request.logprob_labels)
        return await structured_or_plain(self, request, self._ask)

    async def _ask(self, request: Request, structured: bool) -> Reply:
        return await self._chat(request, mode="json_schema" if structured else "plain")

    def _base_args(self, request: Request) -> dict[str, Any]:
        return chat_body(self.model, request, "plain")

    async def _chat(self, request: Request, mode: str) -> Reply:
        data = await self._transport.post(chat_body(self.model, request, mode))
        return chat_reply(data, mode)

    async def _logprobs(self, request: Request, labels: tuple[str, ...]) -> Reply:
        body = self._base_args(request)
        body.update(logprobs=True, top_logprobs=20, max_tokens=3, temperature=0.0)
        data = await self._transport.post(body)
        choices = data.get("choices") or [{}]
        content = (choices[0].get("logprobs") or {}).get("content") or []
        if not content:
            raise BackendError(
                f"{self._where} returned no logprobs; drop --label-logprobs for this server",
                retryable=False,
            )
        top = [(str(t["token"]), float(t["logprob"])) for t in content[0].get("top_logprobs") or []]
        scores = {k: v for k, v in label_logprobs(top, labels).items() if math.isfinite(v)}
        return Reply(_message_text(data), *_usage(data), mode="logprobs", logprobs=scores)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._transport.aclose()


def _json_object(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BackendError(f"{where} sent an unexpected reply", retryable=True)
    return data


class _SdkTransport:
    """POST through ``openai.AsyncOpenAI`` (auth, base URL, timeouts, typed errors)."""

    def __init__(
        self, base_url: str | None, key: str, timeout: float, where: str, credentials: str
    ) -> None:
        openai = _import_openai()
        import httpx

        self._openai, self._response_type = openai, httpx.Response
        self._where, self._credentials = where, credentials
        self._client = openai.AsyncOpenAI(
            api_key=key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            http_client=_fast_http_client(openai, timeout),
        )

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``/chat/completions``; the JSON reply, or a :class:`BackendError`.

        ``client.post(..., cast_to=httpx.Response)`` is the SDK's documented way to make
        custom requests; it skips building typed request and response models, which costs
        more CPU than everything else per request at high concurrency.
        """
        openai = self._openai
        try:
            response = await self._client.post(
                "/chat/completions", body=body, cast_to=self._response_type
            )
            data = response.json()
        except openai.APITimeoutError as exc:
            raise connection_error(exc, self._where, timed_out=True) from exc
        except openai.APIConnectionError as exc:
            raise connection_error(exc, self._where) from exc
        except openai.APIStatusError as exc:
            headers = dict(exc.response.headers) if exc.response is not None else None
            raise status_error(
                exc.status_code,
                str(exc.message),
                self._where,
                headers,
                credentials=self._credentials,
            ) from exc
        except ValueError as exc:  # a 200 whose body is not JSON: a proxy or server fault
            raise BackendError(
                f"{self._where} sent a reply that is not JSON", retryable=True
            ) from exc
        return _json_object(data, self._where)

    async def aclose(self) -> None:
        await self._client.close()


class _LeanTransport:
    """POST with one shared ``aiohttp`` session: the same errors, a fraction of the CPU."""

    def __init__(self, url: str, key: str, timeout: float, where: str, credentials: str) -> None:
        try:
            import aiohttp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(
                "--http lean needs aiohttp; run: pip install 'verbcal[elicit]'", retryable=False
            ) from exc
        self._aiohttp, self._url, self._where = aiohttp, url, where
        self._credentials, self._timeout = credentials, timeout
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._session: Any = None

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body``; the JSON reply, or a :class:`BackendError` (as the SDK path)."""
        aiohttp = self._aiohttp
        if self._session is None:  # created inside the running event loop
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=0),
            )
        try:
            async with self._session.post(
                self._url, data=json.dumps(body), headers=self._headers
            ) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except TimeoutError as exc:
            raise connection_error(exc, self._where, timed_out=True) from exc
        except aiohttp.ClientError as exc:
            raise connection_error(exc, self._where) from exc
        if status >= 400:
            detail = _error_detail(raw)
            raise status_error(
                status,
                f"Error code: {status} - {detail}",
                self._where,
                dict(headers),
                credentials=self._credentials,
            )
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise BackendError(
                f"{self._where} sent a reply that is not JSON", retryable=True
            ) from exc
        return _json_object(data, self._where)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _error_detail(raw: bytes) -> str:
    """The ``error.message`` of an error body, else its first 300 characters."""
    text = raw.decode("utf-8", "replace")
    try:
        error = json.loads(text).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else text[:300]
