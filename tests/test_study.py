"""verbcal study: known answers on synthetic data, determinism, output schema, config errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from verbcal import study
from verbcal.calibration import make_calibrator, softmax
from verbcal.cli import app
from verbcal.metrics import METRICS
from verbcal.study import StudyConfig, StudyError, parse_variant, resolve_sizes

LABELS = ("a", "b", "c")
TRUE_T = 2.0
"""The verbalized distribution is the true one sharpened: p ∝ q_true^(1/0.5) = q_true^2, so
temperature scaling (q ∝ p^(1/T)) recovers the truth at T = 2."""


def synthetic(path: Path, n: int = 400, seed: int = 1) -> Path:
    """Over-confident verbalized distributions with labels drawn from the true ones."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.3, size=(n, len(LABELS)))
    truth = softmax(z)
    verbal = softmax(z * TRUE_T)  # = truth^2, normalised
    y = np.array([rng.choice(len(LABELS), p=row) for row in truth])
    with path.open("w", encoding="utf-8") as handle:
        for i, (row, label) in enumerate(zip(verbal, y, strict=True)):
            record = {
                "id": str(i),
                "label": LABELS[label],
                "probs": dict(zip(LABELS, map(float, row), strict=True)),
            }
            handle.write(json.dumps(record) + "\n")
    return path


def config(path: Path, **overrides: object) -> StudyConfig:
    data: dict[str, object] = {
        "datasets": {"synth": str(path)},
        "methods": ["uncalibrated", "resoftmax", "temperature[floor=1e-12]", "platt"],
        "sizes": [100, "all"],
        "repeats": 6,
        "seed": 3,
    }
    data.update(overrides)
    return StudyConfig.from_mapping(data)


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory.mktemp("study") / "synth.jsonl")


@pytest.fixture(scope="module")
def synth_result(synth_file: Path) -> study.StudyResult:
    return study.run_study(config(synth_file), workers=1)


# ---------------------------------------------------------------- known answer


def test_recovers_the_generating_temperature(synth_result: study.StudyResult) -> None:
    table = study.by_key(synth_result.rows)
    temps = list(table[("synth", "temperature[floor=1e-12]", 200, "temperature")].values())
    assert len(temps) == 6
    assert abs(float(np.median(temps)) - TRUE_T) < 0.35


def test_ranks_the_calibrators_as_expected(synth_result: study.StudyResult) -> None:
    table = study.by_key(synth_result.rows)
    for size in (100, 200):
        # temperature scaling beats the over-confident verbalized distribution in every split
        gain = study.paired(table, "synth", size, "nll", "uncalibrated", "temperature[floor=1e-12]")
        assert gain["lo"] > 0 and gain["share_positive"] == 1.0
        # re-softmax (softmax of probabilities) is the wrong family: worse NLL than temperature
        loss = study.paired(table, "synth", size, "nll", "resoftmax", "temperature[floor=1e-12]")
        assert loss["mean"] > 0
    summary = {(r["method"], r["size"], r["metric"]): r for r in study.summarise(synth_result.rows)}
    # temperature scaling keeps the argmax: same accuracy as the verbalized distribution
    assert (
        summary[("temperature[floor=1e-12]", 200, "accuracy")]["mean"]
        == summary[("uncalibrated", 200, "accuracy")]["mean"]
    )
    assert (
        summary[("temperature[floor=1e-12]", 200, "ece")]["mean"]
        < summary[("uncalibrated", 200, "ece")]["mean"]
    )


def test_threshold_rows_cover_classes_targets_and_rules(synth_result: study.StudyResult) -> None:
    rows = synth_result.thresholds
    assert {r[1] for r in rows} == {"uncalibrated"}  # temperature is not among the methods
    keys = {(r[4], r[5], r[6]) for r in rows}
    assert keys == {
        (c, t, rule) for c in range(3) for t in (0.8, 0.9, 0.95) for rule in study.RULES
    }
    for row in rows:
        reachable, met = row[7], row[12]
        assert reachable or np.isnan(met)
        assert np.isnan(met) or met in (0.0, 1.0)


# ---------------------------------------------------------------- determinism


@pytest.mark.slow
def test_same_output_with_one_and_two_workers(synth_file: Path) -> None:
    cfg = config(synth_file, repeats=4, sizes=[60])
    one = study.run_study(cfg, workers=1)
    two = study.run_study(cfg, workers=2)
    assert one.rows == two.rows
    assert [tuple(map(repr, r)) for r in one.thresholds] == [  # repr: nan == nan
        tuple(map(repr, r)) for r in two.thresholds
    ]
    again = study.run_study(cfg, workers=1)
    assert again.rows == one.rows


