"""The small interface every backend implements, its error type, and the factory."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from verbcal.elicit.redact import redact

BACKENDS = ("openai", "anthropic", "bedrock", "local")
DEFAULT_MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "bedrock": "anthropic.claude-3-haiku-20240307-v1:0",
    "local": "smollm2-135m-instruct",
}


@dataclass(frozen=True)
class Request:
    """One call: a prompt, optionally a JSON schema, or labels to score by log-probability."""

    prompt: str
    schema: dict[str, Any] | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    seed: int | None = None
    logprob_labels: tuple[str, ...] | None = None


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
    ) -> None:
        super().__init__(redact(message))
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


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


def status_error(
    status: int, detail: str, where: str, headers: Mapping[str, str] | None
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
        401: "authentication failed; set the API key in the environment variable the SDK reads",
        403: "permission denied; check that this key or role may use the model",
        404: "not found; check --model and --base-url",
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
) -> Backend:
    """Build a backend by name (``local`` is handled by :mod:`verbcal.elicit.local`)."""
    model = model or DEFAULT_MODELS[name]
    if name in ("openai", "local"):
        from verbcal.elicit.openai_backend import OpenAIBackend

        return OpenAIBackend(model, base_url, timeout=timeout, structured=structured, name=name)
    if name == "anthropic":
        from verbcal.elicit.other_backends import AnthropicBackend

        return AnthropicBackend(model, base_url, timeout=timeout)
    if name == "bedrock":
        from verbcal.elicit.other_backends import BedrockBackend

        return BedrockBackend(model, base_url, timeout=timeout, concurrency=concurrency)
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
