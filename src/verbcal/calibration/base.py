"""The calibrator protocol, its scikit-learn conventions and the calibrator file format.

A calibrator follows scikit-learn's estimator conventions without importing it:

* constructor arguments are stored unchanged (``get_params`` / ``set_params`` read and
  write them, so ``sklearn.base.clone``, ``GridSearchCV`` and ``Pipeline`` work);
* everything learned lives in attributes ending in ``_`` (``labels_``, ``classes_``,
  ``floor_``, ``temperature_``, ...), and every ``fit`` starts from scratch;
* ``fit(X, y, sample_weight=None)``, ``predict_proba(X)`` and ``predict(X)``.

``X`` holds verbalized distributions, (n, K), as an array or a pandas / polars DataFrame
whose columns are the labels; ``y`` holds gold labels as names or integer indices. Every
calibrator normalises its input rows first, so rows that do not sum to 1 are treated as
probabilities, never as logits.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from verbcal.calibration.constraints import (
    Interval,
    Options,
    ParamConstraints,
    field,
    number,
    validate_params,
)
from verbcal.calibration.inputs import (
    as_matrix,
    as_targets,
    frame_library,
    is_frame,
    targets_are_names,
    to_frame,
)
from verbcal.calibration.rows import (
    FLOOR_GRID_STEP,
    SMALLEST_FLOOR,
    Array,
    CalibratorError,
    Counts,
    FloorLogits,
    FloorMode,
    apply_floor,
    check_probs,
    count_rows,
    describe_floor,
    distinct_rows,
    exact_map,
    fit_floor,
    parse_floor,
    weighted_nll,
)

FORMAT = "verbcal-calibrator"
VERSION = 2
"""Calibrator file version: 2 stores constructor ``params`` and learned ``state`` apart."""

MIN_ITEMS_PER_PARAMETER = 5
"""Fit warning below this many items per free parameter of an unregularised map."""
SEPARABLE_NLL = 1e-3
"""Fit warning when the in-sample NLL falls below this: the data are separable."""

METHODS: dict[str, type[Calibrator]] = {}
"""Calibrators by CLI name, filled by :func:`register`."""

C = TypeVar("C", bound="type[Calibrator]")


def register(cls: C) -> C:
    """Class decorator: make a calibrator known by its ``method`` name."""
    METHODS[cls.method] = cls
    return cls


class Calibrator(ABC):
    """Maps verbalized distributions to calibrated ones; fitted on labelled data."""

    method: ClassVar[str]
    summary: ClassVar[str]
    complexity: ClassVar[int] = 100
    """Rank used by ``auto``'s one-standard-error rule: lower is simpler."""
    uses_floor: ClassVar[bool] = True
    floor_fitted_with_temperature: ClassVar[bool] = False
    """True when ``floor="fit"`` picks the floor jointly with T and nothing else, so
    variants differing only in a fixed option may share it (the study does)."""
    floor_grid_step: ClassVar[float] = FLOOR_GRID_STEP
    floor_refine: ClassVar[bool] = True
    """Refine the best grid floor by a bounded scalar search (off for costly objectives)."""
    _estimator_type: ClassVar[str] = "classifier"
    _parameter_constraints: ClassVar[ParamConstraints] = {}
    """What each constructor argument accepts (see :mod:`~verbcal.calibration.constraints`):
    checked at ``fit``, when a file is loaded, and for spec options and CLI flags."""

    floor: float | str
    floor_mode: FloorMode
    provenance_: dict[str, Any]
    """Set by whoever fits (``verbcal fit``, ``recalibrate``); see :attr:`provenance`."""

    # ------------------------------------------------------------ sklearn protocol

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return list(_param_names(cls))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments as given (scikit-learn's estimator protocol)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> Calibrator:
        """Set constructor arguments; unknown names are an error. Takes effect at the next fit."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise CalibratorError(
                    f"{type(self).__name__} has no parameter {name!r}; it takes "
                    f"{', '.join(valid) or 'none'}"
                )
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags (imported only when scikit-learn itself asks)."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(),
            input_tags=InputTags(),
        )

    def __sklearn_is_fitted__(self) -> bool:
        return self.is_fitted

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "labels_")

    def _validate_params(self) -> None:
        """Raise :class:`~verbcal.calibration.constraints.ParameterError` on a constructor
        argument outside :attr:`_parameter_constraints`."""
        validate_params(self, self._parameter_constraints, where=self.method)

    # ------------------------------------------------------------ fit / predict

    def fit(
        self,
        X: Any,
        y: Any,
        sample_weight: ArrayLike | None = None,
        labels: Sequence[str] | None = None,
    ) -> Calibrator:
        """Fit from scratch on distributions ``X`` (n, K) and gold labels ``y``.

        ``labels`` names the columns (else a DataFrame's column names, else "0".."K-1");
        ``y`` holds label names or integer indices; ``sample_weight`` weights the items.
        Constructor arguments are validated first (:attr:`_parameter_constraints`).
        """
        self._validate_params()
        p, gold, weight = self._prepare(X, y, sample_weight, labels)
        data = count_rows(p, gold, weight)
        self.warnings_: list[str] = []
        self._floor_logits = FloorLogits(data.rows) if self.uses_floor else None
        try:
            self.floor_: float | None = self._choose_floor(data)
            self._fit(data)
            self.fit_info_: dict[str, float] = self._describe_fit(data)
        finally:  # a cache of this fit only: not part of the fitted state
            del self._floor_logits
        self.warnings_.extend(self._support_warnings(data))
        return self

    def _n_parameters(self, k: int) -> int:
        """Free parameters of the map for K classes that the items-per-parameter warning
        counts (0: not counted; one-parameter maps warn through their own checks)."""
        return 0

    def _support_warnings(self, data: Counts) -> list[str]:
        """Warnings when the data cannot support the fit (nothing for ``identity``):

        * a label with no item: nothing was learned about how often it is right;
        * fewer than :data:`MIN_ITEMS_PER_PARAMETER` items per free parameter of an
          unregularised map (no ``prior_sd``);
        * in-sample NLL below :data:`SEPARABLE_NLL`: the data are separable and the fit
          sharpens towards certainty (unless a warning already said why).
        """
        if self.method == "identity":
            return []
        out = []
        seen = data.counts.sum(axis=0)
        missing = [label for label, count in zip(self.labels_, seen, strict=True) if count <= 0]
        if missing:
            out.append(
                f"no fitting item has the gold label {', '.join(map(repr, missing))}: "
                f"{self.method} learns nothing about how often it is right, and its output "
                "there is a guess. Label items of every class"
            )
        params = self._n_parameters(len(self.labels_))
        unregularised = getattr(self, "prior_sd", None) is None
        if params and unregularised and data.n < MIN_ITEMS_PER_PARAMETER * params:
            out.append(
                f"{data.n:g} items for {params} free parameters of {self.method} (fewer "
                f"than {MIN_ITEMS_PER_PARAMETER} per parameter): the fit can follow noise. "
                "Label more items, or prefer temperature or a prior (e.g. matrix[prior=1])"
            )
        if not self.warnings_ and self.fit_info_["nll_after"] < SEPARABLE_NLL:
            out.append(
                f"in-sample NLL {self.fit_info_['nll_after']:.2g}: the fitting items are "
                f"separable and {self.method} sharpens towards certainty, so one wrong item "
                "later costs many nats. Label more items (including some errors) or prefer a "
                "regularised calibrator (temperature, auto)"
            )
        return out

    def predict_proba(self, X: Any, as_frame: bool = False) -> Any:
        """Calibrated distributions, (n, K), columns in ``labels_`` order.

        A DataFrame's columns are matched to the labels by name. ``as_frame=True`` returns a
        DataFrame (of the input's library; pandas for arrays) with one column per label.
        """
        if not self.is_fitted:
            raise CalibratorError(f"the {self.method} calibrator is not fitted: call fit() first")
        matrix, _ = as_matrix(X, self.labels_)
        p = check_probs(matrix)
        if p.shape[1] != len(self.labels_):
            raise CalibratorError(
                f"expected {len(self.labels_)} columns ({', '.join(self.labels_)}), got {p.shape[1]}"
            )
        rows, inverse = distinct_rows(p)
        q = self._predict(rows / rows.sum(axis=1, keepdims=True))[inverse]
        if as_frame:
            return to_frame(q, self.labels_, frame_library(X) if is_frame(X) else None)
        return q

    def predict(self, X: Any) -> NDArray[Any]:
        """The most probable label per row (``classes_`` values; ties go to the first label)."""
        q = self.predict_proba(X)
        return np.asarray(self.classes_)[np.argmax(q, axis=1)]

    # ------------------------------------------------------------ compatibility views

    @property
    def labels(self) -> tuple[str, ...] | None:
        """Label names in column order once fitted (read-only view of ``labels_``)."""
        return getattr(self, "labels_", None)

    @property
    def warnings(self) -> list[str]:
        """Problems of the last fit that a user must hear about (saved with the calibrator)."""
        return list(getattr(self, "warnings_", []))

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the fit came from, when recorded (see :func:`fit_provenance`); else empty.

        Saved as the file's optional top-level ``provenance`` object; a refit clears it."""
        return dict(getattr(self, "provenance_", None) or {})

    @property
    def fit_info(self) -> dict[str, float]:
        return dict(getattr(self, "fit_info_", {}))

    @property
    def state(self) -> dict[str, Any]:
        """The learned values beyond the floor, JSON-ready (empty before fit): what a file
        stores under ``state``. Constructor arguments are ``get_params()`` (``params`` in
        a file); each learned value is also an attribute ending in ``_``."""
        return self._state() if self.is_fitted else {}

    @property
    def params(self) -> dict[str, Any]:
        """Deprecated alias of :attr:`state` (learned values); constructor arguments are
        :meth:`get_params`."""
        warnings.warn(
            "Calibrator.params is the learned state: use .state (constructor arguments "
            "are .get_params())",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.state

    def describe_floor(self) -> str:
        """The floor in words: value, mode and whether it was fitted."""
        return describe_floor(
            getattr(self, "floor_", None), self.floor_mode_name, self.floor_is_fitted
        )

    @property
    def floor_mode_name(self) -> FloorMode:
        return getattr(self, "floor_mode", "clip")

    @property
    def floor_is_fitted(self) -> bool:
        return getattr(self, "floor", None) == "fit"

    # ------------------------------------------------------------ files

    def to_dict(self) -> dict[str, Any]:
        """A small versioned JSON-ready description of the fitted calibrator."""
        if not self.is_fitted:
            raise CalibratorError(f"the {self.method} calibrator is not fitted: nothing to save")
        return {
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "labels": list(self.labels_),
            "classes": "names" if self.classes_.dtype == object else "indices",
            "params": self.get_params(),
            "floor": {
                "mode": self.floor_mode_name,
                "value": self.floor_,
                "fitted": self.floor_is_fitted,
            },
            "state": self._state(),
            "fit": self.fit_info_,
            "warnings": self.warnings_,
        } | ({"provenance": dict(self.provenance_)} if getattr(self, "provenance_", None) else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        """Rebuild a fitted calibrator from :meth:`to_dict` output (format 1 or 2).

        Every value is checked here, the one place files are read: constructor ``params``
        by the same constraints ``fit`` uses, the floor, the labels and each learned value
        of ``state`` (finite, in range, of the right shape). A problem raises
        :class:`CalibratorError` naming the field (``state.temperature must be ...``).
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibratorError(
                "not a verbcal calibrator file (missing format 'verbcal-calibrator')"
            )
        version = number(data.get("version", 0), "version", [Interval(int, 0, None)])
        if version > VERSION:
            raise CalibratorError(
                f"calibrator version {data['version']} is newer than this verbcal: upgrade"
            )
        if version < 2:
            data = _upgrade_v1(data)
        method = data.get("method")
        if method not in METHODS:
            raise CalibratorError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise CalibratorError(f"params: must be an object, got {params!r}")
        takes = METHODS[method]._get_param_names()
        unknown = [name for name in params if name not in takes]
        if unknown:
            raise CalibratorError(
                f"params: {method} takes {', '.join(takes) or 'none'}, got {', '.join(unknown)}"
            )
        calibrator = METHODS[method](**params)
        try:
            calibrator._validate_params()
        except CalibratorError as exc:
            raise CalibratorError(f"params: {exc}") from exc
        labels = field(data, "labels", "file")
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(isinstance(label, str) for label in labels)
            or len(set(labels)) != len(labels)
        ):
            raise CalibratorError(
                f"labels must be a list of at least 2 distinct strings, got {labels!r}"
            )
        calibrator.labels_ = tuple(labels)
        kind = data.get("classes", "indices")
        if not Options("names", "indices").is_satisfied_by(kind):
            raise CalibratorError(f"classes must be 'names' or 'indices', got {kind!r}")
        calibrator.classes_ = _classes(calibrator.labels_, kind == "names")
        calibrator.floor_ = _loaded_floor(calibrator, data.get("floor", {}))
        calibrator._load_state(field(data, "state", "file"))
        fit = data.get("fit", {})
        if not isinstance(fit, dict):
            raise CalibratorError(f"fit must be an object, got {fit!r}")
        calibrator.fit_info_ = dict(fit)
        notes = data.get("warnings", [])
        if not isinstance(notes, list) or not all(isinstance(w, str) for w in notes):
            raise CalibratorError(f"warnings must be a list of strings, got {notes!r}")
        calibrator.warnings_ = list(notes)
        source = data.get("provenance")
        if source is not None:
            if not isinstance(source, dict):
                raise CalibratorError(
                    "provenance must be an object (created_at, n, data_sha256, ...), got "
                    f"{source!r}; remove it or refit"
                )
            calibrator.provenance_ = dict(source)
        return calibrator

    def save(self, path: str | Path) -> None:
        """Write the calibrator as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @staticmethod
    def load(path: str | Path) -> Calibrator:
        """Read a calibrator written by :meth:`save` (any format version up to this one)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CalibratorError(f"{path}: cannot read calibrator ({exc})") from exc
        try:
            return Calibrator.from_dict(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # CalibratorError too
            raise CalibratorError(f"{path}: {exc}") from exc

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({given})"

    # ------------------------------------------------------------ hooks

    @abstractmethod
    def _fit(self, data: Counts) -> None: ...

    @abstractmethod
    def _predict(self, rows: Array) -> Array: ...

    def _state(self) -> dict[str, Any]:
        """Learned parameters beyond the floor, JSON-ready."""
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:  # noqa: B027 (nothing learned by default)
        """Restore what :meth:`_state` wrote, checking each value (finite, in range, of the
        right shape for ``labels_``) with :mod:`~verbcal.calibration.constraints`' helpers;
        ``labels_`` is set before it runs."""

    def _objective(self, data: Counts, floor: float) -> float:
        """This calibrator's own fitted loss at ``floor`` (what ``floor="fit"`` minimises)."""
        raise NotImplementedError

    # ------------------------------------------------------------ helpers

    def _prepare(
        self,
        X: Any,
        y: Any,
        sample_weight: ArrayLike | None,
        labels: Sequence[str] | None,
    ) -> tuple[Array, NDArray[np.int64], Array | None]:
        """Checked inputs; sets ``labels_`` and ``classes_`` (everything learned is reset)."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)
        matrix, columns = as_matrix(X, labels)
        p = check_probs(matrix)
        names = tuple(str(label) for label in labels) if labels is not None else columns
        if names is None:
            if targets_are_names(y):
                raise CalibratorError(
                    "y holds label names but the columns are unnamed: pass labels=[...] in "
                    "column order, or a DataFrame whose columns are the labels"
                )
            names = tuple(str(k) for k in range(p.shape[1]))
        if len(names) != p.shape[1]:
            raise CalibratorError(f"{len(names)} labels for {p.shape[1]} columns")
        gold = as_targets(y, names)
        if len(gold) != len(p):
            raise CalibratorError(f"{len(p)} rows but {len(gold)} labels")
        weight = None
        if sample_weight is not None:
            weight = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
            if len(weight) != len(p):
                raise CalibratorError(f"{len(p)} rows but {len(weight)} sample weights")
            if not (
                np.all(np.isfinite(weight)) and weight.min(initial=0) >= 0 and weight.sum() > 0
            ):
                raise CalibratorError("sample_weight must be finite, non-negative and not all 0")
        self.labels_: tuple[str, ...] = names
        self.classes_: NDArray[Any] = _classes(names, targets_are_names(y))
        return p, gold, weight

    def _choose_floor(self, data: Counts) -> float | None:
        if not self.uses_floor:
            return None
        floor = parse_floor(self.floor)
        if floor != "fit":
            return float(floor)
        return fit_floor(
            data,
            self.floor_mode,
            lambda f: self._objective(data, f),
            self.floor_grid_step,
            self.floor_refine,
        )

    def logits(self, rows: Array) -> Array:
        """Estimated logits of normalised rows under the fitted floor."""
        floor = self.floor_ if self.floor_ is not None else SMALLEST_FLOOR
        table = getattr(self, "_floor_logits", None)  # set while fitting: the fit's rows
        if table is not None and table.rows is rows:
            return table(floor, self.floor_mode_name)
        return _logits(rows, floor, self.floor_mode_name)

    def _describe_fit(self, data: Counts) -> dict[str, float]:
        before = weighted_nll(_logits(data.rows, SMALLEST_FLOOR, "clip"), data.counts) / data.n
        after_q = np.maximum(self._predict(data.rows), 1e-12)
        after = float(-np.sum(data.counts * np.log(after_q))) / data.n
        floored = float(np.sum(data.totals[:, None] * (data.rows < (self.floor_ or 0.0))))
        return {
            "n": data.n,
            "nll_before": before,
            "nll_after": after,
            "floored_fraction": floored / (data.n * data.rows.shape[1]) if self.uses_floor else 0.0,
        }


def data_sha256(probs: ArrayLike, y: ArrayLike, labels: Sequence[str]) -> str:
    """sha256 of fitting data: the labels (newline-joined UTF-8), then the rows as float64
    and the gold indices as int64, little-endian, C order."""
    digest = hashlib.sha256("\n".join(labels).encode("utf-8"))
    digest.update(np.ascontiguousarray(np.asarray(probs, dtype="<f8")).tobytes())
    digest.update(np.ascontiguousarray(np.asarray(y, dtype="<i8")).tobytes())
    return digest.hexdigest()


def fit_provenance(
    probs: ArrayLike,
    y: ArrayLike,
    labels: Sequence[str],
    **known: Any,
) -> dict[str, Any]:
    """A ``provenance`` object for a calibrator fitted on ``probs``/``y``: ``created_at``
    (UTC, ISO 8601), ``n``, ``data_sha256`` (:func:`data_sha256`), plus the ``known``
    fields that are not None (e.g. ``model``, ``task_sha256``, ``source``, ``replaces``)."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    out: dict[str, Any] = {
        "created_at": stamp,
        "n": len(np.asarray(y)),
        "data_sha256": data_sha256(probs, y, labels),
    }
    return out | {k: v for k, v in known.items() if v is not None}


def _loaded_floor(calibrator: Calibrator, floor: Any) -> float | None:
    """The floor of a loaded file, checked: a number in (0, 1) for a calibrator that uses
    one (its mode matching ``params``), a fixed floor equal to the one in ``params``."""
    if not isinstance(floor, dict):
        raise CalibratorError(f"floor must be an object, got {floor!r}")
    value = floor.get("value")
    if value is None and not calibrator.uses_floor:
        return None
    value = number(value, "floor.value", [Interval(float, 0, 1, closed="neither")])
    mode = floor.get("mode", calibrator.floor_mode_name)
    if calibrator.uses_floor and mode != calibrator.floor_mode_name:
        raise CalibratorError(
            f"floor.mode is {mode!r} but params.floor_mode is {calibrator.floor_mode_name!r}"
        )
    given = getattr(calibrator, "floor", "fit")
    if calibrator.uses_floor and given != "fit" and float(given) != value:
        raise CalibratorError(f"floor.value {value!r} differs from params.floor {given!r}")
    return value


@functools.cache
def _param_names(cls: type) -> tuple[str, ...]:
    """A class's constructor argument names (read once per class: ``inspect`` is slow)."""
    signature = inspect.signature(cls.__init__)  # type: ignore[misc]
    return tuple(
        name
        for name, p in signature.parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


def _logits(rows: Array, floor: float, mode: FloorMode) -> Array:
    return exact_map(np.log, apply_floor(rows, floor, mode))


def _classes(labels: Sequence[str], names: bool) -> NDArray[Any]:
    return np.array(list(labels), dtype=object) if names else np.arange(len(labels))


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A format-1 file (learned values under ``params``) in format-2 form.

    Format 1's ``identity`` could carry a fitted floor: that is today's ``floor`` method.
    Its temperature was the maximum-likelihood fit (``prior_sd=None``).
    """
    method = data.get("method")
    floor = dict(data.get("floor") or {})
    value, mode, fitted = floor.get("value"), floor.get("mode", "clip"), bool(floor.get("fitted"))
    state = dict(data.get("params") or {})
    params: dict[str, Any] = {}
    if method == "identity" and (fitted or (value is not None and value != SMALLEST_FLOOR)):
        method = "floor"
    if method in ("floor", "temperature", "vector", "matrix", "platt"):
        params = {"floor": "fit" if fitted else value, "floor_mode": mode}
    if method == "temperature":
        params["prior_sd"] = None
    if method in ("vector", "matrix"):
        params["reg"] = float(state.pop("reg", 0.0))
    if method == "histogram" and state.get("maps"):
        params["bins"] = int(state["maps"][0]["bins"])
    if method == "identity":
        value = SMALLEST_FLOOR
    return {
        **data,
        "version": 2,
        "method": method,
        "params": params,
        "state": state,
        "floor": {"mode": mode, "value": value, "fitted": fitted},
    }


__all__ = [
    "FORMAT",
    "METHODS",
    "MIN_ITEMS_PER_PARAMETER",
    "SEPARABLE_NLL",
    "VERSION",
    "Calibrator",
    "CalibratorError",
    "data_sha256",
    "fit_provenance",
    "register",
]
