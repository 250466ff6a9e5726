"""Declarative parameter constraints, checked once wherever a value enters a calibrator.

In the style of scikit-learn's ``_parameter_constraints``: each calibrator class declares,
per constructor argument, the values it accepts, as a list of constraints of which one
must hold::

    _parameter_constraints = {
        "reg": [Interval(float, 0, None, closed="left")],
        "prior_sd": [None, Interval(float, 0, None, closed="neither")],
    }

:func:`validate_params` checks a dict of values (or an object's ``get_params()``) against
them and raises :class:`ParameterError` naming where, which argument, what it accepts
and what it got. The same call runs for a Python object (at ``fit`` and when a file is
loaded), a method spec (``vector[reg=-1]``) and a CLI flag, so all three give the same
message, e.g. ``vector: reg must be a number >= 0, got -1``.

Conventions: ``Interval(int, ...)`` accepts Python and NumPy integers only (never bools
or floats such as 2.5); ``Interval(float, ...)`` accepts any finite real number (not
bools); ``None`` in a constraint list accepts ``None``; a ``str`` class accepts strings.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from verbcal.calibration.rows import CalibratorError

Closed = Literal["left", "right", "both", "neither"]


class ParameterError(CalibratorError):
    """A constructor argument (or spec option, or CLI flag) outside what it accepts."""


class Constraint(ABC):
    """One kind of acceptable value."""

    @abstractmethod
    def is_satisfied_by(self, value: Any) -> bool: ...

    @abstractmethod
    def __str__(self) -> str:
        """What it accepts, in words ("a number >= 0")."""


class Interval(Constraint):
    """A number of ``kind`` (int or float) between ``left`` and ``right`` (None: unbounded).

    ``closed`` says which ends are included. Floats must be finite; ints must be integers
    (not bools, not floats with an integer value).
    """

    def __init__(
        self,
        kind: type[int] | type[float],
        left: float | None,
        right: float | None,
        *,
        closed: Closed = "both",
    ) -> None:
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int:
            if not isinstance(value, numbers.Integral):
                return False
        elif not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            return False
        number = float(value)
        open_left = self.closed in ("right", "neither")
        open_right = self.closed in ("left", "neither")
        if self.left is not None and (number < self.left or (open_left and number == self.left)):
            return False
        return not (
            self.right is not None
            and (number > self.right or (open_right and number == self.right))
        )

    def __str__(self) -> str:
        kind = "an integer" if self.kind is int else "a number"
        low = self.left is not None
        high = self.right is not None
        if low and high:
            opening = "[" if self.closed in ("left", "both") else "("
            closing = "]" if self.closed in ("right", "both") else ")"
            return f"{kind} in {opening}{self.left:g}, {self.right:g}{closing}"
        if low:
            op = ">=" if self.closed in ("left", "both") else ">"
            return f"{kind} {op} {self.left:g}"
        if high:
            op = "<=" if self.closed in ("right", "both") else "<"
            return f"{kind} {op} {self.right:g}"
        return kind


class Options(Constraint):
    """One of a fixed set of values (strings, usually)."""

    def __init__(self, *values: Any) -> None:
        self.values = values

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str | int | float | type(None)) and value in self.values

    def __str__(self) -> str:
        shown = [repr(v) for v in self.values]
        return shown[0] if len(shown) == 1 else f"one of {', '.join(shown)}"


class NoneValue(Constraint):
    """``None`` (written ``none`` in specs)."""

    def is_satisfied_by(self, value: Any) -> bool:
        return value is None

    def __str__(self) -> str:
        return "None"


class InstanceOf(Constraint):
    """An instance of ``kind`` (described as ``description``)."""

    def __init__(self, kind: type, description: str) -> None:
        self.kind, self.description = kind, description

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.kind) and not isinstance(value, bool)

    def __str__(self) -> str:
        return self.description


class ListOf(Constraint):
    """A non-string sequence (list or tuple) of at least ``min_len`` items, each accepted by
    ``check`` (a callable that raises :class:`CalibratorError` with the reason)."""

    def __init__(
        self, description: str, check: Callable[[Any], None] | None = None, min_len: int = 1
    ) -> None:
        self.description, self.check, self.min_len = description, check, min_len
        self.reason = ""

    def is_satisfied_by(self, value: Any) -> bool:
        self.reason = ""
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            if isinstance(value, str):
                self.reason = f" (a single string: write [{value!r}])"
            return False
        if len(value) < self.min_len:
            return False
        if self.check is not None:
            for item in value:
                try:
                    self.check(item)
                except CalibratorError as exc:
                    self.reason = f" ({exc})"
                    return False
        return True

    def __str__(self) -> str:
        return self.description


ConstraintSpec = Constraint | None
Constraints = Mapping[str, Sequence[ConstraintSpec]]
ParamConstraints = dict[str, list[ConstraintSpec]]
"""A class's ``_parameter_constraints``: per argument, the constraints one of which must hold."""


