"""The top-level API: the few names ``import verbcal`` gives, and Predictions <-> DataFrames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import verbcal
from verbcal.metrics import summary


def test_top_level_names_cover_the_main_job(tmp_path: Path) -> None:
    preds = verbcal.read_predictions("src/verbcal/data/recorded/tweets.jsonl").labelled()
    cal = verbcal.make_calibrator("temperature").fit(preds.probs, preds.y, labels=preds.labels)
    cal.save(tmp_path / "cal.json")
    loaded = verbcal.Calibrator.load(tmp_path / "cal.json")
    q = loaded.predict_proba(preds.probs)
    scores = verbcal.evaluate(q, preds.y)
    assert scores == summary(q, preds.y)
    names = np.array(preds.labels)[preds.y]
    assert verbcal.evaluate(q, names, labels=preds.labels) == scores
    result = verbcal.threshold_for(q, preds.y, 0, precision=0.8)
    assert result.reachable in (True, False)
    assert set(verbcal.__all__) >= {
        "read_predictions",
        "make_calibrator",
        "Calibrator",
        "evaluate",
        "threshold_for",
    }
    assert (Path(verbcal.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize("module", ["verbcal", "verbcal.engines.ray_elicit"])
def test_import_is_lazy_and_every_top_level_name_imports(module: str) -> None:
    """``import verbcal`` (and a Ray elicit actor's import) loads no calibration or scipy."""
    code = f"""
import sys
import {module}
heavy = [m for m in ("scipy", "verbcal.calibration", "verbcal.decide") if m in sys.modules]
assert not heavy, heavy
import verbcal
from verbcal import *
from verbcal.calibration import Calibrator
assert all(name in globals() for name in verbcal.__all__)
assert verbcal.Calibrator is Calibrator and set(verbcal.__all__) <= set(dir(verbcal))
try:
    verbcal.no_such_name
except AttributeError as exc:
    assert "no_such_name" in str(exc)
else:
    raise AssertionError("verbcal.no_such_name did not raise")
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_takes_a_dataframe_matched_by_name() -> None:
    pd = pytest.importorskip("pandas")
    q = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    frame = pd.DataFrame({"pos": q[:, 1], "neg": q[:, 0]})
    y = ["neg", "pos", "pos"]
    assert verbcal.evaluate(frame, y, labels=["neg", "pos"]) == summary(q, [0, 1, 1])
    with pytest.raises(verbcal.CalibratorError, match="y holds floats"):
        verbcal.evaluate(q, [0.0, 1.0, 0.5])


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_predictions_round_trip_through_a_frame(library: str) -> None:
    pytest.importorskip(library)
    preds = verbcal.read_predictions("src/verbcal/data/recorded/drug-reviews.jsonl")
    frame = preds.to_frame(library)
    assert list(frame.columns) == ["id", "label", *preds.labels]
    back = verbcal.Predictions.from_frame(frame)
    assert back.labels == preds.labels and back.ids == preds.ids
    np.testing.assert_array_equal(back.y, preds.y)
    np.testing.assert_allclose(back.probs, preds.probs, rtol=1e-15)
    bad = preds.to_frame(library)
    if library == "pandas":
        bad.loc[0, "label"] = "mixed"
    else:
        bad = bad.with_columns(bad["label"].scatter(0, "mixed"))
    with pytest.raises(verbcal.PredictionsError, match="'mixed' are not among"):
        verbcal.Predictions.from_frame(bad)
