"""The study's configuration: datasets, method variants, sizes, repeats, targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verbcal import datasets
from verbcal.calibration.specs import UNCALIBRATED, MethodError, Variant, parse_spec
from verbcal.metrics import DEFAULT_BINS

DEFAULT_DATASETS: dict[str, str] = {
    "tweets": "recorded:tweets",
    "drug-reviews": "recorded:drug-reviews",
    "bbc-news": "recorded:bbc-news",
    "mt-quality": "recorded:mt-quality",
    "mt-quality-words": "recorded:mt-quality#verbal",
    "halueval": "recorded:halueval",
    "halueval-words": "recorded:halueval#verbal",
}
DEFAULT_METHODS: tuple[str, ...] = (
    UNCALIBRATED,
    "floor",
    "resoftmax",
    "temperature",
    "temperature[prior=none]",
    "temperature[floor=1e-2]",
    "temperature[floor=1e-3]",
    "temperature[floor=1e-4]",
    "temperature[floor=1e-6]",
    "temperature[floor=1e-8]",
    "temperature[mode=mix]",
    "temperature[floor=1e-2,mode=mix]",
    "temperature[floor=1e-4,mode=mix]",
    "temperature[floor=1e-6,mode=mix]",
    "vector",
    "matrix",
    "matrix[prior=1]",
    "platt",
    "isotonic",
    "histogram",
    "words",
    "auto",
)
"""The default variants: every core method (floor fitted where one is used), the
uncalibrated baseline, temperature scaling by maximum likelihood and under fixed clip and
mix floors, matrix scaling with the prior towards the identity map, and ``auto``."""
DEFAULT_SIZES: tuple[int | str, ...] = (25, 50, 100, "all")
DEFAULT_REPEATS = 50
DEFAULT_TARGETS: tuple[float, ...] = (0.8, 0.9, 0.95)
DEFAULT_THRESHOLD_METHODS: tuple[str, ...] = (UNCALIBRATED, "temperature")
MIN_TEST = 30
"""An integer calibration size must leave at least this many test items."""
PARAMS: tuple[str, ...] = ("temperature", "floor", "nll_fit")
"""Fitted parameters recorded next to the metrics in the tidy rows."""
RULES: tuple[str, ...] = ("bound", "point", "prob")
"""Threshold rules: ``bound`` = smallest threshold whose Clopper-Pearson lower bound on the
calibration part reaches the target (:func:`verbcal.decide.threshold_for`, procedure
"pointwise"); ``point`` =
smallest threshold whose point precision on the calibration part reaches it; ``prob`` =
the target itself as threshold (trust the probability: no labels used)."""
CONFIG_KEYS = (
    "datasets",
    "methods",
    "sizes",
    "repeats",
    "seed",
    "bins",
    "targets",
    "threshold_methods",
    "confidence",
)


class StudyError(ValueError):
    """A study configuration that cannot run: says which key and what to write instead."""


# ---------------------------------------------------------------- method variants


def parse_variant(spec: str) -> Variant:
    """A method spec (see :mod:`verbcal.calibration.specs`), errors naming the ``methods`` key."""
    try:
        return parse_spec(spec)
    except MethodError as exc:
        raise StudyError(f"methods: {exc}") from exc


# ---------------------------------------------------------------- configuration


@dataclass
class StudyConfig:
    """What to run; see the module docstring for every key."""

    datasets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DATASETS))
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    sizes: list[int | str] = field(default_factory=lambda: list(DEFAULT_SIZES))
    repeats: int = DEFAULT_REPEATS
    seed: int = 0
    bins: int = DEFAULT_BINS
    targets: list[float] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    threshold_methods: list[str] = field(default_factory=lambda: list(DEFAULT_THRESHOLD_METHODS))
    confidence: float = 0.95
    source: str = "default grid"

    @property
    def variants(self) -> list[Variant]:
        return [parse_variant(m) for m in self.methods]

    @classmethod
    def from_mapping(cls, data: Any, base: Path | None = None, source: str = "") -> StudyConfig:
        """Validated config from parsed YAML; relative dataset paths resolve against ``base``."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise StudyError("the study config must be a mapping of keys (datasets, methods ...)")
        unknown = sorted(set(data) - set(CONFIG_KEYS))
        if unknown:
            raise StudyError(
                f"unknown config key(s) {', '.join(map(str, unknown))}; known: {', '.join(CONFIG_KEYS)}"
            )
        config = cls(source=source or "config")
        if "datasets" in data:
            config.datasets = _datasets(data["datasets"], base)
        if "methods" in data:
            methods = data["methods"]
            if not isinstance(methods, list) or not methods:
                raise StudyError("methods: give a non-empty list of method variants")
            names = [parse_variant(m).name for m in methods]
            if len(set(names)) != len(names):
                raise StudyError("methods: a variant is listed twice")
            config.methods = names
        if "sizes" in data:
            config.sizes = _sizes(data["sizes"])
        for key in ("repeats", "seed", "bins"):
            if key in data:
                value = data[key]
                low = 0 if key == "seed" else 1
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise StudyError(f"{key}: must be an integer >= {low}, got {value!r}")
                setattr(config, key, value)
        if "targets" in data:
            targets = data["targets"]
            if not isinstance(targets, list) or not all(_unit(t) for t in targets):
                raise StudyError("targets: give a list of precisions strictly between 0 and 1")
            config.targets = [float(t) for t in targets]
        if "confidence" in data:
            if not _unit(data["confidence"]):
                raise StudyError("confidence: must lie strictly between 0 and 1")
            config.confidence = float(data["confidence"])
        if "threshold_methods" in data:
            chosen = data["threshold_methods"]
            if not isinstance(chosen, list):
                raise StudyError("threshold_methods: give a list of variants from methods")
            config.threshold_methods = [parse_variant(m).name for m in chosen]
        missing = [m for m in config.threshold_methods if m not in config.methods]
        if missing and "threshold_methods" in data:
            raise StudyError(f"threshold_methods: {', '.join(missing)} not listed in methods")
        config.threshold_methods = [m for m in config.threshold_methods if m in config.methods]
        return config

    @classmethod
    def load(cls, path: str | Path) -> StudyConfig:
        """Read and validate a YAML config file."""
        import yaml

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StudyError(f"{path}: cannot read the study config ({exc.strerror})") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise StudyError(f"{path}: not valid YAML ({exc})") from exc
        return cls.from_mapping(data, base=path.parent, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        keys = CONFIG_KEYS
        return {k: getattr(self, k) for k in keys}


def _unit(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1


def _datasets(value: Any, base: Path | None) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise StudyError("datasets: give a mapping name → predictions file (or recorded:<name>)")
    out = {}
    for name, spec in value.items():
        if not isinstance(spec, str) or not spec:
            raise StudyError(f"datasets: {name!r} must map to a file path, got {spec!r}")
        if not spec.startswith(datasets.PREFIX) and base is not None:
            path = Path(spec)
            spec = str(path if path.is_absolute() else base / path)
        out[str(name)] = spec
    return out


def _sizes(value: Any) -> list[int | str]:
    if not isinstance(value, list) or not value:
        raise StudyError("sizes: give a non-empty list of integers and/or 'all'")
    out: list[int | str] = []
    for size in value:
        if size in ("all", "half"):
            out.append("all")
        elif isinstance(size, int) and not isinstance(size, bool) and size >= 2:
            out.append(size)
        else:
            raise StudyError(f"sizes: {size!r} is not an integer >= 2 or 'all'")
    return out


def resolve_sizes(n: int, sizes: Sequence[int | str]) -> tuple[list[int], list[str]]:
    """Calibration sizes for n items (sorted, distinct) and notes on the ones skipped."""
    chosen, notes = set(), []
    for size in sizes:
        if size == "all":
            chosen.add(n // 2)
        elif isinstance(size, int) and size <= n - MIN_TEST:
            chosen.add(size)
        else:
            notes.append(
                f"size {size} skipped: it leaves fewer than {MIN_TEST} of {n} items to test"
            )
    return sorted(chosen), notes
