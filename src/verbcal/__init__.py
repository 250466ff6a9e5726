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
"""

__version__ = "0.1.0"

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
