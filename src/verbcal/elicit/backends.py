"""The small interface every backend implements, its error type, and the factory."""

from __future__ import annotations

import email.utils
import errno
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from verbcal.elicit.redact import redact

BACKENDS = ("openai", "anthropic", "bedrock", "litellm", "local", "openai-decisions", "systemone")
DEFAULT_MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "bedrock": "anthropic.claude-3-haiku-20240307-v1:0",
    "litellm": "openai/gpt-4o-mini",
    "local": "smollm2-135m-instruct",
    "openai-decisions": "gpt-6-luna",
    "systemone": "jev-latest",
}
FATAL_STATUSES = (401, 403, 404)
"""Statuses that no retry and no other item can fix: the run stops at the first one."""

CREDENTIALS = {
    "openai": "the environment variable OPENAI_API_KEY (or --base-url for a server without keys)",
    "anthropic": "the environment variable ANTHROPIC_API_KEY",
    "bedrock": "AWS_PROFILE or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_REGION)",
    "local": "nothing (the embedded server needs no key; check --base-url)",
    "openai-decisions": "the environment variable OPENAI_API_KEY (or --base-url for a server"
    " without keys)",
    "systemone": "the environment variable TYPESAFE_API_KEY (or --base-url for a server without"
    " keys)",
}
"""Where each backend's credentials come from, for error messages."""


def credentials_hint(backend: str, model: str = "") -> str:
    """Where the key for ``backend`` (and, for LiteLLM, the model's provider) is read from."""
    if backend != "litellm":
        return CREDENTIALS.get(backend, "the backend's API key")
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    if provider in CREDENTIALS:
        return CREDENTIALS[provider]
    return f"the environment variable LiteLLM reads for {provider} (usually {provider.upper()}_API_KEY)"


@dataclass(frozen=True)
class Request:
    """One call: a prompt, optionally a JSON schema, or labels to score by log-probability."""

    prompt: str
    schema: dict[str, Any] | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    seed: int | None = None
    logprob_labels: tuple[str, ...] | None = None
    question: Any = None
    """For decision backends: the :class:`~verbcal.elicit.decisions_backend.DecisionQuestion`
    to ask about ``prompt`` (then the item's text)."""

    @property
    def size(self) -> int:
        """Characters sent: the prompt plus the question, if any (for estimates)."""
        if self.question is None:
            return len(self.prompt)
        from verbcal.elicit.decisions_backend import estimate_chars

        return len(self.prompt) + estimate_chars(self.question)


@dataclass(frozen=True)
class Reply:
    """What came back: the text, token usage, how it was asked, and label log-probabilities."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    mode: str = "plain"
    logprobs: dict[str, float] | None = None


class BackendError(Exception):
    """A failed request: ``retryable`` says whether waiting and trying again can help."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        fatal: bool | None = None,
    ) -> None:
        super().__init__(redact(message))
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.fatal = status in FATAL_STATUSES if fatal is None else fatal
        """True when every later request would fail the same way: stop the run."""


