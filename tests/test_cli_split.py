"""``verbcal split`` and the parts ``verbcal run`` writes: the same split for the same seed."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from verbcal.cli import app

runner = CliRunner(env={"COLUMNS": "250"})


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().split("\n")[:-1]]


def test_split_matches_the_split_of_run(tmp_path: Path) -> None:
    parts, run_dir = tmp_path / "parts", tmp_path / "run"
    code, out, err = invoke(
        "split", "--data", "recorded:drug-reviews", "--seed", "7", "--out", parts
    )
    assert code == 0, err
    assert "wrote 95 calibration records" in out and "95 test records" in out
    code, _, err = invoke(
        "run", "--data", "recorded:drug-reviews", "--seed", "7", "--out", run_dir,
        "--methods", "temperature", "--boot", "20", "--no-report",
    )  # fmt: skip
    assert code == 0, err
    split = json.loads((run_dir / "split.json").read_text())
    for part in ("calibration", "test"):
        assert ids(parts / f"{part}.jsonl") == ids(run_dir / f"{part}.jsonl") == split[part]
    assert (parts / "test.jsonl").read_text() == (run_dir / "test.jsonl").read_text()


def test_split_is_stratified_and_records_are_kept_whole(tmp_path: Path) -> None:
    code, _, _ = invoke(
        "split", "--data", "recorded:tweets", "--calib-frac", "0.3", "--out", tmp_path
    )
    assert code == 0
    calib = [json.loads(x) for x in (tmp_path / "calibration.jsonl").read_text().split("\n")[:-1]]
    test = [json.loads(x) for x in (tmp_path / "test.jsonl").read_text().split("\n")[:-1]]
    assert len(calib) == round(0.3 * 201) and len(calib) + len(test) == 201
    assert {r["id"] for r in calib}.isdisjoint(r["id"] for r in test)
    assert set(calib[0]) >= {"id", "text", "label", "probs"}
    for label in ("negative", "neutral", "positive"):
        share = sum(r["label"] == label for r in calib) / len(calib)
        overall = sum(r["label"] == label for r in calib + test) / 201
        assert abs(share - overall) < 0.02


def test_split_refuses_to_overwrite_and_checks_the_share(tmp_path: Path) -> None:
    assert invoke("split", "--data", "recorded:tweets", "--out", tmp_path)[0] == 0
    code, _, err = invoke("split", "--data", "recorded:tweets", "--out", tmp_path)
    assert code == 2 and "already holds a split; pass --overwrite" in err
    assert invoke("split", "--data", "recorded:tweets", "--out", tmp_path, "--overwrite")[0] == 0
    code, _, err = invoke(
        "split", "--data", "recorded:tweets", "--out", tmp_path / "x", "--calib-frac", "1"
    )
    assert code == 2 and "--calib-frac" in err and not (tmp_path / "x").exists()


def test_run_writes_the_recommended_calibrator_where_apply_finds_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, _, err = invoke(
        "run", "--data", "recorded:tweets", "--out", run_dir, "--boot", "20", "--no-report"
    )
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    recommended = run_dir / "calibrators" / f"{metrics['recommended']}.json"
    assert (run_dir / "recommended.json").read_text() == recommended.read_text()
    code, _, err = invoke(
        "apply", "--calibrator", run_dir / "recommended.json", "--data", run_dir / "test.jsonl",
        "--out", tmp_path / "calibrated.jsonl",
    )  # fmt: skip
    assert code == 0, err
    assert len(ids(tmp_path / "calibrated.jsonl")) == metrics["n_test"]


def test_run_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = invoke("run", "--data", "recorded:tweets", "--out", target)
    assert code == 2 and "is a file: --out names the run directory" in err


def test_split_refuses_duplicate_ids(tmp_path: Path) -> None:
    """Before: split.json listed an id in both parts."""
    data = tmp_path / "dup.jsonl"
    rows = [
        {
            "id": str(i % 15),
            "probs": {"a": 0.3 + 0.01 * i, "b": 0.7 - 0.01 * i},
            "label": "ab"[i % 2],
        }
        for i in range(30)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = invoke("split", "--data", data, "--out", tmp_path / "parts")
    assert code == 2
    assert "duplicate id '0' (first on line 1, again on line 16)" in err.replace("\n", "")
    assert not (tmp_path / "parts").exists()
