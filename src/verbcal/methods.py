"""Method specs: the one vocabulary of calibrator names that every command accepts.

A spec is a calibrator name as in :data:`verbcal.calibrate.METHODS`, optionally with
options in brackets: ``temperature[floor=1e-4]``, ``temperature[floor=fit,mode=mix]``,
``matrix[reg=0.1]``, ``histogram[bins=5]``. Options: ``floor`` (a number in (0, 1) or
``fit``; default ``fit``), ``mode`` (``clip``: max(p, floor), or ``mix``:
(1 - a) p + a / K; default ``clip``), ``reg`` (vector, matrix), ``bins`` (histogram).
``uncalibrated`` is the verbalized distribution itself, normalised: ``identity`` with a
clip floor at 1e-12, which only acts on exact zeros. ``verbcal fit``, ``compare``,
``run`` and ``study`` (and the study YAML) all read specs through :func:`parse_spec`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from verbcal.calibrate import METHODS, Calibrator, CalibratorError, Floor, make_calibrator

UNCALIBRATED = "uncalibrated"
_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:\[(.*)\])?\s*$")


class MethodError(CalibratorError):
    """A method spec that does not parse: says what to write instead."""


@dataclass(frozen=True)
class Variant:
    """A calibrator with fixed options; ``name`` (the spec) is how it appears in every output."""

    name: str
    method: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def fits_floor(self) -> bool:
        """True when the floor is fitted jointly with T (shared by every such variant)."""
        cls = METHODS[self.method]
        return (
            cls.uses_floor and cls.floor_fitted_with_temperature and self.kwargs["floor"] == "fit"
        )

    def make(self, floor: float | None = None) -> Calibrator:
        """A new calibrator; ``floor`` replaces a fitted floor by a value fitted already."""
        kw = self.kwargs
        if floor is not None:
            kw["floor"] = floor
        return make_calibrator(self.method, **kw)


def parse_spec(spec: str) -> Variant:
    """``method`` or ``method[key=value,...]``; ``uncalibrated`` = ``identity[floor=1e-12]``."""
    if not isinstance(spec, str):
        raise MethodError(f"each method must be a string, got {spec!r}")
    if spec.strip() == UNCALIBRATED:
        return Variant(UNCALIBRATED, "identity", (("floor", 1e-12), ("floor_mode", "clip")))
    match = _SPEC.match(spec)
    if not match or match.group(1) not in METHODS:
        raise MethodError(
            f"unknown method {spec!r}; write a name from "
            f"{', '.join([UNCALIBRATED, *METHODS])}, optionally with options in brackets "
            "(temperature[floor=1e-4,mode=mix])"
        )
    method, body = match.group(1), match.group(2)
    options: dict[str, Any] = {"floor": "fit", "floor_mode": "clip"}
    allowed = {"floor", "mode"} | ({"reg"} if method in ("vector", "matrix") else set())
    allowed |= {"bins"} if method == "histogram" else set()
    for item in filter(None, (s.strip() for s in (body or "").split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in allowed:
            raise MethodError(
                f"bad option {item!r} in {spec!r}; {method} takes {', '.join(sorted(allowed))}"
            )
        if key == "floor":
            try:
                options["floor"] = Floor.parse(value).value if value != "fit" else "fit"
            except (CalibratorError, ValueError) as exc:
                raise MethodError(f"{spec!r}: floor must be 'fit' or in (0, 1)") from exc
        elif key == "mode":
            if value not in ("clip", "mix"):
                raise MethodError(f"{spec!r}: mode must be clip or mix, got {value!r}")
            options["floor_mode"] = value
        elif key == "reg":
            options["reg"] = _number(value, spec, "reg", 0.0)
        else:
            options["bins"] = int(_number(value, spec, "bins", 1.0))
    return Variant(spec.strip(), method, tuple(options.items()))


def _number(text: str, spec: str, key: str, low: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= low:
        raise MethodError(f"{spec!r}: {key} must be a number >= {low:g}, got {text!r}")
    return value


def split_specs(text: str) -> list[str]:
    """Comma-separated specs, commas inside brackets kept: ``a[floor=1e-2,mode=mix],b``."""
    specs, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            specs.append(current.strip())
            current = ""
        else:
            current += char
    specs.append(current.strip())
    return [s for s in specs if s]


def parse_specs(text: str, also: Sequence[str] = ()) -> list[str]:
    """``all`` (every method) or comma-separated specs (plus names in ``also``), validated,
    duplicates dropped."""
    names = list(METHODS) if text.strip() == "all" else split_specs(text)
    if not names:
        raise MethodError(
            f"no method given; choose from all, {', '.join([UNCALIBRATED, *METHODS])}"
        )
    for name in names:
        if name not in also:
            parse_spec(name)
    return list(dict.fromkeys(names))


def make(spec: str) -> Calibrator:
    """A new, unfitted calibrator for a spec (``temperature``, ``uncalibrated``,
    ``temperature[floor=1e-4]``, ...)."""
    return parse_spec(spec).make()
