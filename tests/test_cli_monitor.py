"""``verbcal monitor`` end to end on files built from bundled recorded data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from verbcal import datasets
from verbcal.calibration import make_calibrator
from verbcal.cli import app

runner = CliRunner()


def _files(tmp_path: Path, shifted: bool = False) -> tuple[Path, Path, Path]:
    records = [json.loads(line) for line in datasets.resolve("recorded:tweets").open()]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(records))
    ref, test = [records[i] for i in perm[:100]], [records[i] for i in perm[100:]]
    ref_path = tmp_path / "ref.jsonl"
    ref_path.write_text("".join(json.dumps(r) + "\n" for r in ref))
    p = datasets.load(ref_path).labelled()
    cal = tmp_path / "ts.json"
    make_calibrator("temperature").fit(p.probs, p.y, labels=p.labels).save(cal)
    hard = [r for r in test if r["label"] == "neutral"]
    live = tmp_path / "live.jsonl"
    with live.open("w") as handle:
        for i in range(3000):
            pool = hard if shifted and i >= 1500 else test
            record = dict(pool[int(rng.integers(len(pool)))])
            record["item"] = record["id"]  # 101 items, each seen again and again
            record["id"] = f"s{i}"
            record["ts"] = f"2026-01-{1 + i // 500:02d}T{(i % 500) * 24 // 500:02d}:00:00Z"
            if i % 3:
                record.pop("label")
            handle.write(json.dumps(record) + "\n")
    return cal, ref_path, live


def test_monitor_by_time_writes_json_and_report(tmp_path: Path) -> None:
    cal, ref, live = _files(tmp_path)
    out = tmp_path / "mon"
    args = ["monitor", "--calibrator", str(cal), "--reference", str(ref), "--data", str(live)]
    result = runner.invoke(app, [*args, "--out", str(out), "--time-field", "ts", "--every", "1d"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "monitor.json").read_text())
    rows = data["windows"]
    assert [r["n"] for r in rows] == [500] * 6
    assert rows[0]["window"] == "2026-01-01T00:00:00Z"
    for key in (
        "est_accuracy_cbpe",
        "est_accuracy_atc",
        "est_accuracy_cbpe_low",
        "accuracy",
        "shift_p",
    ):
        assert all(r[key] is not None for r in rows)
    assert all(r["n_labelled"] in (166, 167) for r in rows)
    assert not any(r["alarm"] for r in rows)
    policy = data["policy"]  # the p-value family's rule and cutoff are stated
    assert policy["p_rule"] == "min-p" and policy["p_simulations"] == 300
    assert policy["p_share"] + policy["cusum_share"] == pytest.approx(0.05)
    assert all(r["p_cutoff"] == policy["per_test"] and r["p_rule"] == "min-p" for r in rows)
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Accuracy over time" in html
    assert "min-p" in html and "Bonferroni&#x27;s would be" in html
    bonf = runner.invoke(
        app,
        [*args, "--out", str(out), "--time-field", "ts", "--every", "1d", "--p-rule", "bonferroni"],
    )
    assert bonf.exit_code == 0, bonf.output
    policy = json.loads((out / "monitor.json").read_text())["policy"]
    assert policy["p_rule"] == "bonferroni" and policy["per_test"] == pytest.approx(0.05 / 240)


def test_monitor_by_count_alarms_on_a_label_shift_and_prints_json(tmp_path: Path) -> None:
    cal, ref, live = _files(tmp_path, shifted=True)
    out = tmp_path / "mon"
    args = ["monitor", "--calibrator", str(cal), "--reference", str(ref), "--data", str(live)]
    result = runner.invoke(app, [*args, "--out", str(out), "--window", "250", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["windows"]
    assert len(rows) == 12
    assert not any(r["alarm"] for r in rows[:6])
    assert all(r["alarm"] and "label_mix_shift" in r["signal"] for r in rows[6:])
    assert all(r["label_shift_fit_p"] >= 0.01 for r in rows[6:])  # pure label shift fits
    assert all(r["est_accuracy_bbse_low"] <= r["est_accuracy_bbse"] for r in rows)


def test_monitor_errors_name_what_to_fix(tmp_path: Path) -> None:
    cal, ref, live = _files(tmp_path)
    args = ["monitor", "--calibrator", str(cal), "--reference", str(ref), "--data", str(live)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "o"), "--time-field", "ts"])
    assert result.exit_code == 2 and "--every" in result.output
    result = runner.invoke(
        app, [*args, "--out", str(tmp_path / "o"), "--time-field", "when", "--every", "1d"]
    )
    assert result.exit_code == 2 and "'when'" in result.output


def test_monitor_counts_repeated_items_by_item_field(tmp_path: Path) -> None:
    """Row ids are unique (as in every predictions file); --item-field says which rows are
    one item seen again, and the windows count distinct items."""
    cal, ref, live = _files(tmp_path)
    args = ["monitor", "--calibrator", str(cal), "--reference", str(ref), "--data", str(live)]
    args += ["--out", str(tmp_path / "o"), "--window", "500", "--json"]
    fresh = json.loads(runner.invoke(app, args).output)
    assert fresh["item_field"] is None
    assert all(r["n_effective"] == pytest.approx(500) for r in fresh["windows"])
    repeated = runner.invoke(app, [*args, "--item-field", "item"])
    assert repeated.exit_code == 0, repeated.output
    result = json.loads(repeated.output)
    assert result["item_field"] == "item"
    # 500 draws from 101 items: Kish's effective size is about 500 / (1 + 500 / 101)
    assert all(60 < r["n_effective"] < 100 for r in result["windows"])
    assert all(  # fewer distinct items: wider intervals
        r["est_accuracy_high"] - r["est_accuracy_low"]
        > f["est_accuracy_high"] - f["est_accuracy_low"]
        for r, f in zip(result["windows"], fresh["windows"], strict=True)
    )
    missing = runner.invoke(app, [*args, "--item-field", "prompt"])
    assert missing.exit_code == 2 and "'prompt'" in missing.output and "item" in missing.output
