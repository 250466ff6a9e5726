"""Recorded arms (no calls) and the bundled numbers-vs-words examples on the judge sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("pydantic")
pytest.importorskip("matplotlib")

from verbcal import datasets
from verbcal.bakeoff import BakeoffConfig, BakeoffError, run_bakeoff

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path("/work/shared/data/judge")
EXAMPLES = sorted((ROOT / "examples").glob("bakeoff-judges-*.yaml"))
# Phrases of the recorded judge replies, mapped for these tests only (the lexicon of the
# judge work is the product's mapping).
WORDS = {
    "almost certain": 0.95,
    "very likely": 0.85,
    "likely": 0.7,
    "probably": 0.65,
    "somewhat likely": 0.6,
    "about even": 0.5,
    "somewhat unlikely": 0.4,
    "probably not": 0.3,
    "unlikely": 0.25,
    "very unlikely": 0.1,
    "almost impossible": 0.03,
}


def judge_file(name: str) -> Path:
    """The bundled set where the package has it, else the shared copy, else skip."""
    try:
        bundled = datasets.resolve(f"recorded:{name}")
    except ValueError:
        bundled = None
    if bundled is not None and bundled.exists():
        return bundled
    if (SHARED / f"{name}.jsonl").exists():
        return SHARED / f"{name}.jsonl"
    pytest.skip(f"the recorded judge set {name} is not available here")


def test_the_examples_compare_numbers_against_words_on_both_judge_sets() -> None:
    assert [p.name for p in EXAMPLES] == [
        "bakeoff-judges-halueval.yaml",
        "bakeoff-judges-mt-quality.yaml",
    ]
    for path in EXAMPLES:
        config = BakeoffConfig.load(path)
        assert [(a.name, a.format) for a in config.arms] == [
            ("numbers", "numeric"),
            ("words", "verbal"),
        ]
        assert {a.recorded for a in config.arms} == {f"recorded:{path.stem[15:]}"}
        assert config.doc.method == "auto"


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_on_the_recorded_replies(path: Path, tmp_path: Path) -> None:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    source = judge_file(path.stem[len("bakeoff-judges-") :])
    for arm in data["arms"]:
        arm["recorded"] = str(source)
    data["method"] = "temperature"  # fast; the example itself uses auto
    config = BakeoffConfig.from_dict(data, source=str(path))
    result = run_bakeoff(
        config,
        tmp_path,
        repeats=3,
        n_boot=200,
        verbal_parser=lambda phrase: WORDS.get(phrase.strip().lower()),
    )
    rows = {row["arm"]: row for row in result.document["arms"]}
    assert rows["numbers"]["n"] == rows["words"]["n"] == 120  # every phrase mapped
    assert rows["numbers"]["cost_per_1k"] is None and rows["numbers"]["requests"] == 0
    assert "known cost" in result.document["reason"]
    assert result.document["recommended"] in rows
    for row in rows.values():
        assert row["ece"] is not None and row["nll"] is not None
        assert row["decision_metric"] is not None
    html = (tmp_path / "report.html").read_text()
    assert "no arm has a known cost" in html.lower()


def test_recorded_errors_name_the_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "r.jsonl"
    bad.write_text('{"id": "a", "label": "yes", "probs": {"yes": 0.9, "no": 0.1}}\n{"id": "b"}\n')
    data = {
        "labels": ["yes", "no"],
        "arms": [
            {"name": "x", "recorded": "r.jsonl", "source": "probs"},
            {"name": "y", "recorded": "r.jsonl", "source": "probs"},
        ],
    }
    config = BakeoffConfig.from_dict(data, base=tmp_path, source="bk.yaml")
    with pytest.raises(BakeoffError, match=r"r.jsonl, line 2, field 'label'"):
        run_bakeoff(config, tmp_path / "out", repeats=1)
    missing = BakeoffConfig.from_dict(
        {**data, "arms": [{**a, "recorded": "recorded:nope"} for a in data["arms"]]},
        base=tmp_path,
        source="bk.yaml",
    )
    with pytest.raises(BakeoffError, match=r"bk\.yaml, arm 'x', field 'recorded'"):
        run_bakeoff(missing, tmp_path / "out", repeats=1)


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_as_shipped_with_the_lexicon(path: Path, tmp_path: Path) -> None:
    """Where the build ships the lexicon and the judge sets: the example as written (a few
    repeats, a fast calibrator), every bundled phrase read."""
    try:
        datasets.resolve(f"recorded:{path.stem[len('bakeoff-judges-') :]}")
    except ValueError:
        pytest.skip("this build does not bundle the judge sets")
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    data["method"] = "temperature"
    config = BakeoffConfig.from_dict(data, base=path.parent, source=str(path))
    result = run_bakeoff(config, tmp_path, repeats=2, n_boot=100)
    rows = {row["arm"]: row for row in result.document["arms"]}
    assert rows["words"]["failed_replies"] == 0
    assert rows["numbers"]["n"] == rows["words"]["n"] == 120
