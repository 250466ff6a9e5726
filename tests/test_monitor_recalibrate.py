"""Guarded recalibration (core and ``verbcal recalibrate``) and calibrator provenance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from verbcal import datasets
from verbcal.calibration import Calibrator, CalibratorError, make_calibrator
from verbcal.calibration.base import data_sha256
from verbcal.cli import app
from verbcal.monitor.recalibrate import guarded_refit

runner = CliRunner()


def _reshaped(probs: np.ndarray, power: float) -> np.ndarray:
    """The same replies from a "changed model": every row raised to ``power`` (< 1 flattens), renormalised."""
    p = np.maximum(probs, 1e-3) ** power
    return p / p.sum(axis=1, keepdims=True)


def test_refit_wins_after_the_model_flattened_and_loses_without_a_change() -> None:
    data = datasets.load("recorded:tweets").labelled()
    old = make_calibrator("temperature").fit(data.probs, data.y, labels=data.labels)
    changed = _reshaped(data.probs, 0.3)
    win = guarded_refit(old, changed, data.y, data.labels)
    assert win.better and win.new_nll < win.old_nll and win.p_value < 0.05
    same = guarded_refit(old, data.probs, data.y, data.labels)
    assert not same.better and "not" in same.reason


def test_too_little_feedback_is_refused_clearly() -> None:
    data = datasets.load("recorded:tweets").labelled()
    old = make_calibrator("temperature").fit(data.probs, data.y, labels=data.labels)
    with pytest.raises(CalibratorError, match="too few"):
        guarded_refit(old, data.probs[:12], data.y[:12], data.labels)


def test_provenance_round_trips_and_is_optional(tmp_path: Path) -> None:
    data = datasets.load("recorded:tweets").labelled()
    path = tmp_path / "ts.json"
    result = runner.invoke(
        app, ["fit", "--method", "temperature", "--data", "recorded:tweets", "--out", str(path)]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads(path.read_text())
    prov = saved["provenance"]
    assert prov["n"] == len(data.y) and prov["source"] == "recorded:tweets"
    assert prov["data_sha256"] == data_sha256(data.probs, data.y, data.labels)
    assert Calibrator.load(path).provenance == prov
    saved.pop("provenance")
    assert Calibrator.from_dict(saved).provenance == {}
    with pytest.raises(CalibratorError, match="provenance"):
        Calibrator.from_dict({**saved, "provenance": "yesterday"})


def test_cli_writes_only_when_better_and_records_what_it_replaced(tmp_path: Path) -> None:
    old = tmp_path / "ts.json"
    assert (
        runner.invoke(
            app, ["fit", "--method", "temperature", "--data", "recorded:tweets", "--out", str(old)]
        ).exit_code
        == 0
    )
    data = datasets.load("recorded:tweets").labelled()
    records = [json.loads(line) for line in datasets.resolve("recorded:tweets").open()]
    same, changed = tmp_path / "same.jsonl", tmp_path / "changed.jsonl"
    same.write_text("".join(json.dumps(r) + "\n" for r in records))
    sharp = _reshaped(data.probs, 0.3)
    changed.write_text(
        "".join(
            json.dumps(
                {
                    "id": i,
                    "label": data.labels[g],
                    "probs": dict(zip(data.labels, row.tolist(), strict=True)),
                }
            )
            + "\n"
            for i, g, row in zip(data.ids, data.y, sharp, strict=True)
        )
    )
    new = tmp_path / "new.json"
    kept = runner.invoke(
        app, ["recalibrate", "--calibrator", str(old), "--feedback", str(same), "--out", str(new)]
    )
    assert kept.exit_code == 0 and "nothing written" in kept.output and not new.exists()
    before = hashlib.sha256(old.read_bytes()).hexdigest()
    wrote = runner.invoke(
        app,
        ["recalibrate", "--calibrator", str(old), "--feedback", str(changed), "--out", str(new)],
    )
    assert wrote.exit_code == 0 and "wrote" in wrote.output, wrote.output
    prov = Calibrator.load(new).provenance
    assert prov["replaces"]["sha256"] == before and prov["replaces"]["path"] == str(old)
    assert prov["comparison"]["better"] and prov["n"] == prov["comparison"]["n_fit"]


def test_cli_reads_feedback_from_the_service_log(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from verbcal.serve.monitoring import PredictionLog
    from verbcal.serve.registry import load_one

    old = tmp_path / "ts.json"
    data = datasets.load("recorded:tweets").labelled()
    make_calibrator("temperature").fit(data.probs, data.y, labels=data.labels).save(old)
    served = load_one("tweets", str(old))
    log = PredictionLog(tmp_path / "log.sqlite")
    flat = _reshaped(data.probs, 0.3)  # the model behind the name changed
    q = served.calibrator.predict_proba(flat)
    log.log(served, "v1", data.ids, flat, q.tolist())
    log.label([("tweets", i, data.labels[g]) for i, g in zip(data.ids, data.y, strict=True)])
    log.close()
    new = tmp_path / "new.json"
    args = ["recalibrate", "--calibrator", str(old), "--feedback", str(tmp_path / "log.sqlite")]
    result = runner.invoke(app, [*args, "--out", str(new)])
    assert result.exit_code == 0 and "wrote" in result.output, result.output
    assert Calibrator.load(new).provenance["comparison"]["n_holdout"] >= 50
    wrong = runner.invoke(app, [*args, "--out", str(new), "--model", "bbc"])
    assert wrong.exit_code == 2 and "'bbc'" in wrong.output
