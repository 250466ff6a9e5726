"""The ``litellm`` backend: any of LiteLLM's 100+ providers through ``litellm.acompletion``.

``--model provider/model`` picks the provider (``openai/gpt-4o-mini``,
``anthropic/claude-haiku-4-5``, ``openai/<name>`` with ``--base-url`` for any
OpenAI-compatible server); LiteLLM reads each provider's key from its usual environment
variable. LiteLLM's own retries are off: the engine retries, with the same Retry-After and
error semantics as every other backend.
"""

from __future__ import annotations

import os
from typing import Any

from verbcal.elicit.backends import (
    BackendError,
    Reply,
    Request,
    credentials_hint,
    status_error,
    structured_or_plain,
)


def _import_litellm() -> Any:
    # never fetch the model price map from the internet at import
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendError(
            "the litellm package is missing; run: pip install 'verbcal[litellm]'", retryable=False
        ) from exc
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


class LiteLLMBackend:
    """Chat completions through ``litellm.acompletion``; JSON-schema output where supported."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        timeout: float = 120.0,
        structured: bool = True,
    ) -> None:
        if "/" not in model:
            raise BackendError(
                f"--model {model!r}: LiteLLM needs provider/model, e.g. openai/gpt-4o-mini or"
                " anthropic/claude-haiku-4-5",
                retryable=False,
            )
        self._litellm = _import_litellm()
        self.name, self.model, self.structured = "litellm", model, structured
        self.notes: list[str] = []
        self._base_url, self._timeout = base_url, timeout
        self._provider = model.split("/", 1)[0]
        self._where = f"{base_url or self._provider} (via LiteLLM)"
        self._api_key: str | None = None
        if base_url is not None and self._provider == "openai":
            # an OpenAI-compatible server may need no key; LiteLLM insists on one
            self._api_key = os.environ.get("OPENAI_API_KEY") or "not-needed"

    async def complete(self, request: Request) -> Reply:
        """Send one completion; fall back to plain prompting if the schema is refused."""
        if request.logprob_labels is not None:
            raise BackendError(
                "--label-logprobs is not supported with --backend litellm", retryable=False
            )
        return await structured_or_plain(self, request, self._ask)

    async def _ask(self, request: Request, structured: bool) -> Reply:
        args: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": request.prompt}],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "timeout": self._timeout,
            "num_retries": 0,
            "max_retries": 0,
        }
        if self._base_url is not None:
            args["api_base"] = self._base_url
        if self._api_key is not None:
            args["api_key"] = self._api_key
        if request.seed is not None:
            args["seed"] = request.seed
        if structured and request.schema is not None:
            args["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "distribution", "schema": request.schema, "strict": True},
            }
        try:
            response = await self._litellm.acompletion(**args)
        except Exception as exc:
            raise self._error(exc) from exc
        choice = response.choices[0] if response.choices else None
        text = str(getattr(getattr(choice, "message", None), "content", None) or "")
        usage = getattr(response, "usage", None)
        tokens = (
            int(getattr(usage, "prompt_tokens", 0) or 0),
            int(getattr(usage, "completion_tokens", 0) or 0),
        )
        return Reply(text, *tokens, mode="json_schema" if structured else "plain")

    def _error(self, exc: Exception) -> BackendError:
        """LiteLLM's exceptions (OpenAI's classes, with ``status_code``) as a BackendError."""
        litellm = self._litellm
        if isinstance(exc, litellm.Timeout):
            return BackendError(f"timeout waiting for {self._where}", retryable=True)
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and status >= 400:
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None) or getattr(
                exc, "litellm_response_headers", None
            )
            return status_error(
                status,
                str(getattr(exc, "message", exc)),
                self._where,
                dict(headers) if headers else None,
                credentials=credentials_hint(self.name, self.model),
            )
        if isinstance(exc, litellm.APIConnectionError):
            return BackendError(f"connection to {self._where} failed: {exc}", retryable=True)
        return BackendError(f"unexpected {type(exc).__name__} from LiteLLM: {exc}", retryable=False)

    async def aclose(self) -> None:
        """LiteLLM keeps its own shared clients: nothing to close."""
