"""Calibration in production: label-free accuracy estimates, shift tests and alarms.

Core (numpy and scipy only). :class:`Reference` holds a labelled reference sample of
calibrated predictions; :func:`monitor` turns a stream (cut into :class:`Window` s) into
one row per window with CBPE, ATC and BBSE estimates and their CIs, shift tests, realised
metrics where labels exist, and alarms whose false-alarm rate per stream is stated by
:class:`AlarmPolicy`.
"""

from __future__ import annotations

from verbcal.monitor.estimate import (
    Estimate,
    Labelled,
    MonitorError,
    Reference,
    atc,
    atc_fit,
    atc_scores,
    bbse,
    bbse_weights,
    cbpe,
    labelled,
)
from verbcal.monitor.familywise import calibrate, min_p_cutoff, simulate_min_p
from verbcal.monitor.shift import (
    CUSUM_SIGNALS,
    P_RULES,
    P_SIGNALS,
    PAST_SIGNALS,
    SIGNALS,
    AlarmPolicy,
    Cutoff,
    bbse_accuracy_contrast,
    confidence_group,
    confidence_groups,
    confidence_shift,
    cusum_threshold,
    label_mix_shift,
)
from verbcal.monitor.stream import (
    Window,
    count_windows,
    monitor,
    parse_every,
    parse_time,
    time_windows,
)

__all__ = [
    "CUSUM_SIGNALS",
    "PAST_SIGNALS",
    "P_RULES",
    "P_SIGNALS",
    "SIGNALS",
    "AlarmPolicy",
    "Cutoff",
    "Estimate",
    "Labelled",
    "MonitorError",
    "Reference",
    "Window",
    "atc",
    "atc_fit",
    "atc_scores",
    "bbse",
    "bbse_accuracy_contrast",
    "bbse_weights",
    "calibrate",
    "cbpe",
    "confidence_group",
    "confidence_groups",
    "confidence_shift",
    "count_windows",
    "cusum_threshold",
    "label_mix_shift",
    "labelled",
    "min_p_cutoff",
    "monitor",
    "parse_every",
    "parse_time",
    "simulate_min_p",
    "time_windows",
]
