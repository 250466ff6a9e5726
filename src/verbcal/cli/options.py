"""Option types shared by the commands that call an LLM (`verbcal elicit`, `verbcal run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Backend = Annotated[
    str, typer.Option(help="openai | anthropic | bedrock | local (embedded SmolLM2).")
]
Model = Annotated[str | None, typer.Option(help="Model name (default per backend).")]
BaseUrl = Annotated[
    str | None, typer.Option(help="OpenAI-compatible server URL, or Bedrock endpoint.")
]
Concurrency = Annotated[int, typer.Option(help="Requests in flight at once.")]
Rpm = Annotated[float | None, typer.Option(help="Requests per minute limit.")]
Tpm = Annotated[float | None, typer.Option(help="Tokens per minute limit (estimated).")]
Samples = Annotated[int, typer.Option(help="Sampled replies per item, averaged.")]
Temperature = Annotated[
    float | None, typer.Option(help="Sampling temperature (default 0, or 0.7 with --samples).")
]
MaxItems = Annotated[int | None, typer.Option(help="Only the first N items.")]
MaxTokens = Annotated[int, typer.Option(help="Reply length limit in tokens.")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for one reply.")]
Retries = Annotated[int, typer.Option(help="Retries on 429, 5xx, timeouts, drops.")]
Structured = Annotated[
    bool, typer.Option(help="Ask for JSON-schema output where the server supports it.")
]
Prices = Annotated[
    Path | None, typer.Option(help='Price table JSON {"model": {"input": $, "output": $}}.')
]
ShowProgress = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")
]
MaxRequests = Annotated[
    int | None,
    typer.Option(help="Stop after sending this many requests (retries count); resume later."),
]
MaxCost = Annotated[
    float | None,
    typer.Option(help="Stop before the estimated spend in USD would exceed this (needs a price)."),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Print the planned requests, token and cost estimate; call nothing."
    ),
]
Http = Annotated[
    str,
    typer.Option(
        help="HTTP path of the openai/local backends: sdk (the official SDK) or lean"
        " (aiohttp, less CPU per request; same retries and errors)."
    ),
]
