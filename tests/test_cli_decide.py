"""`verbcal threshold` and `verbcal selective` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from verbcal import datasets
from verbcal.calibration import make_calibrator
from verbcal.cli import app
from verbcal.decide import abstain_band, accuracy_at_coverage, aurc, threshold_for

runner = CliRunner(env={"COLUMNS": "200"})
THRESHOLD_KEYS = {
    "threshold",
    "precision",
    "precision_lower_bound",
    "recall",
    "support",
    "reachable",
}


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def write_blocks(path: Path, *parts: tuple[float, int, int]) -> Path:
    """A predictions file from (P(yes), n items, n labelled yes) blocks."""
    lines = []
    for score, n, pos in parts:
        for i in range(n):
            probs = {"no": round(1 - score, 6), "yes": score}
            lines.append(
                json.dumps(
                    {"id": f"{score}-{i}", "probs": probs, "label": "yes" if i < pos else "no"}
                )
            )
    path.write_text("\n".join(lines) + "\n")
    return path


def blocks_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The data of ``blocks_file`` as (probs, y) arrays, label order (no, yes)."""
    s = np.array([0.9] * 100 + [0.5] * 50 + [0.1] * 50)
    y = np.array([1] * 125 + [0] * 75)
    return np.c_[1 - s, s], y


@pytest.fixture
def blocks_file(tmp_path: Path) -> Path:
    return write_blocks(tmp_path / "p.jsonl", (0.9, 100, 100), (0.5, 50, 25), (0.1, 50, 0))


