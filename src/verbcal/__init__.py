"""verbcal: turn the probabilities an LLM says into probabilities you can trust.

The few names a user needs::

    import verbcal

    preds = verbcal.read_predictions("predictions.jsonl")
    cal = verbcal.make_calibrator("auto").fit(preds.probs, preds.y, labels=preds.labels)
    cal.save("cal.json"); cal = verbcal.Calibrator.load("cal.json")
    q = cal.predict_proba(new_probs)
    verbcal.evaluate(q, y_new)                      # {"accuracy": ..., "nll": ..., ...}
    verbcal.threshold_for(q, y_new, cls=1, precision=0.9)

Everything else lives in the stage modules (:mod:`verbcal.calibration`,
:mod:`verbcal.metrics`, :mod:`verbcal.decide`, :mod:`verbcal.predictions`).
The names are imported on first use (PEP 562), so ``import verbcal.task`` or a Ray worker
that needs one stage does not pay for scipy and every other stage.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "METHODS": "verbcal.calibration",
    "Calibrator": "verbcal.calibration",
    "CalibratorError": "verbcal.calibration",
    "make_calibrator": "verbcal.calibration",
    "uncalibrated": "verbcal.calibration",
    "threshold_for": "verbcal.decide",
    "evaluate": "verbcal.metrics",
    "Predictions": "verbcal.predictions",
    "PredictionsError": "verbcal.predictions",
    "read_predictions": "verbcal.predictions",
}
"""Each top-level name and the module it comes from."""

__all__ = [
    "METHODS",
    "Calibrator",
    "CalibratorError",
    "Predictions",
    "PredictionsError",
    "__version__",
    "evaluate",
    "make_calibrator",
    "read_predictions",
    "threshold_for",
    "uncalibrated",
]


def _lazy(name: str) -> Any:
    """Import a top-level name from its module on first use (module ``__getattr__``)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'verbcal' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # type checkers see the names themselves
    from verbcal.calibration import (
        METHODS,
        Calibrator,
        CalibratorError,
        make_calibrator,
        uncalibrated,
    )
    from verbcal.decide import threshold_for
    from verbcal.metrics import evaluate
    from verbcal.predictions import Predictions, PredictionsError, read_predictions
else:
    __getattr__ = _lazy


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
