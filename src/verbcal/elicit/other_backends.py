"""The ``anthropic`` (official SDK) and ``bedrock`` (boto3 Converse) backends.

Both ask for the distribution through a forced tool call (``report_distribution``) whose
input schema lists the task's labels, so the reply is the tool's input, a JSON object
with one number per label. A server that refuses tools (a 400) gets plain prompts instead,
noted once (see :func:`verbcal.elicit.backends.structured_or_plain`).
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from verbcal.elicit.backends import (
    TOOL_DESCRIPTION,
    TOOL_NAME,
    BackendError,
    Reply,
    Request,
    connection_error,
    credentials_hint,
    status_error,
    structured_or_plain,
)

_RETRY_CODES = {
    "ThrottlingException",
    "ServiceUnavailableException",
    "InternalServerException",
    "ModelNotReadyException",
    "ModelTimeoutException",
    "TooManyRequestsException",
}


def message_params(model: str, request: Request, tool: bool) -> dict[str, Any]:
    """The Messages API parameters of one request, live or in a Message Batch.

    ``tool`` forces the ``report_distribution`` tool call (when the request has a schema).
    """
    params: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens,
        "messages": [{"role": "user", "content": request.prompt}],
        "temperature": request.temperature,
    }
    if tool and request.schema is not None:
        params["tools"] = [
            {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": request.schema}
        ]
        params["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
    return params


def message_reply(message: Any) -> Reply:
    """The :class:`Reply` in an SDK ``Message``: the tool's input as JSON, else the text."""
    usage = message.usage
    tokens = int(usage.input_tokens), int(usage.output_tokens)
    for block in message.content:
        if getattr(block, "type", "") == "tool_use" and block.name == TOOL_NAME:
            return Reply(json.dumps(block.input), *tokens, mode="tool")
    text = "".join(getattr(block, "text", "") for block in message.content)
    return Reply(text, *tokens, mode="plain")


