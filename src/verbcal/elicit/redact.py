"""Keep secrets out of everything verbcal writes: store, output, logs and messages."""

from __future__ import annotations

import os
import re

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-*.]{6,}"),  # OpenAI / Anthropic style keys, even partly masked
    re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{12,}\b"),  # AWS access key ids
    re.compile(r"(?i)(bearer|x-api-key:?|api[_-]?key[=:])\s*[A-Za-z0-9_\-.]{8,}"),
]


def _secret_values() -> list[str]:
    values = [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8]
    return sorted(set(values), key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every environment secret and anything shaped like a key replaced."""
    for value in _secret_values():
        text = text.replace(value, "[redacted]")
    for pattern in _PATTERNS:
        text = pattern.sub("[redacted]", text)
    return text