def _as_constraint(spec: ConstraintSpec) -> Constraint:
    return NoneValue() if spec is None else spec


def describe(constraints: Iterable[ConstraintSpec]) -> str:
    """What a list of constraints accepts, in words: ``a number > 0 or None``."""
    return " or ".join(str(_as_constraint(c)) for c in constraints)


def check_value(name: str, value: Any, constraints: Sequence[ConstraintSpec], where: str) -> None:
    """Raise :class:`ParameterError` unless one of ``constraints`` accepts ``value``."""
    checks = [_as_constraint(c) for c in constraints]
    if any(c.is_satisfied_by(value) for c in checks):
        return
    reasons = "".join(c.reason for c in checks if isinstance(c, ListOf))
    raise ParameterError(f"{where}: {name} must be {describe(constraints)}, got {value!r}{reasons}")


def validate_params(obj_or_params: Any, constraints: Constraints, where: str) -> None:
    """Check every value of ``obj_or_params`` (a dict, or an object with ``get_params``)
    that ``constraints`` names; the first violation raises :class:`ParameterError`
    ("``where``: ``name`` must be ..., got ...")."""
    params = obj_or_params if isinstance(obj_or_params, Mapping) else obj_or_params.get_params()
    for name, value in params.items():
        if name in constraints:
            check_value(name, value, constraints[name], where)


# ---------------------------------------------------------------- loaded values


def field(data: Any, key: str, where: str) -> Any:
    """``data[key]`` of a loaded object, or a :class:`ParameterError` naming the field."""
    if not isinstance(data, Mapping):
        raise ParameterError(f"{where}: must be an object, got {_short(data)}")
    if key not in data:
        raise ParameterError(f"{where}.{key}: missing")
    return data[key]


def number(value: Any, where: str, constraints: Sequence[ConstraintSpec]) -> float:
    """A loaded number checked by ``constraints`` ("state.temperature must be ...")."""
    if not any(_as_constraint(c).is_satisfied_by(value) for c in constraints):
        raise ParameterError(f"{where} must be {describe(constraints)}, got {_short(value)}")
    return float(value)


def array(
    value: Any,
    where: str,
    shape: tuple[int, ...],
    low: float | None = None,
    high: float | None = None,
) -> Any:
    """A loaded list of finite numbers of ``shape`` (within [low, high] if given), as an array."""
    import numpy as np

    try:
        values = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(
            f"{where} must be numbers of shape {shape}, got {_short(value)}"
        ) from None
    if values.shape != shape:
        raise ParameterError(f"{where} must have shape {shape}, got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ParameterError(f"{where} must be finite, got {_short(value)}")
    if (low is not None and values.min(initial=low) < low) or (
        high is not None and values.max(initial=high) > high
    ):
        span = (
            f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        )
        raise ParameterError(f"{where} must lie in {span}, got {_short(value)}")
    return values


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------- shared constraints

FLOOR: list[ConstraintSpec] = [Options("fit"), Interval(float, 0, 1, closed="neither")]
FLOOR_MODE: list[ConstraintSpec] = [Options("clip", "mix")]
PRIOR_SD: list[ConstraintSpec] = [None, Interval(float, 0, None, closed="neither")]
REG: list[ConstraintSpec] = [Interval(float, 0, None, closed="left")]

__all__ = [
    "FLOOR",
    "FLOOR_MODE",
    "PRIOR_SD",
    "REG",
    "Constraint",
    "InstanceOf",
    "Interval",
    "ListOf",
    "NoneValue",
    "Options",
    "ParamConstraints",
    "ParameterError",
    "array",
    "check_value",
    "describe",
    "field",
    "number",
    "validate_params",
]
