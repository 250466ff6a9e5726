"""Option types shared by the commands: every numeric option is checked here, at parse time.

Click rejects a value outside its range before a command runs, so nothing is written for
an impossible option (exit status 2, "Invalid value for '--bins': ...").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from verbcal.decide import DEFAULT_PRECISION as DEFAULT_PRECISION


def open_unit(value: float | None) -> float | None:
    """Callback: a share, target or confidence strictly between 0 and 1 (or unset)."""
    if value is not None and not 0.0 < value < 1.0:
        raise typer.BadParameter(f"must lie strictly between 0 and 1, got {value:g}")
    return value


def positive(value: float | None) -> float | None:
    """Callback: a strictly positive number (or unset)."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be greater than 0, got {value:g}")
    return value


CalibFrac = Annotated[
    float,
    typer.Option(
        callback=open_unit,
        help="Share of the labelled items used to fit, in (0, 1); each label must keep at "
        "least one item on both sides.",
    ),
]
Bins = Annotated[int, typer.Option("--bins", min=1, help="Equal-width bins for ECE/MCE.")]
Boot = Annotated[int, typer.Option(min=1, help="Bootstrap resamples for the 95% CIs.")]
Confidence = Annotated[
    float,
    typer.Option(
        callback=open_unit,
        help="Confidence of the one-sided Clopper-Pearson lower bound, in (0, 1).",
    ),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing outputs (refused otherwise).")
]
Backend = Annotated[
    str | None,
    typer.Option(
        help="openai | anthropic | bedrock | litellm | local (embedded SmolLM2) | openai-decisions"
        " | systemone (decision models: probabilities from scores); required when "
        "eliciting (`verbcal demo` runs the embedded model without it)."
    ),
]


def require_backend(backend: str | None) -> str:
    """The backend to elicit with: no silent default, so a forgotten flag starts nothing."""
    if backend is None:
        raise typer.BadParameter(
            "say which LLM to ask: --backend openai | anthropic | bedrock | litellm | local"
            " | openai-decisions | systemone (local = the embedded SmolLM2 model, no key needed)",
            param_hint="'--backend'",
        )
    return backend


Model = Annotated[str | None, typer.Option(help="Model name (default per backend).")]
BaseUrl = Annotated[
    str | None, typer.Option(help="OpenAI-compatible server URL, or Bedrock endpoint.")
]
Concurrency = Annotated[int, typer.Option(min=1, help="Requests in flight at once.")]
Rpm = Annotated[float | None, typer.Option(callback=positive, help="Requests per minute limit.")]
Tpm = Annotated[
    float | None, typer.Option(callback=positive, help="Tokens per minute limit (estimated).")
]
Samples = Annotated[int, typer.Option(min=1, help="Sampled replies per item, averaged.")]
Temperature = Annotated[
    float | None,
    typer.Option(
        "--llm-temperature",
        min=0.0,
        help="The LLM's sampling temperature (default 0, or 0.7 with --samples); not the "
        "calibration temperature T.",
    ),
]
MaxItems = Annotated[int | None, typer.Option(min=1, help="Only the first N items.")]
MaxTokens = Annotated[int, typer.Option(min=1, help="Reply length limit in tokens.")]
Timeout = Annotated[float, typer.Option(callback=positive, help="Seconds to wait for one reply.")]
Retries = Annotated[int, typer.Option(min=0, help="Retries on 429, 5xx, timeouts, drops.")]
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
