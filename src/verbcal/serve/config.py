"""The service's configuration: which calibrators to serve, the classify backend, keys and limits.

``ServeConfig`` travels to uvicorn workers as JSON in ``VERBCAL_SERVE_CONFIG`` (so
``uvicorn --factory verbcal.serve:create_app`` and ``--workers N`` work); API keys are
never part of it: they come from ``VERBCAL_API_KEYS`` or a keys file at start-up.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verbcal.serve.limits import MODEL_NAME_MAX

CONFIG_ENV = "VERBCAL_SERVE_CONFIG"
KEYS_ENV = "VERBCAL_API_KEYS"
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(second|minute|hour)\s*$")
_PER = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


DEFAULT_CACHE_ROWS = 65_536
"""Calibrated rows kept per loaded calibrator (``--cache-rows``; 0 turns the cache off)."""


class ServeConfigError(ValueError):
    """A configuration that cannot work; the message says what to change."""


@dataclass(frozen=True)
class ClassifyConfig:
    """What ``/v1/classify`` asks: a task file and the ``verbcal elicit`` options."""

    task: str
    backend: str = "local"
    model: str | None = None
    base_url: str | None = None
    store: str | None = None
    concurrency: int = 8
    rpm: float | None = None
    max_tokens: int = 256
    timeout: float = 120.0
    retries: int = 6
    calibrator: str | None = None
    """Calibrator applied to the verbalized replies (default: the only one loaded)."""


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``create_app`` needs (see ``verbcal serve --help`` for each option)."""

    calibrators: dict[str, str]
    classify: ClassifyConfig | None = None
    api_keys_file: str | None = None
    no_auth: bool = False
    rate_limit: str | None = "600/minute"
    max_items: int = 1000
    max_body_bytes: int = 1_048_576
    log_level: str = "info"
    cache_rows: int = DEFAULT_CACHE_ROWS
    """Calibrated rows cached per calibrator (``--cache-rows``; 0: no cache)."""
    log_predictions: str | None = None
    """SQLite file logging every served prediction (``--log-predictions``); enables
    ``/v1/feedback``, ``/v1/monitor/{model}`` and the monitoring gauges."""
    monitor_references: dict[str, str] = field(default_factory=dict)
    """Model name → labelled predictions file the monitor compares against."""
    monitor_window: int = 500
    """Logged rows per monitoring window."""
    extra_keys: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """Keys given in code (in addition to the environment and the file); never serialised."""

    def __post_init__(self) -> None:
        if not self.calibrators:
            raise ServeConfigError("give at least one calibrator: --calibrator NAME=PATH")
        for name in self.calibrators:
            if not re.fullmatch(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MODEL_NAME_MAX - 1}}}", name):
                raise ServeConfigError(
                    f"calibrator name {name!r}: use letters, digits, '_', '.', '-' "
                    f"(max {MODEL_NAME_MAX})"
                )
        if self.max_items < 1 or self.max_body_bytes < 1:
            raise ServeConfigError("--max-items and --max-body-bytes must be positive")
        if self.cache_rows < 0:
            raise ServeConfigError("--cache-rows must be 0 (no cache) or more")
        parse_rate(self.rate_limit)
        unknown = set(self.monitor_references) - set(self.calibrators)
        if unknown:
            raise ServeConfigError(
                f"--monitor-reference names {sorted(unknown)}, which no --calibrator serves"
            )
        if self.monitor_references and not self.log_predictions:
            raise ServeConfigError("--monitor-reference needs --log-predictions PATH")
        if self.monitor_window < 1:
            raise ServeConfigError("--monitor-window must be at least 1")

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("extra_keys")
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        data: dict[str, Any] = json.loads(text)
        classify = data.pop("classify", None)
        return cls(**data, classify=ClassifyConfig(**classify) if classify else None)

    @classmethod
    def from_env(cls) -> ServeConfig:
        """The configuration ``verbcal serve`` put in ``VERBCAL_SERVE_CONFIG``."""
        text = os.environ.get(CONFIG_ENV)
        if not text:
            raise ServeConfigError(
                f"no configuration: call create_app(ServeConfig(...)) or set {CONFIG_ENV}"
            )
        return cls.from_json(text)


def parse_calibrator_specs(specs: list[str]) -> dict[str, str]:
    """``NAME=PATH`` strings (or a bare PATH, named after the file) as a name → path mapping."""
    found: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).stem, spec
        if name in found:
            raise ServeConfigError(f"calibrator name {name!r} given twice")
        found[name] = path
    return found


def parse_rate(spec: str | None) -> tuple[float, float] | None:
    """``"600/minute"`` → (600 requests, 60 seconds); None or "" → no limit."""
    if not spec:
        return None
    match = _RATE.match(spec)
    if match is None or float(match.group(1)) <= 0:
        raise ServeConfigError(
            f"rate limit {spec!r}: write N/second, N/minute or N/hour with N > 0"
        )
    return float(match.group(1)), _PER[match.group(2)]


def read_api_keys(config: ServeConfig) -> list[str]:
    """Key entries from ``VERBCAL_API_KEYS``, the keys file and ``extra_keys`` (raw or sha256:)."""
    entries = [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    if config.api_keys_file:
        path = Path(config.api_keys_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ServeConfigError(
                f"{path}: cannot read the API keys file ({exc.strerror})"
            ) from exc
        for number, line in enumerate(lines, start=1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            if entry.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", entry):
                raise ServeConfigError(
                    f"{path}, line {number}: a sha256: entry needs 64 hex digits"
                    " (write: sha256:$(printf %s KEY | sha256sum))"
                )
            entries.append(entry)
    entries.extend(config.extra_keys)
    return entries


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, n_keys: int, no_auth: bool) -> None:
    """Refuse to listen beyond loopback without keys, unless auth is explicitly switched off."""
    if n_keys or no_auth or is_loopback(host):
        return
    raise ServeConfigError(
        f"refusing to listen on {host} without API keys: set {KEYS_ENV} or --api-keys-file,"
        " or pass --no-auth to serve without authentication"
    )