def test_split_seed_depends_only_on_its_key() -> None:
    a = study.split_rng(0, "x", 50, 3).integers(1 << 30, size=4)
    b = study.split_rng(0, "x", 50, 3).integers(1 << 30, size=4)
    c = study.split_rng(0, "x", 50, 4).integers(1 << 30, size=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_shared_floor_fit_equals_fitting_each_variant_alone() -> None:
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(80, 3)) * 3)
    probs = np.round(probs, 2) + 1e-3
    y = rng.integers(0, 3, size=80)
    variants = [parse_variant(m) for m in ("temperature", "vector", "platt")]
    fitted = study.fit_variants(variants, probs, y)
    for variant in variants:
        alone = make_calibrator(variant.method).fit(probs, y)
        assert fitted[variant.name].floor_ == alone.floor_
        np.testing.assert_allclose(
            fitted[variant.name].predict_proba(probs), alone.predict_proba(probs), rtol=1e-12
        )


# ---------------------------------------------------------------- outputs


def test_tidy_output_schema(synth_result: study.StudyResult, tmp_path: Path) -> None:
    files = study.write_outputs(synth_result, tmp_path)
    with files["tidy"].open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["dataset", "method", "size", "repeat", "metric", "value"]
        rows = list(reader)
    keys = [(r["dataset"], r["method"], r["size"], r["repeat"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))  # one value per (dataset, method, size, repeat, metric)
    assert {r["metric"] for r in rows} >= set(METRICS) | {"temperature", "nll_fit"}
    assert {int(r["size"]) for r in rows} == {100, 200}
    assert {int(r["repeat"]) for r in rows} == set(range(6))
    assert all(np.isfinite(float(r["value"])) for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary[0]) == {"dataset", "method", "size", "metric", "mean", "lo", "hi", "n"}
    assert all(r["lo"] <= r["hi"] for r in summary if r["lo"] is not None)
    for name in ("summary.csv", "thresholds.csv", "wellformedness.json", "findings.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "size_synth.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "reliability_synth.png").exists()
    findings = (tmp_path / "findings.md").read_text()
    for heading in ("well-formed", "Which calibrator", "Re-softmax", "How many", "promise"):
        assert heading in findings


def test_wellformedness_counts() -> None:
    from verbcal.predictions import from_arrays

    predictions = from_arrays(
        [[0.7, 0.2, 0.1], [0.5, 0.5, 0.0], [0.6, 0.3, 0.0], [0.8, 0.1, 0.05]],
        [0, 1, 0, 2],
        LABELS,
    )
    w = study.wellformedness(predictions)
    assert w["rows_off_sum"] == 2 and w["zero_entries"] == 2 and w["rows_with_zero"] == 2
    assert w["decimals"] == 2 and w["distinct_rows"] == 4 and w["accuracy"] == 0.5


def test_cli_json_rows(synth_file: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "study.yaml"
    cfg.write_text(
        f"datasets:\n  synth: {synth_file}\nmethods: [uncalibrated, temperature]\n"
        "sizes: [all]\nrepeats: 2\n"
    )
    result = CliRunner().invoke(
        app,
        ["study", "--config", str(cfg), "--out", str(tmp_path / "out"), "--workers", "1", "--json"],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows and all(
        set(r) == {"dataset", "method", "size", "metric", "mean", "lo", "hi"} for r in rows
    )
    assert {r["method"] for r in rows} == {"uncalibrated", "temperature"}
    assert (tmp_path / "out" / "tidy.csv").exists()


# ---------------------------------------------------------------- configuration


def test_default_config_and_example_file() -> None:
    default = StudyConfig()
    assert default.repeats == 50 and default.sizes == [25, 50, 100, "all"]
    assert set(default.datasets.values()) == {
        f"recorded:{n.removesuffix('-words')}" + ("#verbal" if n.endswith("-words") else "")
        for n in default.datasets
    }
    assert {"mt-quality-words", "halueval-words"} <= set(default.datasets)
    example = Path(__file__).parents[1] / "examples" / "study.yaml"
    loaded = StudyConfig.load(example)
    assert loaded.methods and loaded.datasets


def test_variants_parse() -> None:
    v = parse_variant("temperature[floor=1e-4,mode=mix]")
    assert v.method == "temperature" and v.kwargs == {"floor": 1e-4, "floor_mode": "mix"}
    assert parse_variant("uncalibrated").method == "identity"
    assert parse_variant("uncalibrated").kwargs == {}
    assert parse_variant("temperature[prior=none]").kwargs["prior_sd"] is None
    assert parse_variant("histogram[bins=5]").kwargs["bins"] == 5
    assert parse_variant("temperature").fits_floor and not parse_variant("isotonic").fits_floor


def test_sizes_resolve() -> None:
    sizes, notes = resolve_sizes(201, [25, 100, "all", 180])
    assert sizes == [25, 100]  # all = 201 // 2 = 100, counted once
    assert notes == ["size 180 skipped: it leaves fewer than 30 of 201 items to test"]
    assert resolve_sizes(150, ["all", 100]) == ([75, 100], [])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"repeat": 5}, "unknown config key"),
        ({"methods": ["temprature"]}, "unknown method 'temprature'"),
        ({"methods": ["temperature[flor=1e-3]"]}, "bad option"),
        ({"methods": ["temperature[floor=2]"]}, "floor must be"),
        ({"methods": ["temperature[mode=soft]"]}, "mode must be"),
        ({"methods": []}, "non-empty list"),
        ({"methods": ["temperature", "temperature"]}, "listed twice"),
        ({"sizes": [0]}, "not an integer"),
        ({"sizes": "all"}, "non-empty list"),
        ({"repeats": 0}, "repeats"),
        ({"seed": "x"}, "seed"),
        ({"datasets": []}, "datasets"),
        ({"targets": [1.5]}, "targets"),
        ({"threshold_methods": ["matrix"], "methods": ["temperature"]}, "not listed in methods"),
        (["a"], "mapping"),
    ],
)
def test_config_errors(data: object, message: str) -> None:
    with pytest.raises(StudyError, match=message):
        StudyConfig.from_mapping(data)


