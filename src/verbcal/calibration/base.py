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

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

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

    floor: float | str
    floor_mode: FloorMode
    provenance_: dict[str, Any]
    """Set by whoever fits (``verbcal fit``, ``recalibrate``); see :attr:`provenance`."""

    # ------------------------------------------------------------ sklearn protocol

    @classmethod
    def _get_param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

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
        """
        p, gold, weight = self._prepare(X, y, sample_weight, labels)
        data = count_rows(p, gold, weight)
        self.warnings_: list[str] = []
        self.floor_: float | None = self._choose_floor(data)
        self._fit(data)
        self.fit_info_: dict[str, float] = self._describe_fit(data)
        return self

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
    def params(self) -> dict[str, Any]:
        """The learned parameters, JSON-ready (empty before fit)."""
        return self._state() if self.is_fitted else {}

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
        """Rebuild a fitted calibrator from :meth:`to_dict` output (format 1 or 2)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibratorError(
                "not a verbcal calibrator file (missing format 'verbcal-calibrator')"
            )
        version = int(data.get("version", 0))
        if version > VERSION:
            raise CalibratorError(
                f"calibrator version {data['version']} is newer than this verbcal: upgrade"
            )
        if version < 2:
            data = _upgrade_v1(data)
        method = data.get("method")
        if method not in METHODS:
            raise CalibratorError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        calibrator = METHODS[method](**data.get("params", {}))
        labels = tuple(str(label) for label in data["labels"])
        calibrator.labels_ = labels
        calibrator.classes_ = _classes(labels, data.get("classes") == "names")
        calibrator.floor_ = data.get("floor", {}).get("value")
        calibrator._load_state(data.get("state", {}))
        calibrator.fit_info_ = dict(data.get("fit", {}))
        calibrator.warnings_ = list(data.get("warnings", []))
        source = data.get("provenance")
        if source is not None:
            if not isinstance(source, dict):
                raise CalibratorError(
                    "field 'provenance' must be an object (created_at, n, data_sha256, ...);"
                    " remove it or refit"
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
        except CalibratorError as exc:
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
        """Restore what :meth:`_state` wrote."""

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
    "VERSION",
    "Calibrator",
    "CalibratorError",
    "data_sha256",
    "fit_provenance",
    "register",
]
