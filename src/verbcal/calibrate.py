"""Old import path of :mod:`verbcal.calibration`, kept for one release (a thin re-export)."""

from verbcal.calibration import *  # noqa: F403
from verbcal.calibration import __all__ as __all__