@pytest.mark.parametrize("command", ["threshold", "selective"])
def test_help_has_an_example(command: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0
    assert f"Example: verbcal {command}" in out


def test_threshold_json_by_hand(blocks_file: Path) -> None:
    code, out, _ = invoke(
        "threshold", "--data", blocks_file, "--class", "yes", "--precision", "0.95", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert set(result) >= THRESHOLD_KEYS
    assert result["reachable"] is True
    assert result["procedure"] == "ltt-ranks" and result["n_tests"] == 3
    assert result["above"] == 0.5 and 0.5 < result["threshold"] < 0.5 + 1e-8  # P > 0.5
    assert result["precision"] == 1.0
    assert result["precision_lower_bound"] == pytest.approx((0.05 / 3) ** (1 / 100))
    assert result["recall"] == pytest.approx(0.8)
    assert result["support"] == 125
    assert result["class"] == "yes" and result["n_operating_points"] == 3


def test_threshold_recall_and_people_output(blocks_file: Path) -> None:
    code, out, _ = invoke(
        "threshold", "--data", blocks_file, "--class", "yes", "--recall", "0.9", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["metric"] == "recall" and result["threshold"] == 0.5 and result["recall"] == 1.0
    code, out, _ = invoke(
        "threshold", "--data", blocks_file, "--class", "yes", "--precision", "0.95"
    )
    assert code == 0
    assert "3 operating points" in out
    assert "when P(yes) > 0.5" in out and "lower bound" in out
    assert "Learn-then-Test" in out and "0.95 confidence" in out  # the guarantee
    code, out, _ = invoke(
        "threshold",
        "--data",
        blocks_file,
        "--class",
        "yes",
        "--precision",
        "0.95",
        "--procedure",
        "pointwise",
    )
    assert code == 0 and "threshold 0.9" in out
    # the pointwise meaning states no simulated hit rate it did not measure
    assert "in simulation" not in out and "of repeats" not in out
    assert "makes it approximate" in out


def test_threshold_recall_prints_one_lower_bound_at_the_requested_confidence(
    blocks_file: Path,
) -> None:
    # --recall 0.5 at confidence 0.6 picks threshold 0.9 (100 of 100 predicted): the table
    # row and the summary line both show the precision bound at 0.6, never the one at 0.95
    code, out, _ = invoke(
        "threshold",
        "--data",
        blocks_file,
        "--class",
        "yes",
        "--recall",
        "0.5",
        "--confidence",
        "0.6",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["threshold"] == 0.9 and result["test_confidence"] == 0.6
    at_06, at_095 = f"{0.4 ** (1 / 100):.4f}", f"{0.05 ** (1 / 100):.4f}"
    assert result["precision_lower_bound"] == pytest.approx(0.4 ** (1 / 100))
    code, out, _ = invoke(
        "threshold",
        "--data",
        blocks_file,
        "--class",
        "yes",
        "--recall",
        "0.5",
        "--confidence",
        "0.6",
    )
    assert code == 0
    assert out.count(at_06) == 2 and at_095 not in out  # table row and summary line


def test_threshold_on_test_data_applies_the_one_rule(blocks_file: Path, tmp_path: Path) -> None:
    # P(yes) = 0.9 written with the sum 1.05 normalises to 0.8999999999999999: tied with the
    # threshold 0.9, so predicted, as apply_threshold decides (a bare >= would drop it)
    rows = [
        {"id": f"t{i}", "probs": {"no": 0.105, "yes": 0.945}, "label": "yes"} for i in range(10)
    ]
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert datasets.load(str(test)).probs[0, 1] < 0.9
    code, out, _ = invoke(
        "threshold",
        "--data",
        blocks_file,
        "--test",
        test,
        "--class",
        "yes",
        "--recall",
        "0.5",
        "--confidence",
        "0.6",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["threshold"] == 0.9
    assert result["test"] == {"n": 10, "predicted": 10, "precision": 1.0, "recall": 1.0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--procedure", "holm"), "--procedure must be ltt-ranks or pointwise"),
        (("--abstain", "--procedure", "pointwise"), "--abstain uses the ltt-ranks"),
        (("--abstain", "--recall", "0.9"), "--abstain takes a --precision target"),
    ],
)
def test_threshold_option_errors(blocks_file: Path, args: tuple[str, ...], message: str) -> None:
    code, _, err = invoke("threshold", "--data", blocks_file, "--class", "yes", *args)
    assert code == 2 and message in err


def test_threshold_abstain_band_json_and_test_part(blocks_file: Path) -> None:
    code, out, _ = invoke(
        "threshold",
        "--data",
        blocks_file,
        "--test",
        blocks_file,
        "--class",
        "yes",
        "--precision",
        "0.8",
        "--abstain",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    band = abstain_band(*blocks_arrays(), 1, precision=0.8)
    assert result["upper"] == band.upper and result["lower"] == band.lower
    assert result["abstain_rate"] == band.abstain_rate
    assert result["test"]["abstain_rate"] == pytest.approx(band.abstain_rate)
    assert result["calibration"]["abstain_rate"] == pytest.approx(band.abstain_rate)
    code, out, _ = invoke(
        "threshold", "--data", blocks_file, "--class", "yes", "--precision", "0.8", "--abstain"
    )
    assert code == 0 and "abstained" in out


def test_threshold_unreachable_says_so(tmp_path: Path) -> None:
    data = write_blocks(tmp_path / "small.jsonl", (0.9, 40, 39), (0.3, 60, 10))
    code, out, _ = invoke(
        "threshold", "--data", data, "--class", "yes", "--precision", "0.95", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["reachable"] is False and result["threshold"] is None
    assert "label more items" in result["note"]
    code, out, _ = invoke("threshold", "--data", data, "--class", "yes", "--precision", "0.95")
    assert code == 0
    assert "no threshold reaches precision >= 0.95" in out
    assert "label more items" in out


def test_threshold_with_a_calibrator_matches_the_api(tmp_path: Path) -> None:
    predictions = datasets.load("recorded:tweets")
    labelled = predictions.labelled()
    calibrator = make_calibrator("temperature").fit(
        labelled.probs, labelled.y, labels=labelled.labels
    )
    path = tmp_path / "ts.json"
    calibrator.save(path)
    code, out, _ = invoke(
        "threshold", "--data", "recorded:tweets", "--calibrator", path, "--class", "negative",
        "--precision", "0.8", "--json",
    )  # fmt: skip
    assert code == 0
    cls = labelled.labels.index("negative")
    expected = threshold_for(
        calibrator.predict_proba(labelled.probs), labelled.y, cls, precision=0.8
    )
    result = json.loads(out)
    assert result["reachable"] == expected.reachable
    assert result["threshold"] == expected.threshold
    assert result["precision_lower_bound"] == pytest.approx(expected.precision_lower_bound)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--class", "maybe"], "unknown class 'maybe'"),
        (["--class", "yes", "--precision", "0.9", "--recall", "0.9"], "not both"),
        (["--class", "yes", "--precision", "1.5"], "strictly between 0 and 1"),
        (["--class", "yes", "--confidence", "0"], "confidence"),
    ],
)
def test_threshold_errors_exit_2_with_advice(
    blocks_file: Path, args: list[str], message: str
) -> None:
    code, _, err = invoke("threshold", "--data", blocks_file, *args)
    assert code == 2
    assert message in err
    if "unknown class" in message:
        assert "no, yes" in err  # the labels to choose from


def test_threshold_missing_file_exits_2(tmp_path: Path) -> None:
    code, _, err = invoke("threshold", "--data", tmp_path / "nope.jsonl", "--class", "yes")
    assert code == 2 and "not found" in err


def test_selective_json_matches_the_api() -> None:
    code, out, _ = invoke(
        "selective", "--data", "recorded:tweets", "--coverage", "0.7", "--accuracy", "0.8", "--json"
    )
    assert code == 0
    result = json.loads(out)
    labelled = datasets.load("recorded:tweets").labelled()
    assert result["aurc"] == pytest.approx(aurc(labelled.probs, labelled.y))
    assert result["accuracy_at_coverage"] == pytest.approx(
        accuracy_at_coverage(labelled.probs, labelled.y, 0.7)
    )
    assert result["coverage"] == 0.7
    assert result["curve"]["coverage"][-1] == 1.0
    assert len(result["curve"]["threshold"]) == result["n_operating_points"]
    assert {"threshold", "accuracy", "accuracy_lower_bound", "coverage", "reachable"} <= set(
        result["target"]
    )


def test_selective_people_output(blocks_file: Path) -> None:
    code, out, _ = invoke("selective", "--data", blocks_file, "--accuracy", "0.9")
    assert code == 0
    assert "operating points" in out and "AURC" in out
    assert "answer when confidence >= 0.9" in out
    code, out, _ = invoke("selective", "--data", blocks_file, "--accuracy", "0.999")
    assert code == 0 and "no confidence threshold reaches accuracy 0.999" in out


@pytest.mark.parametrize("coverage", ["0", "1.5"])
def test_selective_bad_coverage_exits_2(blocks_file: Path, coverage: str) -> None:
    code, _, err = invoke("selective", "--data", blocks_file, "--coverage", coverage)
    assert code == 2 and "--coverage" in err


def test_selective_without_gold_labels_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "nogold.jsonl"
    path.write_text(json.dumps({"id": "a", "probs": {"no": 0.2, "yes": 0.8}}) + "\n")
    code, _, err = invoke("selective", "--data", path)
    assert code == 2 and "gold label" in err


def test_blocks_file_round_trip(blocks_file: Path) -> None:
    predictions = datasets.load(blocks_file)
    assert predictions.labels == ("no", "yes")
    np.testing.assert_allclose(np.unique(predictions.probs[:, 1]), [0.1, 0.5, 0.9])


def test_sets_json_matches_the_api_and_writes_each_set(tmp_path: Path) -> None:
    from verbcal.decide import fit_sets, set_summary

    calib = write_blocks(tmp_path / "c.jsonl", (0.9, 60, 55), (0.6, 40, 25), (0.2, 50, 5))
    test = write_blocks(tmp_path / "t.jsonl", (0.9, 30, 27), (0.6, 20, 12), (0.2, 25, 3))
    out = tmp_path / "sets.jsonl"
    code, stdout, _ = invoke(
        "sets", "--calib", calib, "--data", test, "--alpha", "0.1", "--out", out, "--json"
    )
    assert code == 0
    result = json.loads(stdout)
    assert {"coverage", "mean_size", "singleton_rate", "empty_rate", "alpha", "n"} <= set(result)
    c, t = (
        datasets.load(str(calib)),
        datasets.load(str(test), list(datasets.load(str(calib)).labels)),
    )
    expected = set_summary(fit_sets(c.probs, c.y, alpha=0.1).predict(t.probs), t.y)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 75 and {"id", "set", "label"} <= set(rows[0])
    assert np.mean([r["label"] in r["set"] for r in rows]) == pytest.approx(result["coverage"])
    code, stdout, _ = invoke(
        "sets", "--calib", calib, "--data", test, "--by-class", "--score", "aps"
    )
    assert code == 0 and "Mondrian" in stdout and "coverage by gold label" in stdout
    code, _, err = invoke("sets", "--calib", calib, "--data", test, "--score", "raps")
    assert code == 2 and "--score must be one of lac, aps" in err


def test_decide_cost_fp_fn_and_matrix(tmp_path: Path) -> None:
    data = write_blocks(tmp_path / "d.jsonl", (0.9, 60, 55), (0.6, 40, 25), (0.2, 50, 5))
    code, stdout, _ = invoke(
        "decide-cost",
        "--data",
        data,
        "--class",
        "yes",
        "--cost-fp",
        "1",
        "--cost-fn",
        "1",
        "--json",
    )
    assert code == 0
    result = json.loads(stdout)
    report = result["policies"]["verbalized"]
    # fp = fn: accept yes iff P(yes) > 0.5: blocks 0.9 and 0.6 accepted (5 + 15 wrong), 0.2
    # rejected (5 missed)
    assert report["actions"] == {"yes": 100, "not yes": 50}
    assert report["realised_cost"] == pytest.approx((5 + 15 + 5) / 150)
    assert report["expected_cost"] == pytest.approx((60 * 0.1 + 40 * 0.4 + 50 * 0.2) / 150)
    matrix = tmp_path / "costs.json"
    matrix.write_text(
        json.dumps(
            {"yes": {"yes": 0, "no": 5}, "no": {"yes": 5, "no": 0}, "ask": {"yes": 1, "no": 1}}
        )
    )
    code, stdout, _ = invoke("decide-cost", "--data", data, "--costs", matrix, "--json")
    assert code == 0
    assert json.loads(stdout)["policies"]["verbalized"]["actions"] == {
        "yes": 60,
        "no": 50,
        "ask": 40,
    }
    code, stdout, _ = invoke("decide-cost", "--data", data, "--costs", matrix)
    assert code == 0 and "realised cost" in stdout
    code, _, err = invoke("decide-cost", "--data", data, "--cost-fp", "1")
    assert code == 2 and "--cost-fn" in err
    matrix.write_text(json.dumps({"yes": {"yes": 0}}))
    code, _, err = invoke("decide-cost", "--data", data, "--costs", matrix)
    assert code == 2 and "missing ['no']" in err
