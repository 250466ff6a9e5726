"""Windows by count and time, and whole-stream monitoring on bundled recorded data."""

from __future__ import annotations

import numpy as np
import pytest

from verbcal import datasets
from verbcal.calibration import make_calibrator
from verbcal.monitor import (
    MonitorError,
    Reference,
    count_windows,
    monitor,
    parse_every,
    parse_time,
    time_windows,
)


def test_count_windows_keep_a_last_half_window() -> None:
    assert [len(w.index) for w in count_windows(1250, 500)] == [500, 500, 250]
    assert [len(w.index) for w in count_windows(1100, 500)] == [500, 500]


def test_time_windows_bucket_by_every_and_skip_empty_ones() -> None:
    day = parse_every("1d")
    assert day == 86400 and parse_every("6h") == 21600
    times = [
        parse_time(t, "x")
        for t in ("2026-01-01T00:00:00Z", "2026-01-01T23:00:00Z", "2026-01-03T01:00:00")
    ]
    windows = time_windows(times, day)
    assert [w.index.tolist() for w in windows] == [[0, 1], [2]]
    assert windows[0].start == "2026-01-01T00:00:00Z" and windows[1].start == "2026-01-03T00:00:00Z"
    with pytest.raises(MonitorError, match="--every"):
        parse_every("daily")
    with pytest.raises(MonitorError, match="ISO 8601"):
        parse_time("yesterday", "line 3")


def _setup(seed: int) -> tuple[Reference, object, np.ndarray, np.ndarray]:
    data = datasets.load("recorded:tweets").labelled()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(data.y))
    ref_idx, test_idx = perm[:100], perm[100:]
    cal = make_calibrator("temperature").fit(
        data.probs[ref_idx], data.y[ref_idx], labels=data.labels
    )
    ref = Reference.build(cal.predict_proba(data.probs[ref_idx]), data.y[ref_idx], data.labels)
    return ref, cal, data.probs[test_idx], data.y[test_idx]


def test_stationary_stream_rows_and_no_alarm() -> None:
    ref, cal, probs, y = _setup(0)
    rng = np.random.default_rng(1)
    idx = rng.choice(len(y), 500 * 8)
    rows = monitor(ref, cal.predict_proba(probs[idx]), count_windows(len(idx), 500), y[idx])  # type: ignore[attr-defined]
    assert len(rows) == 8 and not any(r["alarm"] for r in rows)
    for row in rows:
        for key in ("est_accuracy_cbpe", "est_accuracy_atc", "accuracy", "shift_p", "ece", "nll"):
            assert 0 <= row[key] <= (10 if key == "nll" else 1)
        assert (
            row["est_accuracy_cbpe_low"]
            <= row["est_accuracy_cbpe"]
            <= row["est_accuracy_cbpe_high"]
        )
        assert sum(row["confidence_hist"]) == 500


def test_label_shift_towards_errors_raises_a_named_alarm() -> None:
    ref, cal, probs, y = _setup(2)
    q = cal.predict_proba(probs)
    wrong = np.flatnonzero(q.argmax(axis=1) != y)
    rng = np.random.default_rng(3)
    before = rng.choice(len(y), 500 * 5)
    after = np.concatenate([rng.choice(len(y), 250 * 3), rng.choice(wrong, 250 * 3)])
    after = after.reshape(2, 3, 250).transpose(1, 0, 2).reshape(-1)
    idx = np.concatenate([before, after])
    rows = monitor(ref, q[idx], count_windows(len(idx), 500))
    assert not any(r["alarm"] for r in rows[:5])
    assert rows[5]["alarm"] and "accuracy_change" in rows[5]["signal"]
    assert rows[5]["est_accuracy"] < rows[0]["est_accuracy"]
    assert "labelled_accuracy_drop" not in (rows[5]["signal"] or "")  # no labels given


def test_signals_against_the_streams_own_past_are_named_and_quiet_when_stationary() -> None:
    ref, cal, probs, y = _setup(4)
    q = cal.predict_proba(probs)
    wrong = np.flatnonzero(q.argmax(axis=1) != y)
    rng = np.random.default_rng(5)
    quiet = rng.choice(len(y), 500 * 20)
    rows = monitor(ref, q[quiet], count_windows(len(quiet), 500))
    assert not any(r["alarm"] for r in rows)
    assert rows[0]["p_values"]["label_mix_vs_past"] is None  # nothing earlier to pool
    assert all(r["p_values"]["accuracy_vs_past"] is not None for r in rows[1:])
    # from window 11, one row in six is an item the model gets wrong (a drop of ~5 points)
    after = np.where(
        rng.random(500 * 10) < 1 / 6, rng.choice(wrong, 500 * 10), rng.choice(len(y), 500 * 10)
    )
    idx = np.concatenate([quiet[: 500 * 10], after])
    rows = monitor(ref, q[idx], count_windows(len(idx), 500))
    assert not any(r["alarm"] for r in rows[:10])
    first = next(i for i, r in enumerate(rows) if r["alarm"])
    assert first in (10, 11)
    assert any(s.endswith("_vs_past") for s in rows[first]["signal"].split(","))


def test_rows_name_the_estimates_whose_interval_misses_the_headlines() -> None:
    ref, cal, probs, y = _setup(0)
    rng = np.random.default_rng(6)
    idx = rng.choice(len(y), 500 * 3)
    q = cal.predict_proba(probs[idx])
    rows = monitor(ref, q, count_windows(len(idx), 500))
    assert all(r["estimates_disagree"] == [] for r in rows)  # one distribution, one story
    # a model that got much less confident (same predictions): CBPE follows the confidence
    # down, ATC finds next to no row over its threshold, and the two intervals part
    flat = q**0.3 / np.sum(q**0.3, axis=1, keepdims=True)
    rows = monitor(ref, flat, count_windows(len(idx), 500))
    for row in rows:
        apart = (
            row["est_accuracy_atc_high"] < row["est_accuracy_low"]
            or row["est_accuracy_atc_low"] > row["est_accuracy_high"]
        )
        assert ("atc" in row["estimates_disagree"]) == apart
    assert any("atc" in r["estimates_disagree"] for r in rows)
