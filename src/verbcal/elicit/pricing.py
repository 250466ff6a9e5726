"""Estimated cost from a price table (USD per million tokens) that the user can override.

The built-in prices are list prices at the time of writing and will drift: pass
``--prices FILE`` (JSON ``{"model-prefix": {"input": x, "output": y}}``) to use your own.
"""

from __future__ import annotations

import json
from pathlib import Path

Price = tuple[float, float]
"""(input, output) in USD per million tokens."""

PRICES: dict[str, Price] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
}


def load_prices(path: str | Path | None) -> dict[str, Price]:
    """The built-in table updated with the entries of a JSON file, if given."""
    table = dict(PRICES)
    if path is None:
        return table
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for model, entry in data.items():
            table[str(model)] = (float(entry["input"]), float(entry["output"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path}: cannot read prices ({exc}); write JSON like"
            ' {"my-model": {"input": 0.5, "output": 1.5}} in USD per million tokens'
        ) from exc
    return table


def lookup(model: str, table: dict[str, Price]) -> Price | None:
    """The price of the longest table key contained in ``model`` (Bedrock ids embed names)."""
    hits = [key for key in table if key in model]
    return table[max(hits, key=len)] if hits else None


def estimate_cost(
    backend: str, model: str, input_tokens: int, output_tokens: int, table: dict[str, Price]
) -> float | None:
    """USD for the tokens, 0 for the local model, None when the model has no price."""
    if backend == "local":
        return 0.0
    price = lookup(model, table)
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1e6


BATCH_DISCOUNT = 0.5
"""OpenAI's Batch API and Anthropic's Message Batches charge half the live price."""


def batch_price(price: Price | None) -> Price | None:
    """The batch-API price of a model whose live price is ``price`` (None stays None)."""
    if price is None:
        return None
    return price[0] * BATCH_DISCOUNT, price[1] * BATCH_DISCOUNT
