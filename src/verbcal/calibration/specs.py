"""Method specs: the one vocabulary of calibrator names that every command and API accepts.

A spec is a calibrator name (:data:`~verbcal.calibration.base.METHODS`), optionally with
options in brackets: ``temperature[floor=1e-4]``, ``temperature[floor=fit,mode=mix]``,
``temperature[prior=none]``, ``vector[reg=0.1]``, ``histogram[bins=5]``. Options:
``floor`` (a number in (0, 1) or ``fit``), ``mode`` (``clip``: max(p, floor), or ``mix``:
(1 - a) p + a / K), ``prior`` (temperature: sd of the normal prior on log T, or ``none``
for the paper's exact maximum-likelihood T; vector, matrix: sd of the normal prior
towards the identity map, as in ``matrix[prior=1]``), ``reg`` (vector, matrix), ``bins``
(histogram); every other constructor argument by its own name. ``uncalibrated`` is
``identity``: the verbalized distribution itself, normalised, nothing fitted.
``make_calibrator``, ``auto``'s candidates, ``fit``, ``compare``, ``run`` and ``study``
all read specs through :func:`parse_spec`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from verbcal.calibration.base import METHODS, Calibrator
from verbcal.calibration.constraints import ParameterError, validate_params
from verbcal.calibration.rows import CalibratorError

UNCALIBRATED = "uncalibrated"
ALIASES = {"mode": "floor_mode", "prior": "prior_sd"}
"""Short option names of specs, by constructor argument they set."""
_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:\[(.*)\])?\s*$")


class MethodError(CalibratorError):
    """A method spec that does not parse: says what to write instead."""


@dataclass(frozen=True)
class Variant:
    """A calibrator with fixed options; ``name`` (the spec) is how it appears in every output."""

    name: str
    method: str
    options: tuple[tuple[str, Any], ...] = ()
    given: tuple[str, ...] = field(default=(), compare=False)
    """The constructor arguments the spec wrote in brackets (the rest are defaults)."""

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def fits_floor(self) -> bool:
        """True when the floor is fitted jointly with T (shared by every such variant)."""
        cls = METHODS[self.method]
        default = _defaults(cls).get("floor")
        return cls.floor_fitted_with_temperature and self.kwargs.get("floor", default) == "fit"

    @property
    def floor_key(self) -> tuple[Any, ...]:
        """What a floor fitted jointly with T depends on besides the data."""
        kw = self.kwargs
        return (kw.get("floor_mode", "clip"), kw.get("prior_sd", "default"))

    def make(self, floor: float | None = None, **overrides: Any) -> Calibrator:
        """A new calibrator; ``floor`` replaces a fitted floor by a value fitted already."""
        kw = {**self.kwargs, **overrides}
        if floor is not None:
            kw["floor"] = floor
        if overrides:
            check_options(self.method, {k: v for k, v in overrides.items()})
        try:
            return METHODS[self.method](**kw)
        except TypeError as exc:
            names = ", ".join(METHODS[self.method]._get_param_names()) or "no options"
            raise MethodError(f"{self.method}: bad option ({exc}); it takes {names}") from exc


def parse_spec(spec: str) -> Variant:
    """``method`` or ``method[key=value,...]``, validated; ``uncalibrated`` = ``identity``."""
    if not isinstance(spec, str):
        raise MethodError(f"each method must be a string, got {spec!r}")
    text = spec.strip()
    if text == UNCALIBRATED:
        return Variant(UNCALIBRATED, "identity")
    match = _SPEC.match(text)
    if not match or match.group(1) not in METHODS:
        raise MethodError(
            f"unknown method {spec!r}; write a name from "
            f"{', '.join([UNCALIBRATED, *METHODS])}, optionally with options in brackets "
            "(temperature[floor=1e-4,mode=mix])"
        )
    method, body = match.group(1), match.group(2)
    params = METHODS[method]._get_param_names()
    options: dict[str, Any] = {}
    written: dict[str, str] = {}
    for item in split_specs(body or ""):
        key, sep, value = (s.strip() for s in item.partition("="))
        argument = ALIASES.get(key, key)
        if not sep or argument not in params:
            takes = [next((k for k, v in ALIASES.items() if v == p), p) for p in params]
            raise MethodError(
                f"bad option {item!r} in {spec!r}; {method} takes {', '.join(takes) or 'none'}"
            )
        options[argument] = convert_option(argument, value)
        written[argument] = key
    check_options(method, options, written)
    defaults = {k: v for k, v in _defaults(METHODS[method]).items() if k in ("floor", "floor_mode")}
    return Variant(text, method, tuple({**defaults, **options}.items()), tuple(options))


def check_options(
    method: str, options: dict[str, Any], written: dict[str, str] | None = None
) -> None:
    """Validate constructor options of ``method`` by its declared constraints: the same
    check, and the same message, as the calibrator's own at ``fit``. ``written`` maps an
    argument to the name the spec wrote (``prior`` for ``prior_sd``): the message uses it."""
    try:
        validate_params(options, METHODS[method]._parameter_constraints, where=method)
    except ParameterError as exc:
        message = str(exc)
        for argument, key in (written or {}).items():
            if key != argument:
                message = message.replace(f"{method}: {argument} ", f"{method}: {key} ", 1)
        raise MethodError(message) from exc


def convert_option(argument: str, text: str) -> Any:
    """A spec option's (or CLI flag's) text as a value; only syntax here, the calibrator's
    constraints judge the value. ``none`` → None, integers → int, other numbers → float,
    ``candidates`` → a list split on ``|`` (``auto[candidates=floor|temperature]``),
    anything else as written."""
    if argument == "candidates":
        return tuple(part.strip() for part in text.split("|") if part.strip())
    return _plain(text)


def _plain(text: str) -> Any:
    """``none`` → None, numbers → int or float, anything else as written."""
    if text.lower() == "none":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and re.fullmatch(r"[-+]?\d+", text) else number


def _defaults(cls: type[Calibrator]) -> dict[str, Any]:
    return cls().get_params()


def split_specs(text: str) -> list[str]:
    """Comma-separated specs, commas inside brackets kept: ``a[floor=1e-2,mode=mix],b``."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [p for p in parts if p]


def parse_specs(text: str, also: Sequence[str] = ()) -> list[str]:
    """``all`` (every fixed method; ``auto`` is asked for by name) or comma-separated specs
    (plus names in ``also``), validated, duplicates dropped."""
    names = [m for m in METHODS if m != "auto"] if text.strip() == "all" else split_specs(text)
    if not names:
        raise MethodError(
            f"no method given; choose from all, {', '.join([UNCALIBRATED, *METHODS])}"
        )
    for name in names:
        if name not in also:
            parse_spec(name)
    return list(dict.fromkeys(names))


def make(spec: str, **overrides: Any) -> Calibrator:
    """A new, unfitted calibrator for a spec; ``overrides`` replace the spec's options."""
    return parse_spec(spec).make(**overrides)


__all__ = [
    "UNCALIBRATED",
    "MethodError",
    "Variant",
    "check_options",
    "convert_option",
    "make",
    "parse_spec",
    "parse_specs",
    "split_specs",
]