def test_config_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [temperature\n")
    with pytest.raises(StudyError, match="not valid YAML"):
        StudyConfig.load(bad)
    with pytest.raises(StudyError, match="cannot read"):
        StudyConfig.load(tmp_path / "missing.yaml")
    rel = tmp_path / "rel.yaml"
    rel.write_text("datasets:\n  x: data/x.jsonl\n")
    assert StudyConfig.load(rel).datasets["x"] == str(tmp_path / "data" / "x.jsonl")


def test_cli_reports_config_errors_on_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "study.yaml"
    cfg.write_text("methods: [nope]\n")
    result = CliRunner().invoke(app, ["study", "--config", str(cfg), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown method 'nope'" in result.output


def test_study_modules_import_in_one_direction() -> None:
    order = ["config", "rows", "grid", "summary", "report", "outputs"]
    folder = Path(study.__file__).parent
    for i, name in enumerate(order):
        text = (folder / f"{name}.py").read_text("utf-8")
        for later in order[i + 1 :]:
            assert f"verbcal.study.{later}" not in text, (name, later)
        assert "from verbcal.study import" not in text


def test_rows_are_named(synth_result: study.StudyResult) -> None:
    row = synth_result.rows[0]
    assert isinstance(row, study.MetricRow)
    assert row.dataset == row[0] and row.value == row[5]
    assert all(isinstance(r, study.ThresholdRow) for r in synth_result.thresholds)
    assert study.ThresholdRow._fields == study.THRESHOLD_COLUMNS


def test_auto_weighs_words_on_a_verbal_dataset_and_not_on_numbers() -> None:
    cfg = StudyConfig(
        datasets={"words": "recorded:mt-quality#verbal", "numbers": "recorded:mt-quality"},
        methods=["auto"],
        sizes=[50],
        repeats=2,
        threshold_methods=[],
    )
    result = study.run_study(cfg, workers=1)
    assert result.info["words"].reply == "verbal" and result.info["numbers"].reply == "probs"
    weights = {(r.dataset, r.metric) for r in result.rows if r.metric.startswith("weight_")}
    assert ("words", "weight_words") in weights
    assert ("numbers", "weight_words") not in weights
    assert ("numbers", "weight_temperature") in weights
    from verbcal.study.report import findings_markdown
    from verbcal.study.summary import summarise

    page = findings_markdown(result, summarise(result.rows))
    auto_table = page.split("## What `auto` built")[1].split("\n## ")[0]
    assert "nan" not in auto_table
    numbers_row = next(line for line in auto_table.splitlines() if line.startswith("| numbers"))
    assert "–" in numbers_row  # words: not a candidate on numbers