class Backend(Protocol):
    """What the engine needs from a backend."""

    name: str
    model: str

    async def complete(self, request: Request) -> Reply:
        """Send one request; raise :class:`BackendError` on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


TOOL_NAME = "report_distribution"
TOOL_DESCRIPTION = (
    "Report the probability of every label for the text: one number in [0, 1] per label,"
    " summing to 1."
)
"""The forced tool call through which Anthropic and Bedrock report the distribution."""


class Fallback(Protocol):
    """A backend that asks for structured output until the server refuses it once."""

    structured: bool
    notes: list[str]


async def structured_or_plain(
    backend: Fallback, request: Request, ask: Callable[[Request, bool], Awaitable[Reply]]
) -> Reply:
    """Ask with structured output (JSON schema or forced tool call), else plainly.

    A 400 or 422 to the structured request is retried once as a plain prompt; if that
    works, the backend stops asking for structured output and notes why. Any other error,
    or a plain request failing too, is raised.
    """
    if request.schema is None or not backend.structured:
        return await ask(request, False)
    try:
        return await ask(request, True)
    except BackendError as exc:
        if exc.status not in (400, 422):  # only a bad request can be the schema's fault
            raise
        refusal = exc
    reply = await ask(request, False)  # raises if the prompt itself is the problem
    if backend.structured:
        backend.structured = False
        backend.notes.append(f"structured output refused, using plain prompts: {refusal}")
    return reply


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value.strip() else None
        return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


def _refused(exc: BaseException | None) -> bool:
    """Whether a connection refusal is anywhere in ``exc``'s chain of causes."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if (
            isinstance(exc, ConnectionRefusedError)
            or getattr(exc, "errno", None) == errno.ECONNREFUSED
        ):
            return True
        inner = getattr(exc, "os_error", None)  # aiohttp's ClientConnectorError
        if isinstance(inner, ConnectionRefusedError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def connection_error(exc: BaseException, where: str, timed_out: bool = False) -> BackendError:
    """The :class:`BackendError` for a failed connection, naming the real cause.

    SDKs report a refused connection as a timeout or a generic connection error; the chain
    of causes tells them apart: "connection refused" means nothing listens at ``where``.
    """
    if _refused(exc):
        return BackendError(
            f"connection refused by {where}: nothing listens there; start the server or"
            " check --base-url",
            retryable=True,
        )
    if timed_out:
        return BackendError(f"timeout waiting for {where}", retryable=True)
    return BackendError(f"connection to {where} failed: {exc}", retryable=True)


def status_error(
    status: int,
    detail: str,
    where: str,
    headers: Mapping[str, str] | None,
    *,
    credentials: str = "the environment variable the SDK reads",
) -> BackendError:
    """Map an HTTP status to a retryable error or one that says what to fix."""
    detail = detail.strip()[:300]
    if status == 429 or status >= 500 or status == 408:
        return BackendError(
            f"HTTP {status} from {where}: {detail}",
            retryable=True,
            retry_after=parse_retry_after(headers),
            status=status,
        )
    fixes = {
        400: "the server rejected the request; check --model and the task's prompt size",
        401: f"authentication failed; set a valid key in {credentials}",
        403: f"permission denied; check that the key in {credentials} may use this model",
        404: "not found: unknown model or wrong URL; check --model and --base-url",
        422: "the server could not process the request; check --model and parameters",
    }
    fix = fixes.get(status, "check the request parameters")
    return BackendError(
        f"HTTP {status} from {where}: {fix} ({detail})", retryable=False, status=status
    )


def make_backend(
    name: str,
    model: str | None = None,
    base_url: str | None = None,
    *,
    timeout: float = 120.0,
    concurrency: int = 8,
    structured: bool = True,
    http: str = "sdk",
) -> Backend:
    """Build a backend by name (``local`` is handled by :mod:`verbcal.elicit.local`).

    ``http`` (``sdk`` or ``lean``) picks the HTTP path of the OpenAI-compatible backends.
    """
    model = model or DEFAULT_MODELS[name]
    if name in ("openai", "local"):
        from verbcal.elicit.openai_backend import OpenAIBackend

        return OpenAIBackend(
            model, base_url, timeout=timeout, structured=structured, name=name, http=http
        )
    if name == "anthropic":
        from verbcal.elicit.other_backends import AnthropicBackend

        return AnthropicBackend(model, base_url, timeout=timeout, structured=structured)
    if name == "bedrock":
        from verbcal.elicit.other_backends import BedrockBackend

        return BedrockBackend(
            model, base_url, timeout=timeout, concurrency=concurrency, structured=structured
        )
    if name == "openai-decisions":
        from verbcal.elicit.decisions_backend import DecisionsBackend

        return DecisionsBackend(model, base_url, timeout=timeout)
    if name == "systemone":
        from verbcal.elicit.decisions_backend import SystemOneBackend

        return SystemOneBackend(model, base_url, timeout=timeout)
    if name == "litellm":
        from verbcal.elicit.litellm_backend import LiteLLMBackend

        return LiteLLMBackend(model, base_url, timeout=timeout, structured=structured)
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
