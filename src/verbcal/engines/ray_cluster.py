"""Reaching a Ray cluster, for every Ray engine (imports nothing of verbcal's stages)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def require_ray() -> Any:
    """Import ray (not ``ray.data``: half a second that only a Dataset needs), or name the extra."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the Ray engine needs Ray Data: pip install 'verbcal[ray]'") from exc
    return ray


@contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """Connect to the cluster at ``address`` (None: start a local one) unless already connected.

    A cluster this function started or connected to is left again on exit.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
