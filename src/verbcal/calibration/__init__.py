"""Calibrators for verbalized distributions: invert softmax, temperature scaling and friends.

The paper's method (Wang et al., arXiv 2410.06707): estimate logits from the verbalized
probabilities, ``z_i = log(max(p_i, floor))`` after normalising p to sum 1, then apply
temperature scaling ``softmax(z / T)``. Modules, one per concern:

* :mod:`~verbcal.calibration.base`: the protocol (scikit-learn conventions) and the file format;
* :mod:`~verbcal.calibration.rows`: distinct rows with counts, floors, the temperature solver;
* :mod:`~verbcal.calibration.inputs`: arrays and pandas / polars DataFrames, label names;
* :mod:`~verbcal.calibration.scaling`: identity, floor, temperature, resoftmax, vector, matrix;
* :mod:`~verbcal.calibration.one_vs_rest`: platt, isotonic, histogram;
* :mod:`~verbcal.calibration.words`: words (confidence stated in words, read through a lexicon);
* :mod:`~verbcal.calibration.auto`: the calibrator chosen by cross-validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from verbcal.calibration.auto import (
    DEFAULT_CANDIDATES,
    VERBAL_CANDIDATES,
    AutoCalibrator,
    candidates_for,
)
from verbcal.calibration.base import FORMAT, METHODS, VERSION, Calibrator
from verbcal.calibration.one_vs_rest import (
    OUTPUT_FLOOR,
    HistogramBinning,
    IsotonicCalibration,
    PlattScaling,
)
from verbcal.calibration.rows import (
    BETA_BOUNDS,
    SMALLEST_FLOOR,
    CalibratorError,
    Counts,
    FloorMode,
    apply_floor,
    check_probs,
    count_rows,
    distinct_rows,
    fit_floor,
    fit_inverse_temperature,
    invert_softmax,
    normalise,
    parse_floor,
    softmax,
    weighted_nll,
)
from verbcal.calibration.scaling import (
    DEFAULT_PRIOR_SD,
    FloorCalibration,
    Identity,
    MatrixScaling,
    ReSoftmax,
    TemperatureScaling,
    VectorScaling,
    uncalibrated,
)
from verbcal.calibration.specs import (
    UNCALIBRATED,
    MethodError,
    Variant,
    parse_spec,
    parse_specs,
    split_specs,
)
from verbcal.calibration.words import WordsCalibration

ORDER = (
    "identity",
    "floor",
    "temperature",
    "resoftmax",
    "vector",
    "matrix",
    "platt",
    "isotonic",
    "histogram",
    "words",
    "auto",
)
"""How methods are listed (``all``, help texts, tables): baseline first, then by family."""
_registered = dict(METHODS)
METHODS.clear()
METHODS.update({name: _registered[name] for name in (*ORDER, *_registered) if name in _registered})


def method_options(method: str, **options: Any) -> dict[str, Any]:
    """The ``options`` that ``method``'s constructor takes (others dropped): for shared CLI flags."""
    if method not in METHODS:
        raise CalibratorError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    names = METHODS[method]._get_param_names()
    return {k: v for k, v in options.items() if k in names}


def make_calibrator(method: str, reply: str = "probs", **options: Any) -> Calibrator:
    """A new, unfitted calibrator by name (see :data:`METHODS`) or by a spec such as
    ``"vector[reg=0.1]"`` (see :mod:`~verbcal.calibration.specs`); ``options`` override
    the spec's. ``reply="verbal"`` (data read from confidence in words) gives ``auto`` the
    candidates :data:`VERBAL_CANDIDATES` (with ``words``) unless the spec names its own."""
    variant = parse_spec(method)
    return variant.make(**options, **reply_options(variant, reply, options))


def reply_options(variant: Variant, reply: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options data read from ``reply`` add to ``variant``: on ``verbal`` replies,
    ``auto`` gets :func:`candidates_for`'s candidates (with ``words``) unless its spec or
    ``options`` name their own; nothing otherwise."""
    if (
        reply == "verbal"
        and variant.method == "auto"
        and "candidates" not in options
        and "candidates" not in variant.kwargs
    ):
        return {"candidates": list(candidates_for(reply))}
    return {}


def clone(calibrator: Calibrator) -> Calibrator:
    """A new unfitted calibrator with the same constructor arguments."""
    return type(calibrator)(**calibrator.get_params())


__all__ = [
    "BETA_BOUNDS",
    "DEFAULT_CANDIDATES",
    "DEFAULT_PRIOR_SD",
    "FORMAT",
    "METHODS",
    "OUTPUT_FLOOR",
    "SMALLEST_FLOOR",
    "UNCALIBRATED",
    "VERBAL_CANDIDATES",
    "VERSION",
    "AutoCalibrator",
    "Calibrator",
    "CalibratorError",
    "Counts",
    "FloorCalibration",
    "FloorMode",
    "HistogramBinning",
    "Identity",
    "IsotonicCalibration",
    "MatrixScaling",
    "MethodError",
    "PlattScaling",
    "ReSoftmax",
    "TemperatureScaling",
    "Variant",
    "VectorScaling",
    "WordsCalibration",
    "apply_floor",
    "candidates_for",
    "check_probs",
    "clone",
    "count_rows",
    "distinct_rows",
    "fit_floor",
    "fit_inverse_temperature",
    "invert_softmax",
    "make_calibrator",
    "method_options",
    "normalise",
    "parse_floor",
    "parse_spec",
    "parse_specs",
    "reply_options",
    "softmax",
    "split_specs",
    "uncalibrated",
    "weighted_nll",
]
