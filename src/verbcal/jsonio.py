"""JSON output: the one cleaner that turns verbcal's values into valid JSON.

:func:`json_ready` converts numpy scalars and arrays to Python numbers and lists, tuples
to lists, mapping keys to strings, and NaN and infinities to ``null`` (``json.dumps``
would write ``NaN``/``Infinity``, which strict JSON readers reject).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON types: numpy → Python, tuples → lists, NaN/±inf → ``None``."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(data: Any, indent: int | None = None) -> str:
    """``json_ready(data)`` as strict JSON text: never ``NaN`` or ``Infinity`` (``null``)."""
    return json.dumps(json_ready(data), indent=indent, allow_nan=False)


def print_json(data: Any) -> None:
    """Print ``data`` as one line of strict JSON: the printer of every ``--json`` output."""
    print(dumps(data), flush=True)


def write_json(path: str | Path, data: Any, indent: int = 2) -> None:
    """Write ``json_ready(data)`` to ``path`` (UTF-8, trailing newline)."""
    text = dumps(data, indent=indent) + "\n"
    Path(path).write_text(text, encoding="utf-8")


__all__ = ["dumps", "json_ready", "print_json", "write_json"]
