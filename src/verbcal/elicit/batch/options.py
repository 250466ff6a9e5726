"""What ``--batch`` can be told: retries, the live fallback, the provider limits, polling."""

from __future__ import annotations

from dataclasses import dataclass

LIMITS = {"openai": (50_000, 200 * 1024 * 1024), "anthropic": (100_000, 256 * 1024 * 1024)}
"""Each provider's (requests per batch, bytes per batch input) at the time of writing."""

FALLBACKS = ("none", "live")


@dataclass(frozen=True)
class BatchOptions:
    """How to use a provider's batch API (see ``verbcal elicit --help`` for each option)."""

    retries: int = 2
    """New batches for errored or expired items, after the first."""
    fallback: str = "none"
    """``live``: items still failing after ``retries`` are sent as live calls."""
    max_requests: int | None = None
    """Requests per batch (default: the provider's limit)."""
    max_bytes: int | None = None
    """Bytes of request lines per batch (default: the provider's limit)."""
    poll_interval: float = 30.0
    wait: bool = True
    """False: submit, record and return; collect later."""

    def limits(self, backend: str) -> tuple[int, int]:
        """The (requests, bytes) a batch may hold on ``backend``."""
        most_n, most_bytes = LIMITS[backend]
        return self.max_requests or most_n, self.max_bytes or most_bytes

    def problem(self, backend: str) -> str | None:
        """Why these options cannot work with ``backend``, or None."""
        if backend not in LIMITS:
            return f"--batch needs --backend openai or anthropic (not {backend})"
        if self.retries < 0:
            return "--batch-retries must be 0 or more"
        if self.fallback not in FALLBACKS:
            return f"--batch-fallback {self.fallback!r}: choose none or live"
        if self.max_requests is not None and self.max_requests < 1:
            return "--batch-max-requests must be at least 1"
        if self.max_bytes is not None and self.max_bytes < 1:
            return "--batch-max-bytes must be at least 1"
        if not self.poll_interval > 0:
            return "--poll-interval must be positive"
        return None