class AnthropicBackend:
    """Messages through ``anthropic.AsyncAnthropic`` (the key comes from ANTHROPIC_API_KEY)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        timeout: float = 120.0,
        structured: bool = True,
    ) -> None:
        try:
            import anthropic
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(
                "the anthropic package is missing; run: pip install 'verbcal[elicit]'",
                retryable=False,
            ) from exc
        self.name, self.model, self._sdk = "anthropic", model, anthropic
        self.structured = structured
        self.notes: list[str] = []
        self._where = base_url or "api.anthropic.com"
        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key and not os.environ.get("ANTHROPIC_AUTH_TOKEN"):
            if base_url is None:  # caught here, before any request (as the OpenAI key is)
                raise BackendError(
                    "no Anthropic API key: set ANTHROPIC_API_KEY in the environment (or pass"
                    " --base-url for a server that needs none)",
                    retryable=False,
                )
            key = "not-needed"
        try:
            self._client = anthropic.AsyncAnthropic(
                api_key=key, base_url=base_url, timeout=timeout, max_retries=0
            )
        except anthropic.AnthropicError as exc:
            raise BackendError(
                "no Anthropic API key: set ANTHROPIC_API_KEY in the environment", retryable=False
            ) from exc

    async def complete(self, request: Request) -> Reply:
        """Send one message: a forced tool call where possible, else a plain prompt."""
        if request.logprob_labels is not None:
            raise BackendError("the anthropic API returns no logprobs", retryable=False)
        return await structured_or_plain(self, request, self._ask)

    async def _ask(self, request: Request, tool: bool) -> Reply:
        sdk = self._sdk
        args = message_params(self.model, request, tool)
        args["extra_body"] = {"temperature": args.pop("temperature")}
        try:
            message = await self._client.messages.create(**args)
        except sdk.APITimeoutError as exc:
            raise connection_error(exc, self._where, timed_out=True) from exc
        except sdk.APIConnectionError as exc:
            raise connection_error(exc, self._where) from exc
        except sdk.APIStatusError as exc:
            headers = dict(exc.response.headers) if exc.response is not None else None
            raise status_error(
                exc.status_code,
                str(exc.message),
                self._where,
                headers,
                credentials=credentials_hint(self.name),
            ) from exc
        return message_reply(message)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


class BedrockBackend:
    """The Bedrock Converse API through boto3 (credentials from the AWS config chain)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        timeout: float = 120.0,
        concurrency: int = 8,
        structured: bool = True,
    ) -> None:
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(
                "boto3 is missing; run: pip install 'verbcal[elicit]'", retryable=False
            ) from exc
        self.name, self.model, self._exc = "bedrock", model, botocore.exceptions
        self.structured = structured
        self.notes: list[str] = []
        self._where = base_url or "Bedrock"
        config = botocore.config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            read_timeout=timeout,
            connect_timeout=min(timeout, 30.0),
            max_pool_connections=max(10, concurrency),
        )
        try:
            self._client = boto3.client("bedrock-runtime", endpoint_url=base_url, config=config)
        except botocore.exceptions.NoRegionError as exc:
            raise BackendError(
                "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION)", retryable=False
            ) from exc
        if boto3.Session().get_credentials() is None:  # before any request is sent
            raise BackendError(
                "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
                retryable=False,
            )
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency))

    async def complete(self, request: Request) -> Reply:
        """One Converse call (in a worker thread): a forced tool call, else a plain prompt."""
        if request.logprob_labels is not None:
            raise BackendError("the Bedrock Converse API returns no logprobs", retryable=False)
        return await structured_or_plain(self, request, self._ask)

    async def _ask(self, request: Request, tool: bool) -> Reply:
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self._pool, self._converse, request, tool)
        blocks = response["output"]["message"]["content"]
        usage = response.get("usage", {})
        tokens = int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0))
        for block in blocks:
            use = block.get("toolUse")
            if use is not None and use.get("name") == TOOL_NAME:
                return Reply(json.dumps(use.get("input")), *tokens, mode="tool")
        return Reply("".join(block.get("text", "") for block in blocks), *tokens, mode="plain")

    def _converse(self, request: Request, tool: bool) -> dict[str, Any]:
        exc_mod = self._exc
        args: dict[str, Any] = {
            "modelId": self.model,
            "messages": [{"role": "user", "content": [{"text": request.prompt}]}],
            "inferenceConfig": {
                "maxTokens": request.max_tokens,
                "temperature": request.temperature,
            },
        }
        if tool and request.schema is not None:
            spec = {
                "name": TOOL_NAME,
                "description": TOOL_DESCRIPTION,
                "inputSchema": {"json": request.schema},
            }
            args["toolConfig"] = {
                "tools": [{"toolSpec": spec}],
                "toolChoice": {"tool": {"name": TOOL_NAME}},
            }
        try:
            result: dict[str, Any] = self._client.converse(**args)
            return result
        except exc_mod.ClientError as exc:
            raise self._client_error(exc) from exc
        except exc_mod.NoCredentialsError as exc:
            raise BackendError(
                "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
                retryable=False,
            ) from exc
        except (exc_mod.ReadTimeoutError, exc_mod.ConnectTimeoutError) as exc:
            raise BackendError(f"timeout waiting for {self._where}", retryable=True) from exc
        except (exc_mod.EndpointConnectionError, exc_mod.ConnectionClosedError) as exc:
            raise connection_error(exc, self._where) from exc
        except exc_mod.HTTPClientError as exc:
            raise BackendError(f"connection to {self._where} failed", retryable=True) from exc

    def _client_error(self, exc: Any) -> BackendError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode", 400))
        detail = f"{code}: {error.get('Message', '')}"
        if code in _RETRY_CODES:
            return BackendError(f"{detail} from {self._where}", retryable=True)
        error_ = status_error(
            status,
            detail,
            self._where,
            meta.get("HTTPHeaders"),
            credentials=credentials_hint(self.name),
        )
        if code == "ValidationException" and "model identifier" in detail.lower():
            error_.fatal = True  # Bedrock's "unknown model" is a 400, not a 404
        return error_

    async def aclose(self) -> None:
        """Shut the worker threads down."""
        self._pool.shutdown(wait=False)
