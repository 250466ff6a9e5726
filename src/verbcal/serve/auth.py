"""API keys (constant-time check against sha256 digests) and a per-key token-bucket rate limit."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Iterable, Mapping

HEALTH_PATHS = ("/v2/health/live", "/v2/health/ready")
"""Routes open without a key (load balancers and container health checks)."""


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """The accepted keys, held only as sha256 digests; ``identify`` never short-circuits."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._digests: list[bytes] = []
        for entry in entries:
            if entry.startswith("sha256:"):
                self._digests.append(bytes.fromhex(entry.removeprefix("sha256:")))
            else:
                self._digests.append(digest(entry))

    def __len__(self) -> int:
        return len(self._digests)

    def identify(self, key: str | None) -> str | None:
        """A short fingerprint of the matching key (for logs and rate limits), or None."""
        if key is None:
            return None
        candidate = digest(key)
        found = None
        for known in self._digests:  # compare with every key: timing says nothing
            if hmac.compare_digest(candidate, known):
                found = known
        return None if found is None else found.hex()[:12]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    header = headers.get("x-api-key")
    return header.strip() if header and header.strip() else None


class RateLimiter:
    """A token bucket per client: ``requests`` per ``period`` seconds, bursting up to ``requests``."""

    def __init__(self, requests: float, period: float) -> None:
        self.capacity = requests
        self.rate = requests / period
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, client: str) -> float:
        """0 if the request may go ahead (and take a token), else seconds until one is free."""
        now = time.monotonic()
        level, stamp = self._buckets.get(client, (self.capacity, now))
        level = min(self.capacity, level + (now - stamp) * self.rate)
        if level >= 1.0:
            self._buckets[client] = (level - 1.0, now)
            return 0.0
        self._buckets[client] = (level, now)
        return (1.0 - level) / self.rate

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
